#!/bin/sh
# The whole test suite, from a fresh Debian 12 machine (as root, or with sudo):
# installs what it needs, builds twice (gcc; clang with ASan/UBSan and the
# libFuzzer targets), runs every test, and ends with `N passed, N failed`.
set -eu
cd "$(dirname "$0")/.."

deploy/install-deps.sh test

setup() { # dir, extra meson args...
    dir=$1
    shift
    if [ -f "$dir/build.ninja" ]; then
        meson setup --reconfigure "$dir" "$@" >/dev/null
    else
        meson setup "$dir" "$@" >/dev/null
    fi
}

# The tokenizer's reference check runs the npm package gpt-3-encoder, at the
# version and checksum tests/npm/package-lock.json pins (npm ci installs exactly that).
if ! cmp -s tests/npm/package-lock.json build/npm/package-lock.json ||
    [ ! -f build/npm/node_modules/gpt-3-encoder/Encoder.js ]; then
    mkdir -p build/npm
    cp tests/npm/package.json tests/npm/package-lock.json build/npm/
    npm ci --silent --no-audit --no-fund --prefix build/npm >/dev/null
fi

setup build
ninja -C build
meson test -C build --num-processes 2 --print-errorlogs || true

CC=clang setup build-fuzz -Dfuzzing=true -Db_sanitize=address,undefined -Db_lundef=false
ninja -C build-fuzz
meson test -C build-fuzz --num-processes 2 --print-errorlogs --suite unit --suite fuzz || true

exec /usr/bin/python3 tests/summarize.py build build-fuzz
