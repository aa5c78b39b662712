//! Choosing where tensors live: `--device auto|cpu|cuda|cuda:N`.
//!
//! One binary serves CPU-only and CUDA machines. The linker drops
//! `libtorch_cuda.so` from the binary (it is linked "as needed" and nothing
//! references it by symbol), so libtorch never registers its CUDA backend and
//! `tch::Cuda::is_available()` is false even on a GPU machine. Linking it
//! eagerly instead makes the binary fail to start where the CUDA libraries are
//! absent. So [`preload_cuda`] dlopens it at start-up, from the folder that
//! `libtorch_cpu.so` was loaded from, before any other tch call, and keeps
//! what happened: where it is absent (a CPU build of libtorch) nothing is
//! said; where it is present but fails to load (a missing CUDA library, say)
//! `--device auto` notes the loader's reason as it falls back to the CPU,
//! and `--device cuda` errors always say why no device is usable.
//! `DINOMALY_NO_CUDA=1` skips the load.

use std::ffi::{CStr, CString};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Once, OnceLock};

/// What became of libtorch's CUDA backend at start-up, kept so that a CPU
/// fallback or a refused `--device cuda` can say why.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CudaBackend {
    /// `DINOMALY_NO_CUDA` is on.
    Disabled,
    /// No loaded `libtorch_cpu.so`, so no folder to look in.
    NoLibtorchFolder,
    /// No `libtorch_cuda.so` in the folder (a CPU build of libtorch: the
    /// normal CPU case).
    Absent { folder: String },
    /// Present but the dynamic loader refused it (`dlerror()`'s text).
    Failed { path: String, reason: String },
    /// Loaded.
    Loaded,
}

static BACKEND: OnceLock<CudaBackend> = OnceLock::new();

/// Environment variable that keeps the CUDA backend from loading.
pub const NO_CUDA_ENV: &str = crate::env::NO_CUDA;

/// Loads libtorch's CUDA backend if it is present next to `libtorch_cpu.so`.
///
/// Must run before the first tch call of the process; every binary and test
/// binary calls it first. Calling it again does nothing.
pub fn preload_cuda() {
    BACKEND.get_or_init(load_cuda_backend);
}

fn load_cuda_backend() -> CudaBackend {
    if crate::env::switch_on(NO_CUDA_ENV) {
        return CudaBackend::Disabled;
    }
    let Some(dir) = libtorch_dir() else {
        return CudaBackend::NoLibtorchFolder;
    };
    let path = format!("{dir}/libtorch_cuda.so");
    if !Path::new(&path).exists() {
        return CudaBackend::Absent { folder: dir };
    }
    match dlopen_global(&path) {
        Ok(()) => CudaBackend::Loaded,
        Err(reason) => CudaBackend::Failed { path, reason },
    }
}

/// dlopens `path` for the whole process (its symbols global, the handle
/// deliberately leaked so the library stays loaded); the error is the
/// loader's own text (`dlerror()`), e.g. the missing dependency.
fn dlopen_global(path: &str) -> Result<(), String> {
    let cpath = CString::new(path).map_err(|_| format!("{path}: a NUL byte in the path"))?;
    // SAFETY: dlopen with a valid NUL-terminated path. dlerror's string is
    // thread-local, valid until the next dl* call of this thread, and
    // copied at once.
    unsafe {
        if !libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL).is_null() {
            return Ok(());
        }
        let err = libc::dlerror();
        if err.is_null() {
            Err(format!("{path}: dlopen failed without a reason"))
        } else {
            Err(CStr::from_ptr(err).to_string_lossy().into_owned())
        }
    }
}

/// Why CUDA has no usable device, from what happened at start-up.
fn unavailable_reason(backend: &CudaBackend) -> String {
    match backend {
        CudaBackend::Disabled => format!("{NO_CUDA_ENV} is on, so libtorch's CUDA backend was not loaded"),
        CudaBackend::NoLibtorchFolder => {
            "libtorch_cpu.so is not among the loaded libraries, so there is no folder to load \
             libtorch_cuda.so from"
                .to_string()
        }
        CudaBackend::Absent { folder } => {
            format!("libtorch_cuda.so not found next to libtorch_cpu.so ({folder}): this libtorch is a CPU build")
        }
        CudaBackend::Failed { path, reason } => format!("{path} failed to load: {reason}"),
        CudaBackend::Loaded => "libtorch_cuda.so is loaded but CUDA reports no device (no NVIDIA \
                                driver, or CUDA_VISIBLE_DEVICES hides them)"
            .to_string(),
    }
}

/// The one-line note for `--device auto` falling back to the CPU, only
/// when CUDA was meant to be there: the library exists but did not load.
fn fallback_note(backend: &CudaBackend) -> Option<String> {
    match backend {
        CudaBackend::Failed { .. } => Some(format!(
            "note: running on the CPU: {}; set {NO_CUDA_ENV}=1 to use the CPU without trying",
            unavailable_reason(backend)
        )),
        _ => None,
    }
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
                _ => Err(format!("'{s}' is not a device: use auto, cpu, cuda or cuda:N")),
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
    /// Resolves the request against what this machine has. `auto` falls
    /// back to the CPU, with a note on stderr when `libtorch_cuda.so` is
    /// there but failed to load (printed even with --quiet: it is a broken
    /// installation, silenced by `DINOMALY_NO_CUDA=1`); a CUDA device that
    /// is not usable is an error that says why.
    pub fn resolve(self) -> crate::Result<tch::Device> {
        preload_cuda();
        let backend = BACKEND.get().cloned().unwrap_or(CudaBackend::NoLibtorchFolder);
        match self {
            DeviceChoice::Cpu => Ok(tch::Device::Cpu),
            DeviceChoice::Auto => {
                if tch::Cuda::is_available() {
                    return Ok(tch::Device::Cuda(0));
                }
                if let Some(note) = fallback_note(&backend) {
                    static NOTED: Once = Once::new();
                    NOTED.call_once(|| eprintln!("{}: {note}", program_name()));
                }
                Ok(tch::Device::Cpu)
            }
            DeviceChoice::Cuda(n) => {
                let count = if tch::Cuda::is_available() { tch::Cuda::device_count() as usize } else { 0 };
                if n < count {
                    return Ok(tch::Device::Cuda(n));
                }
                let why = if count == 0 {
                    format!("no CUDA device is usable: {}", unavailable_reason(&backend))
                } else {
                    format!("this machine has {count} usable CUDA device(s), cuda:0 to cuda:{}", count - 1)
                };
                Err(crate::Error::config(format!("--device cuda:{n} asked for, but {why}")))
            }
        }
    }
}

