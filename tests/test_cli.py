"""End-to-end tests of `deepclust run` / `deepclust datasets` through cli.main."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepclust.cli import main
from deepclust.config import RunConfig
from deepclust.pipeline.run import run

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("DEEPCLUST_PROGRESS", "0")


def _only_run_dir(out: Path) -> Path:
    dirs = [p for p in out.iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def test_default_run_writes_a_complete_run_folder(tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path)]) == 0
    run_dir = _only_run_dir(tmp_path)
    assert json.loads((run_dir / "status.json").read_text())["status"] == "complete"
    config = json.loads((run_dir / "config.json").read_text())
    # the 1,797 8 x 8 digits are a small set of tiny images: UMAP + spectral clustering on the pixels
    assert config["data"]["dataset"] == "digits" and config["method"]["name"] == "umap-spectral"
    assert "8 x 8 pixels: umap-spectral" in config["resolved"]["pipeline_chosen"]
    printed = capsys.readouterr()
    assert "8 x 8 pixels: umap-spectral" in printed.err
    assert config["resolved"]["n_clusters"] == 10
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("acc", "nmi", "ari", "silhouette", "dunn", "n_samples", "n_clusters", "seconds"):
        assert key in metrics, key
    assert metrics["n_samples"] == 1797
    # measured 0.950-0.966 over 8 seeds, where UMAP + a Gaussian mixture gives 0.88 and N2D 0.81-0.94
    assert metrics["acc"] > 0.9
    with open(run_dir / "assignments.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1797
    assert set(rows[0]) == {"sample_id", "cluster", "true_label"}
    assert {int(r["cluster"]) for r in rows} == set(range(10))
    assert np.load(run_dir / "cluster_centers.npy").shape == (10, 64)  # mean pixels of each cluster
    assert "ACC" in printed.out and str(run_dir) in printed.out


def test_same_seed_same_clusters_and_never_overwrites(tmp_path):
    first = run(RunConfig(out=str(tmp_path), seed=3, progress=False))
    second = run(RunConfig(out=str(tmp_path), seed=3, progress=False))
    assert first.paths.root != second.paths.root
    assert first.paths.root.exists() and second.paths.root.exists()
    assert np.array_equal(first.labels, second.labels)
    assert (first.paths.assignments.read_text() == second.paths.assignments.read_text())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", "no-such-set"], "Unknown data set|not found|no-such-set"),
        (["--clusters", "0"], "n_clusters must be >= 1"),
        (["--clusters", "5000"], "larger than the number of samples"),
        (["--dataset", "mnist", "--data-dir", "{tmp}/empty"], "Put these files in"),
        (["--method", "ae-kmeans", "--pretrain", "0", "--from", "{tmp}/empty"], "no saved model"),
    ],
)
def test_bad_input_fails_clearly_without_a_run_folder(tmp_path, capsys, argv, message, monkeypatch):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "runs"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    # Offline: a download attempt must fail fast rather than reach the network.
    monkeypatch.setattr("urllib.request.urlopen", _offline)
    assert main(["run", "--method", "kmeans", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert "deepclust: error:" in err
    import re

    assert re.search(message, err), err
    assert not out.exists() or not any(out.iterdir())


def _offline(*args, **kwargs):
    raise OSError("network is unreachable (test)")


def test_image_folder_without_labels_needs_k_then_runs(tmp_path, capsys):
    folder = tmp_path / "pictures"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        shade = 30 if i % 2 else 220  # two obvious groups: dark and light images
        pixels = np.clip(rng.normal(shade, 5, size=(10, 10)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{i:02d}.png")
    out = tmp_path / "runs"
    assert main(["run", "--method", "kmeans", "--dataset", str(folder), "--out", str(out)]) == 2
    assert "--clusters" in capsys.readouterr().err
    assert main(["run", "--method", "kmeans",
                 "--dataset", str(folder), "--out", str(out), "--clusters", "2"]) == 0
    run_dir = _only_run_dir(out)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "acc" not in metrics and "silhouette" in metrics
    with open(run_dir / "assignments.csv") as f:
        rows = list(csv.DictReader(f))
    clusters = {Path(r["path"]).name: int(r["cluster"]) for r in rows}
    dark = {clusters[f"img_{i:02d}.png"] for i in range(1, 12, 2)}
    light = {clusters[f"img_{i:02d}.png"] for i in range(0, 12, 2)}
    assert len(dark) == 1 and len(light) == 1 and dark != light


def test_datasets_command_lists_every_data_set(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("digits", "mnist", "fashion-mnist", "usps", "coil20", "cifar10", "stl10"):
        assert name in out


def test_interrupted_run_is_marked_and_kept(tmp_path, monkeypatch):
    def interrupt(self, X, y=None):
        raise KeyboardInterrupt

    monkeypatch.setattr("deepclust.cluster.KMeans.fit", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(RunConfig(out=str(tmp_path), progress=False))
    run_dir = _only_run_dir(tmp_path)
    assert json.loads((run_dir / "status.json").read_text())["status"] == "interrupted"
    assert not (run_dir / "metrics.json").exists()


def test_failure_mid_run_leaves_no_half_written_folder(tmp_path, monkeypatch):
    def fail(self, X, y=None):
        raise RuntimeError("boom")

    monkeypatch.setattr("deepclust.cluster.KMeans.fit", fail)
    with pytest.raises(RuntimeError, match="boom"):
        run(RunConfig(out=str(tmp_path), progress=False))
    assert not any(tmp_path.iterdir())


def _real_data_run(tmp_path: Path, name: str, *options: str) -> tuple[dict, dict]:
    """``deepclust run -d name`` on ../shared/data/<name> (skipped without it): metrics and config."""
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"{folder} not found: real-data tests need the shared data sets")
    out = tmp_path / "runs"
    assert main(["run", "--dataset", name, "--data-dir", str(folder), *options, "--out", str(out)]) == 0
    run_dir = _only_run_dir(out)
    return (json.loads((run_dir / "metrics.json").read_text()),
            json.loads((run_dir / "config.json").read_text()))


@pytest.mark.data
@pytest.mark.slow
def test_acceptance_mnist_kmeans(tmp_path):
    """The issue's acceptance command on the real MNIST-70k; literature: ACC ~0.53-0.55, NMI ~0.50."""
    metrics, _ = _real_data_run(tmp_path, "mnist", "--method", "kmeans", "--seed", "0")
    for key in ("acc", "nmi", "ari", "silhouette", "dunn"):
        assert key in metrics
    assert metrics["n_samples"] == 70000
    assert 0.50 <= metrics["acc"] <= 0.60
    assert 0.45 <= metrics["nmi"] <= 0.55


