//! examples/triton-repository.sh: the Triton Inference Server model
//! repository it writes for the tiny fixture checkpoint, read back and held
//! against dinomaly-export's own JSON line (tensor names, data types, dims
//! without the batch axis, max_batch_size, the metadata as parameters), for
//! a dynamic and a static batch, float and uint8 input; and its refusals,
//! which leave nothing behind. No Triton here: the config is parsed as
//! protobuf text format by a small reader below.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::util::fixture::{self as fx, entries};
use crate::util::{self, assert_code, Dir};

/// A protobuf text-format message: each field name with its values in
/// order (a repeated field, or `name: [a, b]`, has several).
#[derive(Debug, Clone, PartialEq)]
enum Pb {
    Scalar(String),
    Message(BTreeMap<String, Vec<Pb>>),
}

impl Pb {
    fn fields(&self) -> &BTreeMap<String, Vec<Pb>> {
        match self {
            Pb::Message(m) => m,
            Pb::Scalar(s) => panic!("a scalar ({s}) where a message was expected"),
        }
    }

    /// All values of `name` (none when absent).
    fn all(&self, name: &str) -> Vec<Pb> {
        self.fields().get(name).cloned().unwrap_or_default()
    }

    /// The one value of `name`.
    fn one(&self, name: &str) -> Pb {
        let all = self.all(name);
        assert_eq!(all.len(), 1, "field {name}: {all:?}");
        all[0].clone()
    }

    fn text(&self, name: &str) -> String {
        match self.one(name) {
            Pb::Scalar(s) => s,
            other => panic!("field {name} is a message: {other:?}"),
        }
    }

    fn numbers(&self, name: &str) -> Vec<i64> {
        self.all(name)
            .iter()
            .map(|v| match v {
                Pb::Scalar(s) => s.parse().unwrap_or_else(|_| panic!("{name}: {s} is not a whole number")),
                other => panic!("{name}: {other:?}"),
            })
            .collect()
    }
}

/// Tokens of the text format: words and numbers, quoted strings (their
/// escapes undone, kept as `Str`), and the punctuation `{ } [ ] : ,`.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Punct(char),
}

fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '#' {
            for c in chars.by_ref() {
                if c == '\n' {
                    break;
                }
            }
        } else if "{}[]:,".contains(c) {
            out.push(Token::Punct(c));
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next().expect("an unterminated string") {
                    '"' => break,
                    '\\' => match chars.next().expect("an escape at the end") {
                        'n' => s.push('\n'),
                        other => s.push(other),
                    },
                    other => s.push(other),
                }
            }
            out.push(Token::Str(s));
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || "{}[]:,\"#".contains(c) {
                    break;
                }
                word.push(c);
                chars.next();
            }
            out.push(Token::Word(word));
        }
    }
    out
}

/// Parses fields until `}` or the end.
fn message(toks: &[Token], at: &mut usize) -> Pb {
    let mut fields: BTreeMap<String, Vec<Pb>> = BTreeMap::new();
    while *at < toks.len() && toks[*at] != Token::Punct('}') {
        let name = match &toks[*at] {
            Token::Word(w) => w.clone(),
            other => panic!("a field name expected, found {other:?}"),
        };
        *at += 1;
        if toks[*at] == Token::Punct(':') {
            *at += 1;
        }
        let values = fields.entry(name).or_default();
        if toks[*at] == Token::Punct('[') {
            *at += 1;
            while toks[*at] != Token::Punct(']') {
                values.push(value(toks, at));
                if toks[*at] == Token::Punct(',') {
                    *at += 1;
                }
            }
            *at += 1;
        } else {
            values.push(value(toks, at));
        }
    }
    Pb::Message(fields)
}

fn value(toks: &[Token], at: &mut usize) -> Pb {
    let tok = toks[*at].clone();
    *at += 1;
    match tok {
        Token::Punct('{') => {
            let m = message(toks, at);
            assert_eq!(toks[*at], Token::Punct('}'), "an unclosed message");
            *at += 1;
            m
        }
        Token::Word(w) | Token::Str(w) => Pb::Scalar(w),
        other => panic!("a value expected, found {other:?}"),
    }
}

fn parse_pbtxt(text: &str) -> Pb {
    let toks = tokens(text);
    let mut at = 0;
    let pb = message(&toks, &mut at);
    assert_eq!(at, toks.len(), "text after the top-level message");
    pb
}

