"""A user's own image folders: layouts, fit on train/ + assign test/, class mappings by majority vote."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepclust.cli import main
from deepclust.config import RunConfig
from deepclust.data import load_dataset
from deepclust.data.image_folder import describe_layout, load_image_files
from deepclust.pipeline.folder import class_mapping, fit_config, mapped_accuracy
from deepclust.pipeline.run import run

CLASSES = ("bottom", "middle", "top")  # sorted, so class id = position


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("DEEPCLUST_PROGRESS", "0")


def bar_image(cls: int, rng: np.random.Generator, size: int = 9) -> np.ndarray:
    """A dark noisy image with a bright horizontal bar in row band ``cls``: three obvious groups."""
    image = rng.integers(0, 40, size=(size, size)).astype(np.uint8)
    image[1 + 3 * cls: 3 + 3 * cls, :] = 230
    return image


def write_images(folder: Path, counts: dict[int, int], *, labelled: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for cls, n in counts.items():
        for i in range(n):
            sub = folder / CLASSES[cls] if labelled else folder
            sub.mkdir(parents=True, exist_ok=True)
            Image.fromarray(bar_image(cls, rng)).save(sub / f"{CLASSES[cls]}_{i:02d}.png")


def make_seed003(root: Path, *, labelled: bool = True, reference: bool = True) -> Path:
    write_images(root / "train", {0: 10, 1: 10, 2: 10}, labelled=labelled, seed=1)
    write_images(root / "test", {0: 4, 1: 4, 2: 4}, labelled=labelled, seed=2)
    if reference:
        write_images(root / "reference", {0: 2, 1: 2, 2: 2}, labelled=True, seed=3)
    return root


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------ class mapping
def test_majority_vote_with_tie_and_unmapped_cluster():
    names = ["cat", "dog", "eel"]
    clusters = np.array([0, 0, 0, 1, 1, 3])
    classes = np.array([1, 1, 0, 2, 0, 2])  # cluster 1: one eel, one cat -> tie -> "cat" sorts first
    m = class_mapping(clusters, classes, names, n_clusters=4)
    assert m["mapping"] == {"0": "dog", "1": "cat", "2": None, "3": "eel"}
    assert m["clusters"]["0"] == {"class": "dog", "votes": 2, "n_reference": 3,
                                  "counts": {"cat": 1, "dog": 2}}
    assert m["clusters"]["1"]["votes"] == 1 and m["clusters"]["1"]["counts"] == {"cat": 1, "eel": 1}
    assert m["clusters"]["2"] == {"class": None, "votes": 0, "n_reference": 0, "counts": {}}
    assert m["n_reference_images"] == 6 and m["classes"] == names
    assert "tie" in m["rule"]
    json.dumps(m)  # plain JSON types only


def test_several_clusters_may_map_to_one_class_and_bad_lengths_fail():
    m = class_mapping(np.array([0, 1, 1]), np.array([0, 0, 0]), ["a", "b"], n_clusters=2)
    assert m["mapping"] == {"0": "a", "1": "a"}
    with pytest.raises(ValueError, match="same length"):
        class_mapping(np.array([0, 1]), np.array([0]), ["a"], n_clusters=2)


def test_mapped_accuracy_counts_unmapped_as_wrong():
    mapping = {"mapping": {"0": "a", "1": None, "2": "b"}}
    # images: cluster 0 (a, true a), cluster 1 (unmapped, true b), cluster 2 (b, true a)
    accuracy = mapped_accuracy(mapping, np.array([0, 1, 2]), np.array([0, 1, 0]), ["a", "b"])
    assert accuracy == pytest.approx(1 / 3)


# ------------------------------------------------------------------------------------ layouts
def test_describe_layout(tmp_path):
    make_seed003(tmp_path / "s")
    layout = describe_layout(tmp_path / "s")
    assert layout.split_folders and layout.has_train and layout.has_test
    assert layout.train_labelled and layout.test_labelled
    assert layout.reference_classes == CLASSES and layout.has_reference

    make_seed003(tmp_path / "u", labelled=False, reference=False)
    layout = describe_layout(tmp_path / "u")
    assert layout.split_folders and not layout.train_labelled and not layout.has_reference

    write_images(tmp_path / "flat", {0: 2}, labelled=False, seed=0)
    layout = describe_layout(tmp_path / "flat")
    assert not layout.split_folders and not layout.train_labelled and not layout.has_test

    write_images(tmp_path / "classes", {0: 2, 1: 2}, labelled=True, seed=0)
    assert describe_layout(tmp_path / "classes").train_labelled


def test_reference_folder_is_never_a_class_of_a_flat_folder(tmp_path):
    write_images(tmp_path, {0: 3, 1: 3}, labelled=False, seed=0)
    write_images(tmp_path / "reference", {0: 1, 1: 1}, labelled=True, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "files directly inside are ignored" warning either
        ds = load_dataset(str(tmp_path))
    assert len(ds) == 6 and ds.labels is None
    assert all("reference" not in Path(p).parts for p in ds.paths)
    assert describe_layout(tmp_path).reference_classes == ("bottom", "middle")


def test_load_image_files_keeps_order_and_names_bad_files(tmp_path):
    write_images(tmp_path / "a", {0: 2}, labelled=False, seed=0)
    single = tmp_path / "single.png"
    Image.fromarray(bar_image(2, np.random.default_rng(0))).save(single)
    ds = load_image_files([single, tmp_path / "a"], size=(9, 9), channels=1)
    assert [Path(p).name for p in ds.paths] == ["single.png", "bottom_00.png", "bottom_01.png"]
    assert ds.images.shape == (3, 9, 9, 1)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"Cannot read image file .*empty\.png"):
        load_image_files([tmp_path / "empty.png"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_files([tmp_path / "missing.png"])
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="not an image file name"):
        load_image_files([tmp_path / "notes.txt"])
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match="No image files found"):
        load_image_files([tmp_path / "nothing"])


# ----------------------------------------------------------------------------------- runs
def test_labelled_train_test_reference_run(tmp_path, capsys):
    data = make_seed003(tmp_path / "shapes")
    assert main(["run", "--method", "kmeans",
                 "--dataset", str(data), "--out", str(tmp_path / "runs"), "--seed", "0"]) == 0
    out = capsys.readouterr().out
    run_dir = next((tmp_path / "runs").iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # Fitted on train/ only (30 images), test/ (12) assigned with predict and scored.
    assert metrics["n_samples"] == 30 and metrics["fit_split"] == "train"
    assert "test/ held out" in metrics["protocol"]
    assert metrics["test"]["n_samples"] == 12 and metrics["test"]["acc"] == 1.0
    assert metrics["test"]["mapped_accuracy"] == 1.0
    rows = _rows(run_dir / "test_assignments.csv")
    assert len(rows) == 12 and set(rows[0]) == {"path", "cluster", "true_class"}
    assert all(Path(r["path"]).parent.parent.name == "test" for r in rows)
    assert (run_dir / "plots" / "confusion_matrix_test.png").stat().st_size > 0
    mapping = json.loads((run_dir / "class_mappings.json").read_text())
    assert sorted(v for v in mapping["mapping"].values()) == list(CLASSES)
    # The mapping names each test image's cluster after the image's own class.
    for r in rows:
        assert mapping["mapping"][r["cluster"]] == r["true_class"]
    assert json.loads((run_dir / "preprocessing.json").read_text())["image_size"] == [9, 9]
    assert "test/" in out and "class_mappings.json" in out
    # config.json keeps what the user asked for, so a resume re-derives the same protocol.
    assert json.loads((run_dir / "config.json").read_text())["data"]["split"] == "all"


def test_split_train_fits_on_train_alone(tmp_path):
    data = make_seed003(tmp_path / "shapes", reference=False)
    result = run(RunConfig(dataset=str(data), split="train", out=str(tmp_path / "runs"), progress=False))
    assert result.metrics["n_samples"] == 30 and "test" not in result.metrics
    assert "nothing held out" in result.metrics["protocol"]
    assert not (result.paths.root / "test_assignments.csv").exists()
    assert not (result.paths.root / "class_mappings.json").exists()


def test_unlabelled_train_test_takes_k_from_reference(tmp_path):
    data = make_seed003(tmp_path / "shapes", labelled=False)
    config = RunConfig(dataset=str(data), out=str(tmp_path / "runs"), progress=False)
    assert fit_config(config).n_clusters == 3 and fit_config(config).split == "train"
    result = run(config)
    m = result.metrics
    assert "acc" not in m and m["n_clusters"] == 3
    assert m["test"]["n_samples"] == 12 and "acc" not in m["test"] and m["test"]["silhouette"] is not None
    assert "unlabelled" in m["protocol"]
    assert not (result.paths.root / "plots" / "confusion_matrix_test.png").exists()
    rows = _rows(result.paths.root / "test_assignments.csv")
    assert set(rows[0]) == {"path", "cluster"}
    mapping = json.loads((result.paths.root / "class_mappings.json").read_text())["mapping"]
    assert sorted(mapping.values()) == list(CLASSES)


def test_flat_folder_with_reference_names_its_clusters(tmp_path):
    folder = tmp_path / "flat"
    write_images(folder, {0: 6, 1: 6}, labelled=False, seed=0)
    write_images(folder / "reference", {0: 1, 1: 1}, labelled=True, seed=1)
    result = run(RunConfig(dataset=str(folder), out=str(tmp_path / "runs"), progress=False))
    assert result.metrics["n_samples"] == 12 and result.metrics["fit_split"] == "all"
    mapping = json.loads((result.paths.root / "class_mappings.json").read_text())
    assert sorted(mapping["mapping"].values()) == ["bottom", "middle"]
    assert mapping["n_reference_images"] == 2


def test_flat_unlabelled_folder_end_to_end_with_k(tmp_path):
    folder = tmp_path / "flat"
    write_images(folder, {0: 5, 1: 5, 2: 5}, labelled=False, seed=0)
    result = run(RunConfig(dataset=str(folder), n_clusters=3, out=str(tmp_path / "runs"), progress=False))
    assert result.metrics["n_samples"] == 15 and "acc" not in result.metrics
    assert len(set(result.labels.tolist())) == 3
    assert (result.paths.root / "preprocessing.json").is_file()
    assert not (result.paths.root / "class_mappings.json").exists()
