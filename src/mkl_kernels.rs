//! Which matrix-multiply kernels the MKL inside libtorch runs on AMD CPUs.
//!
//! MKL chooses its sgemm kernels by CPU vendor before CPU features: on an
//! AMD CPU it runs its "zen" AVX2 kernels even where the CPU has AVX-512,
//! and it asks `mkl_serv_intel_cpu_true()` (a symbol that libtorch_cpu.so
//! exports and calls through its PLT, so a definition in the executable
//! takes its place) whether it may use the others. Executables of this
//! crate define it (build.rs exports it) and answer yes where the CPU has
//! the AVX-512 subsets MKL's AVX-512 kernels need, so that MKL picks its
//! kernels by feature. Measured on the 2-core AMD EPYC (Zen 4) of the
//! benchmarks, libtorch 2.11: the matrix products of a ViT-B layer go from
//! 166-203 to 183-214 GFLOP/s (bench/sgemm_rates.py; the two cores' FMA
//! peak is 230-234), ViT-B scoring of 16 images 21.6 s -> 20.0 s, a
//! batch-16 training iteration 26.8 s -> 24.8 s (bench/notes.md). Another
//! kernel sums in another order, so results move in the last bits, well
//! within the suite's parity tolerances (fp32 layers 1e-5 relative).
//!
//! On Intel CPUs the answer is MKL's own (yes); on CPUs without AVX-512 it
//! is the vendor check's (AVX2 kernels either way); `DINOMALY_MKL_VENDOR_CHECK=1`
//! keeps MKL's own answer everywhere.

use std::sync::OnceLock;

/// Environment variable that restores MKL's vendor check.
pub const VENDOR_CHECK_ENV: &str = crate::env::MKL_VENDOR_CHECK;

/// Whether MKL is told it may use its Intel kernels, decided once per
/// process.
pub fn intel_kernels_allowed() -> bool {
    static CHOICE: OnceLock<bool> = OnceLock::new();
    *CHOICE.get_or_init(|| {
        let opted_out = crate::env::switch_on(VENDOR_CHECK_ENV);
        let cpu = crate::cpu::features();
        decide(cpu.genuine_intel, cpu.avx512, opted_out)
    })
}

/// The answer for a CPU: MKL's own (the vendor) unless the CPU has the
/// AVX-512 that the faster kernels need and the user did not opt out.
fn decide(genuine_intel: bool, has_avx512: bool, opted_out: bool) -> bool {
    genuine_intel || (has_avx512 && !opted_out)
}

/// MKL's question "may the Intel code paths run?" (see the module header).
/// It must not unwind: it only reads a decided flag.
#[no_mangle]
pub extern "C" fn mkl_serv_intel_cpu_true() -> std::os::raw::c_int {
    std::os::raw::c_int::from(intel_kernels_allowed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intel_cpus_keep_mkls_answer_and_others_need_avx512() {
        assert!(decide(true, false, false));
        assert!(decide(true, true, true), "opting out never turns an Intel CPU's yes into no");
        assert!(decide(false, true, false));
        assert!(!decide(false, true, true));
        assert!(!decide(false, false, false));
    }

    #[test]
    fn the_exported_answer_is_the_decision() {
        assert_eq!(mkl_serv_intel_cpu_true() == 1, intel_kernels_allowed());
    }

    /// The dynamic linker binds the name to this executable's definition
    /// (build.rs exports it), which is what libtorch_cpu.so's calls reach;
    /// without the export the name would resolve to MKL's own function.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_hook_is_what_the_dynamic_linker_binds() {
        let _ = tch::Tensor::zeros([1], (tch::Kind::Float, tch::Device::Cpu)); // libtorch loaded
                                                                               // SAFETY: dlsym with a NUL-terminated name only looks the symbol up.
        let bound = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"mkl_serv_intel_cpu_true".as_ptr()) };
        assert_eq!(bound as usize, mkl_serv_intel_cpu_true as *const () as usize);
    }
}
