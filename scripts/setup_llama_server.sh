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

. scripts/cache.sh
VERSION="${SILVERLABEL_LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
DEST="$CACHE/llama-server-$VERSION"

build() {
  local dest="$1"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  "$PY" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$tmp"
  tar xzf "$tmp/llama_cpp_python-$VERSION.tar.gz" -C "$tmp"
  local src="$tmp/llama_cpp_python-$VERSION/vendor/llama.cpp" generator=()
  command -v ninja > /dev/null && generator=(-G Ninja)
  cmake -S "$src" -B "$tmp/build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=ON > "$tmp/cmake.log" || { tail -40 "$tmp/cmake.log"; exit 1; }
  cmake --build "$tmp/build" --target llama-server -j "$(nproc)" > "$tmp/build.log" || { tail -40 "$tmp/build.log"; exit 1; }
  cp "$tmp/build/bin/llama-server" "$dest/llama-server"
  "$dest/llama-server" --version 2>&1 | head -2
}

build_once "$DEST" .silverlabel-built build
link_from_repo .llama-server "$DEST/llama-server"
