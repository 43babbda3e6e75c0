#!/usr/bin/env bash
# Time the README's first command as a new user meets it: an empty HOME (no pip cache, no ~/.cache/silverlabel)
# and a fresh clone of this repository in /tmp/c1; prints "exit CODE after SECONDS s" (output in /tmp/cmd1.out).
# Measured 581 s and 485 s on the project's 2-core Intel Xeon on 2026-12-03, 974 s on its 2-core AMD EPYC on
# 2026-12-04 and 644 s there later that night (README; 1429 s there before -DLLAVA_BUILD=OFF and --no-compile);
# on the Intel Xeon on 2026-12-05, 494 s, then 398 s once llama.cpp's common library left the compile; on the AMD
# EPYC that evening 627 s, then 555 s once libllama's host code compiled at -O1; 583 s and 580 s there since; 475 s
# on the project's 2-core AMD EPYC with AVX-512 on 2026-12-06; 706 s and 665 s on a second AMD EPYC (AVX2) that
# morning, 696, 701 and 662 s there later that day.
set -e
export HOME=/tmp/fresh-home
rm -rf "$HOME" /tmp/c1; mkdir -p "$HOME"
git clone -q "$(cd "$(dirname "$0")/.." && pwd)" /tmp/c1
cd /tmp/c1
CMD=$(python3 - <<'PY'
import re; print(re.findall(r"```bash\n(.*?)\n```", open("README.md").read(), flags=re.S)[0])
PY
)
echo "$CMD"
start=$(date +%s)
rc=0
bash -c "$CMD" > /tmp/cmd1.out 2>&1 || rc=$?
echo "exit $rc after $(( $(date +%s) - start )) s"
