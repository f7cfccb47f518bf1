"""Choosing k: the silhouette search finds the number of well-separated blobs, `--clusters auto` runs end
to end (k-means on the input, deep methods on an autoencoder pretrained once), and bad ranges fail clearly."""

from __future__ import annotations

import contextlib
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from deepclust.cli import main
from deepclust.cluster.choose_k import KSelection, choose_n_clusters, default_k_values, parse_k_range
from deepclust.config import RunConfig
from deepclust.pipeline.run import run


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("DEEPCLUST_PROGRESS", "0")


def blobs(n_centers: int, n_per: int = 60, dim: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tight Gaussian blobs around centres far apart (spread 0.3, centres ~10 apart)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=10.0, size=(n_centers, dim))
    y = np.repeat(np.arange(n_centers), n_per)
    return (centers[y] + rng.normal(scale=0.3, size=(y.size, dim))).astype(np.float32), y


@pytest.mark.parametrize("n_centers", [3, 5, 7])
def test_picks_the_number_of_well_separated_blobs(n_centers):
    X, _ = blobs(n_centers)
    sel = choose_n_clusters(X, list(range(2, 11)), random_state=0, n_init=3)
    assert sel.best_k == n_centers
    assert sel.ks == list(range(2, 11))
    assert len(sel.scores) == len(sel.inertias) == 9
    assert sel.scores[sel.ks.index(n_centers)] == max(sel.scores) > 0.8
    assert all(b <= a * 1.0001 for a, b in zip(sel.inertias, sel.inertias[1:], strict=False))  # falls with k
    assert sel.sample_size is None and sel.n_samples == X.shape[0]


def test_large_inputs_are_scored_on_one_shared_subset_and_stay_deterministic():
    X, _ = blobs(4, n_per=150)
    first = choose_n_clusters(X, [2, 3, 4, 5, 6], random_state=1, n_init=2, sample_size=200)
    again = choose_n_clusters(X, [6, 5, 4, 3, 2, 4], random_state=1, n_init=2, sample_size=200)
    assert first.best_k == 4 and first.sample_size == 200
    assert again.ks == [2, 3, 4, 5, 6]  # sorted, duplicates dropped
    assert first == again


def test_ties_go_to_the_smallest_k():
    X = np.zeros((10, 3), dtype=np.float32)
    X[5:] = 1.0  # two distinct points: every k splits them perfectly (silhouette 1)
    sel = choose_n_clusters(X, [2, 3, 4], random_state=0, n_init=1)
    assert sel.scores == [1.0, 1.0, 1.0] and sel.best_k == 2


def test_to_dict_is_plain_json_and_nan_becomes_null():
    sel = KSelection(ks=[2, 3], scores=[0.5, float("nan")], inertias=[2.0, 1.0], best_k=2, n_samples=9)
    data = json.loads(json.dumps(sel.to_dict(), allow_nan=False))
    assert data["scores"] == [0.5, None] and data["best_k"] == 2 and data["criterion"] == "silhouette"


def test_identical_samples_say_so():
    with pytest.raises(ValueError, match="undefined for every k"):
        choose_n_clusters(np.ones((20, 2), np.float32), [2, 3], n_init=1)


@pytest.mark.parametrize("k_values, match", [([1, 2], "2 <= k"), ([2, 50], "2 <= k"), ([], "non-empty"),
                                             ("2:5", "non-empty"), ([2.5], "integer")])
def test_bad_k_values_are_refused(k_values, match):
    with pytest.raises(ValueError, match=match):
        choose_n_clusters(np.random.default_rng(0).normal(size=(30, 2)), k_values)


def test_default_range_and_parsing():
    assert default_k_values(1000) == list(range(2, 21))
    assert default_k_values(6) == [2, 3, 4, 5]  # capped at n - 1
    assert default_k_values(100, 4, 6) == [4, 5, 6]
    with pytest.raises(ValueError, match="empty"):
        default_k_values(4, 5, 9)
    assert parse_k_range("3:12") == (3, 12)
    assert parse_k_range("3:") == (3, None)
    for bad in ("5", "1:4", "6:3", "a:b", ""):
        with pytest.raises(ValueError, match="MIN:MAX"):
            parse_k_range(bad)


@pytest.mark.slow
def test_clusters_auto_with_kmeans_end_to_end(tmp_path, capsys):
    assert main(["run", "--method", "kmeans", "-k", "auto", "--k-range", "8:11", "--out", str(tmp_path)]) == 0
    run_dir = next(tmp_path.iterdir())
    selection = json.loads((run_dir / "k_selection.json").read_text())
    assert selection["ks"] == [8, 9, 10, 11] and selection["space"] == "the input features"
    assert selection["best_k"] == max(zip(selection["scores"], selection["ks"], strict=True))[1]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["run"]["n_clusters"] == "auto" and config["run"]["k_range"] == "8:11"
    assert config["resolved"]["n_clusters"] == selection["best_k"]
    assert config["resolved"]["k_selection"]["best_k"] == selection["best_k"]
    with open(run_dir / "assignments.csv") as f:
        assert len({row["cluster"] for row in csv.DictReader(f)}) == selection["best_k"]
    report = (run_dir / "report.html").read_text()
    k_section = report.split("<section id='k-selection'>")[1].split("</section>")[0]
    assert "data:image/png;base64," in k_section and f"<strong>{selection['best_k']}</strong>" in k_section
    assert json.loads((run_dir / "status.json").read_text())["status"] == "complete"


@pytest.mark.slow
def test_clusters_auto_with_a_deep_method_pretrains_once(tmp_path):
    result = run(RunConfig(out=str(tmp_path), method="ae-kmeans", n_clusters="auto", k_range="3:6",
                           pretrain_epochs=1, batch_size=512, progress=False))
    root = result.paths.root
    selection = json.loads((root / "k_selection.json").read_text())
    assert selection["ks"] == [3, 4, 5, 6] and "embedding" in selection["space"]
    assert result.metrics["n_clusters"] == selection["best_k"]
    assert np.load(root / "cluster_centers.npy").shape[0] == selection["best_k"]
    with open(root / "history.csv") as f:
        stages = [row["stage"] for row in csv.DictReader(f)]
    assert stages.count("pretrain") == 1  # one epoch, once: the method reused the autoencoder
    assert (root / "checkpoints" / "choose-k").is_dir()
    config = json.loads((root / "config.json").read_text())
    assert config["resolved"]["n_clusters"] == selection["best_k"]


@pytest.mark.parametrize("argv, message", [
    (["-k", "many"], "expected a number of clusters or 'auto'"),
    (["-k", "auto", "--k-range", "9"], "MIN:MAX"),
])
def test_bad_clusters_options_fail_before_any_run_folder(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) if "many" in argv else contextlib.nullcontext():
        code = main(["run", "--method", "kmeans", *argv, "--out", str(tmp_path)])
        assert code == 2
    assert message in capsys.readouterr().err
    assert not any(Path(tmp_path).iterdir())
