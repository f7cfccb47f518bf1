"""torch.distributed helpers and distributed k-means: 2 gloo processes on the CPU, started by torchrun.

The multi-process tests run ``tests/dist_worker.py`` under ``python -m torch.distributed.run
--standalone --nproc_per_node 2`` with a subprocess timeout, so a broken collective fails the test
instead of hanging it. The rest run in this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

import deepclust
from deepclust import KMeans
from deepclust import deep as deep_methods
from deepclust import distributed as D
from deepclust.deep.shares import Share, backward_share
from deepclust.deep.training import TrainSettings, corrupt, reconstruction_loss
from deepclust.metrics import adjusted_rand_index

WORKER = Path(__file__).with_name("dist_worker.py")
LAUNCH_TIMEOUT_S = 400  # a torchrun start takes 8-40 s on a busy 2-core machine; a hang takes forever


def _blobs(n: int = 900, d: int = 6, k: int = 5, seed: int = 0) -> np.ndarray:
    """Overlapping Gaussian blobs, so Lloyd needs several iterations and seeding matters."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 3.0, (k, d))
    return (centres[rng.integers(k, size=n)] + rng.normal(0.0, 1.5, (n, d))).astype(np.float32)


def _torchrun(scenario: str, src: Path, out: Path, **env) -> tuple[subprocess.CompletedProcess, float]:
    src_dir = Path(deepclust.__file__).resolve().parents[1]  # the deepclust under test, not another copy
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src_dir), os.environ.get("PYTHONPATH", "")]),
                "OMP_NUM_THREADS": "1", **env}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(WORKER), scenario, str(src), str(out)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
    return proc, time.perf_counter() - start


