//! `--generate man|complete-bash|complete-zsh|complete-fish`: man pages and
//! shell completions produced from the clap definitions, so they cannot
//! drift from the real flags. Handled before normal parsing, so it works
//! without the tool's required flags.
//!
//! A man page adds to what clap_mangen renders: ENVIRONMENT (from
//! environment.rs), EXAMPLES (the commands README.md shows for the tool, from
//! the table below; tests/cli_flags.rs checks that the two agree) and SEE
//! ALSO (the other tools).

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

/// If `argv` is `TOOL --generate KIND`, writes the artefact to stdout and
/// returns the exit code; otherwise returns `None`.
pub fn handle(argv: &[OsString], command: clap::Command) -> Option<ExitCode> {
    if argv.len() != 3 || argv[1] != "--generate" {
        return None;
    }
    let kind = argv[2].to_string_lossy();
    let mut out = Vec::new();
    match write(&kind, command, &mut out) {
        Ok(()) => {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(&out).and_then(|_| stdout.flush());
            Some(ExitCode::SUCCESS)
        }
        Err(msg) => {
            eprintln!("{msg}");
            Some(ExitCode::from(2))
        }
    }
}

/// Renders one artefact for `command`.
pub fn write(kind: &str, command: clap::Command, out: &mut Vec<u8>) -> Result<(), String> {
    let mut command = command;
    let name = command.get_name().to_string();
    match kind {
        "man" => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .map_err(|e| format!("{name}: cannot render the man page: {e}"))?;
            let page = String::from_utf8(page).map_err(|e| format!("{name}: man page not UTF-8: {e}"))?;
            let before_version = format!("{}{}", super::environment::roff_section(&name), examples_section(&name));
            out.extend_from_slice(with_section(&page, &before_version).as_bytes());
            out.extend_from_slice(see_also_section(&name).as_bytes());
            Ok(())
        }
        "complete-bash" | "complete-zsh" | "complete-fish" => {
            let shell = match kind {
                "complete-bash" => clap_complete::Shell::Bash,
                "complete-zsh" => clap_complete::Shell::Zsh,
                _ => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut command, name, out);
            Ok(())
        }
        other => {
            Err(format!("{name}: --generate takes man, complete-bash, complete-zsh or complete-fish, not '{other}'"))
        }
    }
}

/// The suite's tools, for SEE ALSO (and the tests' list of binaries).
pub const TOOLS: [&str; 6] = [
    "dinomaly-extract",
    "dinomaly-train",
    "dinomaly-score",
    "dinomaly-calibrate",
    "dinomaly-metrics",
    "dinomaly-export",
];

/// One example of a man page: what it does, and the command exactly as
/// README.md shows it (continuation lines included).
pub struct Example {
    pub what: &'static str,
    pub command: &'static str,
}

