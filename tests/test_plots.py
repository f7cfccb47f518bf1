"""Plots: each function writes one readable PNG from small synthetic data and refuses bad input clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from threadpoolctl import threadpool_limits

from deepclust.report.plots import (
    plot_cluster_montage,
    plot_confusion_matrix,
    plot_embedding,
    plot_history,
    plot_reconstructions,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, returned: Path, *, min_side: int = 100) -> tuple[int, int]:
    """The file exists where promised, starts with the PNG signature and decodes to a plausible size."""
    assert returned == path
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        width, height = img.size
    assert min_side <= width <= 10_000 and min_side <= height <= 10_000
    assert not list(path.parent.glob(f".{path.name}.*.part"))  # atomic write left no temporary file
    return width, height


@pytest.fixture
def blobs():
    """200 points in 10-D around 3 centres; labels and a noisy copy as 'true' classes."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=200)
    Z = rng.normal(size=(200, 10)) + 5.0 * np.eye(10)[labels]
    true = np.where(rng.random(200) < 0.9, labels, (labels + 1) % 3)
    return Z.astype(np.float32), labels, true


@pytest.fixture
def grey_images():
    return np.random.default_rng(1).random((30, 8, 8, 1)).astype(np.float32)


@pytest.fixture
def colour_images():
    return np.random.default_rng(2).integers(0, 256, size=(30, 8, 8, 3), dtype=np.uint8)


HISTORY = (
    [{"stage": "layerwise", "layer": layer, "epoch": e, "loss": 1.0 / (e + layer), "seconds": 0.1}
     for layer in (1, 2) for e in range(1, 6)]
    + [{"stage": "pretrain", "epoch": e, "loss": 0.5 / e, "seconds": 0.2} for e in range(1, 11)]
    + [{"stage": "cluster", "iteration": 0, "delta_label": 1.0, "acc": 0.6, "nmi": 0.5}]  # no loss: skipped
    + [{"stage": "cluster", "iteration": 20 * i, "epoch": 1 + i // 3, "loss": 0.1 / i, "delta_label": 0.1 / i,
        "acc": 0.6 + 0.02 * i, "nmi": 0.5 + 0.02 * i} for i in range(1, 8)]
)


# ------------------------------------------------------------------------------------------ embedding
def test_embedding_pca_with_true_labels(tmp_path, blobs):
    Z, labels, true = blobs
    path = tmp_path / "sub" / "dir" / "latent.png"  # parent folders are created
    width, height = assert_png(path, plot_embedding(Z, labels, path, true_labels=true, title="blobs"))
    assert width > height  # two panels side by side


def test_embedding_tsne_subsample(tmp_path, blobs):
    Z, labels, true = blobs
    path = tmp_path / "tsne.png"
    # One OpenMP thread: t-SNE's threads spin-wait when the machine is busy (0.2 s becomes 15 s).
    with threadpool_limits(1, user_api="openmp"):
        assert_png(path, plot_embedding(Z, labels, path, true_labels=true, method="tsne", max_points=100))


@pytest.mark.parametrize("d", [1, 2])
def test_embedding_low_dimensional(tmp_path, blobs, d):
    Z, labels, _ = blobs
    path = tmp_path / f"d{d}.png"
    assert_png(path, plot_embedding(Z[:, :d], labels, path))


