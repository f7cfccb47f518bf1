"""DeepCluster: its parts against hand-computed results, and the estimator / CLI on tiny data."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from deepclust import DeepCluster
from deepclust.cli import main
from deepclust.data.transforms import sobel
from deepclust.deep import load_model, save_model
from deepclust.deep.deepcluster.crop_flip import random_resized_crop
from deepclust.deep.deepcluster.empty_clusters import repair_empty_clusters
from deepclust.deep.deepcluster.pca_whitening import PCAWhitening
from deepclust.deep.deepcluster.sampler import uniform_label_sampler
from deepclust.models.convnets import InputFrontEnd, build_convnet, list_convnets

FAST = dict(epochs=2, batch_size=32, pca_dim=8, n_init=2, verbose=False)
# A small network in the same layer vocabulary, so most tests spend no time on convolutions.
TINY_NET = {"name": "tiny", "layers": [
    {"type": "conv", "filters": 8, "kernel": 3}, {"type": "batchnorm"}, {"type": "activation", "fn": "relu"},
    {"type": "maxpool", "size": 2},
    {"type": "conv", "filters": 16, "kernel": 3}, {"type": "batchnorm"}, {"type": "activation", "fn": "relu"},
    {"type": "maxpool", "size": 2}, {"type": "flatten"}, {"type": "dense", "units": 32}]}


def blobs(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tiny 28x28 grey images of three shapes (bar, square, cross) with noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    X = rng.integers(0, 40, size=(n, 28, 28), dtype=np.uint8)
    for i, label in enumerate(y):
        r, c = rng.integers(6, 12, size=2)
        if label == 0:
            X[i, r:r + 10, c + 4:c + 7] = 255
        elif label == 1:
            X[i, r:r + 10, c:c + 10] = 255
        else:
            X[i, r + 4:r + 6, c:c + 12] = 255
            X[i, r:r + 12, c + 5:c + 7] = 255
    return X, y


# ------------------------------------------------------------------------------------------ parts
def test_uniform_sampler_draws_every_pseudo_class_about_equally():
    labels = np.array([0] * 900 + [1] * 90 + [2] * 9 + [4] * 1)  # cluster 3 empty, very unbalanced
    idx = uniform_label_sampler(labels, 4000, torch.Generator().manual_seed(0))
    assert idx.shape == (4000,)
    counts = np.bincount(labels[idx.numpy()], minlength=5)
    assert counts[3] == 0
    assert np.all(np.abs(counts[[0, 1, 2, 4]] - 1000) <= 1)  # 4000 / 4 non-empty classes each


def test_uniform_sampler_without_replacement_for_big_clusters():
    labels = np.repeat(np.arange(4), 100)
    idx = uniform_label_sampler(labels, 200, torch.Generator().manual_seed(1)).numpy()
    assert len(np.unique(idx)) == 200  # 51 wanted per class from 100 members: no repeats


def test_empty_cluster_repair_leaves_no_empty_cluster():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 4)).astype(np.float32)
    labels = np.zeros(50, dtype=np.int64)
    labels[:10] = 1  # clusters 2, 3, 4 empty
    centers = np.stack([X[labels == c].mean(0) if (labels == c).any() else np.full(4, 99.0)
                        for c in range(5)])
    g = torch.Generator().manual_seed(0)
    new_labels, new_centers, repaired = repair_empty_clusters(X, labels, centers, g)
    assert repaired == 3
    assert np.bincount(new_labels, minlength=5).min() >= 1
    assert new_centers.shape == (5, 4) and np.isfinite(new_centers).all()


def test_empty_cluster_repair_with_identical_points():
    X = np.ones((6, 2), dtype=np.float32)
    labels = np.zeros(6, dtype=np.int64)
    g = torch.Generator().manual_seed(0)
    new_labels, _, repaired = repair_empty_clusters(X, labels, np.zeros((3, 2)), g)
    assert repaired == 2 and sorted(np.bincount(new_labels).tolist()) == [1, 1, 4]


def test_sobel_layer_matches_a_hand_computed_image():
    image = torch.tensor([[0.0, 0.0, 0.0, 0.0],
                          [0.0, 1.0, 2.0, 0.0],
                          [0.0, 0.0, 0.0, 0.0]])[None, None]  # (1, 1, 3, 4)
    out = InputFrontEnd("sobel", 1)(image)
    # Gx = [[1, 0, -1], [2, 0, -2], [1, 0, -1]] as a cross-correlation with zero padding; Gy its transpose.
    gx = torch.tensor([[-1.0, -2.0, 1.0, 2.0],
                       [-2.0, -4.0, 2.0, 4.0],
                       [-1.0, -2.0, 1.0, 2.0]])
    gy = torch.tensor([[-1.0, -4.0, -5.0, -2.0],  # row 0: -(1, 2, 1) . row 1 = -(0 + 2 + 2) at column 1
                       [0.0, 0.0, 0.0, 0.0],
                       [1.0, 4.0, 5.0, 2.0]])
    assert torch.equal(out[0, 0], gx) and torch.equal(out[0, 1], gy)
    # the same as the numpy transform of the data package, and nothing in it trains
    rgb = torch.rand(2, 3, 5, 6)
    want = sobel(rgb.permute(0, 2, 3, 1).numpy())
    got = InputFrontEnd("sobel", 3)(rgb).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert list(InputFrontEnd("sobel", 3).parameters()) == []


@pytest.mark.parametrize("mode,channels", [("grey", 1), ("colour", 3), ("sobel", 2), ("colour+sobel", 5)])
def test_input_modes(mode, channels):
    for c in (1, 3):
        assert InputFrontEnd(mode, c)(torch.rand(2, c, 8, 8)).shape == (2, channels, 8, 8)


@pytest.mark.parametrize("arch", list_convnets())
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 96, 96)])
def test_convnets_adapt_to_small_inputs(arch, shape):
    net = build_convnet(arch, shape, "colour+sobel")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert net(torch.rand(2, *shape)).shape == (2, net.feature_dim)
    torch.manual_seed(0)
    again = type(net)(json.loads(json.dumps(net.spec)))  # the spec is JSON and rebuilds the network
    again.load_state_dict(net.state_dict())


def test_pca_whitening_gives_identity_covariance_then_unit_norm():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 20)) @ rng.normal(size=(20, 20)) * 5 + 3
    white = PCAWhitening(8, l2_normalize=False).fit_transform(X).double()
    assert white.shape == (500, 8)
    np.testing.assert_allclose(torch.cov(white.T).numpy(), np.eye(8), atol=1e-4)
    unit = PCAWhitening(8).fit_transform(X)
    np.testing.assert_allclose(unit.norm(dim=1).numpy(), 1.0, atol=1e-5)
    assert PCAWhitening(256).fit(X).n_components_ == 20  # capped by the feature dimension


def test_random_resized_crop_keeps_shape_and_flip_mirrors():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(8, 1, 1, 1)
    g = torch.Generator().manual_seed(0)
    assert random_resized_crop(x, g).shape == x.shape
    flipped = random_resized_crop(x, g, crop=False, flip=True)
    for img in flipped:
        assert torch.allclose(img, x[0], atol=1e-5) or torch.allclose(img, x[0].flip(-1), atol=1e-5)


# -------------------------------------------------------------------------------------- estimator
def test_two_epochs_on_tiny_data_with_history_and_prediction():
    X, y = blobs()
    model = DeepCluster(3, arch=TINY_NET, random_state=0, **FAST).fit(X, y)
    assert model.labels_.shape == (120,) and np.bincount(model.labels_, minlength=3).min() >= 1
    assert model.cluster_centers_.shape == (3, 8) and model.embedding_.shape == (120, 8)
    assert [row["epoch"] for row in model.history_] == [0, 1, 2]
    first, last = model.history_[0], model.history_[-1]
    assert first["nmi_prev"] is None and 0 <= last["nmi_prev"] <= 1
    assert first["cross_entropy"] > 0 and last["cross_entropy"] is None
    assert all(0 <= row["acc"] <= 1 and row["clustering_loss"] >= 0 for row in model.history_)
    np.testing.assert_allclose(model.transform(X), model.embedding_, atol=1e-4)
    assert np.mean(model.predict(X) == model.labels_) > 0.95


def test_determinism_for_a_seed():
    X, _ = blobs(90)
    a = DeepCluster(3, arch=TINY_NET, random_state=3, **FAST).fit(X)
    b = DeepCluster(3, arch=TINY_NET, random_state=3, **FAST).fit(X)
    assert np.array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.embedding_, b.embedding_)
    assert [r["cross_entropy"] for r in a.history_] == [r["cross_entropy"] for r in b.history_]


def test_over_clustering_k_larger_than_classes(tmp_path):
    X, y = blobs(90)
    X = X[:, ::2, ::2]  # 14 x 14: the VGG-style net at a quarter of the cost
    model = DeepCluster(20, train_clusters=30, input="grey", arch="vgg-small", optimizer="adam",
                        top_optimizer="adam", augment="crop+flip", random_state=0, **FAST).fit(X, y)
    assert [row["k"] for row in model.history_] == [30, 30, 20]
    assert len(np.unique(model.labels_)) == 20  # no empty cluster
    saved = load_model(save_model(model, tmp_path / "model"))
    assert np.array_equal(saved.predict(X), model.predict(X))


def test_resume_continues_from_the_checkpoint(tmp_path):
    X, _ = blobs(90)
    whole = DeepCluster(3, arch=TINY_NET, random_state=0, **{**FAST, "epochs": 3}).fit(X)
    DeepCluster(3, arch=TINY_NET, random_state=0, checkpoint_dir=str(tmp_path),
                **{**FAST, "epochs": 2}).fit(X)
    resumed = DeepCluster(3, arch=TINY_NET, random_state=0, checkpoint_dir=str(tmp_path),
                          **{**FAST, "epochs": 3}).fit(X)
    assert [r["epoch"] for r in resumed.history_] == [0, 1, 2, 3]
    assert np.array_equal(resumed.labels_, whole.labels_)


def test_cosine_schedule_lowers_the_network_rate_every_epoch():
    X, _ = blobs(60)
    model = DeepCluster(3, arch=TINY_NET, random_state=0, lr=0.1, lr_schedule="cosine",
                        **{**FAST, "epochs": 4}).fit(X)
    rates = [row["lr"] for row in model.history_[:-1]]  # the final clustering trains nothing
    np.testing.assert_allclose(rates, [0.1, 0.1 * (1 + np.cos(np.pi / 4)) / 2, 0.05,
                                       0.1 * (1 + np.cos(3 * np.pi / 4)) / 2])
    assert "lr" not in model.history_[-1]
    constant = DeepCluster(3, arch=TINY_NET, random_state=0, lr=0.1, **{**FAST, "epochs": 2}).fit(X)
    assert [row["lr"] for row in constant.history_[:-1]] == [0.1, 0.1]


def test_bad_parameters_are_named():
    X, _ = blobs(30)
    with pytest.raises(ValueError, match="input"):
        DeepCluster(3, input="rgb", **FAST).fit(X)
    with pytest.raises(ValueError, match="optimizer"):
        DeepCluster(3, optimizer="rmsprop", **FAST).fit(X)
    with pytest.raises(ValueError, match="lr_schedule"):
        DeepCluster(3, lr_schedule="step", **FAST).fit(X)
    with pytest.raises(ValueError, match="Unknown network"):
        DeepCluster(3, arch="resnet", **FAST).fit(X)


def test_plot_of_the_per_epoch_curves(tmp_path):
    from deepclust.report.plots import plot_deepcluster_history

    history = [{"epoch": e, "clustering_loss": 1 / (e + 1), "cross_entropy": None if e == 3 else 2 / (e + 1),
                "nmi_prev": None if e == 0 else 0.5 + e / 10, "acc": 0.5, "nmi": 0.4} for e in range(4)]
    path = plot_deepcluster_history(history, tmp_path / "curves.png")
    assert path.is_file() and path.stat().st_size > 1000
    with pytest.raises(ValueError, match="epoch"):
        plot_deepcluster_history([{"loss": 1.0}], tmp_path / "none.png")


# ------------------------------------------------------------------------------------- command line
@pytest.mark.parametrize("visualize", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_deepclust_run_writes_the_per_epoch_csv(tmp_path, monkeypatch, visualize):
    X, y = blobs(200)
    monkeypatch.setattr("deepclust.pipeline.inputs.load_dataset", lambda *a, **k: _dataset(X, y))
    arch = tmp_path / "tiny.yaml"  # a network file in the architecture vocabulary (YAML is a JSON superset)
    arch.write_text(json.dumps(TINY_NET))
    tmp_path = tmp_path / "runs"
    code = main(["run", "-d", "tiny", "--method", "deepcluster", "--arch", str(arch),
                 "--input", "sobel", "--dc-epochs", "2", "--pca-dim", "8", "--batch-size", "64",
                 "--n-init", "2", "--out", str(tmp_path), "--no-progress", *(["--visualize"] * visualize)])
    assert code == 0
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert {"clustering_loss", "cross_entropy", "nmi_prev", "acc", "nmi"} <= set(rows[0])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["acc"] <= 1 and metrics["n_clusters"] == 3
    assert (run_dir / "plots" / "deepcluster_history.png").is_file() == visualize
    assert (run_dir / "model" / "model.safetensors").is_file()
    assert any((run_dir / "checkpoints").iterdir())


def _dataset(X, y):
    from deepclust.data import ImageDataset

    return ImageDataset(name="tiny", images=X[..., None], labels=y, class_names=["bar", "square", "cross"],
                        description="three shapes")


def test_interrupted_deepclust_run_resumes(tmp_path, monkeypatch, kill_after_checkpoint):
    X, y = blobs(100)
    monkeypatch.setattr("deepclust.pipeline.inputs.load_dataset", lambda *a, **k: _dataset(X, y))
    arch = tmp_path / "tiny.json"
    arch.write_text(json.dumps(TINY_NET))
    tmp_path = tmp_path / "runs"
    argv = ["run", "-d", "tiny", "--method", "deepcluster", "-a", str(arch), "--dc-epochs", "3",
            "--pca-dim", "8",
            "--batch-size", "50", "--n-init", "2", "--out", str(tmp_path), "--no-progress"]
    kill_after_checkpoint("deepcluster", 2)
    assert main(argv) == 130
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "interrupted"
    kill_after_checkpoint(None)
    assert main(["run", "--resume", str(run_dir)]) == 0
    assert kill_after_checkpoint.saved == [("deepcluster", 3)]  # epochs 1-2 were not trained again
    with open(run_dir / "history.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["0", "1", "2", "3"]
