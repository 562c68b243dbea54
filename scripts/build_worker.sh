#!/usr/bin/env bash
# Builds the controller plugin in release mode and packs it into worker.zip for WorkManager's
# NativeDllEngine (manifest.json + <PackageId>.nuspec + runtimes/<rid>/native/<library>).
# The zip is written by the worker-pack tool (crates/worker-pack), not the shell `zip`, so the same
# library gives the same bytes and the printed sha256 identifies the build.
#
# Usage: scripts/build_worker.sh [--out PATH] [--version V] [--package-id ID]
#   --out PATH        default target/worker/worker.zip (relative paths are taken from the caller's folder)
#   --version V       nuspec version; default the controller crate's version
#   --package-id ID   default Virtufin.Worker.WebSocketManagerController
# Environment:
#   RID                 runtime identifier to pack for; default from the host (uname -s / uname -m).
#                       The library comes from the cargo build, so set CARGO_BUILD_TARGET as well when the
#                       rid is not the host's.
#   CARGO_BUILD_TARGET  passed through to cargo; the library is then read from target/<triple>/release.
set -euo pipefail
caller_dir="$PWD"
cd "$(dirname "$0")/.."

out=""
version=""
package_id=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="${2:?--out needs a path}"; shift 2 ;;
    --out=*) out="${1#--out=}"; shift ;;
    --version) version="${2:?--version needs a value}"; shift 2 ;;
    --version=*) version="${1#--version=}"; shift ;;
    --package-id) package_id="${2:?--package-id needs a value}"; shift 2 ;;
    --package-id=*) package_id="${1#--package-id=}"; shift ;;
    -h|--help) echo "usage: scripts/build_worker.sh [--out PATH] [--version V] [--package-id ID]"; exit 0 ;;
    *) echo "build_worker: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
# We changed folder above: a relative --out means the caller's folder; the default is under the repo.
case "$out" in
  "") out="$PWD/target/worker/worker.zip" ;;
  /*) ;;
  *) out="$caller_dir/$out" ;;
esac

host_rid() {
  local os arch
  os="$(uname -s)"
  arch="$(uname -m)"
  case "$os" in
    Linux) os=linux ;;
    Darwin) os=osx ;;
    MINGW*|MSYS*|CYGWIN*) os=win ;;
    *) echo "build_worker: no rid for OS '$os'; set RID" >&2; return 1 ;;
  esac
  case "$arch" in
    x86_64|amd64) arch=x64 ;;
    aarch64|arm64) arch=arm64 ;;
    *) echo "build_worker: no rid for architecture '$arch'; set RID" >&2; return 1 ;;
  esac
  echo "$os-$arch"
}
rid="${RID:-$(host_rid)}"

case "$rid" in
  osx-*) lib_file="libcontroller.dylib" ;;
  win-*) lib_file="controller.dll" ;;
  *) lib_file="libcontroller.so" ;;
esac

echo "build_worker: cargo build --release -p controller (rid $rid)" >&2
cargo build --release -p controller >&2

# The target folder and the version come from cargo itself, so CARGO_TARGET_DIR and a version bump
# in Cargo.toml are honoured without editing this script.
read -r crate_version target_dir < <(
  cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
meta = json.load(sys.stdin)
version = next(p["version"] for p in meta["packages"] if p["name"] == "controller")
print(version, meta["target_directory"])'
)
lib="$target_dir/${CARGO_BUILD_TARGET:+$CARGO_BUILD_TARGET/}release/$lib_file"

pack_args=(--lib "$lib" --manifest manifest.json --rid "$rid" --out "$out" --version "${version:-$crate_version}")
if [ -n "$package_id" ]; then
  pack_args+=(--package-id "$package_id")
fi
# The packer runs on this machine even when the library is cross-built.
(unset CARGO_BUILD_TARGET; cargo run --release -q -p worker-pack -- "${pack_args[@]}")

if command -v sha256sum >/dev/null 2>&1; then
  sha="$(sha256sum "$out" | cut -d' ' -f1)"
else
  sha="$(shasum -a 256 "$out" | cut -d' ' -f1)"
fi
echo "$out"
echo "sha256 $sha"
