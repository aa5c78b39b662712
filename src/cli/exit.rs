//! The run wrapper every binary goes through.
//!
//! Exit codes: 0 success, 1 a defined negative result (the command decides,
//! e.g. `dinomaly-score --fail-above`), 2 any error, as for clap's usage
//! errors. A broken pipe anywhere in the error chain (`| head -1`) is a quiet
//! exit 0: the reader got what it wanted. A closed stdout must not hide a
//! defined negative result, though: a command that has one keeps going
//! without writing ([`super::output::DataOut::keep_going_when_closed`]) and
//! returns its exit 1 itself.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

/// Parses the arguments of `A`, runs `run`, prints any error as one line on
/// stderr prefixed by the tool's name, and maps the outcome to an exit code.
pub fn main_with<A>(run: fn(A) -> anyhow::Result<ExitCode>) -> ExitCode
where
    A: CommandFactory + FromArgMatches,
{
    let command = A::command();
    let name = command.get_name().to_string();
    // Before anything reads the environment: a switch or count with a
    // value the tools would misread is refused (environment.rs).
    if let Err(msg) = super::environment::check(&name) {
        eprintln!("{name}: {msg}");
        return ExitCode::from(2);
    }
    crate::alloc::reuse_large_buffers();
    // Decided before libtorch's first matrix product asks (mkl_kernels.rs).
    let _ = crate::mkl_kernels::intel_kernels_allowed();
    crate::device::preload_cuda();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(code) = super::generate::handle(&argv, command.clone()) {
        return code;
    }
    // After the generator: man pages list the environment in a section of
    // their own (generate.rs), not as help text.
    let command = command.after_long_help(super::environment::help_text(&name));
    let matches = match command.try_get_matches_from(argv) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    let args = match A::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(code) => code,
        Err(err) => report(&name, &err),
    }
}

/// Prints `err` and returns the exit code for it.
pub fn report(tool: &str, err: &anyhow::Error) -> ExitCode {
    if is_broken_pipe(err) {
        return ExitCode::SUCCESS;
    }
    eprintln!("{tool}: {}", one_line(err));
    ExitCode::from(2)
}

/// The error chain on one line, without repeating a cause that the outer
/// message already quotes.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out.replace('\n', " ")
}

/// True when a broken pipe is anywhere in the chain.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        let io = cause.downcast_ref::<std::io::Error>().or_else(|| match cause.downcast_ref::<crate::Error>() {
            Some(crate::Error::Io { source, .. }) => Some(source),
            _ => None,
        });
        io.is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
