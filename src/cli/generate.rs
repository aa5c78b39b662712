//! `--generate man|complete-bash|complete-zsh|complete-fish`: man pages and
//! shell completions produced from the clap definitions, so they cannot
//! drift from the real flags. Handled before normal parsing, so it works
//! without the tool's required flags.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

/// If `argv` is `TOOL --generate KIND`, writes the artefact to stdout and
/// returns the exit code; otherwise returns `None`.
pub fn handle(argv: &[OsString], command: clap::Command) -> Option<ExitCode> {
    if argv.len() != 3 || argv[1] != "--generate" {
        return None;
    }
    let kind = argv[2].to_string_lossy();
    let mut out = Vec::new();
    match write(&kind, command, &mut out) {
        Ok(()) => {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(&out).and_then(|_| stdout.flush());
            Some(ExitCode::SUCCESS)
        }
        Err(msg) => {
            eprintln!("{msg}");
            Some(ExitCode::from(2))
        }
    }
}

/// Renders one artefact for `command`.
pub fn write(kind: &str, command: clap::Command, out: &mut Vec<u8>) -> Result<(), String> {
    let mut command = command;
    let name = command.get_name().to_string();
    match kind {
        "man" => clap_mangen::Man::new(command)
            .render(out)
            .map_err(|e| format!("{name}: cannot render the man page: {e}")),
        "complete-bash" | "complete-zsh" | "complete-fish" => {
            let shell = match kind {
                "complete-bash" => clap_complete::Shell::Bash,
                "complete-zsh" => clap_complete::Shell::Zsh,
                _ => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut command, name, out);
            Ok(())
        }
        other => Err(format!(
            "{name}: --generate takes man, complete-bash, complete-zsh or complete-fish, not '{other}'"
        )),
    }
}
