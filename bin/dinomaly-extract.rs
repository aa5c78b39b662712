//! `dinomaly-extract`: see `dinomaly::cmd::extract`.
fn main() -> std::process::ExitCode {
    dinomaly::cli::exit::main_with(dinomaly::cmd::extract::run)
}