/// The running tool's name, for the prefix of a note.
fn program_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| Path::new(&a).file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "dinomaly".to_string())
}

/// Human-readable name of a resolved device.
pub fn describe(device: tch::Device) -> String {
    match device {
        tch::Device::Cpu => "cpu".into(),
        tch::Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// `err` with advice when it is libtorch running out of memory (CUDA's
/// "out of memory", the CPU allocator's "can't allocate memory") on
/// `device` while `doing` something: one line, with the flag that helps.
/// Any other error is returned unchanged.
pub fn out_of_memory_advice(err: crate::Error, device: tch::Device, doing: &str) -> crate::Error {
    let crate::Error::Torch(tch::TchError::Torch(message)) = &err else {
        return err;
    };
    let lower = message.to_ascii_lowercase();
    if !(lower.contains("out of memory") || lower.contains("can't allocate memory")) {
        return err;
    }
    // libtorch's message goes on with allocator statistics and a C++
    // backtrace; its first two sentences say what was asked for.
    let first_line = message.lines().next().unwrap_or_default().trim();
    let what = first_line.split(". ").take(2).collect::<Vec<_>>().join(". ");
    crate::Error::config(format!(
        "out of memory on {} while {doing} ({}): pass a smaller --batch",
        describe(device),
        what.trim_end_matches('.')
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loader_reason_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("libtorch_cuda.so");
        std::fs::write(&fake, b"not a shared object").unwrap();
        let err = dlopen_global(fake.to_str().unwrap()).unwrap_err();
        // glibc names the file and what is wrong with it.
        assert!(err.contains("libtorch_cuda.so") && !err.contains('\n'), "{err}");
        let missing = dir.path().join("gone.so");
        let err = dlopen_global(missing.to_str().unwrap()).unwrap_err();
        assert!(err.contains("No such file"), "{err}");
    }

    #[test]
    fn only_a_library_that_fails_to_load_is_noted_on_fallback() {
        let failed = CudaBackend::Failed {
            path: "/t/lib/libtorch_cuda.so".into(),
            reason: "libcudnn.so.9: cannot open shared object file: No such file or directory".into(),
        };
        let note = fallback_note(&failed).unwrap();
        assert_eq!(
            note,
            "note: running on the CPU: /t/lib/libtorch_cuda.so failed to load: libcudnn.so.9: cannot open shared \
             object file: No such file or directory; set DINOMALY_NO_CUDA=1 to use the CPU without trying"
        );
        for quiet in [
            CudaBackend::Disabled,
            CudaBackend::NoLibtorchFolder,
            CudaBackend::Absent { folder: "/t/lib".into() },
            CudaBackend::Loaded,
        ] {
            assert_eq!(fallback_note(&quiet), None, "{quiet:?}");
        }
        assert!(unavailable_reason(&CudaBackend::Disabled).contains("DINOMALY_NO_CUDA is on"));
        assert!(unavailable_reason(&CudaBackend::Absent { folder: "/t/lib".into() })
            .contains("libtorch_cuda.so not found next to libtorch_cpu.so (/t/lib)"));
        assert!(unavailable_reason(&CudaBackend::Loaded).contains("no device"));
    }

    #[test]
    fn running_out_of_memory_says_what_to_change() {
        // A real allocation failure of the CPU allocator (1 PiB).
        let err = tch::Tensor::f_empty([1i64 << 48], (tch::Kind::Float, tch::Device::Cpu)).unwrap_err();
        let msg = out_of_memory_advice(err.into(), tch::Device::Cpu, "stacking a batch").to_string();
        assert!(msg.starts_with("out of memory on cpu while stacking a batch ("), "{msg}");
        assert!(msg.ends_with("pass a smaller --batch") && !msg.contains('\n'), "{msg}");
        // CUDA's message, as PyTorch 2.x words it.
        let cuda = tch::TchError::Torch(
            "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.1 GiB of which \
             1.2 GiB is free. Of the allocated memory 75 GiB is allocated by PyTorch\nException raised from malloc"
                .into(),
        );
        let msg = out_of_memory_advice(cuda.into(), tch::Device::Cuda(0), "moving a batch").to_string();
        assert_eq!(
            msg,
            "out of memory on cuda:0 while moving a batch (CUDA out of memory. Tried to allocate 2.00 GiB): \
             pass a smaller --batch"
        );
        let other = crate::Error::Torch(tch::TchError::Torch("shape mismatch".into()));
        assert_eq!(
            out_of_memory_advice(other, tch::Device::Cpu, "x").to_string(),
            "libtorch: Internal torch error: shape mismatch"
        );
    }
}
