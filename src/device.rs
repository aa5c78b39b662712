//! Choosing where tensors live: `--device auto|cpu|cuda|cuda:N`.
//!
//! One binary serves CPU-only and CUDA machines. The linker drops
//! `libtorch_cuda.so` from the binary (it is linked "as needed" and nothing
//! references it by symbol), so libtorch never registers its CUDA backend and
//! `tch::Cuda::is_available()` is false even on a GPU machine. Linking it
//! eagerly instead makes the binary fail to start where the CUDA libraries are
//! absent. So [`preload_cuda`] dlopens it at start-up, from the folder that
//! `libtorch_cpu.so` was loaded from, before any other tch call; on a CPU
//! machine the dlopen fails quietly. `DINOMALY_NO_CUDA=1` skips it.

use std::ffi::{CStr, CString};
use std::fmt;
use std::str::FromStr;
use std::sync::Once;

static PRELOAD: Once = Once::new();

/// Environment variable that keeps the CUDA backend from loading.
pub const NO_CUDA_ENV: &str = "DINOMALY_NO_CUDA";

/// Loads libtorch's CUDA backend if it is present next to `libtorch_cpu.so`.
///
/// Must run before the first tch call of the process; every binary and test
/// binary calls it first. Calling it again does nothing.
pub fn preload_cuda() {
    PRELOAD.call_once(|| {
        if std::env::var_os(NO_CUDA_ENV).is_some_and(|v| v != "0") {
            return;
        }
        let Some(dir) = libtorch_dir() else { return };
        let path = format!("{dir}/libtorch_cuda.so");
        let Ok(cpath) = CString::new(path) else { return };
        // SAFETY: dlopen with a valid NUL-terminated path; the handle is
        // deliberately leaked so the library stays loaded for the process.
        unsafe {
            libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL);
        }
    });
}

/// The folder holding the loaded `libtorch_cpu.so`, found by walking the
/// loaded objects of the process.
fn libtorch_dir() -> Option<String> {
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: called by dl_iterate_phdr with a valid info pointer and the
        // `data` we passed, which points at an Option<String>.
        let out = &mut *(data as *mut Option<String>);
        let name = (*info).dlpi_name;
        if name.is_null() {
            return 0;
        }
        let name = CStr::from_ptr(name).to_string_lossy();
        if name.ends_with("/libtorch_cpu.so") {
            let dir = name.rsplit_once('/').map(|(d, _)| d.to_string());
            *out = dir;
            return 1;
        }
        0
    }
    let mut found: Option<String> = None;
    // SAFETY: the callback only reads the info struct and writes `found`.
    unsafe {
        libc::dl_iterate_phdr(Some(visit), &mut found as *mut _ as *mut libc::c_void);
    }
    found
}

/// A device request from the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The first CUDA device when one is usable, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// A CUDA device by index.
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceChoice::Cuda(n)),
                _ => Err(format!(
                    "'{s}' is not a device: use auto, cpu, cuda or cuda:N"
                )),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => write!(f, "auto"),
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceChoice {
    /// Resolves the request against what this machine has.
    pub fn resolve(self) -> crate::Result<tch::Device> {
        preload_cuda();
        match self {
            DeviceChoice::Cpu => Ok(tch::Device::Cpu),
            DeviceChoice::Auto => Ok(if tch::Cuda::is_available() {
                tch::Device::Cuda(0)
            } else {
                tch::Device::Cpu
            }),
            DeviceChoice::Cuda(n) => {
                let count = if tch::Cuda::is_available() {
                    tch::Cuda::device_count() as usize
                } else {
                    0
                };
                if n >= count {
                    Err(crate::Error::config(format!(
                        "--device cuda:{n} asked for, but this machine has {count} usable CUDA device(s)"
                    )))
                } else {
                    Ok(tch::Device::Cuda(n))
                }
            }
        }
    }
}

/// Human-readable name of a resolved device.
pub fn describe(device: tch::Device) -> String {
    match device {
        tch::Device::Cpu => "cpu".into(),
        tch::Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}").to_lowercase(),
    }
}
