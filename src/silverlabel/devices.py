"""Where the work runs: the CPUs this process may use, and shape and kernel choices for CUDA, shared by the
student trainer and the ``hf:`` teacher.

The CPUs: a thread pool sized by the machine's core count (``os.cpu_count()``) oversubscribes a process confined
to fewer cores by a cpuset (``docker --cpuset-cpus``, a Slurm job's cores, ``taskset``, a test worker), and
llama.cpp's threads spin at their barriers, so two such pools on the same cores slow each other down many times
over. ``usable_cpus`` counts the cores this process may actually run on. A CPU quota (``docker --cpus``, a
Kubernetes limit) does not show in the affinity; set ``n_threads`` there.

CUDA: both feed the model padded-to-fit batches, so nearly every batch has a new shape. On CUDA in half precision,
PyTorch's scaled-dot-product attention then picks cuDNN's kernel, which plans a graph per new shape: measured on
an H100 (bench/gpu_check.py, docs/benchmarks.md), fp16 student training ran 6.5x slower than fp32 and the first
pass of the bf16 teacher 2x slower than its second. The remedy is to keep the shapes few (widths rounded up to a
multiple of 8, which also suits tensor cores) and to let attention use the flash / memory-efficient / math
kernels, which plan nothing. On the CPU nothing changes: exact widths keep CPU results as they were.
"""

from __future__ import annotations

import contextlib
import os

PAD_MULTIPLE_CUDA = 8


def usable_cpus() -> int:
    """The number of CPUs this process may run on (its affinity), where the platform says; else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def pad_width(width: int, device) -> int:
    """The padded width of a batch: exact on the CPU, rounded up to a multiple of 8 on CUDA."""
    if getattr(device, "type", device) != "cuda":
        return width
    return -(-width // PAD_MULTIPLE_CUDA) * PAD_MULTIPLE_CUDA


def attention_kernels(device):
    """A context in which attention avoids cuDNN's per-shape planning on CUDA (a no-op elsewhere)."""
    if getattr(device, "type", device) != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])
