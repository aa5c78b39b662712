//! The environment variables of `crate::env` rendered for people: the text
//! `--help` shows after the options and the man pages' ENVIRONMENT section.
//! The names, the table and how values are read live in the library
//! (`crate::env`), re-exported here for the commands.

pub use crate::env::*;

/// The text `--help` shows after the options.
pub fn help_text(tool: &str) -> String {
    let mut text = format!("Environment ({}):", squeeze(SWITCH_RULE));
    for var in vars_for(tool) {
        text.push_str(&format!("\n  {}\n          {}", var.name, squeeze(var.meaning)));
    }
    text
}

/// The man page's ENVIRONMENT section (roff).
pub fn roff_section(tool: &str) -> String {
    let rule = squeeze(SWITCH_RULE);
    let mut roff = format!(".SH ENVIRONMENT\n{}{}.\n", rule[..1].to_uppercase(), roff_text(&rule[1..]));
    for var in vars_for(tool) {
        roff.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", var.name, roff_text(&squeeze(var.meaning))));
    }
    roff
}

/// Collapses the runs of spaces left by the source's line continuations.
fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Escapes text for a roff text line: backslashes, and a leading dot or
/// apostrophe that would make the line a request.
fn roff_text(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_and_roff_render_each_variable_once() {
        let help = help_text("dinomaly-metrics");
        assert!(help.starts_with(&format!(
            "Environment ({}):\n  DINOMALY_NO_CUDA\n          switch; on: do not load",
            squeeze(SWITCH_RULE)
        )));
        assert!(!help.contains("  reuse"), "continuation spaces squeezed: {help}");
        let roff = roff_section("dinomaly-train");
        assert_eq!(roff.matches(".TP\n").count(), vars_for("dinomaly-train").len());
        assert!(roff.starts_with(".SH ENVIRONMENT\nSwitches are off when unset or empty, on for 1,"));
        assert!(roff.contains("\\fBDINOMALY_OFFLINE\\fR\nswitch; on: never download"));
        assert!(roff.contains("$XDG_CACHE_HOME/dinomaly"));
        assert_eq!(roff_text(".hidden \\ x-y"), "\\&.hidden \\e x\\-y");
    }
}
