//! How the process's C allocator treats the large, short-lived buffers that
//! libtorch allocates for activations and gradients.
//!
//! glibc serves every allocation above its mmap threshold (at most 32 MB)
//! with a fresh `mmap` and returns it with `munmap` when freed, so each
//! batch's activations (a ViT-B MLP activation of 8 images is 78 MB) are
//! page-faulted and zeroed by the kernel again: 11-12 % of a training
//! iteration's CPU samples and ~20 % of its system time here. Turning
//! `mmap` off for allocations (`M_MMAP_MAX = 0`) and keeping freed memory
//! (a high `M_TRIM_THRESHOLD`) lets the heap reuse those pages: measured on
//! 2 cores, ViT-B scoring of 16 images 25.2 s -> 22.2 s and a training
//! iteration from the store ~13 % faster, for a higher peak RSS (scoring
//! 1.6 -> 2.2 GB, ViT-B batch-16 training 9.1 -> 13.3 GB). This is what
//! PyTorch's CPU tuning guides get from jemalloc or tcmalloc, without
//! another allocator.
//!
//! `DINOMALY_SYSTEM_MALLOC=1` keeps glibc's defaults (for memory-tight
//! runs), as does any setting of glibc's own for these parameters:
//! `MALLOC_MMAP_MAX_`, `MALLOC_MMAP_THRESHOLD_` (moot once mmap is off)
//! or `MALLOC_TRIM_THRESHOLD_` present in the environment with any value,
//! 0 and empty included (glibc has read it before `main`; 0 is a real
//! setting, "return freed memory at once"), or the same tunables in
//! `GLIBC_TUNABLES`. Overwriting them would ignore the user.

use std::ffi::OsString;

/// Environment variable that keeps glibc's defaults.
pub const OPT_OUT_ENV: &str = crate::env::SYSTEM_MALLOC;

/// glibc's variables for the two parameters this module sets.
const GLIBC_VARS: [&str; 3] = ["MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"];

/// glibc's tunables for them, as named in `GLIBC_TUNABLES`.
const GLIBC_TUNABLES: [&str; 3] =
    ["glibc.malloc.mmap_max", "glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold"];

/// Applies the policy above (glibc only; elsewhere nothing happens).
pub fn reuse_large_buffers() {
    if !should_tune(|name| std::env::var_os(name)) {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is safe to call
    // at any time, and these values are within glibc's documented ranges.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Whether the allocator parameters are ours to set, given the
/// environment `get`: not when the user opted out or set glibc's own.
fn should_tune(get: impl Fn(&str) -> Option<OsString>) -> bool {
    let opted_out = crate::env::parse_switch(get(OPT_OUT_ENV).as_deref()).unwrap_or(false);
    let glibc_var_set = GLIBC_VARS.iter().any(|v| get(v).is_some());
    let tunable_set = get("GLIBC_TUNABLES").is_some_and(|t| {
        t.to_string_lossy()
            .split(':')
            .any(|item| GLIBC_TUNABLES.iter().any(|name| item.split('=').next() == Some(name)))
    });
    !(opted_out || glibc_var_set || tunable_set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, OsString)> = pairs.iter().map(|(k, v)| (k.to_string(), v.into())).collect();
        move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn tunes_by_default_and_leaves_the_users_settings_alone() {
        assert!(should_tune(env(&[])));
        // The opt-out is a switch like every other.
        for (value, tune) in [("1", false), ("yes", false), ("0", true), ("", true), ("off", true)] {
            assert_eq!(should_tune(env(&[(OPT_OUT_ENV, value)])), tune, "{OPT_OUT_ENV}={value:?}");
        }
        // glibc's own settings, whatever their value, 0 and empty included.
        for var in GLIBC_VARS {
            for value in ["0", "", "65536"] {
                assert!(!should_tune(env(&[(var, value)])), "{var}={value:?}");
            }
        }
        assert!(!should_tune(env(&[("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")])));
        assert!(!should_tune(env(&[("GLIBC_TUNABLES", "glibc.cpu.x86_shstk=on:glibc.malloc.mmap_max=0")])));
        // Tunables of other parameters are no reason to keep the defaults.
        assert!(should_tune(env(&[("GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX512F")])));
        assert!(should_tune(env(&[("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")])));
    }
}
