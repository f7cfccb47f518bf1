"""`deepclust evaluate`: the k-fold and all-data protocols, shared pretraining, and what they write."""

from __future__ import annotations

import csv
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import deepclust.deep.base as deep_base
import deepclust.pipeline.evaluate as evaluation
from conftest import TINY_DENSE_ARCH as TINY_ARCH
from deepclust.cli import main
from deepclust.config import RunConfig
from deepclust.pipeline.evaluate import evaluate, make_splits, stratified_folds


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("DEEPCLUST_PROGRESS", "0")


@pytest.fixture(autouse=True)
def _no_report_module(monkeypatch):
    """Tests see no deepclust.report.page unless they install one (it is built elsewhere)."""
    monkeypatch.setitem(sys.modules, "deepclust.report.page", None)


@pytest.fixture
def bars(tmp_path) -> Path:
    """60 labelled 9x9 images in class sub-folders, three obvious groups of unequal size (24/20/16)."""
    rng = np.random.default_rng(0)
    for cls, n in enumerate((24, 20, 16)):
        folder = tmp_path / "bars" / f"class{cls}"
        folder.mkdir(parents=True)
        for i in range(n):
            image = rng.integers(0, 50, size=(9, 9)).astype(np.uint8)
            image[1 + 3 * cls: 3 + 3 * cls, :] = 220
            Image.fromarray(image).save(folder / f"{i:02d}.png")
    return tmp_path / "bars"


def _config(data: Path, out: Path, **extra) -> RunConfig:
    params = dict(dataset=str(data), out=str(out), arch=TINY_ARCH, pretrain_epochs=2, cluster_epochs=1,
                  batch_size=16, n_init=3, progress=False)
    params.update(extra)
    return RunConfig(**params)


# ------------------------------------------------------------------------------------ splits
def test_stratified_folds_are_disjoint_complete_and_stratified():
    labels = np.repeat([0, 1, 2], [53, 31, 16])
    folds = stratified_folds(100, 5, labels=labels, seed=3)
    assert len(folds) == 5
    joined = np.concatenate(folds)
    assert np.array_equal(np.sort(joined), np.arange(100))  # disjoint and covering
    sizes = [f.size for f in folds]
    assert max(sizes) - min(sizes) <= 1
    for cls in range(3):
        per_fold = [int(np.sum(labels[f] == cls)) for f in folds]
        assert max(per_fold) - min(per_fold) <= 1, per_fold  # each class spread evenly
    assert all(np.array_equal(a, b) for a, b in zip(folds, stratified_folds(100, 5, labels=labels, seed=3),
                                                    strict=True))
    other = stratified_folds(100, 5, labels=labels, seed=4)
    assert not all(np.array_equal(a, b) for a, b in zip(folds, other, strict=True))


def test_unlabelled_folds_and_bad_fold_counts():
    folds = stratified_folds(11, 3, seed=0)
    assert sorted(f.size for f in folds) == [3, 4, 4]
    assert np.array_equal(np.sort(np.concatenate(folds)), np.arange(11))
    with pytest.raises(ValueError, match=">= 2"):
        stratified_folds(10, 1)
    with pytest.raises(ValueError, match="at most 10"):
        stratified_folds(10, 11)
    with pytest.raises(ValueError, match="Choose one protocol"):
        make_splits(10, folds=2, seeds=[0])
    with pytest.raises(ValueError, match="Choose one protocol"):
        make_splits(10)
    with pytest.raises(ValueError, match="twice"):
        make_splits(10, seeds=[1, 1])


def test_make_splits_train_is_the_complement_and_seeds_use_all_data():
    splits = make_splits(20, labels=np.repeat([0, 1], 10), folds=4, seed=7)
    for s in splits:
        assert np.intersect1d(s.train, s.test).size == 0 and s.train.size + s.test.size == 20
        assert not s.all_data
    assert [s.seed for s in splits] == [7, 8, 9, 10]
    seeds = make_splits(20, seeds=[5, 2])
    assert [s.seed for s in seeds] == [5, 2]
    assert all(s.all_data and s.train.size == 20 for s in seeds)


