//! Flags of the four tools: negative numbers are values, every numeric flag
//! is range-checked by clap (exit 2, a message naming the flag and the
//! allowed range, before any file is touched), flags that would be ignored
//! are refused, and the man pages have their own NAME line, the README's
//! examples and SEE ALSO.

use std::path::Path;
use std::process::Output;

use crate::util::fixture::{self as fx, assert_error, parse_lines};
use crate::util::{self, assert_code, Dir};

/// Runs `tool` with `args` and an empty stdin.
fn run(tool: &str, args: &[&str]) -> Output {
    util::run(util::tool(tool).args(args), "")
}

/// The flags a tool needs besides the one under test, pointing at files
/// that do not exist in `dir` (so nothing can be written by mistake).
fn required(tool: &str, dir: &Path) -> Vec<String> {
    let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
    match tool {
        "dinomaly-extract" => vec!["-o".into(), p("out.safetensors")],
        "dinomaly-train" => vec![p("absent.safetensors"), "-o".into(), p("out.safetensors")],
        "dinomaly-score" => vec!["-c".into(), p("absent.safetensors")],
        "dinomaly-export" => vec!["-c".into(), p("absent.safetensors"), "-o".into(), p("out.onnx")],
        _ => vec!["-i".into(), p("absent.jsonl")],
    }
}

