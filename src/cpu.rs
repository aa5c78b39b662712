//! What this CPU offers the kernels libtorch runs, read once: the vendor,
//! AVX-512, and native bfloat16 arithmetic (`avx512_bf16`, `amx_bf16`); and
//! the decisions taken from them, kept apart from the detection so that
//! they are unit-tested for every CPU, not only the one running the tests.
//!
//! libtorch picks its own (ATen) CPU kernels from CPUID unless
//! `ATEN_CPU_CAPABILITY` names a level (`avx512`, `avx2`, `default`), and
//! bfloat16 is only fast where those kernels are the AVX-512 ones and the
//! CPU multiplies bfloat16 natively. Elsewhere every bfloat16 value is
//! widened to float32 and rounded back around each operation: slower than
//! float32 (measured on the 2-core AMD EPYC without AVX-512: scoring 0.4
//! img/s in bf16 against 2.2 img/s in fp32).

use std::sync::OnceLock;

/// Environment variable that sets libtorch's CPU kernel level.
pub const ATEN_CAPABILITY_ENV: &str = crate::env::ATEN_CPU_CAPABILITY;

/// The CPU features the decisions below depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    /// CPUID vendor "GenuineIntel".
    pub genuine_intel: bool,
    /// AVX-512 F, BW, DQ and VL, enabled by the OS: what libtorch's AVX-512
    /// kernels and MKL's Skylake-server kernels need.
    pub avx512: bool,
    /// AVX-512 BF16 (bfloat16 dot products).
    pub avx512_bf16: bool,
    /// AMX BF16 (bfloat16 tile products).
    pub amx_bf16: bool,
}

/// libtorch's CPU kernel level (its `CPUCapability` on x86).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtenKernels {
    /// No vector extensions assumed.
    Default,
    /// AVX2 + FMA.
    Avx2,
    /// AVX-512.
    Avx512,
}

/// This CPU's features, detected once per process.
pub fn features() -> Features {
    static FEATURES: OnceLock<Features> = OnceLock::new();
    *FEATURES.get_or_init(detect::features)
}

/// The kernel level libtorch runs in this process.
pub fn aten_kernels() -> AtenKernels {
    let env = std::env::var(ATEN_CAPABILITY_ENV).ok();
    aten_kernels_for(&features(), env.as_deref())
}

/// Whether bfloat16 is native here: the AVX-512 kernels run and the CPU has
/// bfloat16 arithmetic.
pub fn native_bf16() -> bool {
    native_bf16_for(&features(), aten_kernels())
}

/// The kernel level libtorch picks: the one `ATEN_CPU_CAPABILITY` names
/// (libtorch takes it without checking the CPU), else AVX-512 where the CPU
/// has it, else AVX2 (every x86-64 CPU this project builds for has it).
/// Values libtorch ignores (with a warning) are ignored here too.
pub fn aten_kernels_for(cpu: &Features, env: Option<&str>) -> AtenKernels {
    match env {
        Some("avx512") => AtenKernels::Avx512,
        Some("avx2") => AtenKernels::Avx2,
        Some("default") => AtenKernels::Default,
        _ if cpu.avx512 => AtenKernels::Avx512,
        _ => AtenKernels::Avx2,
    }
}

/// bfloat16 is native when the AVX-512 kernels run on a CPU that has
/// AVX-512 BF16 or AMX BF16.
pub fn native_bf16_for(cpu: &Features, kernels: AtenKernels) -> bool {
    kernels == AtenKernels::Avx512 && cpu.avx512 && (cpu.avx512_bf16 || cpu.amx_bf16)
}

/// The note the tools print when `--precision bf16` runs on the CPU
/// without native bfloat16, or `None` where bfloat16 is native (or the
/// device is not the CPU).
pub fn bf16_note(device: tch::Device) -> Option<String> {
    bf16_note_for(device, &features(), aten_kernels())
}

fn bf16_note_for(device: tch::Device, cpu: &Features, kernels: AtenKernels) -> Option<String> {
    if device != tch::Device::Cpu || native_bf16_for(cpu, kernels) {
        return None;
    }
    let why = if kernels != AtenKernels::Avx512 && cpu.avx512 {
        format!("{ATEN_CAPABILITY_ENV} selects {} kernels", kernels_name(kernels))
    } else {
        "this CPU has no avx512_bf16 or amx_bf16".to_string()
    };
    Some(format!(
        "--precision bf16 on a CPU without native bfloat16 ({why}): bfloat16 arithmetic is emulated, expect it to be slower than fp32"
    ))
}

fn kernels_name(kernels: AtenKernels) -> &'static str {
    match kernels {
        AtenKernels::Default => "default",
        AtenKernels::Avx2 => "AVX2",
        AtenKernels::Avx512 => "AVX-512",
    }
}

#[cfg(target_arch = "x86_64")]
mod detect {
    use std::arch::x86_64::{__cpuid_count, CpuidResult};

    fn cpuid(leaf: u32, sub_leaf: u32) -> CpuidResult {
        // SAFETY: CPUID exists on every x86_64 CPU; a leaf above the
        // maximum returns data of the highest leaf, which `features` never
        // reads (it checks the maximum first). Safe from Rust 1.87;
        // rust-version is older.
        #[allow(unused_unsafe)]
        unsafe {
            __cpuid_count(leaf, sub_leaf)
        }
    }

