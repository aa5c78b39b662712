//! Bakes the libtorch library folder into the rpath of every binary, test and
//! doctest, so they run without LD_LIBRARY_PATH, and exports the MKL
//! kernel-choice hook of src/mkl_kernels.rs. torch-sys only sets the rpath
//! of its own library; it exports the folder to us because it declares
//! `links = "tch"` and we depend on it directly.
fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
    // src/mkl_kernels.rs: MKL inside libtorch_cpu.so calls this symbol
    // through its PLT, so the dynamic linker binds the executable's
    // definition when the executable exports it. GNU ld already does (a
    // shared library on the link line defines the name); these make it
    // independent of the linker and of which object file the function
    // lands in (tests/cli_score.rs checks the binding at run time).
    for flag in ["--undefined", "--export-dynamic-symbol"] {
        println!("cargo:rustc-link-arg=-Wl,{flag}=mkl_serv_intel_cpu_true");
    }
    println!("cargo:rerun-if-env-changed=LIBTORCH");
}