# ------------------------------------------------------------------------------- end to end
def test_two_folds_end_to_end(bars, tmp_path, monkeypatch):
    pretrainings = []
    real_train = deep_base.train_autoencoder

    def counting_train(model, X, *args, **kwargs):
        pretrainings.append(X.shape[0])
        return real_train(model, X, *args, **kwargs)

    monkeypatch.setattr(deep_base, "train_autoencoder", counting_train)
    scored = []
    real_score = evaluation._score

    def spying_score(name, est, split, X_test, *args):
        scored.append((name, split.index, np.asarray(X_test).reshape(len(X_test), -1).copy()))
        return real_score(name, est, split, X_test, *args)

    monkeypatch.setattr(evaluation, "_score", spying_score)
    seen = []
    result = evaluate(_config(bars, tmp_path / "out"), ["kmeans", "ae-kmeans", "dec"], folds=2,
                      on_row=seen.append)
    root = result.paths.root
    assert root.name.endswith("bars-evaluate")
    # One autoencoder pretraining per fold, on that fold's 30 training images; DEC reuses it.
    assert pretrainings == [30, 30]
    rows = result.rows
    assert seen == rows and len(rows) == 6
    methods = ("kmeans", "ae-kmeans", "dec")
    assert [(r["method"], r["fold"]) for r in rows] == [(m, f) for f in (1, 2) for m in methods]
    for r in rows:
        assert r["n_train"] == 30 and r["n_test"] == 30 and r["protocol"] == "k-fold"
        for key in ("acc", "nmi", "ari", "silhouette", "dunn", "seconds"):
            assert isinstance(r[key], float), (key, r)
    by = {(r["method"], r["fold"]): r for r in rows}
    assert by[("kmeans", 1)]["acc"] > 0.9  # the groups are obvious
    assert by[("dec", 1)]["pretrain_seconds"] == pytest.approx(by[("ae-kmeans", 1)]["seconds"], abs=1e-3)
    assert by[("kmeans", 1)]["metric_space"] == "input" and by[("dec", 1)]["metric_space"] == "embedding"
    # Every method of a fold was scored on the same held-out images, those listed in folds.json.
    folds = json.loads((root / "folds.json").read_text())
    tests = [np.array(s["test_indices"]) for s in folds["splits"]]
    assert folds["stratified"] and np.intersect1d(*tests).size == 0 and sum(t.size for t in tests) == 60
    for fold in (1, 2):
        arrays = [x for name, f, x in scored if f == fold]
        assert len(arrays) == 3 and all(np.array_equal(arrays[0], x) for x in arrays[1:])
    # Files: tidy CSV and JSON, Markdown summary with the protocol, status, config.
    with open(root / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 6 and table[0]["method"] == "kmeans" and float(table[0]["acc"]) == rows[0]["acc"]
    saved = json.loads((root / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(rows)) and "2-fold" in saved["protocol"]
    summary = (root / "summary.md").read_text()
    assert summary == result.summary and "stratified by class" in summary
    for method in methods:
        assert f"| {method} |" in summary
    assert "±" in summary
    status = json.loads((root / "status.json").read_text())
    assert status["status"] == "complete" and "deepclust.report.page" in status["report_error"]
    config = json.loads((root / "config.json").read_text())
    assert config["evaluation"]["methods"] == list(methods) and config["evaluation"]["folds"] == 2


def test_seeds_protocol_from_the_command_line(bars, tmp_path, capsys, monkeypatch):
    calls = []
    report = types.ModuleType("deepclust.report.page")

    def write_comparison_report(rows, path, title, protocol_text):
        calls.append((len(rows), title, protocol_text))
        Path(path).write_text("<html></html>")

    report.write_comparison_report = write_comparison_report
    monkeypatch.setitem(sys.modules, "deepclust.report.page", report)
    out = tmp_path / "out"
    argv = ["evaluate", "-d", str(bars), "--methods", "kmeans", "--seeds", "0,1", "--out", str(out)]
    assert main(argv) == 0
    root = next(out.iterdir())
    rows = json.loads((root / "results.json").read_text())["rows"]
    assert [r["split"] for r in rows] == ["seed 0", "seed 1"]
    assert all(r["n_train"] == r["n_test"] == 60 and r["protocol"] == "all-data" for r in rows)
    assert len(calls) == 1 and calls[0][:2] == (2, "deepclust evaluate: bars")
    assert "All-data protocol" in calls[0][2] and (root / "report.html").is_file()
    printed = capsys.readouterr().out
    assert "All-data protocol" in printed and "| kmeans |" in printed and str(root) in printed
    assert json.loads((root / "status.json").read_text()).get("report_error") is None


def test_bad_requests_fail_before_any_folder_is_made(bars, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["evaluate", "-d", str(bars), "--methods", "kmeans,nope", "--out", str(out)]) == 2
    assert "Unknown method(s) nope" in capsys.readouterr().err
    assert main(["evaluate", "-d", str(bars), "--methods", "kmeans", "--folds", "1", "--out", str(out)]) == 2
    assert ">= 2" in capsys.readouterr().err
    assert main(["evaluate", "-d", str(bars), "--seeds", "a,b", "--out", str(out)]) == 2
    assert "comma-separated integers" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_interrupted_evaluation_keeps_finished_rows(bars, tmp_path, monkeypatch):
    real_score = evaluation._score
    calls = []

    def score_then_stop(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_score(*args)

    monkeypatch.setattr(evaluation, "_score", score_then_stop)
    with pytest.raises(KeyboardInterrupt):
        evaluate(_config(bars, tmp_path / "out"), ["kmeans"], folds=3)
    root = next((tmp_path / "out").iterdir())
    status = json.loads((root / "status.json").read_text())
    assert status["status"] == "interrupted" and status["rows_done"] == 1
    assert len(json.loads((root / "results.json").read_text())["rows"]) == 1
    assert not (root / "summary.md").exists()


@pytest.mark.parametrize("name", ["ae-kmeans", "dec", "idec", "dcn"])
def test_every_autoencoder_method_predicts_held_out_images(name):
    from deepclust.methods import get_method

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    images = rng.integers(0, 40, size=(60, 9, 9, 1)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, 1 + 3 * c: 3 + 3 * c] = 220
    params = dict(n_clusters=3, arch=TINY_ARCH, pretrain_epochs=3, batch_size=16, n_init=3, random_state=0,
                  verbose=False)
    if name != "ae-kmeans":
        params["clustering_epochs"] = 2
    train, held_out = np.arange(0, 60, 2), np.arange(1, 60, 2)
    est = get_method(name, **params).fit(images[train])
    predicted = est.predict(images[held_out])
    assert predicted.shape == (30,) and predicted.dtype == np.int64 and set(predicted) <= {0, 1, 2}
    assert est.transform(images[held_out]).shape == (30, 3)
    if name != "ae-kmeans":  # these label the training images with the same rule predict uses
        assert np.array_equal(est.predict(images[train]), est.labels_)
