#!/usr/bin/env bash
# Regenerates man/*.1 and man/completions/* from the clap definitions of the
# built binaries (`TOOL --generate man|complete-SHELL`). tests/docs.rs fails
# when the committed files differ from what the binaries generate.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN_DIR:-target/release}
mkdir -p man/completions
for tool in "$bin"/dinomaly-*; do
  [ -x "$tool" ] || continue
  name=$(basename "$tool")
  case "$name" in *.d) continue;; esac
  "$tool" --generate man > "man/$name.1"
  "$tool" --generate complete-bash > "man/completions/$name.bash"
  "$tool" --generate complete-zsh > "man/completions/_$name"
  "$tool" --generate complete-fish > "man/completions/$name.fish"
  echo "wrote man/$name.1 and its completions"
done