#[test]
fn cli_flags_out_of_range_values_are_refused_at_parse_time() {
    let dir = Dir::new("cli_flags_range");
    // (tool, flag, value, the range the message must state). Extra flags
    // some cases need come after the value.
    let cases: &[(&str, &str, &str, &str, &[&str])] = &[
        ("dinomaly-extract", "--batch", "0", "use a whole number >= 1", &[]),
        ("dinomaly-extract", "--batch", "-1", "use a whole number >= 1", &[]),
        ("dinomaly-extract", "--batch", "2.5", "use a whole number >= 1", &[]),
        ("dinomaly-train", "--iterations", "0", "use a whole number >= 1", &[]),
        ("dinomaly-train", "--batch", "0", "use a whole number >= 1", &[]),
        ("dinomaly-train", "--lr", "0", "use a number > 0", &[]),
        ("dinomaly-train", "--lr", "-1", "use a number > 0", &[]),
        ("dinomaly-train", "--lr", "NaN", "use a number > 0", &[]),
        ("dinomaly-train", "--final-lr", "-1e-4", "use a number >= 0", &[]),
        ("dinomaly-train", "--warmup", "-1", "use a whole number >= 0", &[]),
        ("dinomaly-train", "--weight-decay", "-0.1", "use a number >= 0", &[]),
        ("dinomaly-train", "--weight-decay", "inf", "use a number >= 0", &[]),
        ("dinomaly-train", "--eps", "0", "use a number > 0", &[]),
        ("dinomaly-train", "--eps", "-1e-8", "use a number > 0", &[]),
        ("dinomaly-train", "--clip", "0", "use a number > 0", &[]),
        ("dinomaly-train", "--clip", "-0.1", "use a number > 0", &[]),
        ("dinomaly-train", "--dropout", "1.5", "use a number in [0, 1)", &[]),
        ("dinomaly-train", "--dropout", "1", "use a number in [0, 1)", &[]),
        ("dinomaly-train", "--dropout", "-0.1", "use a number in [0, 1)", &[]),
        ("dinomaly-train", "--attention-eps", "-1", "use a number >= 0", &[]),
        ("dinomaly-train", "--seed", "-1", "use a whole number >= 0", &[]),
        ("dinomaly-train", "--spike-factor", "NaN", "use 0 (off) or a number > 1", &[]),
        ("dinomaly-train", "--spike-factor", "0.5", "use 0 (off) or a number > 1", &[]),
        ("dinomaly-train", "--spike-factor", "-1", "use 0 (off) or a number > 1", &[]),
        ("dinomaly-train", "--save-every", "0", "use a whole number >= 1", &[]),
        ("dinomaly-train", "--val-every", "0", "use a whole number >= 1", &["--val", "v.st"]),
        (
            "dinomaly-train",
            "--patience",
            "0",
            "use a whole number in [1, 4294967295]",
            &["--val", "v.st", "--keep-best", "i-auroc"],
        ),
        ("dinomaly-score", "--max-ratio", "1.5", "use a number in [0, 1]", &[]),
        ("dinomaly-score", "--max-ratio", "-0.1", "use a number in [0, 1]", &[]),
        ("dinomaly-score", "--threshold", "NaN", "use a finite number", &[]),
        ("dinomaly-score", "--fail-above", "inf", "use a finite number", &[]),
        ("dinomaly-score", "--fail-above", "NaN", "use a finite number", &[]),
        ("dinomaly-score", "--batch", "0", "use a whole number >= 1", &[]),
        ("dinomaly-score", "--batch-wait", "-1", "use a whole number in [0, 65535]", &[]),
        ("dinomaly-score", "--batch-wait", "65536", "use a whole number in [0, 65535]", &[]),
        ("dinomaly-score", "--batch-wait", "0.5", "use a whole number in [0, 65535]", &[]),
        ("dinomaly-export", "--batch", "-1", "use a whole number in [0, 4294967295]", &[]),
        ("dinomaly-export", "--batch", "1.5", "use a whole number in [0, 4294967295]", &[]),
        ("dinomaly-export", "--max-ratio", "1.5", "use a number in [0, 1]", &[]),
        ("dinomaly-export", "--max-ratio", "NaN", "use a number in [0, 1]", &[]),
        ("dinomaly-metrics", "--fpr-limit", "0", "use a number in (0, 1]", &[]),
        ("dinomaly-metrics", "--fpr-limit", "1.5", "use a number in (0, 1]", &[]),
        ("dinomaly-metrics", "--mask-threshold", "1", "use a number in [0, 1)", &[]),
        ("dinomaly-metrics", "--mask-threshold", "NaN", "use a number in [0, 1)", &[]),
        ("dinomaly-metrics", "--target-fpr", "-0.1", "use a number in [0, 1)", &[]),
        ("dinomaly-metrics", "--target-fpr", "1", "use a number in [0, 1)", &[]),
        ("dinomaly-metrics", "--resize", "0", "use a whole number >= 1", &[]),
        ("dinomaly-metrics", "--crop", "-3", "use a whole number >= 1", &[]),
    ];
    for (tool, flag, value, range, extra) in cases {
        let mut args: Vec<String> = required(tool, dir.path());
        args.extend([flag.to_string(), value.to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(tool, &args);
        let err = util::stderr(&out);
        let what = format!("{tool} {flag} {value}");
        assert_eq!(out.status.code(), Some(2), "{what}: exit {:?}\n{err}", out.status);
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!("error: {flag}: ")) && first.contains(value) && first.ends_with(range),
            "{what}: the message must name the flag, the value and the range ({range}):\n{err}"
        );
        assert!(util::stdout(&out).is_empty(), "{what}: stdout not empty");
    }
    // --fail-above may stand without a value (the calibrated thresholds), so
    // a value that starts with '-' and is not a plain number takes '='.
    let mut args = required("dinomaly-score", dir.path());
    args.push("--fail-above=-inf".to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run("dinomaly-score", &args);
    assert_code(&out, 2);
    assert!(
        util::stderr(&out).starts_with("error: --fail-above: -inf is not a finite number"),
        "{}",
        util::stderr(&out)
    );
    assert!(fx::entries(dir.path()).is_empty(), "a refused run wrote {:?}", fx::entries(dir.path()));
}

#[test]
fn cli_flags_edge_values_in_range_are_accepted() {
    let dir = Dir::new("cli_flags_edges");
    // Each run gets past parsing and stops at the missing input file, which
    // its message names: the values themselves were accepted.
    let cases: &[(&str, &[&str])] = &[
        ("dinomaly-extract", &["--batch", "1"]),
        (
            "dinomaly-train",
            &[
                "--iterations",
                "1",
                "--batch",
                "1",
                "--lr",
                "1e-12",
                "--final-lr",
                "0",
                "--warmup",
                "0",
                "--weight-decay",
                "0",
                "--eps",
                "1e-30",
                "--clip",
                "1e-6",
                "--dropout",
                "0",
                "--attention-eps",
                "0",
                "--seed",
                "0",
                "--spike-factor",
                "0",
            ],
        ),
        ("dinomaly-train", &["--dropout", "0.999", "--spike-factor", "1.5", "--save-every", "1"]),
        ("dinomaly-score", &["--max-ratio", "0", "--threshold", "-0.5", "--fail-above", "-1", "--batch", "1"]),
        ("dinomaly-score", &["--max-ratio", "1", "--threshold", "1e300"]),
        ("dinomaly-score", &["--threshold", "-1e-3", "--fail-above", "-2.5e1"]),
        (
            "dinomaly-metrics",
            &["--fpr-limit", "1", "--mask-threshold", "0", "--target-fpr", "0", "--resize", "1", "--crop", "1"],
        ),
        ("dinomaly-metrics", &["--fpr-limit", "1e-9", "--mask-threshold", "0.999", "--target-fpr", "0.999"]),
    ];
    for (tool, flags) in cases {
        let mut args = required(tool, dir.path());
        args.extend(flags.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(tool, &args);
        let err = util::stderr(&out);
        assert_code(&out, 2);
        assert!(
            !err.contains("out of range") && !err.starts_with("error:"),
            "{tool} {flags:?}: refused a value in range:\n{err}"
        );
        assert!(
            err.contains("absent") || err.contains("no samples"),
            "{tool} {flags:?}: stopped for another reason:\n{err}"
        );
    }
}

#[test]
fn cli_flags_negative_thresholds_are_values() {
    let shared = fx::shared();
    let input = fx::lines(&shared.records);
    // Every score exceeds -1: exit 1, every line scored.
    let out = util::run(fx::score(&shared.ckpt, &shared.weights).args(["--fail-above", "-1"]), &input);
    assert_code(&out, 1);
    assert_eq!(parse_lines(&util::stdout(&out)).len(), shared.records.len());
    let out = util::run(fx::score(&shared.ckpt, &shared.weights).args(["--threshold", "-0.5"]), &input);
    assert_code(&out, 0);
    let lines = parse_lines(&util::stdout(&out));
    assert_eq!(lines.len(), shared.records.len());
    assert!(lines.iter().all(|l| l["anomalous"] == serde_json::json!(true)), "{lines:?}");
}

#[test]
fn cli_flags_score_refuses_flags_its_checkpoint_ignores() {
    let shared = fx::shared();
    let input = fx::lines(&shared.records);
    // A dinomaly checkpoint records its layers.
    let out = util::run(fx::score(&shared.ckpt, &shared.weights).args(["--layers", "0,1"]), &input);
    assert_error(&out, &["--layers applies to official and anomalib checkpoints", "records its layers (0,1,2,3)"]);
    assert!(out.stdout.is_empty());
    // No encoder runs on a feature store: --weights would go unused.
    let out = util::run(fx::score(&shared.ckpt, &shared.weights).arg("--features").arg(&shared.store), "");
    assert_error(&out, &["--weights is not used with --features"]);
    assert!(out.stdout.is_empty());

    // Official and anomalib checkpoints (tests/fixtures/score) carry their
    // encoder; anomalib's map is its raw map at the crop size.
    let fixture = |name: &str| util::fixtures().join("score").join(name);
    let image = format!("{}\n", fixture("texture_rgb.jpg").display());
    let score = |ckpt: &str, flags: &[&str]| {
        let mut cmd = util::tool("dinomaly-score");
        cmd.arg("-q").arg("-c").arg(fixture(ckpt)).args(["--layers", "0,1"]).args(flags);
        util::run(&mut cmd, &image)
    };
    for ckpt in ["official.pth", "anomalib.pt"] {
        let kind = if ckpt == "official.pth" { "official" } else { "anomalib" };
        let out = score(ckpt, &["--weights", fx::images()[0].to_str().unwrap()]);
        assert_error(
            &out,
            &[
                "--weights applies to dinomaly checkpoints",
                &format!("an {kind} checkpoint holds its own encoder weights"),
            ],
        );
        assert!(out.stdout.is_empty());
    }
    let out = score("anomalib.pt", &["--map-size", "64"]);
    assert_error(&out, &["--map-size applies to dinomaly and official checkpoints", "anomalib"]);
    assert!(out.stdout.is_empty());
    // ... and works where it applies.
    let dir = Dir::new("cli_flags_map_size");
    let out = score("official.pth", &["--map-size", "64", "--maps-dir", dir.path().to_str().unwrap()]);
    assert_code(&out, 0);
    let line = &parse_lines(&util::stdout(&out))[0];
    let map = dinomaly::io::npy::read_f32_2d(line["map"].as_str().unwrap()).unwrap();
    assert_eq!((map.rows, map.cols), (64, 64));
}

#[test]
fn cli_flags_combinations_that_would_be_ignored_are_refused() {
    let dir = Dir::new("cli_flags_combinations");
    let train = required("dinomaly-train", dir.path());
    let train: Vec<&str> = train.iter().map(String::as_str).collect();
    let out = run("dinomaly-train", &[&train[..], &["--attention", "softmax", "--attention-eps", "1e-6"]].concat());
    assert_error(&out, &["--attention-eps applies to linear attention"]);
    // One validation (at the end) has nothing to choose from.
    let out = run("dinomaly-train", &[&train[..], &["--val", "v.st", "--keep-best", "i-auroc"]].concat());
    assert_error(&out, &["--keep-best needs more than one validation", "10000 iterations"]);
    let out = run(
        "dinomaly-train",
        &[&train[..], &["--val", "v.st", "--keep-best", "i-auroc", "--val-every", "5", "--iterations", "5"]].concat(),
    );
    assert_error(&out, &["--keep-best needs more than one validation", "5 iterations"]);
    // Pixel-level settings with --image-only.
    for flags in [&["--fpr-limit", "0.2"][..], &["--mask-threshold", "0.5"], &["--resize", "448"], &["--crop", "392"]] {
        let out = run("dinomaly-metrics", &[&["--image-only", "-i", "absent.jsonl"][..], flags].concat());
        assert_code(&out, 2);
        let err = util::stderr(&out);
        assert!(err.contains(flags[0]) && err.contains("'--image-only' cannot be used with"), "{flags:?}: {err}");
    }
    assert!(fx::entries(dir.path()).is_empty());
}

#[test]
fn cli_flags_on_error_help_says_what_each_tool_does() {
    for (tool, says) in [
        ("dinomaly-extract", "no feature store written"),
        ("dinomaly-train", "no checkpoint written"),
        ("dinomaly-score", "already on stdout"),
    ] {
        let out = run(tool, &["--help"]);
        assert_code(&out, 0);
        let help = util::stdout(&out).split_whitespace().collect::<Vec<_>>().join(" ");
        let at = help.find("--on-error").unwrap_or_else(|| panic!("{tool}: no --on-error in --help"));
        let text = &help[at..help.len().min(at + 400)];
        assert!(text.contains(says), "{tool}: --on-error help lacks '{says}': {text}");
        assert!(!help.contains("flushing"), "{tool}: {text}");
    }
}

/// `--generate man` of `tool`.
fn man_page(tool: &str) -> String {
    let out = run(tool, &["--generate", "man"]);
    assert_code(&out, 0);
    util::stdout(&out)
}

/// roff text back to plain text (the escapes generate.rs and clap_mangen
/// write).
fn unroff(text: &str) -> String {
    text.replace("\\*(Aq", "'").replace("\\-", "-").replace("\\e", "\\").replace("\\&", "")
}

/// The commands of a shell block: continuation lines joined, comment lines
/// and trailing comments dropped, blanks collapsed.
fn commands(block: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        let line = line.split(" # ").next().unwrap_or_default().trim_end();
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                out.push(current.split_whitespace().collect::<Vec<_>>().join(" "));
                current.clear();
            }
        }
    }
    out
}

