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
        "man" => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .map_err(|e| format!("{name}: cannot render the man page: {e}"))?;
            let page = String::from_utf8(page).map_err(|e| format!("{name}: man page not UTF-8: {e}"))?;
            out.extend_from_slice(with_section(&page, &super::environment::roff_section(&name)).as_bytes());
            Ok(())
        }
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

/// `page` with `section` before its VERSION section (at the end if it has
/// none), where man pages conventionally list the environment.
fn with_section(page: &str, section: &str) -> String {
    match page.find("\n.SH VERSION") {
        Some(at) => format!("{}\n{}{}", &page[..at], section, &page[at + 1..]),
        None => format!("{page}{section}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_section_goes_before_the_version() {
        let page = ".TH x 1\n.SH NAME\nx\n.SH VERSION\nv1\n";
        assert_eq!(
            with_section(page, ".SH ENVIRONMENT\n.TP\nA\n"),
            ".TH x 1\n.SH NAME\nx\n.SH ENVIRONMENT\n.TP\nA\n.SH VERSION\nv1\n"
        );
        assert_eq!(with_section(".SH NAME\nx\n", ".SH E\n"), ".SH NAME\nx\n.SH E\n");
    }
}
