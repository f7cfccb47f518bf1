"""``--backbone`` through the whole pipeline: run, config.json, report, predict, evaluate and embed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from deepclust.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """predict and embed without --feature-cache use $DEEPCLUST_CACHE: never the user's own cache."""
    monkeypatch.setenv("DEEPCLUST_CACHE", str(tmp_path / "default-cache"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three class folders of 5 small colour images each (red, green or blue with noise), of two sizes."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for c, name in enumerate(["red", "green", "blue"]):
        (root / name).mkdir()
        for i in range(5):
            image = rng.integers(0, 60, size=(40 + 8 * (i % 2), 36, 3), dtype=np.uint8)
            image[..., c] = 200 + rng.integers(0, 50, size=image.shape[:2], dtype=np.uint8)
            Image.fromarray(image).save(root / name / f"{name}{i}.png")
    return root


def _run(tmp_path, photos, *extra) -> tuple[int, list]:
    out = tmp_path / "runs"
    code = main(["run", "-d", str(photos), "--backbone", "efficientnet-lite0", "--feature-cache",
                 str(tmp_path / "cache"), "--out", str(out), "--no-progress", *extra])
    return code, sorted(out.iterdir()) if out.is_dir() else []


def test_backbone_run_writes_what_the_backbone_is_and_predict_uses_it(tmp_path, photos, capsys):
    code, runs = _run(tmp_path, photos, "--method", "kmeans")
    assert code == 0 and len(runs) == 1
    run_dir = runs[0]
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["embedding"]["backbone"] == "efficientnet-lite0"
    described = saved["resolved"]["backbone"]
    assert described["pretrained"] is True and described["licence"] == "Apache-2.0"
    assert saved["resolved"]["n_features"] == described["feature_dim"] == 1280
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["acc"] == 1.0  # three colours: ImageNet features separate them
    assert "Pretrained backbone" in (run_dir / "report.html").read_text()
    prep = json.loads((run_dir / "preprocessing.json").read_text())
    assert prep["backbone"]["backbone"] == "efficientnet-lite0"
    capsys.readouterr()
    assert main(["predict", str(run_dir), str(photos / "green")]) == 0
    rows = capsys.readouterr().out.strip().splitlines()[1:]
    assigned = {line.split(",")[0].rsplit("/", 1)[-1]: int(line.split(",")[1]) for line in rows}
    with open(run_dir / "assignments.csv") as f:
        header, *lines = [line.strip().split(",") for line in f]
    fitted = {row[header.index("path")].rsplit("/", 1)[-1]: int(row[1]) for row in lines}
    assert assigned == {name: fitted[name] for name in assigned}  # new-image path = fitted clusters


def test_umap_gmm_on_backbone_features_reads_the_cache(tmp_path, photos):
    code, runs = _run(tmp_path, photos, "--method", "kmeans")
    assert code == 0
    cached = sorted((tmp_path / "cache").rglob("*.npy"))
    assert cached
    stamp = {p: p.stat().st_mtime_ns for p in cached}
    code, runs = _run(tmp_path, photos, "--method", "umap-gmm", "--umap-neighbors", "5", "--seed", "1")
    assert code == 0 and len(runs) == 2
    assert {p: p.stat().st_mtime_ns for p in cached} == stamp  # the second run read the features
    assert json.loads((runs[-1] / "metrics.json").read_text())["acc"] == 1.0


def test_a_method_on_images_with_a_backbone_is_refused_before_any_run_folder(tmp_path, photos, capsys):
    code, runs = _run(tmp_path, photos, "--method", "dec")
    assert code == 2 and runs == []
    err = capsys.readouterr().err
    assert "--method dec trains on images" in err and "kmeans" in err and "umap-gmm" in err


def test_evaluate_with_a_backbone_states_it_in_every_row(tmp_path, photos):
    out = tmp_path / "eval"
    code = main(["evaluate", "-d", str(photos), "--backbone", "efficientnet-lite0", "--feature-cache",
                 str(tmp_path / "cache"), "--methods", "kmeans", "--seeds", "0,1", "--out", str(out),
                 "--no-progress"])
    assert code == 0
    (folder,) = list(out.iterdir())
    rows = json.loads((folder / "results.json").read_text())["rows"]
    assert [r["backbone"] for r in rows] == ["efficientnet-lite0"] * 2
    assert "backbone" in (folder / "results.csv").read_text().splitlines()[0]


def test_embed_caches_and_writes_features(tmp_path, photos, capsys):
    out = tmp_path / "features.npy"
    args = ["embed", "-d", str(photos), "--backbone", "efficientnet-lite0", "--feature-cache",
            str(tmp_path / "cache"), "--no-progress"]
    assert main([*args, "--out", str(out)]) == 0
    features = np.load(out)
    assert features.shape == (15, 1280) and np.isfinite(features).all()
    assert "15 images -> 1280-d features of efficientnet-lite0" in capsys.readouterr().out
    assert main(["embed", "-d", str(photos), "--no-progress"]) == 2
    assert "needs --backbone" in capsys.readouterr().err


def test_backbones_command_lists_every_entry(capsys):
    from deepclust.backbones import list_backbones

    assert main(["backbones"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in list_backbones()) and "Apache-2.0" in out


def test_a_colour_photo_folder_without_a_method_gets_the_photo_pipeline(tmp_path, photos, capsys):
    from deepclust.config import PHOTO_BACKBONE, PHOTO_METHOD

    out = tmp_path / "runs"
    assert main(["run", "-d", str(photos), "--feature-cache", str(tmp_path / "cache"), "--out", str(out),
                 "--no-progress"]) == 0
    (run_dir,) = list(out.iterdir())
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["method"]["name"] == PHOTO_METHOD and saved["embedding"]["backbone"] == PHOTO_BACKBONE
    assert "colour photos" in saved["resolved"]["pipeline_chosen"]
    assert "colour photos" in capsys.readouterr().err


def test_a_grey_folder_without_a_method_keeps_the_default(tmp_path):
    from deepclust.config import DEFAULT_METHOD, RunConfig
    from deepclust.pipeline.defaults import choose_pipeline

    grey = tmp_path / "grey"
    for c in ("a", "b"):
        (grey / c).mkdir(parents=True)
        for i in range(3):  # grey pictures, one of them stored as RGB
            image = Image.fromarray(np.full((16, 16), 40 * i + 20 * (c == "b"), dtype=np.uint8))
            (image.convert("RGB") if i == 0 else image).save(grey / c / f"{i}.png")
    config, chosen = choose_pipeline(RunConfig(dataset=str(grey), method=None))
    assert config.method == DEFAULT_METHOD and config.backbone is None and chosen is None
    config, _ = choose_pipeline(RunConfig(dataset="digits", method=None))
    assert config.method == DEFAULT_METHOD
    kept, chosen = choose_pipeline(RunConfig(dataset=str(grey), method="kmeans"))
    assert kept.method == "kmeans" and chosen is None


class _MeanColour(torch.nn.Module):
    """A tiny 'backbone': each channel's mean and max (6 features)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


def test_evaluate_compares_backbones_over_the_same_splits(tmp_path, photos):
    mine = tmp_path / "mine.pt"
    torch.jit.script(_MeanColour()).save(str(mine))
    mine.with_suffix(".json").write_text(json.dumps({"input_size": 16, "mean": [0.5] * 3, "std": [0.25] * 3}))
    out = tmp_path / "eval"
    code = main(["evaluate", "-d", str(photos), "--backbone", f"efficientnet-lite0,{mine}", "--feature-cache",
                 str(tmp_path / "cache"), "--methods", "kmeans", "--folds", "3", "--out", str(out),
                 "--no-progress"])
    assert code == 0
    (folder,) = list(out.iterdir())
    rows = json.loads((folder / "results.json").read_text())["rows"]
    assert len(rows) == 6 and {r["backbone"] for r in rows} == {"efficientnet-lite0", str(mine)}
    assert {r["method"] for r in rows} == {"kmeans (efficientnet-lite0)", f"kmeans ({mine})"}
    summary = (folder / "summary.md").read_text()
    assert "kmeans (efficientnet-lite0)" in summary and f"kmeans ({mine})" in summary
    by_fold = {}
    for r in rows:
        by_fold.setdefault(r["split"], set()).add(r["n_test"])
    assert all(len(sizes) == 1 for sizes in by_fold.values())  # both backbones scored on the same folds