/// The examples of `tool`'s man page: the commands of its section in
/// README.md, in the same order.
pub fn examples(tool: &str) -> &'static [Example] {
    match tool {
        "dinomaly-extract" => &[
            Example {
                what: "Encode the training images of an MVTec-AD tree into a feature store:",
                command: "dinomaly-extract --dataset mvtec --layout mvtec --split train -o train.safetensors",
            },
            Example {
                what: "Encode the images listed on stdin with ViT-S/14 with registers:",
                command: "find parts/ -name '*.png' | dinomaly-extract -o parts.safetensors --backbone dinov2_vits14_reg4",
            },
            Example {
                what: "Encode shard 2 of 4 of a long list (one part per machine; dinomaly-train takes the parts):",
                command: "dinomaly-extract -i list.jsonl --shard 2/4 --batch 1 -o part2.safetensors",
            },
        ],
        "dinomaly-train" => &[
            Example {
                what: "Train one model for all classes with the paper's MVTec-AD settings:",
                command: "dinomaly-train train.safetensors -o model.safetensors",
            },
            Example {
                what: "Train one model per class, written into models/:",
                command: "dinomaly-train train.safetensors -o models/ --preset separated",
            },
            Example {
                what: "Train on the parts of a sharded extraction, rows in the given order (settings checked):",
                command: "dinomaly-train part1.safetensors part2.safetensors part3.safetensors part4.safetensors -o model.safetensors",
            },
            Example {
                what: "Validate every 1,000 iterations, keep the best image AUROC, stop after three \
                       validations without improvement, save every 500 iterations for --resume, \
                       log every iteration:",
                command: "dinomaly-train train.safetensors -o model.safetensors --val test.safetensors \\\n    \
                          --val-every 1000 --keep-best i-auroc --patience 3 --save-every 500 --log train.jsonl",
            },
            Example {
                what: "Train from the images, encoded at every iteration, when the store would not fit:",
                command: "dinomaly-train --images --dataset mvtec/ --split train --backbone dinov2_vitb14_reg4 -o model.safetensors",
            },
            Example {
                what: "Fine-tune a released model (any kind of checkpoint) on a new product's store:",
                command: "dinomaly-train new.safetensors --init released/model.pth -o tuned.safetensors --iterations 2000 --warmup 50",
            },
        ],
        "dinomaly-score" => &[
            Example {
                what: "Score the test split of an MVTec-AD tree with a calibrated checkpoint, writing maps and \
                       overlays on the original photos and each image's defect regions:",
                command: "dinomaly-score -c model.cal.safetensors --dataset mvtec --layout mvtec --split test \\\n    \
                          --maps-dir maps/ --map-space photo --overlay > scores.jsonl",
            },
            Example {
                what: "From cron: score only new images (an unreadable one is noted once), exit 1 when a score exceeds 0.3:",
                command: "find /incoming -name '*.png' | dinomaly-score -c model.safetensors --on-error skip \\\n    \
                          --skip-existing results.jsonl --fail-above 0.3 >> results.jsonl",
            },
            Example {
                what: "Four machines or GPUs share one list; the shards' outputs concatenated equal one run:",
                command: "dinomaly-score -c model.safetensors --shard 2/4 -i list.jsonl > part2.jsonl",
            },
            Example {
                what: "Live inspection: score each image as soon as it is written into a folder:",
                command: "inotifywait -m -e close_write --format '%w%f' /incoming | dinomaly-score -c model.safetensors",
            },
        ],
        "dinomaly-calibrate" => &[
            Example {
                what: "Calibrate on held-back good images at a 1 % false-positive rate (image and pixel \
                       thresholds per class); the new checkpoint decides:",
                command: "dinomaly-score -c model.safetensors -i good.jsonl --maps-dir calib-maps/ \\\n    \
                          | dinomaly-calibrate -c model.safetensors --target-fpr 0.01 -o model.cal.safetensors",
            },
            Example {
                what: "F1-optimal thresholds from labelled validation lines:",
                command: "dinomaly-calibrate -c model.safetensors --rule f1 -i val-scores.jsonl -o model.cal.safetensors",
            },
        ],
        "dinomaly-metrics" => &[
            Example {
                what: "The paper's table of the seven metrics, per class and mean:",
                command: "dinomaly-metrics --format markdown < scores.jsonl",
            },
            Example {
                what: "Image metrics only, the threshold at a 1 % false-positive rate, ROC and PR curves as SVG:",
                command: "dinomaly-metrics --image-only --target-fpr 0.01 -i scores.jsonl --plots plots/",
            },
            Example {
                what: "A report to look at: the table, curves, score histograms and each class's 6 worst \
                       good and defective images with their maps, the checkpoint's calibrated thresholds:",
                command: "dinomaly-metrics -i scores.jsonl --html report/ --checkpoint model.safetensors --worst 6",
            },
        ],
        "dinomaly-export" => &[
            Example {
                what: "One ONNX file for onnxruntime or OpenVINO (dynamic batch, float32, normalised crops):",
                command: "dinomaly-export -c model.cal.safetensors -o model.onnx",
            },
            Example {
                what: "For TensorRT on a GPU: float16, a fixed batch of 8, raw uint8 crops in:",
                command: "dinomaly-export -c model.safetensors --precision fp16 --batch 8 --input uint8 -o model-fp16.onnx",
            },
            Example {
                what: "An official or anomalib checkpoint (it holds its own encoder):",
                command: "dinomaly-export -c released/model.pth -o official.onnx",
            },
        ],
        _ => &[],
    }
}

/// `text` escaped for roff: backslashes, hyphens (else they may print as
/// dashes), apostrophes (else typographic quotes), and a leading dot or
/// apostrophe that would start a request.
fn roff_escape(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-").replace('\'', "\\*(Aq");
    escaped
        .lines()
        .map(|l| if l.starts_with('.') { format!("\\&{l}") } else { l.to_string() })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The EXAMPLES section: each example's description, then its command
/// indented and unfilled (line breaks kept).
fn examples_section(tool: &str) -> String {
    let list = examples(tool);
    if list.is_empty() {
        return String::new();
    }
    let mut out = String::from(".SH EXAMPLES\n");
    for e in list {
        out.push_str(&format!(".PP\n{}\n.PP\n.RS 4\n.nf\n{}\n.fi\n.RE\n", roff_escape(e.what), roff_escape(e.command)));
    }
    out
}

/// The SEE ALSO section: the suite's other tools.
fn see_also_section(tool: &str) -> String {
    let others: Vec<String> =
        TOOLS.iter().filter(|t| **t != tool).map(|t| format!(".BR {} (1)", roff_escape(t))).collect();
    format!(".SH \"SEE ALSO\"\n{}\n", others.join(",\n"))
}

/// `page` with `section` before its VERSION section (at the end if it has
/// none), where man pages conventionally list the environment.
fn with_section(page: &str, section: &str) -> String {
    match page.find("\n.SH VERSION") {
        Some(at) => format!("{}\n{}{}", &page[..at], section, &page[at + 1..]),
        None => format!("{page}{section}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_section_goes_before_the_version() {
        let page = ".TH x 1\n.SH NAME\nx\n.SH VERSION\nv1\n";
        assert_eq!(
            with_section(page, ".SH ENVIRONMENT\n.TP\nA\n"),
            ".TH x 1\n.SH NAME\nx\n.SH ENVIRONMENT\n.TP\nA\n.SH VERSION\nv1\n"
        );
        assert_eq!(with_section(".SH NAME\nx\n", ".SH E\n"), ".SH NAME\nx\n.SH E\n");
    }

    #[test]
    fn roff_text_is_escaped() {
        assert_eq!(roff_escape("find -name '*.png' \\\n.x"), "find \\-name \\*(Aq*.png\\*(Aq \\e\n\\&.x");
    }

    #[test]
    fn see_also_lists_the_other_tools() {
        let s = see_also_section("dinomaly-score");
        assert!(s.starts_with(".SH \"SEE ALSO\"\n"), "{s}");
        assert!(!s.contains("dinomaly\\-score"), "{s}");
        for t in ["extract", "train", "metrics"] {
            assert!(s.contains(&format!(".BR dinomaly\\-{t} (1)")), "{s}");
        }
    }
}
