//! `dinomaly-export`: see `dinomaly::cmd::export`.
fn main() -> std::process::ExitCode {
    dinomaly::cli::exit::main_with(dinomaly::cmd::export::run)
}
