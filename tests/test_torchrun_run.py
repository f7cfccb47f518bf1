"""``torchrun --nproc_per_node 2 -m deepclust run``: two gloo processes on the CPU give the clusters one
process gives, and rank 0 alone writes the run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import deepclust
from deepclust.cli import main

LAUNCH_TIMEOUT_S = 400  # a torchrun start takes 8-40 s on a busy 2-core machine; a hang takes forever


def _torchrun_deepclust(*args: str) -> subprocess.CompletedProcess:
    src_dir = Path(deepclust.__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DEEPCLUST_PROGRESS": "0",
           "PYTHONPATH": os.pathsep.join([str(src_dir), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "deepclust", "run", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)


@pytest.mark.slow
def test_kmeans_under_torchrun_matches_one_process(tmp_path):
    args = ["--method", "kmeans", "--seed", "3", "--no-progress"]
    proc = _torchrun_deepclust(*args, "--out", str(tmp_path / "two"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    (two,) = list((tmp_path / "two").iterdir())  # one run folder: rank 0 alone wrote
    assert main(["run", *args, "--out", str(tmp_path / "one")]) == 0
    (one,) = list((tmp_path / "one").iterdir())
    assert (two / "assignments.csv").read_text() == (one / "assignments.csv").read_text()
    m2, m1 = (json.loads((d / "metrics.json").read_text()) for d in (two, one))
    assert m2["processes"] == 2 and "processes" not in m1
    assert m2["inertia"] == pytest.approx(m1["inertia"], rel=1e-4)
    assert proc.stdout.count("deepclust run:") == 1  # one summary, from rank 0


@pytest.mark.slow
def test_a_one_process_method_under_torchrun_fails_clearly_without_a_run_folder(tmp_path):
    proc = _torchrun_deepclust("--method", "n2d", "--out", str(tmp_path / "runs"), "--no-progress")
    assert proc.returncode != 0
    assert "--method n2d runs in one process only; under torchrun use kmeans" in proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
