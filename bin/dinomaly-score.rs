//! `dinomaly-score`: see `dinomaly::cmd::score`.
fn main() -> std::process::ExitCode {
    dinomaly::cli::exit::main_with(dinomaly::cmd::score::run)
}
