//! `dinomaly-train`: see `dinomaly::cmd::train`.
fn main() -> std::process::ExitCode {
    dinomaly::cli::exit::main_with(dinomaly::cmd::train::run)
}
