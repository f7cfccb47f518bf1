"""``torchrun --nproc_per_node 2 -m deepclust run``: two gloo processes on the CPU give the clusters one
process gives, rank 0 alone writes the run folder, and ``--resume`` continues from rank 0's checkpoints.
``embed`` and ``run --backbone`` extract backbone features with both ranks into one cache entry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import deepclust
from deepclust.cli import main
from deepclust.metrics import adjusted_rand_index
from deepclust.runs import RunPaths, set_status

LAUNCH_TIMEOUT_S = 400  # a torchrun start takes 8-40 s on a busy 2-core machine; a hang takes forever


def _torchrun_deepclust(*args: str, command: str = "run") -> subprocess.CompletedProcess:
    src_dir = Path(deepclust.__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DEEPCLUST_PROGRESS": "0",
           "PYTHONPATH": os.pathsep.join([str(src_dir), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "deepclust", command, *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)


@pytest.mark.slow
def test_kmeans_under_torchrun_matches_one_process(tmp_path):
    args = ["--method", "kmeans", "--seed", "3", "--no-progress"]
    proc = _torchrun_deepclust(*args, "--out", str(tmp_path / "two"))
    assert proc.returncode == 0, proc.stderr[-6000:]
    (two,) = list((tmp_path / "two").iterdir())  # one run folder: rank 0 alone wrote
    assert main(["run", *args, "--out", str(tmp_path / "one")]) == 0
    (one,) = list((tmp_path / "one").iterdir())
    assert (two / "assignments.csv").read_text() == (one / "assignments.csv").read_text()
    m2, m1 = (json.loads((d / "metrics.json").read_text()) for d in (two, one))
    assert m2["processes"] == 2 and "processes" not in m1
    assert m2["inertia"] == pytest.approx(m1["inertia"], rel=1e-4)
    assert proc.stdout.count("deepclust run:") == 1  # one summary, from rank 0


def _one_process_run(*args: str) -> None:
    """``deepclust run ARGS`` in this process with one thread, as each torchrun process runs
    (OMP_NUM_THREADS=1), so the float sums are the same."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["run", *args]) == 0
    finally:
        torch.set_num_threads(threads)


def _clusters(run: Path) -> np.ndarray:
    return np.loadtxt(run / "assignments.csv", delimiter=",", skiprows=1, usecols=1, dtype=np.int64)


def _losses(run: Path) -> np.ndarray:
    rows = (run / "history.csv").read_text().splitlines()
    column = rows[0].split(",").index("loss")
    return np.array([float(r.split(",")[column] or "nan") for r in rows[1:]])


@pytest.mark.slow
def test_idec_under_torchrun_matches_one_process_and_resumes(tmp_path):
    """IDEC on digits: pretraining and the clustering stage under DDP with the one-process global batch
    give the loss curve of one process (rtol 1e-4) and a run folder with the same files. The clusters
    agree up to a few boundary points (ARI >= 0.99): the ranks sum gradients in another order, and the
    clustering stage can move a point that sits between two centres to the other side. Resumed under
    torchrun after losing its clustering checkpoint, the run retrains that stage from rank 0's
    pretraining checkpoint and ends with exactly the clusters it had."""
    args = ["--method", "idec", "--pretrain", "2", "--cluster", "2", "--seed", "1", "--no-progress"]
    proc = _torchrun_deepclust(*args, "--out", str(tmp_path / "two"))
    assert proc.returncode == 0, proc.stderr[-6000:]
    (two,) = list((tmp_path / "two").iterdir())  # one run folder: rank 0 alone wrote
    assert proc.stdout.count("deepclust run:") == 1
    _one_process_run(*args, "--out", str(tmp_path / "one"))
    (one,) = list((tmp_path / "one").iterdir())
    assert sorted(p.name for p in two.rglob("*")) == sorted(p.name for p in one.rglob("*"))
    assert adjusted_rand_index(_clusters(one), _clusters(two)) >= 0.99
    np.testing.assert_allclose(_losses(two), _losses(one), rtol=1e-4, equal_nan=True)
    assert json.loads((two / "metrics.json").read_text())["processes"] == 2

    clusters = _clusters(two)
    paths = RunPaths(two)
    (paths.checkpoints / "cluster.pt").unlink()
    set_status(paths, "interrupted")
    proc = _torchrun_deepclust("--resume", str(two))
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert json.loads(paths.status.read_text())["status"] == "complete"
    assert list((tmp_path / "two").iterdir()) == [two]
    np.testing.assert_array_equal(_clusters(two), clusters)


@pytest.mark.slow
def test_the_default_method_runs_under_torchrun(tmp_path):
    """N2D: DDP pretraining, then the UMAP + mixture stage on every rank; rank 0 alone writes."""
    proc = _torchrun_deepclust("--pretrain", "1", "--seed", "2", "--no-progress", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-6000:]
    (run,) = list(tmp_path.iterdir())
    assert proc.stdout.count("deepclust run:") == 1
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["acc"] > 0.3  # one epoch of pretraining; chance ~0.2
    assert json.loads((run / "status.json").read_text())["status"] == "complete"


@pytest.mark.slow
def test_a_one_process_method_under_torchrun_fails_clearly_without_a_run_folder(tmp_path):
    proc = _torchrun_deepclust("--method", "umap-gmm", "--out", str(tmp_path / "runs"), "--no-progress")
    assert proc.returncode != 0
    assert ("--method umap-gmm runs in one process only; under torchrun use ae-kmeans, dcn, dec, "
            "deepcluster, idec, kmeans, n2d") in proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.slow