@pytest.mark.data
def test_the_plain_command_on_coil20_links_the_views_of_each_object(tmp_path):
    """Issue 17's COIL-20 target (ACC >= 0.95) with no method flag: graph-linkage at 64 x 64."""
    metrics, config = _real_data_run(tmp_path, "coil20", "--no-progress")
    assert config["method"]["name"] == "graph-linkage"
    assert config["resolved"]["recipe"]["options"] == {"size": 64}
    assert metrics["acc"] >= 0.99 and metrics["nmi"] >= 0.99


TINY_ARCH_YAML = """
name: tiny
encoder:
  - {type: flatten}
  - {type: dense, units: 32, activation: relu}
  - {type: dense, units: 10}
decoder: mirror
"""


def test_deep_run_writes_embeddings_history_model_and_can_seed_another(tmp_path):
    arch = tmp_path / "tiny.yaml"
    arch.write_text(TINY_ARCH_YAML)
    out = tmp_path / "runs"
    argv = ["run", "--method", "idec", "-a", str(arch), "--pretrain", "3", "--cluster", "2",
            "--out", str(out)]
    assert main(argv) == 0
    run_dir = _only_run_dir(out)
    assert np.load(run_dir / "embeddings.npy").shape == (1797, 10)
    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows if r["stage"] == "pretrain"] == ["1", "2", "3"]
    assert any(r["stage"] == "cluster" and r["acc"] for r in rows)
    assert (run_dir / "model" / "model.safetensors").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["metric_space"] == "embedding" and "acc" in metrics
    config = json.loads((run_dir / "config.json").read_text())
    assert config["resolved"]["architecture"] == str(arch)
    # --pretrain 0 --from RUN_DIR reuses that autoencoder as it is.
    out2 = tmp_path / "runs2"
    assert main(["run", "--method", "ae-kmeans", "--pretrain", "0", "--from", str(run_dir),
                 "--out", str(out2)]) == 0
    reused = np.load(_only_run_dir(out2) / "embeddings.npy")
    assert reused.shape == (1797, 10)