    pub fn features() -> super::Features {
        let id = cpuid(0, 0);
        let mut vendor = [0u8; 12];
        vendor[..4].copy_from_slice(&id.ebx.to_le_bytes());
        vendor[4..8].copy_from_slice(&id.edx.to_le_bytes());
        vendor[8..].copy_from_slice(&id.ecx.to_le_bytes());
        // std checks that the OS saves the AVX-512 state too.
        let avx512 = std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl");
        let (mut avx512_bf16, mut amx_bf16) = (false, false);
        if id.eax >= 7 {
            // Leaf 7.0 EDX bit 22: AMX-BF16; leaf 7.1 EAX bit 5: AVX512_BF16
            // (7.1 exists when 7.0 EAX, the highest sub-leaf, is >= 1).
            let leaf7 = cpuid(7, 0);
            amx_bf16 = leaf7.edx & (1 << 22) != 0;
            if leaf7.eax >= 1 {
                avx512_bf16 = avx512 && cpuid(7, 1).eax & (1 << 5) != 0;
            }
        }
        super::Features { genuine_intel: &vendor == b"GenuineIntel", avx512, avx512_bf16, amx_bf16 }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod detect {
    pub fn features() -> super::Features {
        super::Features::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const XEON_AMX: Features = Features { genuine_intel: true, avx512: true, avx512_bf16: true, amx_bf16: true };
    const EPYC_ZEN2: Features = Features { genuine_intel: false, avx512: false, avx512_bf16: false, amx_bf16: false };
    const EPYC_ZEN4: Features = Features { genuine_intel: false, avx512: true, avx512_bf16: true, amx_bf16: false };
    const SKYLAKE_X: Features = Features { genuine_intel: true, avx512: true, avx512_bf16: false, amx_bf16: false };

    #[test]
    fn kernels_follow_the_cpu_unless_the_environment_names_a_level() {
        assert_eq!(aten_kernels_for(&XEON_AMX, None), AtenKernels::Avx512);
        assert_eq!(aten_kernels_for(&EPYC_ZEN2, None), AtenKernels::Avx2);
        assert_eq!(aten_kernels_for(&XEON_AMX, Some("avx2")), AtenKernels::Avx2);
        assert_eq!(aten_kernels_for(&XEON_AMX, Some("default")), AtenKernels::Default);
        assert_eq!(aten_kernels_for(&EPYC_ZEN2, Some("avx512")), AtenKernels::Avx512);
        // libtorch ignores values it does not know, and so do we.
        assert_eq!(aten_kernels_for(&XEON_AMX, Some("AVX2")), AtenKernels::Avx512);
        assert_eq!(aten_kernels_for(&EPYC_ZEN2, Some("")), AtenKernels::Avx2);
    }

    #[test]
    fn bf16_is_native_only_with_avx512_kernels_and_bf16_arithmetic() {
        assert!(native_bf16_for(&XEON_AMX, AtenKernels::Avx512));
        assert!(native_bf16_for(&EPYC_ZEN4, AtenKernels::Avx512));
        assert!(!native_bf16_for(&XEON_AMX, AtenKernels::Avx2), "the emulation of an AVX2 CPU");
        assert!(!native_bf16_for(&XEON_AMX, AtenKernels::Default));
        assert!(!native_bf16_for(&SKYLAKE_X, AtenKernels::Avx512));
        assert!(!native_bf16_for(&EPYC_ZEN2, AtenKernels::Avx2));
        // A level forced above what the CPU has does not make it native.
        assert!(!native_bf16_for(&EPYC_ZEN2, AtenKernels::Avx512));
    }

    #[test]
    fn the_bf16_note_says_why_and_only_on_the_cpu() {
        let cpu = tch::Device::Cpu;
        assert_eq!(bf16_note_for(cpu, &XEON_AMX, AtenKernels::Avx512), None);
        assert_eq!(bf16_note_for(tch::Device::Cuda(0), &EPYC_ZEN2, AtenKernels::Avx2), None);
        let no_bf16 = bf16_note_for(cpu, &EPYC_ZEN2, AtenKernels::Avx2).expect("a note");
        assert!(no_bf16.contains("no avx512_bf16 or amx_bf16") && no_bf16.contains("slower than fp32"), "{no_bf16}");
        let forced = bf16_note_for(cpu, &XEON_AMX, AtenKernels::Avx2).expect("a note");
        assert!(forced.contains("ATEN_CPU_CAPABILITY selects AVX2 kernels"), "{forced}");
        assert_eq!(forced.lines().count(), 1);
        assert!(bf16_note_for(cpu, &SKYLAKE_X, AtenKernels::Avx512).is_some());
    }

    /// The detection agrees with the kernel's view of this CPU.
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn detection_agrees_with_proc_cpuinfo() {
        let text = std::fs::read_to_string("/proc/cpuinfo").expect("read /proc/cpuinfo");
        let flags: std::collections::HashSet<&str> = text
            .lines()
            .find(|l| l.starts_with("flags"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, f)| f.split_whitespace().collect())
            .expect("a flags line");
        let cpu = features();
        let avx512 = ["avx512f", "avx512bw", "avx512dq", "avx512vl"].iter().all(|f| flags.contains(f));
        assert_eq!(cpu.avx512, avx512, "{cpu:?}");
        assert_eq!(cpu.avx512_bf16, flags.contains("avx512_bf16"), "{cpu:?}");
        assert_eq!(cpu.amx_bf16, flags.contains("amx_bf16"), "{cpu:?}");
        assert_eq!(cpu.genuine_intel, text.contains("GenuineIntel"), "{cpu:?}");
        assert_eq!(bf16_note(tch::Device::Cpu).is_none(), native_bf16());
    }
}
