//! The committed man pages and completions must equal what the binaries
//! generate from their clap definitions (run `make man` after changing a flag).

use crate::util;

fn check(tool: &str) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    for (kind, file) in [
        ("man", format!("{tool}.1")),
        ("complete-bash", format!("completions/{tool}.bash")),
        ("complete-zsh", format!("completions/_{tool}")),
        ("complete-fish", format!("completions/{tool}.fish")),
    ] {
        let out = util::run(util::tool(tool).args(["--generate", kind]), "");
        util::assert_code(&out, 0);
        let committed =
            std::fs::read(root.join(&file)).unwrap_or_else(|e| panic!("man/{file} is missing ({e}): run `make man`"));
        assert!(
            committed == out.stdout,
            "man/{file} differs from `{tool} --generate {kind}`: run `make man` and commit the result"
        );
    }
}

#[test]
fn man_pages_and_completions_are_current() {
    for tool in util::TOOLS {
        check(tool);
    }
}

#[test]
fn generate_rejects_unknown_kinds() {
    let out = util::run(util::tool("dinomaly-extract").args(["--generate", "html"]), "");
    util::assert_code(&out, 2);
    assert!(util::stderr(&out).contains("--generate takes man"), "{}", util::stderr(&out));
}
