#!/usr/bin/env bash
# Build llama.cpp's C++ server, llama-server (the one most people run), for the server tests and bench/serve.py.
#
# Where the sources come from: the llama.cpp tree that llama-cpp-python's sdist vendors (the same pinned version the
# project installs; PyPI ships no llama-server binary for Linux that we could verify). Only the llama-server target
# is built, statically linked, with the CPU backend; about 10 minutes on 2 cores, once: the binary is cached under
# ~/.cache, keyed by version, and a stamp file marks a finished build. `.llama-server` in the repo root links to it.
#
# Usage: bash scripts/setup_llama_server.sh      (idempotent; prints the binary's path)
# Env:   SILVERLABEL_LLAMA_CPP_PYTHON_VERSION (default 0.3.36), SILVERLABEL_CACHE (default ~/.cache/silverlabel)
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION="${SILVERLABEL_LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
CACHE="${SILVERLABEL_CACHE:-$HOME/.cache/silverlabel}"
DEST="$CACHE/llama-server-$VERSION"
STAMP="$DEST/.silverlabel-built"
PY="${PYTHON:-python3}"

if [ ! -f "$STAMP" ]; then
  rm -rf "$DEST"
  mkdir -p "$DEST"
  TMP="$(mktemp -d)"
  trap 'rm -rf "$TMP"' EXIT
  "$PY" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$TMP"
  tar xzf "$TMP/llama_cpp_python-$VERSION.tar.gz" -C "$TMP"
  SRC="$TMP/llama_cpp_python-$VERSION/vendor/llama.cpp"
  GENERATOR=()
  command -v ninja > /dev/null && GENERATOR=(-G Ninja)
  cmake -S "$SRC" -B "$TMP/build" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=ON > "$TMP/cmake.log" || { tail -40 "$TMP/cmake.log"; exit 1; }
  cmake --build "$TMP/build" --target llama-server -j "$(nproc)" > "$TMP/build.log" || { tail -40 "$TMP/build.log"; exit 1; }
  cp "$TMP/build/bin/llama-server" "$DEST/llama-server"
  "$DEST/llama-server" --version 2>&1 | head -2
  touch "$STAMP"
fi

ln -sfn "$DEST/llama-server" .llama-server
echo "$DEST/llama-server"
