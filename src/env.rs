//! The environment variables the tools read: each name defined once here,
//! in one table that `--help` and the man pages' ENVIRONMENT section are
//! rendered from (`cli::environment`), so neither can forget one; how a
//! value is read; and the start-up check that refuses a value the tools
//! would misread.
//!
//! One rule for every switch ([`SWITCH_RULE`]): unset or empty is off;
//! `1`, `true`, `yes`, `on` are on; `0`, `false`, `no`, `off` are off (any
//! case); anything else is an error naming the variable, raised by
//! [`check`] before the tool does anything. Readers go through
//! [`switch_on`], so no variable can read the same text differently.

use std::ffi::OsStr;

/// Switch: do not load libtorch's CUDA backend (`crate::device`).
pub const NO_CUDA: &str = "DINOMALY_NO_CUDA";
/// Switch: keep glibc's allocator defaults (`crate::alloc`).
pub const SYSTEM_MALLOC: &str = "DINOMALY_SYSTEM_MALLOC";
/// Switch: let MKL choose its kernels by CPU vendor (`crate::mkl_kernels`).
pub const MKL_VENDOR_CHECK: &str = "DINOMALY_MKL_VENDOR_CHECK";
/// Count: the largest image decoded, in pixels (`crate::data::decode`).
pub const MAX_IMAGE_PIXELS: &str = "DINOMALY_MAX_IMAGE_PIXELS";
/// Text: ATen's kernel choice, read to know whether bf16 is native (`crate::cpu`).
pub const ATEN_CPU_CAPABILITY: &str = "ATEN_CPU_CAPABILITY";
/// Text: the weights cache (`crate::backbone::download`).
pub const CACHE: &str = "DINOMALY_CACHE";
/// Text: a mirror of Meta's weight files (`crate::backbone::download`).
pub const WEIGHTS_URL: &str = "DINOMALY_WEIGHTS_URL";
/// Switch: never download weights (`crate::backbone::download`).
pub const OFFLINE: &str = "DINOMALY_OFFLINE";

/// One variable and what it does.
pub struct Var {
    pub name: &'static str,
    pub meaning: &'static str,
    /// What values it takes; [`check`] validates switches and counts.
    pub form: Form,
}

/// The values a variable takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// On or off, read by the rule of [`SWITCH_RULE`].
    Switch,
    /// A whole number of at least 1; unset or empty means the default.
    Count,
    /// Free text (a path, a URL) or a value read by another library
    /// (OpenMP, rayon), which checks it itself.
    Text,
}

/// How a switch is read, as the help and man pages state it.
pub const SWITCH_RULE: &str = "switches are off when unset or empty, on for 1, true, yes or on, off \
                               for 0, false, no or off (any case); other values are refused";

/// Read by every tool at start-up.
const PROCESS: &[Var] = &[
    Var {
        name: NO_CUDA,
        meaning: "switch; on: do not load libtorch's CUDA backend, even where it is installed (CPU \
                  only).",
        form: Form::Switch,
    },
    Var {
        name: SYSTEM_MALLOC,
        meaning: "switch; on: keep glibc's allocator defaults. By default freed large buffers are \
                  kept for reuse instead of being returned and page-faulted in again each batch \
                  (faster, higher peak memory). A MALLOC_MMAP_MAX_, MALLOC_MMAP_THRESHOLD_ or \
                  MALLOC_TRIM_THRESHOLD_ you set (any value, 0 included), or the same \
                  glibc.malloc tunable in GLIBC_TUNABLES, keeps glibc's defaults too.",
        form: Form::Switch,
    },
    Var {
        name: MKL_VENDOR_CHECK,
        meaning: "switch; on: let MKL choose its kernels by CPU vendor. By default it runs its \
                  AVX-512 kernels on non-Intel CPUs that have AVX-512 (faster; results differ \
                  from MKL's own choice in the last bits).",
        form: Form::Switch,
    },
    Var {
        name: MAX_IMAGE_PIXELS,
        meaning: "largest image or mask, in pixels (width x height), that is decoded; a larger \
                  one is refused from its header, before its pixels are read, as Pillow refuses \
                  a decompression bomb (default 178956970: twice Pillow's Image.MAX_IMAGE_PIXELS, \
                  above which Pillow raises DecompressionBombError).",
        form: Form::Count,
    },
    Var {
        name: ATEN_CPU_CAPABILITY,
        meaning: "libtorch's CPU kernels (default, avx2, avx512); read too to know whether bf16 \
                  matrix products run natively, for the note on --precision bf16.",
        form: Form::Text,
    },
    Var {
        name: "OMP_NUM_THREADS",
        meaning: "threads of libtorch's CPU kernels (default: one per core).",
        form: Form::Text,
    },
    Var {
        name: "RAYON_NUM_THREADS",
        meaning: "threads for decoding images and computing metrics (default: one per core).",
        form: Form::Text,
    },
    Var {
        name: "OMP_WAIT_POLICY",
        meaning: "passive: idle libtorch threads sleep instead of spinning (advisable on a \
                  machine shared with other jobs).",
        form: Form::Text,
    },
];

