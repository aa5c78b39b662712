//! The environment variables the tools read, in one table that both
//! `--help` (after the options) and the man pages' ENVIRONMENT section are
//! rendered from, so neither can forget one; and how a switch variable is
//! read.

/// One variable and what it does.
pub struct Var {
    pub name: &'static str,
    pub meaning: &'static str,
}

/// Read by every tool at start-up.
const PROCESS: &[Var] = &[
    Var {
        name: "DINOMALY_NO_CUDA",
        meaning: "1: do not load libtorch's CUDA backend, even where it is installed (CPU only).",
    },
    Var {
        name: "DINOMALY_SYSTEM_MALLOC",
        meaning: "1: keep glibc's allocator defaults. By default freed large buffers are kept for \
                  reuse instead of being returned and page-faulted in again each batch (faster, \
                  higher peak memory).",
    },
    Var {
        name: "DINOMALY_MKL_VENDOR_CHECK",
        meaning: "1: let MKL choose its kernels by CPU vendor. By default it runs its AVX-512 \
                  kernels on non-Intel CPUs that have AVX-512 (faster; results differ from \
                  MKL's own choice in the last bits).",
    },
    Var {
        name: "OMP_NUM_THREADS",
        meaning: "threads of libtorch's CPU kernels (default: one per core).",
    },
    Var {
        name: "RAYON_NUM_THREADS",
        meaning: "threads for decoding images and computing metrics (default: one per core).",
    },
    Var {
        name: "OMP_WAIT_POLICY",
        meaning: "passive: idle libtorch threads sleep instead of spinning (advisable on a \
                  machine shared with other jobs).",
    },
];

/// Read by the tools that open encoder weights.
const WEIGHTS: &[Var] = &[
    Var {
        name: "DINOMALY_CACHE",
        meaning: "where weights are looked up by backbone name and downloaded to (default \
                  $XDG_CACHE_HOME/dinomaly, else ~/.cache/dinomaly).",
    },
    Var {
        name: "DINOMALY_WEIGHTS_URL",
        meaning: "base URL of a mirror of Meta's weight files (same relative paths).",
    },
    Var {
        name: "DINOMALY_OFFLINE",
        meaning: "1: never download; a missing file is an error that says where to put it.",
    },
];

/// Whether the switch variable `name` is on: set, not empty and not "0".
pub fn switch_on(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0")
}

/// The variables `tool` reads.
pub fn vars_for(tool: &str) -> Vec<&'static Var> {
    let opens_weights = matches!(tool, "dinomaly-extract" | "dinomaly-train" | "dinomaly-score");
    let weights: &[Var] = if opens_weights { WEIGHTS } else { &[] };
    weights.iter().chain(PROCESS).collect()
}

/// The text `--help` shows after the options.
pub fn help_text(tool: &str) -> String {
    let mut text = String::from("Environment:");
    for var in vars_for(tool) {
        text.push_str(&format!("\n  {}\n          {}", var.name, squeeze(var.meaning)));
    }
    text
}

/// The man page's ENVIRONMENT section (roff).
pub fn roff_section(tool: &str) -> String {
    let mut roff = String::from(".SH ENVIRONMENT\n");
    for var in vars_for(tool) {
        roff.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", var.name, roff_text(&squeeze(var.meaning))));
    }
    roff
}

/// Collapses the runs of spaces left by the source's line continuations.
fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Escapes text for a roff text line: backslashes, and a leading dot or
/// apostrophe that would make the line a request.
fn roff_text(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_lists_the_process_variables_and_only_weight_readers_the_weight_ones() {
        for tool in ["dinomaly-extract", "dinomaly-train", "dinomaly-score", "dinomaly-metrics"] {
            let names: Vec<&str> = vars_for(tool).iter().map(|v| v.name).collect();
            assert!(names.contains(&"DINOMALY_MKL_VENDOR_CHECK"), "{tool}");
            assert_eq!(names.contains(&"DINOMALY_CACHE"), tool != "dinomaly-metrics", "{tool}");
        }
    }

    #[test]
    fn the_variables_the_code_reads_are_listed() {
        let names: Vec<&str> = vars_for("dinomaly-score").iter().map(|v| v.name).collect();
        for read in [
            crate::mkl_kernels::VENDOR_CHECK_ENV,
            crate::alloc::OPT_OUT_ENV,
            crate::device::NO_CUDA_ENV,
        ] {
            assert!(names.contains(&read), "{read} is read but not documented");
        }
    }

    #[test]
    fn help_and_roff_render_each_variable_once() {
        let help = help_text("dinomaly-metrics");
        assert!(help.starts_with("Environment:\n  DINOMALY_NO_CUDA\n          1: do not load"));
        assert!(!help.contains("  reuse"), "continuation spaces squeezed: {help}");
        let roff = roff_section("dinomaly-train");
        assert_eq!(roff.matches(".TP\n").count(), vars_for("dinomaly-train").len());
        assert!(roff.contains("\\fBDINOMALY_OFFLINE\\fR\n1: never download"));
        assert!(roff.contains("$XDG_CACHE_HOME/dinomaly"));
        assert_eq!(roff_text(".hidden \\ x-y"), "\\&.hidden \\e x\\-y");
    }
}