/// dinomaly-export's JSON line for the shared checkpoint with `flags`.
fn export_line(dir: &Dir, name: &str, flags: &[&str]) -> Value {
    let shared = fx::shared();
    let mut args: Vec<std::ffi::OsString> = vec!["-c".into(), shared.ckpt.clone().into()];
    args.extend(["--weights".into(), shared.weights.clone().into(), "-o".into(), dir.join(name).into()]);
    args.extend(flags.iter().map(Into::into));
    fx::export_line(&args)
}

/// Runs the script: CKPT REPO [args...], with the shared weights after them.
fn triton(ckpt: &Path, repo: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let shared = fx::shared();
    let mut cmd = Command::new("bash");
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/triton-repository.sh"))
        .arg(ckpt)
        .arg(repo)
        .args(args)
        .arg("--weights")
        .arg(&shared.weights)
        .arg("-q")
        .env("DINOMALY_EXPORT", env!("CARGO_BIN_EXE_dinomaly-export"))
        .env("DINOMALY_NO_CUDA", "1")
        .env("OMP_NUM_THREADS", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    util::run(&mut cmd, "")
}

fn triton_type(dtype: &str) -> &'static str {
    match dtype {
        "float32" => "TYPE_FP32",
        "uint8" => "TYPE_UINT8",
        other => panic!("unexpected dtype {other}"),
    }
}

/// Checks config.pbtxt's tensors against the JSON line's; returns the
/// parsed config.
fn check_config(model_dir: &Path, name: &str, line: &Value, max_batch: i64) -> Pb {
    let text = std::fs::read_to_string(model_dir.join("config.pbtxt")).expect("config.pbtxt");
    let config = parse_pbtxt(&text);
    assert_eq!(config.text("name"), name, "{text}");
    assert_eq!(config.text("platform"), "onnxruntime_onnx", "{text}");
    let dynamic = line["inputs"][0]["shape"][0] == -1;
    assert_eq!(config.numbers("max_batch_size"), [if dynamic { max_batch } else { 0 }], "{text}");
    assert_eq!(config.all("dynamic_batching").len(), usize::from(dynamic), "{text}");
    for (field, key) in [("input", "inputs"), ("output", "outputs")] {
        let declared = config.all(field);
        let tensors = line[key].as_array().expect("tensors in the JSON line");
        assert_eq!(declared.len(), tensors.len(), "{field}: {text}");
        for (d, t) in declared.iter().zip(tensors) {
            assert_eq!(d.text("name"), t["name"].as_str().unwrap(), "{text}");
            assert_eq!(d.text("data_type"), triton_type(t["dtype"].as_str().unwrap()), "{text}");
            let shape: Vec<i64> = t["shape"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
            let expected = if dynamic { shape[1..].to_vec() } else { shape.clone() };
            if expected.is_empty() {
                // [batch] in the model: dims [ 1 ] reshaped to a scalar.
                assert_eq!(d.numbers("dims"), [1], "{} {text}", d.text("name"));
                assert_eq!(d.one("reshape").numbers("shape"), Vec::<i64>::new(), "{text}");
            } else {
                assert_eq!(d.numbers("dims"), expected, "{} {text}", d.text("name"));
                assert!(d.all("reshape").is_empty(), "{text}");
            }
        }
    }
    // The model's metadata, every key, as parameters.
    let params: BTreeMap<String, String> =
        config.all("parameters").iter().map(|p| (p.text("key"), p.one("value").text("string_value"))).collect();
    let meta = line["metadata"].as_object().expect("metadata");
    assert!(!meta.is_empty());
    for (key, value) in meta {
        let expected = value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string());
        assert_eq!(params.get(&format!("metadata.{key}")), Some(&expected), "metadata {key}: {text}");
    }
    assert_eq!(params.len(), meta.len(), "{text}");
    // The model file is the one the config names in its header.
    let onnx = model_dir.join("1/model.onnx");
    let sha = fx::sha256(&onnx);
    assert!(text.contains(&format!("# 1/model.onnx sha256 {sha},")), "{sha}: {text}");
    config
}

