"""--deterministic: the same clusters, bit for bit, whatever the thread count or the CPU's vector unit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from deepclust import determinism

# Autoencoder training is where a last-bit difference grows into other clusters (UMAP and the mixture of
# N2D are pinned the same way but compile for ~20 s, too long for the suite).
COMMAND = ["run", "--method", "ae-kmeans", "--pretrain", "3", "--seed", "3", "--no-progress",
           "--deterministic"]


def _run(out: Path, **env: str) -> Path:
    environment = {k: v for k, v in os.environ.items() if k not in determinism.pinned_environment()}
    environment.update(env, DEEPCLUST_PROGRESS="0")
    done = subprocess.run([sys.executable, "-m", "deepclust", *COMMAND, "--out", str(out)], env=environment,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "start Python with" not in done.stderr  # the command line restarted itself pinned
    (run,) = out.iterdir()
    return run


def test_deterministic_runs_agree_across_threads_and_instruction_sets(tmp_path):
    """Two threads with MKL free to use its widest kernels vs one thread limited to AVX2 (as on another
    CPU): identical embeddings and clusters."""
    first = _run(tmp_path / "a", OMP_NUM_THREADS="2")
    second = _run(tmp_path / "b", OMP_NUM_THREADS="1", MKL_ENABLE_INSTRUCTIONS="AVX2")
    assert json.loads((first / "config.json").read_text())["run"]["deterministic"] is True
    assert (first / "assignments.csv").read_bytes() == (second / "assignments.csv").read_bytes()
    assert np.array_equal(np.load(first / "embeddings.npy"), np.load(second / "embeddings.npy"))


def test_the_pinned_environment_names_every_library_that_rounds_by_machine():
    env = determinism.pinned_environment()
    assert env["MKL_CBWR"] == "COMPATIBLE" and env["OMP_NUM_THREADS"] == "1"
    assert {"OPENBLAS_CORETYPE", "NUMBA_CPU_NAME", determinism.MARKER} <= set(env)


def test_the_api_warns_when_the_process_was_not_started_pinned(tmp_path, capsys, monkeypatch):
    import torch

    from deepclust.config import RunConfig
    from deepclust.pipeline.run import run

    monkeypatch.delenv(determinism.MARKER, raising=False)
    threads = torch.get_num_threads()
    try:
        run(RunConfig(method="kmeans", n_init=1, out=str(tmp_path), progress=False, deterministic=True))
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
    assert "pinned_environment()" in capsys.readouterr().err
