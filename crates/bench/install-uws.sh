#!/usr/bin/env bash
# Installs the uWebSockets.js peer of the load tool (crates/bench/uws: our
# server.mjs on the npm package @trufflesuite/uws-js-unofficial, pinned in its
# package.json and package-lock.json) into a scratch folder, never into the
# repository's tracked tree and never globally.
#
#   crates/bench/install-uws.sh [DIR]
#
# DIR defaults to ${CARGO_TARGET_DIR:-target}/bench-uws (a relative
# CARGO_TARGET_DIR or `target` is taken from the repository root, as cargo
# does). Idempotent: server.mjs and package.json are copied every time, npm
# runs only when the lock file changed or the package is missing. Prints the
# folder's absolute path on its last line; run the server with
#   node "$DIR/server.mjs" --port N
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/uws"
root="$(cd "$here/../.." && pwd)"

if [ "$#" -ge 1 ] && [ -n "$1" ]; then
    dest="$1"
else
    target="${CARGO_TARGET_DIR:-target}"
    case "$target" in
        /*) ;;
        *) target="$root/$target" ;;
    esac
    dest="$target/bench-uws"
fi

command -v node >/dev/null 2>&1 || { echo "install-uws.sh: node not found on PATH" >&2; exit 1; }
command -v npm >/dev/null 2>&1 || { echo "install-uws.sh: npm not found on PATH" >&2; exit 1; }

# The package ships native builds for Node 16, 18 and 20 only (module ABI 93,
# 108, 115); on any other Node it would fall back to a JavaScript server,
# which server.mjs refuses to run.
abi="$(node -p process.versions.modules)"
case "$abi" in
    93|108|115) ;;
    *)
        echo "install-uws.sh: Node $(node --version) (module ABI $abi) has no native uWS build" \
             "in @trufflesuite/uws-js-unofficial (Node 16, 18 or 20 needed)" >&2
        exit 1
        ;;
esac

dest="$(realpath -m -- "$dest")"

# Not into the repository's tracked tree: inside a git work tree the folder
# must be ignored by git (as target/ is). Checked before anything is created.
probe="$dest"
while [ ! -d "$probe" ]; do probe="$(dirname "$probe")"; done
if top="$(git -C "$probe" rev-parse --show-toplevel 2>/dev/null)"; then
    if ! git -C "$top" check-ignore -q -- "$dest"; then
        echo "install-uws.sh: $dest is inside the git work tree $top and not ignored by git;" \
             "choose a scratch folder (default: target/bench-uws)" >&2
        exit 1
    fi
fi
mkdir -p "$dest"

cp "$src/server.mjs" "$src/package.json" "$src/package-lock.json" "$dest/"

stamp="$dest/.install-stamp"
want="$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -d' ' -f1) node-$abi"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
    && [ -f "$dest/node_modules/@trufflesuite/uws-js-unofficial/package.json" ]; then
    :
else
    rm -f "$stamp"
    # npm ci: exactly the lock file. No install scripts are needed (the
    # package ships its binaries); the optional native helpers are only for
    # the package's `ws` fallback, which is never used.
    (cd "$dest" && npm ci --no-audit --no-fund --ignore-scripts --omit=optional --loglevel=error) >&2
    echo "$want" > "$stamp"
fi

# Check that the native build loads (not the fallback).
(cd "$dest" && node -e '
  const f = `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`;
  require(`./node_modules/@trufflesuite/uws-js-unofficial/binaries/${f}`);
') >&2 || { echo "install-uws.sh: the native uWS build does not load on this machine" >&2; exit 1; }

echo "$dest"