def test_autoencoder_under_torchrun_reads_a_data_cache(tmp_path):
    """Both ranks read their shares of every batch from the memory-mapped cache; rank 0 alone writes,
    and the loss curve is one process's on the same data held in memory."""
    cache = tmp_path / "digits-cache"
    assert main(["cache", "-d", "digits", "--out", str(cache), "--no-progress"]) == 0
    args = ["--method", "ae-kmeans", "--pretrain", "2", "--seed", "2", "--no-progress"]
    proc = _torchrun_deepclust("-d", str(cache), *args, "--out", str(tmp_path / "two"))
    assert proc.returncode == 0, proc.stderr[-6000:]
    (two,) = list((tmp_path / "two").iterdir())
    _one_process_run("-d", "digits", *args, "--out", str(tmp_path / "one"))
    (one,) = list((tmp_path / "one").iterdir())
    np.testing.assert_allclose(_losses(two), _losses(one), rtol=1e-4, equal_nan=True)
    assert adjusted_rand_index(_clusters(one), _clusters(two)) >= 0.9


@pytest.mark.slow
def test_deepcluster_under_torchrun_writes_one_run_folder_and_resumes(tmp_path):
    """DeepCluster on digits under DDP (alexnet-small: batch norm and dropout of the global batch): one
    run folder with the files of a one-process run, written by rank 0, whose per-epoch losses are one
    process's (the cross-entropy at rtol 1e-4, float rounding; the k-means loss at 1e-2, as PCA
    whitening magnifies that rounding: 1.3e-4 seen on an Intel Xeon); resumed from rank 0's checkpoint
    after its training epoch, the run makes its final clustering again and gets the same clusters."""
    args = ["--method", "deepcluster", "--dc-epochs", "1", "--seed", "1", "--no-progress"]
    proc = _torchrun_deepclust(*args, "--out", str(tmp_path / "two"))
    assert proc.returncode == 0, proc.stderr[-6000:]
    (two,) = list((tmp_path / "two").iterdir())
    assert proc.stdout.count("deepclust run:") == 1
    _one_process_run(*args, "--out", str(tmp_path / "one"))
    (one,) = list((tmp_path / "one").iterdir())
    assert sorted(p.name for p in two.rglob("*")) == sorted(p.name for p in one.rglob("*"))
    for column, rtol in (("clustering_loss", 1e-2), ("cross_entropy", 1e-4)):
        np.testing.assert_allclose(_column(two, column), _column(one, column), rtol=rtol, equal_nan=True,
                                   err_msg=column)
    assert json.loads((two / "metrics.json").read_text())["processes"] == 2

    clusters = _clusters(two)
    paths = RunPaths(two)
    set_status(paths, "interrupted")
    proc = _torchrun_deepclust("--resume", str(two))
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert json.loads(paths.status.read_text())["status"] == "complete"
    np.testing.assert_array_equal(_clusters(two), clusters)


def _column(run: Path, name: str) -> np.ndarray:
    rows = (run / "history.csv").read_text().splitlines()
    column = rows[0].split(",").index(name)
    return np.array([float(r.split(",")[column] or "nan") for r in rows[1:]])


@pytest.mark.slow
def test_embed_and_a_backbone_run_under_torchrun(tmp_path):
    """``embed`` under torchrun fills the cache once (both ranks extract); ``run --backbone`` under
    torchrun then reads it without extracting and finds the clusters of a one-process run."""
    from PIL import Image

    from dist_worker import save_tiny_backbone

    rng = np.random.default_rng(0)
    for c, name in enumerate(["red", "green"]):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i in range(9):
            image = rng.integers(0, 60, size=(20, 18, 3), dtype=np.uint8)
            image[..., c] = 200
            Image.fromarray(image).save(tmp_path / "photos" / name / f"{name}{i}.png")
    backbone = str(save_tiny_backbone(tmp_path / "tiny.pt2"))
    data = ["-d", str(tmp_path / "photos"), "--backbone", backbone, "--no-progress"]
    proc = _torchrun_deepclust(*data, "--feature-cache", str(tmp_path / "cache"), "--out",
                               str(tmp_path / "features.npy"), command="embed")
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert proc.stdout.count("18 images -> 16-d features of tiny") == 1  # said by rank 0 alone
    (entry,) = list((tmp_path / "cache" / "tiny").iterdir())
    assert sorted(p.name for p in entry.iterdir()) == ["features.npy", "meta.json"]
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["processes"] == 2

    run = [*data, "--method", "kmeans", "-k", "2", "--seed", "0"]
    proc = _torchrun_deepclust(*run, "--feature-cache", str(tmp_path / "cache"),
                               "--out", str(tmp_path / "two"))
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert json.loads((entry / "meta.json").read_text()) == meta  # read, not extracted again
    _one_process_run(*run, "--feature-cache", str(tmp_path / "one-cache"), "--out", str(tmp_path / "one"))
    (two,), (one,) = list((tmp_path / "two").iterdir()), list((tmp_path / "one").iterdir())
    assert (two / "assignments.csv").read_text() == (one / "assignments.csv").read_text()
    (one_entry,) = list((tmp_path / "one-cache" / "tiny").iterdir())
    np.testing.assert_array_equal(np.load(one_entry / "features.npy"), np.load(tmp_path / "features.npy"))