/// The first ```sh block of README.md's section on `tool`.
fn readme_examples(tool: &str) -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("read README.md");
    let section =
        readme.split(&format!("\n### {tool}\n")).nth(1).unwrap_or_else(|| panic!("README has no section ### {tool}"));
    let section = section.split("\n## ").next().unwrap_or_default().split("\n### ").next().unwrap_or_default();
    let block = section.split("```sh\n").nth(1).unwrap_or_else(|| panic!("README's {tool} section has no sh block"));
    commands(block.split("```").next().unwrap_or_default())
}

/// The commands of a man page's EXAMPLES section (its .nf blocks).
fn man_examples(page: &str) -> Vec<String> {
    let section = page.split(".SH EXAMPLES\n").nth(1).expect("an EXAMPLES section");
    let section = section.split("\n.SH ").next().unwrap_or_default();
    let mut blocks = String::new();
    for part in section.split(".nf\n").skip(1) {
        blocks.push_str(part.split(".fi\n").next().unwrap_or_default());
    }
    commands(&unroff(&blocks))
}

#[test]
fn cli_flags_man_pages_have_names_examples_and_see_also() {
    let mut names = Vec::new();
    for tool in util::TOOLS {
        let page = man_page(tool);
        let name = page.split(".SH NAME\n").nth(1).and_then(|s| s.lines().next()).expect("a NAME line");
        assert!(unroff(name).starts_with(&format!("{tool} - ")), "{tool}: {name}");
        assert!(!name.contains("chainable command"), "{tool}: the crate's description, not the tool's: {name}");
        names.push(name.to_string());

        let readme = readme_examples(tool);
        assert!(!readme.is_empty(), "{tool}: README shows no example");
        assert_eq!(man_examples(&page), readme, "{tool}: the man page's EXAMPLES differ from README.md's");

        let see_also = page.split(".SH \"SEE ALSO\"\n").nth(1).expect("a SEE ALSO section");
        for other in util::TOOLS.iter().filter(|t| *t != tool) {
            assert!(
                unroff(see_also).contains(&format!(".BR {other} (1)")),
                "{tool}: SEE ALSO lacks {other}: {see_also}"
            );
        }
        // The sections come in the conventional order.
        let at = |s: &str| page.find(s).unwrap_or_else(|| panic!("{tool}: no {s}"));
        assert!(at(".SH OPTIONS") < at(".SH ENVIRONMENT") && at(".SH ENVIRONMENT") < at(".SH EXAMPLES"));
        assert!(at(".SH EXAMPLES") < at(".SH VERSION") && at(".SH VERSION") < at(".SH \"SEE ALSO\""));
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), util::TOOLS.len(), "NAME lines shared between tools: {names:?}");
}

#[test]
fn cli_flags_example_commands_parse() {
    // The README's commands, without their shell plumbing, get past the
    // parser and the early checks of flag combinations: run in an empty
    // folder, each stops at its first missing input instead.
    let dir = Dir::new("cli_flags_examples");
    for tool in util::TOOLS {
        for command in readme_examples(tool) {
            let words: Vec<&str> = command.split_whitespace().collect();
            let start = words.iter().position(|w| w == tool).expect("the tool in its example");
            let args: Vec<&str> =
                words[start + 1..].iter().take_while(|w| !matches!(**w, ">" | ">>" | "<" | "|")).copied().collect();
            let mut cmd = util::tool(tool);
            cmd.current_dir(dir.path()).args(&args);
            let out = util::run(&mut cmd, "");
            let err = util::stderr(&out);
            assert!(!err.starts_with("error:"), "{tool} {args:?}: refused by the parser:\n{err}");
        }
    }
}