# ------------------------------------------------------------------------------ 2 processes, torchrun
@pytest.mark.slow
def test_two_ranks_match_one_process(tmp_path):
    X = _blobs()
    far = np.vstack([X[:3], np.full((2, X.shape[1]), [[100.0], [-100.0]], dtype=np.float32)])  # 2 empty
    configs = [
        dict(n_clusters=5, n_init=3, random_state=0),                            # k-means++ on all rows
        dict(n_clusters=5, n_init=3, init_size=120, random_state=1, sizes=[7, 893]),  # subsampled, uneven
        dict(n_clusters=5, init="random", n_init=2, random_state=2, sizes=[600, 300]),
        dict(n_clusters=5, init=far.tolist(), random_state=3, sizes=[450, 450]),  # empty-cluster repair
    ]
    np.savez(tmp_path / "in.npz", X=X, configs=json.dumps(configs))
    out = tmp_path / "out"
    out.mkdir()
    proc, _ = _torchrun("kmeans", tmp_path / "in.npz", out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = np.load(out / "result.npz")
    for i, cfg in enumerate(configs):
        cfg.pop("sizes", None)
        if isinstance(cfg.get("init"), list):
            cfg["init"] = np.asarray(cfg["init"], dtype=np.float32)
        ref = KMeans(**cfg).fit(X, distributed=False)
        np.testing.assert_array_equal(got[f"labels{i}"], ref.labels_, err_msg=f"config {i}")
        np.testing.assert_allclose(got[f"centers{i}"], ref.cluster_centers_, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got[f"inertia{i}"], ref.inertia_, rtol=1e-7)
        assert int(got[f"repaired{i}"]) == ref.n_empty_repaired_
    assert int(got["repaired3"]) >= 2  # both far centres were re-seeded: the repair ran across ranks
    # main_process_only: both ranks asked to write a file named after their rank; only rank 0 did.
    assert sorted(p.name for p in out.iterdir()) == ["result.npz", "written_by_rank0.txt"]


TINY_ARCH = {"name": "tiny-dense", "decoder": "mirror", "output_activation": "sigmoid",
             "encoder": [{"type": "flatten"}, {"type": "dense", "units": 32, "activation": "relu"},
                         {"type": "dense", "units": 3}]}


def _bar_images(n: int = 91) -> np.ndarray:
    """Grey 8x8 images in 3 groups (a bright bar in one of three rows)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 40, size=(n, 8, 8, 1)).astype(np.uint8)
    for i, c in enumerate(np.arange(n) % 3):
        images[i, 1 + 3 * c: 3 + 3 * c, :, 0] = 230
    return images


@pytest.mark.slow
def test_deep_methods_on_two_ranks_follow_one_process(tmp_path):
    """Autoencoder pretraining and the DEC / IDEC / DCN stages under DDP, with the global batch of one
    process: the same loss curves (rtol 1e-4; the ranks' gradients are summed in another order, and
    the observed gap is below 3e-5), the same clusters, checkpoints written by rank 0 alone, and a fit
    resumed from rank 0's checkpoint ending where an uninterrupted one ends.

    91 images in batches of 15: the ranks take 7 and 8 rows of each batch, and the last batch (1 row)
    leaves rank 0 none. Noise and random shifts are drawn for the whole batch on every rank.
    """
    X = _bar_images()
    base = dict(n_clusters=3, arch=TINY_ARCH, batch_size=15, lr=3e-3, n_init=3, random_state=0,
                verbose=False)
    stage = dict(base, pretrain_epochs=2, clustering_epochs=2, update_interval=4, tol=0.0)
    configs = [
        ["AEKMeans", dict(base, pretrain_epochs=3, noise=0.05, checkpoint_dir="ae")],
        ["IDEC", dict(stage, cluster_augment=True)],
        ["DEC", dict(stage)],
        ["DCN", dict(base, pretrain_epochs=2, clustering_epochs=2, cluster_augment=True)],
        ["IDEC", dict(stage, cluster_augment=True, checkpoint_dir="idec", resume_after=1)],
    ]
    np.savez(tmp_path / "in.npz", X=X, configs=json.dumps(configs))
    out = tmp_path / "out"
    out.mkdir()
    proc, _ = _torchrun("deep", tmp_path / "in.npz", out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = np.load(out / "deep.npz")
    for i, (name, params) in enumerate(configs):
        params = {k: v for k, v in params.items() if k not in ("checkpoint_dir", "resume_after")}
        ref = getattr(deep_methods, name)(**params).fit(X)
        losses = np.array([row.get("loss", np.nan) for row in ref.history_])
        np.testing.assert_allclose(got[f"loss{i}"], losses, rtol=1e-4, equal_nan=True, err_msg=f"{i} {name}")
        # The same partition (k-means restarts that find it tie to float rounding, so the numbering of
        # the clusters may differ).
        assert adjusted_rand_index(ref.labels_, got[f"labels{i}"]) == pytest.approx(1.0), f"{i} {name}"
    # Rank 0 alone wrote checkpoints; the resumed fit found them in rank 0's folder only.
    assert sorted(p.name for p in (out / "ae-rank0").iterdir()) == ["pretrain.pt"]
    assert sorted(p.name for p in (out / "idec-rank0").iterdir()) == ["cluster.pt", "pretrain.pt"]
    assert not (out / "ae-rank1").exists() and not (out / "idec-rank1").exists()


# A conv autoencoder with batch norm on both sides of the bottleneck, on images only: a batch norm on flat
# features needs two rows in every batch, and the last of 91 rows in batches of 15 has one. A dense one
# with dropout (mirrored: dropout in the decoder too).
BN_CONV_ARCH = {"name": "tiny-conv-bn", "output_activation": "sigmoid",
                "encoder": [{"type": "conv", "filters": 4, "kernel": 3}, {"type": "batchnorm"},
                            {"type": "activation", "fn": "relu"}, {"type": "maxpool", "size": 2},
                            {"type": "flatten"}, {"type": "dense", "units": 3}],
                "decoder": [{"type": "dense", "units": 64, "activation": "relu"},
                            {"type": "reshape", "shape": [4, 4, 4]}, {"type": "upsample", "size": 2},
                            {"type": "conv", "filters": 4, "kernel": 3}, {"type": "batchnorm"},
                            {"type": "activation", "fn": "relu"},
                            {"type": "conv", "filters": 1, "kernel": 3}]}
DROPOUT_ARCH = {"name": "tiny-dense-dropout", "decoder": "mirror", "output_activation": "sigmoid",
                "encoder": [{"type": "flatten"}, {"type": "dense", "units": 32, "activation": "relu"},
                            {"type": "dropout", "rate": 0.25}, {"type": "dense", "units": 3}]}


@pytest.mark.slow
def test_autoencoders_with_batch_norm_and_dropout_on_two_ranks_follow_one_process(tmp_path):
    """Batch norm and dropout of the global batch (``deep.global_batch``) in autoencoder pretraining and
    in the DEC / IDEC / DCN stages: two ranks give one process's loss curve (rtol 1e-4; the gaps seen
    are below 4e-6) and clusters. With each rank's own batch statistics and dropout masks, three epochs
    of pretraining end 2e-3 (batch norm) and 6e-3 (dropout) off, and the ranks' running statistics
    differ.

    The stages after a batch-norm network's pretraining start from its embedding in evaluation mode, so
    that network is trained with SGD here: a conv bias right before a batch norm gets a gradient of float
    rounding alone (the batch norm removes it), which Adam scales up to steps of ~lr/10, so its value,
    and with it the eval-mode embedding (the running mean lags behind it), follows the rounding (~1 %
    after two epochs, in one process as in two). The training-mode loss does not see that bias.

    91 images in batches of 15: the ranks take 7 and 8 rows of each batch, and the last batch (1 row)
    leaves rank 0 none, which still joins the collectives of the batch statistics. The last configuration
    is fitted for one clustering epoch, then resumed from rank 0's checkpoints.
    """
    X = _bar_images()
    base = dict(n_clusters=3, batch_size=15, lr=3e-3, n_init=3, random_state=0, verbose=False)
    sgd = dict(base, arch=BN_CONV_ARCH, optimizer="sgd", lr=0.1, pretrain_epochs=2, clustering_epochs=2)
    configs = [
        ["AEKMeans", dict(base, arch=BN_CONV_ARCH, pretrain_epochs=3, noise=0.05)],
        ["AEKMeans", dict(base, arch=DROPOUT_ARCH, pretrain_epochs=3)],
        ["IDEC", dict(sgd, update_interval=4, tol=0.0, cluster_augment=True)],
        ["DEC", dict(base, arch=DROPOUT_ARCH, pretrain_epochs=2, clustering_epochs=2, update_interval=4,
                     tol=0.0)],
        ["DCN", dict(sgd, cluster_optimizer="sgd")],
        ["IDEC", dict(sgd, update_interval=4, tol=0.0, checkpoint_dir="idec-bn", resume_after=1)],
    ]
    np.savez(tmp_path / "in.npz", X=X, configs=json.dumps(configs))
    out = tmp_path / "out"
    out.mkdir()
    proc, _ = _torchrun("deep", tmp_path / "in.npz", out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = np.load(out / "deep.npz")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun process (OMP_NUM_THREADS=1)
    try:
        refs = [getattr(deep_methods, name)(**{k: v for k, v in params.items()
                                               if k not in ("checkpoint_dir", "resume_after")}).fit(X)
                for name, params in configs]
    finally:
        torch.set_num_threads(threads)
    for i, ((name, _), ref) in enumerate(zip(configs, refs, strict=True)):
        losses = np.array([row.get("loss", np.nan) for row in ref.history_])
        np.testing.assert_allclose(got[f"loss{i}"], losses, rtol=1e-4, equal_nan=True, err_msg=f"{i} {name}")
        assert adjusted_rand_index(ref.labels_, got[f"labels{i}"]) == pytest.approx(1.0), f"{i} {name}"
        # the fitted autoencoder has torch's own layers again: it saves, copies and predicts as any other
        assert not any("Global" in type(m).__name__ for m in ref.autoencoder_.modules())
    # a fit resumed from rank 0's checkpoints (written by the global-batch layers) ends where one ends
    assert sorted(p.name for p in (out / "idec-bn-rank0").iterdir()) == ["cluster.pt", "pretrain.pt"]
    assert not (out / "idec-bn-rank1").exists()


# A convnet without batch norm or dropout (alexnet-small, the default, has both).
TINY_CONVNET = {"name": "tiny-conv", "layers": [
    {"type": "conv", "filters": 6, "kernel": 3}, {"type": "activation", "fn": "relu"},
    {"type": "maxpool", "size": 2}, {"type": "flatten"}, {"type": "dense", "units": 12}]}


@pytest.mark.slow
def test_deepcluster_on_two_ranks_follows_one_process(tmp_path):
    """DeepCluster under DDP: features, PCA (from all-reduced moments) and k-means across ranks, the
    pseudo-labels gathered, the global batch of one process with batch norm and dropout of the whole
    batch (``deep.global_batch``).

    The first clustering, before any training, gives exactly one process's pseudo-labels (configuration
    2). The cross-entropy follows one process (rtol 1e-4: the ranks sum gradients, batch statistics
    and PCA moments in another order; the gaps seen are below 2e-6), the clustering loss too (rtol 1e-2:
    whitening magnifies those gaps, up to 2.6e-3 seen on an Intel Xeon) and the clusters
    are the same partition, for a small convnet and for alexnet-small with batch norm and dropout; a fit
    resumed from rank 0's checkpoint ends where an uninterrupted one ends. The worker checks that both
    ranks end with the same weights; rank 0 alone writes checkpoints.
    """
    X = _bar_images()
    base = dict(n_clusters=3, batch_size=15, pca_dim=4, n_init=3, random_state=0, verbose=False)
    tiny = dict(base, arch=TINY_CONVNET, input="grey", epochs=2, train_clusters=4, augment="crop+flip",
                lr=0.2)
    configs = [
        ["DeepCluster", dict(tiny)],
        ["DeepCluster", dict(tiny, checkpoint_dir="dc", resume_after=1)],
        ["DeepCluster", dict(base, epochs=0)],
        ["DeepCluster", dict(base, epochs=2, augment="crop+flip", checkpoint_dir="dc-bn")],
        ["DeepCluster", dict(tiny, epochs=1, backend="sklearn")],  # fitted on rank 0, sent to the others
    ]
    np.savez(tmp_path / "in.npz", X=X, configs=json.dumps(configs))
    out = tmp_path / "out"
    out.mkdir()
    proc, _ = _torchrun("deep", tmp_path / "in.npz", out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = np.load(out / "deep.npz")
    for i, (_, params) in enumerate(configs):
        params = {k: v for k, v in params.items() if k not in ("checkpoint_dir", "resume_after")}
        ref = deep_methods.DeepCluster(**params).fit(X)
        first = ref.history_[0]["clustering_loss"]
        np.testing.assert_allclose(got[f"clustering_loss{i}"][0], first, rtol=1e-6, err_msg=f"config {i}")
        if i == 2:
            np.testing.assert_array_equal(got[f"labels{i}"], ref.labels_)
        if i != 2:
            losses = np.array([np.nan if r["cross_entropy"] is None else r["cross_entropy"]
                               for r in ref.history_])
            np.testing.assert_allclose(got[f"loss{i}"], losses, rtol=1e-4, equal_nan=True, err_msg=f"{i}")
            # PCA whitening divides by each component's spread, so the trained features' rounding shows
            # up larger in the k-means loss (alexnet-small with batch norm: 2.6e-3 on one CPU, same labels)
            np.testing.assert_allclose(got[f"clustering_loss{i}"],
                                       [r["clustering_loss"] for r in ref.history_], rtol=1e-2,
                                       err_msg=f"config {i}")
            assert adjusted_rand_index(ref.labels_, got[f"labels{i}"]) == pytest.approx(1.0), f"config {i}"
    assert sorted(p.name for p in (out / "dc-rank0").iterdir()) == ["deepcluster.pt"]
    assert sorted(p.name for p in (out / "dc-bn-rank0").iterdir()) == ["deepcluster.pt"]
    assert not (out / "dc-rank1").exists() and not (out / "dc-bn-rank1").exists()


@pytest.mark.slow
def test_backbone_features_extracted_by_two_ranks_are_one_process_features(tmp_path):
    """Each rank extracts its run of whole batches into the shared cache file; rank 0 publishes the entry.
    The features are one process's bit for bit (the same images go through the network in the same
    batches), the entry is complete once (one folder, no progress records left), an unreadable file
    found by one rank is left out on every rank, and a second extraction reads the cache."""
    from deepclust.backbones import extract_features, get_backbone
    from dist_worker import save_tiny_backbone

    images = np.random.default_rng(0).integers(0, 256, (11, 20, 18, 3), dtype=np.uint8)
    path = save_tiny_backbone(tmp_path / "tiny.pt2")
    np.savez(tmp_path / "in.npz", images=images, backbone=str(path))
    out = tmp_path / "out"
    out.mkdir()
    proc, _ = _torchrun("extract", tmp_path / "in.npz", out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = np.load(out / "extract.npz")
    backbone = get_backbone(str(path))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun process (OMP_NUM_THREADS=1)
    try:
        with pytest.warns(UserWarning, match="img03.png"):
            folder, index = extract_features(out / "photos", backbone, cache_dir=tmp_path / "one",
                                             batch_size=4, num_workers=0, return_index=True)
        array = extract_features(images, backbone, cache_dir=tmp_path / "one", batch_size=4, num_workers=0)
    finally:
        torch.set_num_threads(threads)
    for attempt in (0, 1):
        np.testing.assert_array_equal(got[f"folder_features{attempt}"], folder)
        np.testing.assert_array_equal(got[f"folder_index{attempt}"], index)
        np.testing.assert_array_equal(got[f"array_features{attempt}"], array)
    assert index.tolist() == [i for i in range(11) if i != 3]
    # 11 images in 3 batches of 4: rank 0 takes the first batch, rank 1 the other two (7 images; an
    # unreadable file's row goes through the network and is dropped from the entry).
    assert got["array_seen0"].tolist() == [4, 7] and got["folder_seen0"].tolist() == [4, 7]
    assert got["array_seen1"].tolist() == [0, 0] and got["folder_seen1"].tolist() == [0, 0]
    entries = sorted((out / "cache" / "tiny").iterdir())
    assert len(entries) == 2
    for entry in entries:
        assert sorted(p.name for p in entry.iterdir()) == ["features.npy", "meta.json"]
        assert json.loads((entry / "meta.json").read_text())["processes"] == 2


@pytest.mark.slow
def test_an_extraction_killed_under_torchrun_resumes_where_each_rank_stopped(tmp_path):
    """Each rank records its own progress; killed after their first batches, a new launch redoes only the
    rest of each rank's rows, and the published features are one process's."""
    from deepclust.backbones import extract_features, get_backbone
    from dist_worker import save_tiny_backbone

    images = np.random.default_rng(1).integers(0, 256, (19, 20, 18, 3), dtype=np.uint8)
    path = save_tiny_backbone(tmp_path / "tiny.pt2")
    np.savez(tmp_path / "in.npz", images=images, backbone=str(path))
    proc, _ = _torchrun("killed", tmp_path / "in.npz", tmp_path)
    assert proc.returncode != 0 and "KeyboardInterrupt" in proc.stderr
    (entry,) = list((tmp_path / "cache" / "tiny").iterdir())
    # 19 images, 5 batches of 4: rank 0 holds rows 0-8 (2 batches), rank 1 rows 8-19 (3 batches)
    assert sorted(p.name for p in entry.iterdir()) == ["features.partial.npy", "progress.0-8.json",
                                                       "progress.8-19.json"]
    proc, _ = _torchrun("resumed", tmp_path / "in.npz", tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = np.load(tmp_path / "resumed.npz")
    assert got["seen"].tolist() == [4, 7]  # each rank's first batch was not redone
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = extract_features(images, get_backbone(str(path)), cache_dir=tmp_path / "one", batch_size=4,
                               num_workers=0)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(got["features"], one)
    assert sorted(p.name for p in entry.iterdir()) == ["features.npy", "meta.json"]


@pytest.mark.slow
def test_an_unreadable_image_on_one_rank_stops_every_rank_with_its_message(tmp_path):
    from dist_worker import save_tiny_backbone

    images = np.random.default_rng(0).integers(0, 256, (11, 20, 18, 3), dtype=np.uint8)
    np.savez(tmp_path / "in.npz", images=images, backbone=str(save_tiny_backbone(tmp_path / "tiny.pt2")))
    proc, seconds = _torchrun("unreadable", tmp_path / "in.npz", tmp_path, DEEPCLUST_DIST_TIMEOUT="600")
    assert proc.returncode != 0
    assert "rank 0 of 2 failed" in proc.stderr and "rank 1 of 2 failed" in proc.stderr  # both, at once
    assert "Cannot read image file" in proc.stderr and "img09.png" in proc.stderr
    assert "(rank 1 of 2)" in proc.stderr  # the rank that met it
    assert seconds < 300  # not the 600 s collective timeout
    assert not any((tmp_path / "cache" / "tiny").iterdir())  # the dead entry was deleted


@pytest.mark.slow
def test_a_rank_that_dies_ends_the_job(tmp_path):
    np.savez(tmp_path / "in.npz", X=_blobs(200))
    proc, seconds = _torchrun("die", tmp_path / "in.npz", tmp_path, DEEPCLUST_DIST_TIMEOUT="600")
    assert proc.returncode != 0
    assert "rank 1 dies on purpose" in proc.stderr
    assert seconds < 300  # torchrun stops rank 0 at once, long before its 600 s collective timeout


@pytest.mark.slow
def test_a_stalled_rank_times_out(tmp_path):
    np.savez(tmp_path / "in.npz", X=_blobs(200))
    proc, seconds = _torchrun("stall", tmp_path / "in.npz", tmp_path, DEEPCLUST_DIST_TIMEOUT="3")
    assert proc.returncode != 0
    assert "rank 0 of 2 failed" in proc.stderr and "DEEPCLUST_DIST_TIMEOUT" in proc.stderr
    assert seconds < 300  # rank 1 sleeps 600 s: the job ended because rank 0's collective timed out


# ------------------------------------------------------------------------------------ in this process
def test_global_dropout_draws_the_whole_batch_mask(monkeypatch):
    """A share's rows get the mask ``F.dropout`` gives them in the whole batch (same random stream),
    and the stream advances as for the whole batch."""
    from deepclust.deep.global_batch import use_global_batch

    monkeypatch.setattr(D, "is_distributed", lambda: True)
    net = torch.nn.Sequential(torch.nn.Dropout(0.4))
    context = use_global_batch(net)
    x = torch.rand(10, 6)
    torch.manual_seed(0)
    whole = torch.nn.functional.dropout(x, 0.4, True)
    after = torch.rand(1)
    for start, stop in [(0, 4), (4, 10)]:
        context.share = Share(start, stop, 10)
        torch.manual_seed(0)
        assert torch.equal(net(x[start:stop]), whole[start:stop])
        assert torch.equal(torch.rand(1), after)


def test_global_batch_layers_last_one_stage_and_leave_the_trained_layers(group_of_one, monkeypatch):
    """Under torchrun the stage trains the global-batch layers; afterwards the module holds torch's own
    layers again (the same objects), with what the stage learned: parameters and running statistics.
    In one process nothing is swapped."""
    from deepclust.deep.global_batch import GlobalBatchNorm, GlobalDropout, global_batch_layers

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.Dropout(0.3))
    layers = list(net)
    x = torch.rand(6, 1, 5, 5)
    with global_batch_layers(net) as batch:  # one process: the plain layers
        assert list(net) == layers and batch.take(torch.arange(6))[1] == Share(0, 6, 6)
    monkeypatch.setattr(D, "is_distributed", lambda: True)
    with global_batch_layers(net) as batch:
        assert [type(m) for m in net][1:] == [GlobalBatchNorm, GlobalDropout]
        assert net[1].weight is layers[1].weight and net[1].running_mean is layers[1].running_mean
        rows, _ = batch.take(torch.arange(6))
        net(x[rows]).sum().backward()
        net.eval()
    assert all(a is b for a, b in zip(net, layers, strict=True))
    assert not net[1].training and not net[2].training  # the mode set inside the stage is kept
    assert int(net[1].num_batches_tracked) == 1 and net[1].running_mean.abs().sum() > 0
    assert net[1].weight.grad is not None


def test_global_batch_norm_on_a_group_of_one_is_batch_norm(group_of_one, monkeypatch):
    """Through the collective path (a real group of one rank), the global-batch layer gives torch's
    batch norm: output, gradients and running statistics. In float64, because the gradients of the
    layers before a batch norm nearly cancel: in float32 both torch's and ours are ~1 % (of the largest)
    from the exact ones."""
    from deepclust.deep.global_batch import GlobalBatchNorm, use_global_batch

    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3)).double()
    ours = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3)).double()
    ours.load_state_dict(plain.state_dict())
    weight = ours[1].weight
    use_global_batch(ours)
    assert isinstance(ours[1], GlobalBatchNorm) and ours[1].weight is weight  # the same parameter
    monkeypatch.setattr(D, "is_distributed", lambda: True)
    x = torch.randn(5, 2, 6, 6, dtype=torch.float64) * 3 + 1
    for net in (plain, ours):
        net.train()
        (net(x) * torch.arange(3.0).view(1, 3, 1, 1)).pow(2).sum().backward()
    torch.testing.assert_close(ours(x), plain(x), rtol=1e-10, atol=1e-10)
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value, rtol=1e-10, atol=1e-12)
    for a, b in zip(ours.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-7, atol=1e-10)


@pytest.fixture
def group_of_one(tmp_path):
    """A real gloo process group with one rank, so the sharded code path runs without subprocesses."""
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("params", [dict(init_size=100, n_init=2), dict(init="random", n_init=2)])
def test_sharded_path_with_one_rank_matches_local_fit(group_of_one, params):
    X = _blobs(400)
    local = KMeans(4, random_state=0, **params).fit(X, distributed=False)
    sharded = KMeans(4, random_state=0, **params).fit(X, distributed=True)
    np.testing.assert_array_equal(sharded.labels_, local.labels_)
    np.testing.assert_allclose(sharded.cluster_centers_, local.cluster_centers_, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sharded.inertia_, local.inertia_, rtol=1e-9)
    assert not D.is_distributed() and D.world_size() == 1  # "auto" stays local in a group of one


def test_bad_distributed_arguments():
    X = _blobs(50)
    with pytest.raises(ValueError, match="initialised torch.distributed group"):
        KMeans(3).fit(X, distributed=True)
    with pytest.raises(ValueError, match="distributed must be"):
        KMeans(3).fit(X, distributed="yes")


def test_unsupported_backend_across_ranks(group_of_one):
    with pytest.raises(ValueError, match="cannot fit shards across ranks"):
        KMeans(3, backend="sklearn").fit(_blobs(50), distributed=True)
    with pytest.raises(ValueError, match="cannot fit shards across ranks"):
        KMeans(3, algorithm="minibatch").fit(_blobs(50), distributed=True)


@pytest.mark.parametrize("n, world", [(10, 3), (7, 2), (2, 4), (0, 2)])
def test_shards_partition_the_rows(n, world):
    blocks = [D.shard_indices(n, r, world) for r in range(world)]
    np.testing.assert_array_equal(np.concatenate(blocks), np.arange(n))  # contiguous: original order
    assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    for r in range(world):
        np.testing.assert_array_equal(np.arange(n)[D.shard_slice(n, r, world)], blocks[r])
    strided = np.concatenate([D.shard_indices(n, r, world, strided=True) for r in range(world)])
    np.testing.assert_array_equal(np.sort(strided), np.arange(n))
    with pytest.raises(ValueError, match="rank"):
        D.shard_indices(n, world, world)


def test_helpers_outside_a_group(tmp_path, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert not D.launched_by_torchrun()
    with D.distributed_session("cpu") as device:
        assert device == torch.device("cpu")
        assert (D.rank(), D.world_size(), D.is_main_process(), D.is_distributed()) == (0, 1, True, False)
        D.barrier()
        t = torch.arange(3.0)
        assert D.all_reduce_sum(t) is t and D.sum_in_rank_order(t).equal(t)
        assert D.broadcast_object({"a": 1}) == {"a": 1}
        np.testing.assert_array_equal(D.concat_shards(np.arange(4)), np.arange(4))
        whole = np.arange(4)
        assert D.fill_from_shards(whole) is whole
        assert D.main_process_only(lambda: "ran")() == "ran"


def test_timeout_from_environment(monkeypatch):
    monkeypatch.delenv(D.TIMEOUT_ENV, raising=False)
    assert D.timeout_seconds() == D.DEFAULT_TIMEOUT_S
    monkeypatch.setenv(D.TIMEOUT_ENV, "7.5")
    assert D.timeout_seconds() == 7.5
    for bad in ("soon", "0", "-3"):
        monkeypatch.setenv(D.TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match=D.TIMEOUT_ENV):
            D.timeout_seconds()


def test_a_share_is_corrupted_as_those_rows_of_the_whole_batch():
    """Noise and shifts are drawn for the whole batch and sliced: each rank's rows get what one process
    gives them, and every rank's generator ends in the same state."""
    x = torch.rand(10, 1, 8, 8)
    settings = TrainSettings(noise=0.3, augment=True)
    g_whole = torch.Generator().manual_seed(0)
    whole = corrupt(x, settings, g_whole)
    for start, stop in [(0, 4), (4, 10), (10, 10)]:  # the last: a rank with no rows of the batch
        g = torch.Generator().manual_seed(0)
        part = corrupt(x[start:stop], settings, g, Share(start, stop, 10))
        torch.testing.assert_close(part, whole[start:stop])
        assert torch.equal(g.get_state(), g_whole.get_state())


def test_weighted_shares_add_up_to_the_whole_batch_gradient():
    """``backward_share`` weights a share's mean loss by rows * world / size: with DDP's average over
    ranks (here one rank, so the shares' gradients simply add up) that is the whole batch's gradient."""
    torch.manual_seed(0)
    model, x = torch.nn.Linear(6, 6), torch.rand(10, 6)
    reconstruction_loss(model(x), x).backward()
    whole = model.weight.grad.clone()
    model.weight.grad = None
    for start, stop in [(0, 3), (3, 10), (10, 10)]:
        out = model(x[start:stop])
        loss = reconstruction_loss(out, x[start:stop]) if stop > start else None
        backward_share(loss, (out,), Share(start, stop, 10))
    torch.testing.assert_close(model.weight.grad, whole)
