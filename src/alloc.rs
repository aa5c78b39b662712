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
//! runs), as does any `MALLOC_MMAP_MAX_`/`MALLOC_TRIM_THRESHOLD_` the user
//! sets.

/// Environment variable that keeps glibc's defaults.
pub const OPT_OUT_ENV: &str = "DINOMALY_SYSTEM_MALLOC";

/// Applies the policy above (glibc only; elsewhere nothing happens).
pub fn reuse_large_buffers() {
    let user_set = [OPT_OUT_ENV, "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"]
        .iter()
        .any(|v| crate::cli::environment::switch_on(v));
    if user_set {
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
