fn main() -> std::process::ExitCode {
    dinomaly::cli::exit::main_with(dinomaly::cmd::calibrate::run)
}
