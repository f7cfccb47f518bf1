"""`deepclust predict`: a saved run assigns images exactly as the run did, with class names and confidence."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_DENSE_ARCH as TINY_ARCH
from deepclust.cli import main
from deepclust.cluster.umap_gmm import UMAPGMM, neighbour_votes
from deepclust.config import RunConfig
from deepclust.pipeline.predict import fuzzy_membership, load_run, predict_images
from deepclust.pipeline.run import run


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("DEEPCLUST_PROGRESS", "0")


def make_folder(folder: Path, *, n_per_class: int = 8, colour: bool = False, seed: int = 0) -> Path:
    """Images with a bright bar in one of three row bands (three obvious groups), some on the border."""
    rng = np.random.default_rng(seed)
    for cls in range(3):
        for i in range(n_per_class):
            image = rng.integers(0, 60, size=(9, 9)).astype(np.uint8)
            image[1 + 3 * cls: 3 + 3 * cls, :] = rng.integers(120, 255)
            if colour:
                image = np.dstack([image, np.roll(image, 1, axis=0), image // 2])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"c{cls}_{i:02d}.png")
    return folder


def _assignments(run_dir: Path) -> dict[str, int]:
    with open(run_dir / "assignments.csv") as f:
        return {Path(r["path"]).name: int(r["cluster"]) for r in csv.DictReader(f)}


def _predict_csv(tmp_path: Path, run_dir: Path, *images) -> list[dict]:
    out = tmp_path / "pred.csv"
    assert main(["predict", str(run_dir), *map(str, images), "--out", str(out)]) == 0
    with open(out) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("options", [[], ["--normalize", "standard"], ["--grayscale", "--resize", "6"]])
def test_kmeans_run_predicts_its_own_clusters(tmp_path, options):
    colour = "--grayscale" in options
    folder = make_folder(tmp_path / "imgs", colour=colour)
    out = tmp_path / "runs"
    assert main(["run", "--method", "kmeans",
                 "--dataset", str(folder), "-k", "3", "--out", str(out), *options]) == 0
    run_dir = next(out.iterdir())
    rows = _predict_csv(tmp_path, run_dir, folder)
    assert len(rows) == 24 and list(rows[0]) == ["file", "cluster", "class", "confidence"]
    expected = _assignments(run_dir)
    assert {Path(r["file"]).name: int(r["cluster"]) for r in rows} == expected
    confidence = np.array([float(r["confidence"]) for r in rows])
    assert np.all(confidence >= 1 / 3 - 1e-6) and np.all(confidence <= 1.0)
    assert all(r["class"] == "" for r in rows)  # no reference images, no class names


def test_deep_run_predicts_its_own_clusters_with_soft_assignment(tmp_path):
    folder = make_folder(tmp_path / "imgs")
    arch = tmp_path / "tiny.json"
    arch.write_text(json.dumps(TINY_ARCH))
    out = tmp_path / "runs"
    assert main(["run", "--dataset", str(folder), "-k", "3", "--method", "dec", "-a", str(arch),
                 "--pretrain", "3", "--cluster", "2", "--batch-size", "8", "--out", str(out)]) == 0
    run_dir = next(out.iterdir())
    rows = _predict_csv(tmp_path, run_dir, *sorted(folder.iterdir()))
    assert {Path(r["file"]).name: int(r["cluster"]) for r in rows} == _assignments(run_dir)
    # DEC's confidence is its own soft assignment q of the chosen cluster.
    loaded = load_run(run_dir)
    from deepclust.data.image_folder import load_image_files

    images = load_image_files([folder], size=(9, 9), channels=1)
    q = loaded.estimator.predict_proba(loaded.preprocessing.apply(images.images))
    np.testing.assert_allclose([float(r["confidence"]) for r in rows], q.max(axis=1), atol=1e-4)


def test_class_names_come_from_the_runs_class_mappings(tmp_path):
    root = tmp_path / "shapes"
    make_folder(root / "train", seed=1)
    make_folder(root / "test", n_per_class=2, seed=2)
    for cls, name in enumerate(("bottom", "middle", "top")):
        ref = make_folder(tmp_path / "ref_tmp" / name, n_per_class=1, seed=10 + cls)
        target = root / "reference" / name
        target.mkdir(parents=True)
        (ref / f"c{cls}_00.png").rename(target / "ref.png")
    result = run(RunConfig(dataset=str(root), out=str(tmp_path / "runs"), progress=False))
    mapping = json.loads((result.paths.root / "class_mappings.json").read_text())["mapping"]
    rows = predict_images(result.paths.root, [root / "test"])
    assert len(rows) == 6
    for row in rows:
        assert row["class"] == mapping[str(row["cluster"])]
    # test/ images c0_* have the bar in band 0, which the reference image of "bottom" has too.
    assert {r["class"] for r in rows if Path(r["file"]).name.startswith("c0")} == {"bottom"}


def test_unreadable_and_empty_images_give_a_clear_error(tmp_path, capsys):
    folder = make_folder(tmp_path / "imgs", n_per_class=3)
    out = tmp_path / "runs"
    assert main(["run", "--method", "kmeans", "--dataset", str(folder), "-k", "3", "--out", str(out)]) == 0
    run_dir = next(out.iterdir())
    bad = tmp_path / "new"
    bad.mkdir()
    (bad / "empty.png").write_bytes(b"")
    (bad / "broken.jpg").write_bytes(b"not a jpeg")
    capsys.readouterr()
    assert main(["predict", str(run_dir), str(bad / "empty.png")]) == 2
    assert "Cannot read image file" in capsys.readouterr().err
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(bad / "fine.png")
    with pytest.warns(UserWarning) as caught:
        assert main(["predict", str(run_dir), str(bad), "--skip-unreadable"]) == 0
    skipped = " ".join(str(w.message) for w in caught)
    assert "broken.jpg" in skipped and "empty.png" in skipped
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "file,cluster,class,confidence" and len(printed) == 2 and "fine.png" in printed[1]
    assert main(["predict", str(run_dir), str(tmp_path / "nowhere.png")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_only_complete_runs_predict(tmp_path, capsys):
    folder = make_folder(tmp_path / "imgs", n_per_class=3)
    result = run(RunConfig(dataset=str(folder), n_clusters=3, out=str(tmp_path / "runs"), progress=False))
    (result.paths.root / "status.json").write_text(json.dumps({"status": "interrupted"}))
    assert main(["predict", str(result.paths.root), str(folder)]) == 2
    assert "interrupted, not complete" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), str(folder)]) == 2
    assert "not a deepclust run folder" in capsys.readouterr().err


def test_fuzzy_membership_by_hand():
    # distances^2 (1, 4) -> weights (1, 1/4) -> (0.8, 0.2); a point on a centre belongs to it fully.
    u = fuzzy_membership(np.array([[1.0, 4.0], [0.0, 9.0], [2.0, 2.0]]))
    np.testing.assert_allclose(u, [[0.8, 0.2], [1.0, 0.0], [0.5, 0.5]])
    # Scale-free: the same geometry ten times larger gives the same memberships.
    np.testing.assert_allclose(fuzzy_membership(np.array([[100.0, 400.0]])), [[0.8, 0.2]])


def test_neighbour_vote_shares_and_own_labels():
    train, labels = torch.tensor([[0.0], [1.0], [10.0], [11.0]]), np.array([0, 0, 1, 1])
    shares, own = neighbour_votes(torch.tensor([[0.5], [10.0], [3.0]]), train, labels, 2, 3)
    np.testing.assert_allclose(shares.sum(1).numpy(), 1.0, rtol=1e-6)
    # point 0.5: neighbours 0 and 1 (d 0.5 each, cluster 0) and 10 (d 9.5, cluster 1)
    w0, w1 = 2 / 0.5, 1 / 9.5
    assert shares[0, 0].item() == pytest.approx(w0 / (w0 + w1), rel=1e-5)
    assert own.tolist() == [-1, 1, -1]
    stage = UMAPGMM(n_clusters=2, n_vote=3)
    stage._restore_extra_tensors({"cluster_centers": torch.zeros(2, 1), "train_input": train,
                                  "train_labels": torch.as_tensor(labels)})
    assert stage.predict(np.array([[0.5], [10.0], [3.0]])).tolist() == [0, 1, 0]