def test_embedding_many_clusters_uses_continuous_colours(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "many.png"
    assert_png(path, plot_embedding(rng.normal(size=(120, 5)), np.arange(120) % 30, path))


def test_embedding_rejects_bad_input(tmp_path, blobs):
    Z, labels, true = blobs
    with pytest.raises(ValueError, match="Z and labels"):
        plot_embedding(Z, labels[:-1], tmp_path / "x.png")
    with pytest.raises(ValueError, match="Z and true_labels"):
        plot_embedding(Z, labels, tmp_path / "x.png", true_labels=true[:10])
    with pytest.raises(ValueError, match="method must be 'pca' or 'tsne'"):
        plot_embedding(Z, labels, tmp_path / "x.png", method="umap")
    with pytest.raises(ValueError, match="max_points"):
        plot_embedding(Z, labels, tmp_path / "x.png", max_points=0)
    assert not (tmp_path / "x.png").exists()


# ------------------------------------------------------------------------------------ reconstructions
def test_reconstructions_grey_and_colour(tmp_path, grey_images, colour_images):
    noisy = np.clip(grey_images + 0.1, 0, 1.2)  # values above 1 are clipped, not an error
    path = tmp_path / "grey.png"
    width, height = assert_png(path, plot_reconstructions(grey_images, noisy, path))
    assert width > height  # two 5x5 grids side by side
    path = tmp_path / "colour.png"
    assert_png(path, plot_reconstructions(colour_images, colour_images[::-1].copy(), path, n=9))


def test_reconstructions_accept_torch_layout(tmp_path, colour_images):
    nchw = colour_images.transpose(0, 3, 1, 2)  # (N, 3, 8, 8)
    path = tmp_path / "nchw.png"
    assert_png(path, plot_reconstructions(nchw, nchw, path, n=100))  # n larger than N: all images


def test_reconstructions_reject_bad_input(tmp_path, grey_images, colour_images):
    with pytest.raises(ValueError, match="same shape"):
        plot_reconstructions(grey_images, grey_images[:20], tmp_path / "x.png")
    with pytest.raises(ValueError, match="same shape"):
        plot_reconstructions(grey_images, colour_images, tmp_path / "x.png")
    with pytest.raises(ValueError, match="1 \\(grey\\) or 3 \\(RGB\\) channels"):
        plot_reconstructions(np.zeros((4, 8, 8, 5)), np.zeros((4, 8, 8, 5)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="images must be images of shape"):
        plot_reconstructions(np.zeros((4, 64)), np.zeros((4, 64)), tmp_path / "x.png")


# ------------------------------------------------------------------------------------------- history
def test_history_all_stages(tmp_path):
    path = tmp_path / "loss.png"
    width, height = assert_png(path, plot_history(HISTORY, path))
    assert width > 2 * height  # three subplots in a row


def test_history_pretrain_only(tmp_path):
    path = tmp_path / "pretrain.png"
    rows = [{"stage": "pretrain", "epoch": e, "loss": 0.5 / e} for e in range(1, 4)]
    assert_png(path, plot_history(rows, path))


def test_history_cluster_rows_without_iteration(tmp_path):
    rows = [{"stage": "cluster", "epoch": e, "loss": 1.0 / e, "delta_label": 0.1, "reconstruction": 0.2}
            for e in range(1, 4)] + [{"stage": "cluster", "epoch": 4, "loss": "n/a"}]  # skipped
    path = tmp_path / "dcn.png"
    assert_png(path, plot_history(rows, path))


def test_history_empty_or_unplottable_raises(tmp_path):
    with pytest.raises(ValueError, match="^no history rows to plot$"):
        plot_history([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="no history rows to plot"):
        plot_history([{"stage": "cluster", "iteration": 0, "acc": 0.5}], tmp_path / "x.png")
    with pytest.raises(ValueError, match="row 1 is a list"):
        plot_history([{"loss": 1.0}, [1.0]], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# ------------------------------------------------------------------------------------------ confusion
def test_confusion_matrix_3_classes_4_clusters(tmp_path):
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, size=150)
    pred = np.where(rng.random(150) < 0.8, y, 3)  # cluster 3 collects the leftovers
    path = tmp_path / "cm.png"
    assert_png(path, plot_confusion_matrix(y, pred, path, class_names=["zero", "one", "two"]))
    path = tmp_path / "cm_ids.png"
    assert_png(path, plot_confusion_matrix(y, pred, path))


def test_confusion_matrix_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="same length"):
        plot_confusion_matrix([0, 1, 2], [0, 1], tmp_path / "x.png")
    with pytest.raises(ValueError, match="class_names must name every class id"):
        plot_confusion_matrix([0, 1, 2], [0, 1, 1], tmp_path / "x.png", class_names=["a", "b"])


# -------------------------------------------------------------------------------------------- montage
def test_cluster_montage_with_scores(tmp_path, colour_images):
    labels = np.arange(30) % 3
    scores = np.random.default_rng(5).random(30)
    path = tmp_path / "montage.png"
    width, height = assert_png(path, plot_cluster_montage(colour_images, labels, path, scores=scores,
                                                           per_cluster=12))  # > 10 images per cluster
    assert width > height  # 3 rows of up to 12


def test_cluster_montage_random_grey(tmp_path, grey_images):
    path = tmp_path / "montage_grey.png"
    assert_png(path, plot_cluster_montage(grey_images[..., 0], np.arange(30) % 4, path, per_cluster=5))


def test_cluster_montage_rejects_bad_input(tmp_path, grey_images):
    labels = np.arange(30) % 3
    with pytest.raises(ValueError, match="images and labels"):
        plot_cluster_montage(grey_images, labels[:-1], tmp_path / "x.png")
    with pytest.raises(ValueError, match="images and scores"):
        plot_cluster_montage(grey_images, labels, tmp_path / "x.png", scores=np.ones(29))
    with pytest.raises(ValueError, match="NaN"):
        plot_cluster_montage(grey_images, labels, tmp_path / "x.png", scores=np.full(30, np.nan))
    with pytest.raises(ValueError, match="per_cluster"):
        plot_cluster_montage(grey_images, labels, tmp_path / "x.png", per_cluster=0)