/// Read by the tools that open encoder weights.
const WEIGHTS: &[Var] = &[
    Var {
        name: CACHE,
        meaning: "where weights are looked up by backbone name and downloaded to (default \
                  $XDG_CACHE_HOME/dinomaly, else ~/.cache/dinomaly).",
        form: Form::Text,
    },
    Var {
        name: WEIGHTS_URL,
        meaning: "base URL of a mirror of Meta's weight files (same relative paths).",
        form: Form::Text,
    },
    Var {
        name: OFFLINE,
        meaning: "switch; on: never download; a missing file is an error that says where to put it.",
        form: Form::Switch,
    },
];

/// Reads a switch's value by [`SWITCH_RULE`]; the error is the reason.
pub fn parse_switch(value: Option<&OsStr>) -> Result<bool, String> {
    let Some(value) = value else { return Ok(false) };
    let text = value.to_str().unwrap_or("\u{fffd}").trim().to_ascii_lowercase();
    match text.as_str() {
        "" | "0" | "false" | "no" | "off" => Ok(false),
        "1" | "true" | "yes" | "on" => Ok(true),
        _ => Err(format!(
            "'{}' is not a switch value: use 1, true, yes or on; 0, false, no or off; or leave it empty",
            value.to_string_lossy()
        )),
    }
}

/// Whether the switch variable `name` is on, by [`SWITCH_RULE`]. A value
/// outside the rule reads as off here: the tools refuse it at start-up
/// ([`check`]) before anything reads it.
pub fn switch_on(name: &str) -> bool {
    parse_switch(std::env::var_os(name).as_deref()).unwrap_or(false)
}

/// Reads a count: `None` when unset or empty; the error is the reason.
pub fn parse_count(value: Option<&OsStr>) -> Result<Option<u64>, String> {
    let Some(value) = value else { return Ok(None) };
    let text = value.to_str().unwrap_or("\u{fffd}").trim();
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => Err(format!("'{}' is not a whole number of at least 1", value.to_string_lossy())),
    }
}

/// The count variable `name`, or `default` when it is unset, empty or (in
/// a process that skipped [`check`]) not a count.
pub fn count_or(name: &str, default: u64) -> u64 {
    parse_count(std::env::var_os(name).as_deref()).ok().flatten().unwrap_or(default)
}

/// Refuses any switch or count variable of `tool` whose value the rules
/// above do not read: one line naming the variable. Every tool calls it
/// first (`cli::exit::main_with`).
pub fn check(tool: &str) -> Result<(), String> {
    check_with(tool, |name| std::env::var_os(name))
}

/// [`check`] with the environment given by `get`.
fn check_with(tool: &str, get: impl Fn(&str) -> Option<std::ffi::OsString>) -> Result<(), String> {
    for var in vars_for(tool) {
        let value = get(var.name);
        let verdict = match var.form {
            Form::Switch => parse_switch(value.as_deref()).map(drop),
            Form::Count => parse_count(value.as_deref()).map(drop),
            Form::Text => Ok(()),
        };
        verdict.map_err(|reason| format!("environment variable {}: {reason}", var.name))?;
    }
    Ok(())
}