#[test]
fn deploy_triton_repository_dynamic_batch_matches_the_export() {
    let dir = Dir::new("deploy_triton_dynamic");
    let shared = fx::shared();
    let line = export_line(&dir, "direct.onnx", &[]);
    assert_eq!(line["inputs"][0]["shape"][0], -1, "{line}");
    let repo = dir.join("repo");
    let out = triton(&shared.ckpt, &repo, &["cams"], &[("TRITON_MAX_BATCH", "8"), ("TRITON_INSTANCES", "2")]);
    assert_code(&out, 0);
    assert_eq!(util::stdout(&out).trim(), repo.join("cams").display().to_string());
    assert_eq!(entries(&repo), ["cams"], "only the model's folder");
    assert_eq!(entries(&repo.join("cams")), ["1", "config.pbtxt"]);
    assert_eq!(entries(&repo.join("cams/1")), ["model.onnx"]);
    let config = check_config(&repo.join("cams"), "cams", &line, 8);
    let group = config.one("instance_group");
    assert_eq!(group.numbers("count"), [2]);
    assert_eq!(group.text("kind"), "KIND_AUTO");
    assert!(config.one("dynamic_batching").numbers("max_queue_delay_microseconds")[0] > 0);
    // The same checkpoint and flags give the same model as a direct export.
    assert_eq!(fx::sha256(&repo.join("cams/1/model.onnx")), line["sha256"].as_str().unwrap());
}

#[test]
fn deploy_triton_repository_static_batch_and_uint8_input() {
    let dir = Dir::new("deploy_triton_static");
    let shared = fx::shared();
    let flags = ["--batch", "2", "--input", "uint8"];
    let line = export_line(&dir, "direct.onnx", &flags);
    assert_eq!(line["inputs"][0]["dtype"], "uint8", "{line}");
    let repo = dir.join("repo");
    let mut args = vec!["static"];
    args.extend(flags);
    let out = triton(&shared.ckpt, &repo, &args, &[("TRITON_INSTANCE_KIND", "KIND_CPU")]);
    assert_code(&out, 0);
    let config = check_config(&repo.join("static"), "static", &line, 0);
    assert_eq!(config.one("input").numbers("dims")[0], 2, "the batch axis is part of the dims");
    assert_eq!(config.one("instance_group").text("kind"), "KIND_CPU");
    // Without a name the model is called dinomaly.
    let out = triton(&shared.ckpt, &repo, &[], &[]);
    assert_code(&out, 0);
    let line = export_line(&dir, "default.onnx", &[]);
    check_config(&repo.join("dinomaly"), "dinomaly", &line, 16);
}

#[test]
fn deploy_triton_repository_refusals_leave_nothing() {
    let dir = Dir::new("deploy_triton_refusals");
    let shared = fx::shared();
    let repo = dir.join("repo");
    // A checkpoint that is not one: the export's error, exit 2, no folder.
    let bad: PathBuf = dir.write("bad.safetensors", b"not a checkpoint");
    let out = triton(&bad, &repo, &["m"], &[]);
    assert_code(&out, 2);
    assert!(util::stderr(&out).contains("dinomaly-export failed"), "{}", util::stderr(&out));
    assert_eq!(entries(&repo), Vec::<String>::new(), "nothing left, no temporary folder");
    // A name that is not a folder name, bad settings: refused before exporting.
    for (args, env, needle) in [
        (vec!["../up"], vec![], "model name"),
        (vec!["m"], vec![("TRITON_MAX_BATCH", "0")], "TRITON_MAX_BATCH"),
        (vec!["m"], vec![("TRITON_INSTANCE_KIND", "KIND_TPU")], "TRITON_INSTANCE_KIND"),
    ] {
        let out = triton(&shared.ckpt, &repo, &args, &env);
        assert_code(&out, 2);
        let err = util::stderr(&out);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{needle}: {err}");
    }
    assert_eq!(entries(&repo), Vec::<String>::new());
    // An existing model folder is not overwritten.
    std::fs::create_dir_all(repo.join("m")).unwrap();
    std::fs::write(repo.join("m/keep"), "x").unwrap();
    let out = triton(&shared.ckpt, &repo, &["m"], &[]);
    assert_code(&out, 2);
    assert!(util::stderr(&out).contains("exists"), "{}", util::stderr(&out));
    assert_eq!(entries(&repo), ["m"]);
    assert_eq!(entries(&repo.join("m")), ["keep"]);
}

#[test]
fn deploy_pbtxt_reader_reads_nested_messages_lists_and_escapes() {
    let pb = parse_pbtxt(
        "# c\nname: \"a\\\"b\"\ndims: [ 3, 4 ]\nout [ { name: \"x\" reshape: { shape: [ ] } }, { name: \"y\" } ]\nk: V",
    );
    assert_eq!(pb.text("name"), "a\"b");
    assert_eq!(pb.numbers("dims"), [3, 4]);
    let outs = pb.all("out");
    assert_eq!(outs.len(), 2);
    assert_eq!(outs[0].one("reshape").numbers("shape"), Vec::<i64>::new());
    assert_eq!(outs[1].text("name"), "y");
    assert_eq!(pb.text("k"), "V");
}