def test_metrics_flag_scores_the_clusters_in_every_space(tmp_path, capsys):
    out = tmp_path / "runs"
    argv = ["run", "--method", "dec", "--pretrain", "3", "--cluster", "2", "--metrics", "--out", str(out)]
    assert main(argv) == 0
    spaces = json.loads((_only_run_dir(out) / "metrics.json").read_text())["spaces"]
    assert list(spaces) == ["pixels", "pretrained", "final"]
    for scores in spaces.values():
        assert -1 <= scores["silhouette"] <= 1 and scores["dunn"] > 0
    printed = capsys.readouterr().out
    assert all(f"  {space}" in printed for space in spaces)
    # k-means has only the pixel space
    out2 = tmp_path / "runs2"
    assert main(["run", "--method", "kmeans", "--metrics", "--out", str(out2)]) == 0
    assert list(json.loads((_only_run_dir(out2) / "metrics.json").read_text())["spaces"]) == ["pixels"]


def test_default_architecture_is_recorded(tmp_path):
    result = run(RunConfig(method="ae-kmeans", pretrain_epochs=1, out=str(tmp_path), progress=False))
    arch = json.loads(result.paths.config.read_text())["resolved"]["architecture"]
    assert arch["name"].startswith("auto-dense-1x8x8")


def test_killed_deep_run_resumes_from_its_checkpoint(tmp_path, kill_pretraining, capsys):
    kill_pretraining(2)
    out = tmp_path / "runs"
    argv = ["run", "--method", "dcn", "--pretrain", "4", "--cluster", "1", "--out", str(out)]
    assert main(argv) == 130
    run_dir = _only_run_dir(out)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "interrupted" and "--resume" in status["resume"]
    assert (run_dir / "checkpoints" / "pretrain.pt").is_file()
    kill_pretraining(None)
    assert main(["run", "--resume", str(run_dir)]) == 0
    assert json.loads((run_dir / "status.json").read_text())["status"] == "complete"
    with open(run_dir / "history.csv") as f:
        epochs = [r["epoch"] for r in csv.DictReader(f) if r["stage"] == "pretrain"]
    assert epochs == ["1", "2", "3", "4"]  # two before the kill, two after
    assert main(["run", "--resume", str(run_dir)]) == 2  # a complete run is not resumed again
    assert "already complete" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["kmeans", "idec"])
def test_visualize_writes_every_plot(tmp_path, method):
    out = tmp_path / "runs"
    argv = ["run", "--method", method, "--pretrain", "2", "--cluster", "1", "--visualize", "--out", str(out)]
    assert main(argv) == 0
    plots = _only_run_dir(out) / "plots"
    expected = {"latent_pixels.png", "cluster_montage.png", "confusion_matrix.png"}
    if method != "kmeans":
        expected |= {"latent_pretrained.png", "latent_final.png", "loss_curves.png", "reconstructions.png"}
    assert {p.name for p in plots.iterdir()} == expected
    for png in plots.iterdir():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_clustering_stage_and_schedule_options_reach_the_estimators():
    from deepclust.cli import _run_config, build_parser
    from deepclust.pipeline.build import build_method

    def built(*argv):
        return build_method(_run_config(build_parser().parse_args(["run", *argv])), 10)

    idec = built("--method", "idec", "--cluster-optimizer", "adam", "--cluster-lr", "0.002")
    assert (idec.cluster_optimizer, idec.cluster_lr) == ("adam", 0.002)
    assert built("--method", "dec").cluster_optimizer == "sgd"  # each method keeps its own default
    assert (built("--method", "dcn").cluster_optimizer, built("--method", "dcn").cluster_lr) == ("adam", None)
    assert built("--method", "deepcluster", "--dc-lr-schedule", "cosine").lr_schedule == "cosine"
    assert built("--method", "idec", "--cluster-augment").cluster_augment is True
    assert built("--method", "dcn").cluster_augment is False
    # --n-init reaches every method's k-means; left out, each keeps its own default
    for method in ("kmeans", "ae-kmeans", "idec", "n2d", "deepcluster"):
        assert built("--method", method, "--n-init", "7").n_init == 7
    assert (built("--method", "kmeans").n_init, built("--method", "idec").n_init) == (10, 20)


def test_a_diverging_learning_rate_is_named_and_leaves_no_run_folder(tmp_path, capsys):
    """--lr 1e6 makes the loss NaN: the error says to lower --lr instead of blaming the data."""
    out = tmp_path / "runs"
    code = main(["run", "--method", "ae-kmeans", "--lr", "1e6", "--pretrain", "2", "--out", str(out),
                 "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "Training diverged" in err and "lower --lr" in err and "contains NaN" not in err
    assert not out.exists() or not any(out.iterdir())