/// The variables `tool` reads.
pub fn vars_for(tool: &str) -> Vec<&'static Var> {
    let opens_weights = matches!(tool, "dinomaly-extract" | "dinomaly-train" | "dinomaly-score" | "dinomaly-export");
    let weights: &[Var] = if opens_weights { WEIGHTS } else { &[] };
    weights.iter().chain(PROCESS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_lists_the_process_variables_and_only_weight_readers_the_weight_ones() {
        for tool in ["dinomaly-extract", "dinomaly-train", "dinomaly-score", "dinomaly-export", "dinomaly-metrics"] {
            let names: Vec<&str> = vars_for(tool).iter().map(|v| v.name).collect();
            assert!(names.contains(&"DINOMALY_MKL_VENDOR_CHECK"), "{tool}");
            assert_eq!(names.contains(&"DINOMALY_CACHE"), tool != "dinomaly-metrics", "{tool}");
        }
    }

    #[test]
    fn the_variables_the_code_reads_are_listed() {
        let names: Vec<&str> = vars_for("dinomaly-score").iter().map(|v| v.name).collect();
        for read in [
            MKL_VENDOR_CHECK,
            SYSTEM_MALLOC,
            NO_CUDA,
            MAX_IMAGE_PIXELS,
            ATEN_CPU_CAPABILITY,
            CACHE,
            WEIGHTS_URL,
            OFFLINE,
        ] {
            assert!(names.contains(&read), "{read} is read but not documented");
        }
        let switches: Vec<&str> =
            vars_for("dinomaly-score").iter().filter(|v| v.form == Form::Switch).map(|v| v.name).collect();
        assert_eq!(
            switches,
            ["DINOMALY_OFFLINE", "DINOMALY_NO_CUDA", "DINOMALY_SYSTEM_MALLOC", "DINOMALY_MKL_VENDOR_CHECK"]
        );
        assert!(
            vars_for("dinomaly-metrics").iter().any(|v| v.name == MAX_IMAGE_PIXELS),
            "documented for metrics (masks)"
        );
    }

    #[test]
    fn one_switch_rule() {
        let read = |v: &str| parse_switch(Some(OsStr::new(v)));
        assert_eq!(parse_switch(None), Ok(false));
        for off in ["", "0", "false", "no", "off", "OFF", "False"] {
            assert_eq!(read(off), Ok(false), "{off:?}");
        }
        for on in ["1", "true", "yes", "on", "TRUE", "Yes"] {
            assert_eq!(read(on), Ok(true), "{on:?}");
        }
        for bad in ["2", "maybe", "enable", "-1"] {
            assert!(read(bad).unwrap_err().contains(&format!("'{bad}' is not a switch value")));
        }
        use std::os::unix::ffi::OsStrExt;
        assert!(parse_switch(Some(OsStr::from_bytes(b"\xff"))).is_err());
    }

    #[test]
    fn counts_are_whole_numbers_from_one() {
        let read = |v: &str| parse_count(Some(OsStr::new(v)));
        assert_eq!(parse_count(None), Ok(None));
        assert_eq!(read(""), Ok(None));
        assert_eq!(read("1"), Ok(Some(1)));
        assert_eq!(read("300000000"), Ok(Some(300_000_000)));
        for bad in ["0", "-5", "1e9", "lots", "18446744073709551616"] {
            assert!(read(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn check_names_the_variable_of_a_bad_value_for_every_switch_and_count() {
        for tool in ["dinomaly-extract", "dinomaly-train", "dinomaly-score", "dinomaly-metrics"] {
            assert_eq!(check_with(tool, |_| None), Ok(()));
            assert_eq!(check_with(tool, |_| Some("".into())), Ok(()));
            for var in vars_for(tool) {
                let bad = |name: &str| (name == var.name).then(|| "maybe".into());
                match var.form {
                    Form::Text => assert_eq!(check_with(tool, bad), Ok(())),
                    Form::Switch | Form::Count => {
                        let err = check_with(tool, bad).unwrap_err();
                        assert!(err.starts_with(&format!("environment variable {}: 'maybe'", var.name)), "{err}");
                    }
                }
            }
        }
        // DINOMALY_OFFLINE is only read (and checked) where weights are opened.
        assert_eq!(check_with("dinomaly-metrics", |n| (n == "DINOMALY_OFFLINE").then(|| "x".into())), Ok(()));
    }
}
