"""Bit-identical runs across machines (``--deterministic``): what makes them differ, and the pins.

A seed fixes every random draw, so the same command repeats exactly on one machine with one thread
count. Across machines the floating-point rounding still differs, and training amplifies a last-bit
difference into other clusters (the bundled digits, seed 0: ACC 0.814 on 2 threads, 0.820 on 1). Found
by hashing the weights after 3 epochs of pretraining under each setting (benchmarks/RESULTS.md,
"Reproducibility"):

- **Thread count.** torch's full reductions (``sum``, ``mean`` of a tensor) split the work by thread,
  so 1 and 2 threads round differently.
- **The CPU's vector instructions.** MKL (torch's BLAS) and OpenBLAS (numpy's, used by the Gaussian
  mixture) pick kernels by CPU (AVX-512 on recent Intel, AVX2 on AMD); numba compiles UMAP for the
  host CPU.

``--deterministic`` pins all of them: one thread, MKL's ``COMPATIBLE`` code path (the only one that
gives the same bits on every x86 CPU, Intel or AMD; it makes matrix products ~1.7x slower), OpenBLAS's
Haswell kernels, numba compiled for a generic CPU, and torch's deterministic algorithms. Libraries read
these variables once, when they load, so the command line starts itself again in a pinned environment
(:func:`restart_pinned`); a Python program sets :func:`pinned_environment` before it starts. What still
differs: other package versions, and non-x86 CPUs (ARM), whose arithmetic is not the same.
"""

from __future__ import annotations

import os
import sys

#: Set in a process that runs pinned (by :func:`restart_pinned`, or by hand).
MARKER = "DEEPCLUST_DETERMINISTIC"


def pinned_environment() -> dict[str, str]:
    """The environment variables that pin the arithmetic; they take effect only in a new process."""
    return {
        MARKER: "1",
        "MKL_CBWR": "COMPATIBLE",  # MKL's reproducible SSE2 branch: same bits on any x86 CPU
        "OPENBLAS_CORETYPE": "Haswell",  # numpy/scipy's OpenBLAS: AVX2 kernels whatever the CPU
        "NUMBA_CPU_NAME": "generic",  # UMAP's compiled code: no host-specific instructions
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
        "NUMBA_NUM_THREADS": "1",
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8",  # deterministic cuBLAS on GPUs
    }


def is_pinned() -> bool:
    """Whether this process started in the pinned environment."""
    return os.environ.get(MARKER) == "1"


def restart_pinned(argv: list[str]) -> None:
    """Replace this process by ``python -m deepclust ARGV`` in the pinned environment (does not return).

    Under torchrun each process restarts in place (same PID), so the launcher still watches it.
    """
    env = {**os.environ, **pinned_environment()}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "deepclust", *argv], env)


def pin_torch() -> None:
    """What can be pinned from inside a running process: one thread and torch's deterministic kernels
    (an operation without one raises instead of varying)."""
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


__all__ = ["MARKER", "is_pinned", "pin_torch", "pinned_environment", "restart_pinned"]
