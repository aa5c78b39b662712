//! Bakes the libtorch library folder into the rpath of every binary, test and
//! doctest, so they run without LD_LIBRARY_PATH. torch-sys only sets the rpath
//! of its own library; it exports the folder to us because it declares
//! `links = "tch"` and we depend on it directly.
fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
    println!("cargo:rerun-if-env-changed=LIBTORCH");
}
