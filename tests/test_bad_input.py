"""Bad input gives one clear line and a non-zero exit, never a traceback, a hang or a run folder (issue 15).

A table of commands -> message fragment -> exit status; then a fuzz-style test that damages each file of
a finished kmeans run and a finished deep run in turn and runs ``deepclust predict`` and ``report`` on it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_DENSE_ARCH
from deepclust import _errors
from deepclust.cli import main


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("DEEPCLUST_PROGRESS", "0")


class Hang(BaseException):
    """A command ran past its time limit (a BaseException so the CLI's error handler lets it through)."""


@contextlib.contextmanager
def time_limit(seconds: int):
    def stop(signum, frame):
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def call(capsys, *argv: str, limit: int = 60) -> tuple[int, str]:
    """Exit status and stderr of ``deepclust ARGV``; never a traceback on stderr."""
    capsys.readouterr()
    with time_limit(limit):
        try:
            status = main(list(argv))
        except SystemExit as exc:  # argparse's own errors
            status = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return status, err


def make_folder(folder: Path, *, n_per_class: int = 6) -> Path:
    """9x9 grey images in three obvious groups."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for c in range(3):
        for i in range(n_per_class):
            image = rng.integers(0, 60, size=(9, 9)).astype(np.uint8)
            image[1 + 3 * c: 3 + 3 * c, :] = 200
            Image.fromarray(image).save(folder / f"c{c}_{i}.png")
    return folder


# ------------------------------------------------------------------------------ options and inputs
@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    (root / "binary.json").write_bytes(bytes(range(256)) * 4)
    (root / "huge.json").write_text(json.dumps({"encoder": [{"type": "flatten"},
                                                            {"type": "dense", "units": 10**8}]}))
    (root / "a_file").write_text("x")
    (root / "bad.yaml").write_text("encoder: [ {type: dense, units: 3\n")
    (root / "truncated").mkdir()
    return root


BAD = [  # (argv after 'deepclust', fragment of the message, exit status)
    (["run", "--method", "kmeans", "--device", "tpu"], "--device 'tpu' is not a device", 2),
    (["run", "--method", "kmeans", "--device", "cuda"], "no CUDA device", 2),
    (["run", "--method", "kmeans", "--batch-size", "0"], "argument --batch-size: must be >= 1", 2),
    (["run", "--method", "dec", "--pretrain", "-1"], "argument --pretrain: must be >= 0", 2),
    (["run", "--method", "dec", "--cluster", "-1"], "argument --cluster: must be >= 0", 2),
    (["run", "--method", "dec", "--lr", "nan"], "argument --lr: must be a finite number", 2),
    (["run", "--method", "dec", "--lr", "-1"], "argument --lr: must be a finite number", 2),
    (["run", "--method", "dec", "-a", "unknown"], "known ones are conv-cifar", 2),
    (["run", "--method", "deepcluster", "-a", "resnet50"], "alexnet-small", 2),
    (["run", "--method", "dec", "-a", "{files}/binary.json"], "binary.json: not a text file", 2),
    (["run", "--method", "dec", "-a", "{files}/missing.json"], "missing.json: no such file", 2),
    (["run", "--method", "dec", "-a", "{files}/bad.yaml"], "bad.yaml: invalid YAML at line 2, column 1", 2),
    (["run", "--method", "n2d", "--umap-metric", "bogus"], "--umap-metric 'bogus' is not a metric", 2),
    (["run", "--method", "umap-gmm", "--umap-dim", "5000"], "--umap-dim 5000 must be smaller than", 2),
    (["run", "--method", "graph-linkage", "--min-cluster-fraction", "2"], "must be in [0, 1]; got 2.0", 2),
    (["run", "--method", "graph-linkage", "--linkage-neighbors", "0"], "--linkage-neighbors must be", 2),
    (["run", "--method", "deepcluster", "--batch-size", "1"], "--batch-size must be at least 2 for", 2),
    (["run", "--method", "deepcluster", "--train-clusters", "5000"], "--train-clusters 5000 is larger", 2),
    (["run", "--resume", ""], "argument --resume: must not be empty", 2),
    (["run", "--resume", "{files}/truncated"], "no config.json", 2),
    (["run", "-d", ""], "argument -d/--dataset: must not be empty", 2),
    (["run", "--method", "kmeans", "--data-dir", ""], "argument --data-dir: must not be empty", 2),
    (["run", "--method", "kmeans", "--k-range", "2:5"], "only used with --clusters auto", 2),
    (["run", "--method", "kmeans", "-k", "auto", "--k-range", "5:2"], "--k-range must be MIN:MAX", 2),
    (["run", "--method", "kmeans", "-k", "0"], "n_clusters must be >= 1 (--clusters 0)", 2),
    (["run", "--method", "kmeans", "--resize", "100000"], "argument --resize: must be >= 1 and <= 1024", 2),
    (["run", "--method", "kmeans", "--seed", "-3"], "argument --seed: must be >= 0", 2),
    (["run", "--method", "kmeans", "--out", "{files}/a_file"], "a_file is a file", 2),
    (["run", "--method", "kmeans", "-d", "{files}/a_file"], "is a file", 2),
    (["run", "--method", "dec", "--from", "{files}/truncated"], "no saved model", 2),
    (["evaluate", "--methods", "kmeans", "--folds", "1"], "number of folds must be an integer >= 2", 2),
    (["evaluate", "--methods", "kmeans", "--device", "tpu"], "is not a device", 2),
    (["evaluate", "--methods", "kmeans", "--out", "{files}/a_file"], "a_file is a file", 2),
    (["predict", "{files}/truncated", "{files}/a_file"], "no config.json", 2),
    (["report", "{files}/missing"], "is not a folder", 2),
]


@pytest.mark.parametrize("argv,fragment,status", BAD, ids=[" ".join(a[:4]) for a, _, _ in BAD])
def test_bad_input_is_one_clear_line_and_no_run_folder(argv, fragment, status, files, tmp_path, capsys):
    out = tmp_path / "runs"
    argv = [a.replace("{files}", str(files)) for a in argv]
    if argv[0] in ("run", "evaluate") and "--out" not in argv:
        argv += ["--out", str(out)]
    code, err = call(capsys, *argv)
    assert code == status, err
    assert fragment in err, err
    assert len([line for line in err.splitlines() if "error" in line]) == 1, err
    assert not out.exists() or not any(out.iterdir())


def test_a_huge_layer_is_refused_with_one_line(files, tmp_path, capsys):
    """A 10^8-unit dense layer: an out-of-memory line (or a refusal), never a traceback."""
    code, err = call(capsys, "run", "--method", "dec", "-a", str(files / "huge.json"), "--pretrain", "1",
                     "--out", str(tmp_path / "runs"))
    assert code == 2 and err.startswith("deepclust: error:"), err
    assert len(err.strip().splitlines()) == 1, err


def test_debug_shows_the_traceback_and_internal_errors_say_so(capsys, monkeypatch):
    capsys.readouterr()
    assert main(["--debug", "run", "--method", "kmeans", "--k-range", "2:5"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("deepclust: error: --k-range")
    monkeypatch.setattr("deepclust.cli._cmd_datasets", lambda args: 1 / 0)
    capsys.readouterr()
    assert main(["datasets"]) == 1
    err = capsys.readouterr().err
    assert "internal error: ZeroDivisionError" in err and "--debug" in err and "Traceback" not in err
    assert main(["datasets", "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_error_lines_name_the_file_of_an_os_error():
    line, code = _errors.describe_error(PermissionError(13, "Permission denied", "/x/y.json"))
    assert code == 2 and "/x/y.json" in line
    assert _errors.describe_error(RuntimeError("DefaultCPUAllocator: can't allocate memory"))[1] == 2
    assert _errors.describe_error(_errors.Terminated())[1] == 143


class SendSigterm(Exception):
    """Raised by the training hook: sends SIGTERM to this process, whose handler raises first."""

    def __init__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        super().__init__("SIGTERM was not handled")


def test_sigterm_interrupts_a_run_like_ctrl_c_and_it_resumes(tmp_path, capsys, kill_pretraining):
    """SIGTERM in the middle of training: status "interrupted", exit 143, then --resume from another
    working folder finishes the run (config.json holds absolute paths)."""
    folder = make_folder(tmp_path / "imgs")
    arch = tmp_path / "tiny.json"
    arch.write_text(json.dumps(TINY_DENSE_ARCH))
    kill_pretraining(2, SendSigterm)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        code, err = call(capsys, "run", "--method", "ae-kmeans", "-d", "imgs", "-k", "3", "-a", "tiny.json",
                         "--pretrain", "4", "--batch-size", "8", "--out", "runs")
    finally:
        os.chdir(cwd)
    assert code == 143 and "terminated" in err, err
    run_dir = next((tmp_path / "runs").iterdir())
    assert json.loads((run_dir / "status.json").read_text())["status"] == "interrupted"
    saved = json.loads((run_dir / "config.json").read_text())
    assert Path(saved["data"]["dataset"]).is_absolute() and Path(saved["run"]["out"]).is_absolute()
    kill_pretraining(None)
    checkpoint = next((run_dir / "checkpoints").rglob("*.pt"))
    good = checkpoint.read_bytes()
    checkpoint.write_bytes(good[: len(good) // 2])  # a truncated checkpoint: one line naming it
    code, err = call(capsys, "run", "--resume", str(run_dir))
    assert code == 2 and f"Checkpoint {checkpoint} is damaged" in err, err
    checkpoint.write_bytes(good)
    code, err = call(capsys, "run", "--resume", str(run_dir))  # from the test's own working folder
    assert code == 0, err
    assert json.loads((run_dir / "status.json").read_text())["status"] == "complete"
    assert folder.is_dir()


# ------------------------------------------------------------------------- damaged run folders
@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> dict[str, Path]:
    """A finished kmeans run and a finished deep (dec) run on a tiny image folder, and the images."""
    root = tmp_path_factory.mktemp("fuzz")
    folder = make_folder(root / "imgs")
    arch = root / "tiny.json"
    arch.write_text(json.dumps(TINY_DENSE_ARCH))
    runs = {}
    for method, extra in (("kmeans", []), ("dec", ["-a", str(arch), "--pretrain", "2", "--cluster", "1",
                                                    "--batch-size", "8"])):
        out = root / f"runs-{method}"
        assert main(["run", "--method", method, "-d", str(folder), "-k", "3", "--out", str(out), *extra]) == 0
        runs[method] = next(out.iterdir())
    runs["images"] = folder
    return runs


def _corruptions(path: Path) -> dict[str, bytes | None]:
    data = path.read_bytes()
    return {"truncated": data[: max(1, len(data) // 2)], "garbage": os.urandom(64) + b"\xff\xfe",
            "wrong type": b"[]" if path.suffix == ".json" else b"[1, 2, 3]\n", "deleted": None}


def _run_files(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
                  if p.is_file() and p.parent.name != "checkpoints" and p.name != "report.html")


# What predict reads (a deep run predicts with model/, not with cluster_centers.npy).
PREDICT_READS = {"status.json", "config.json", "preprocessing.json", "cluster_centers.npy",
                 "class_mappings.json", "model/model.json", "model/model.safetensors"}


@pytest.mark.parametrize("method", ["kmeans", "dec"])
def test_every_damaged_file_gives_a_named_error_or_a_warning(finished, method, tmp_path, capsys):
    run_dir, images = finished[method], finished["images"]
    names = _run_files(run_dir)
    assert {"config.json", "status.json", "preprocessing.json", "assignments.csv"} <= set(names)
    report_checked = 0
    for name in names:
        for kind, content in _corruptions(run_dir / name).items():
            if method == "dec" and name == "model/model.json" and kind == "deleted":
                continue  # model/ then holds only weights: covered by the message test below
            copy = tmp_path / "copy"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("checkpoints"))
            target = copy / name
            if content is None:
                target.unlink()
            else:
                target.write_bytes(content)
            where = f"{name} {kind}"
            code, err = call(capsys, "predict", str(copy), str(images), "--out", str(tmp_path / "p.csv"),
                             limit=30)
            if name in PREDICT_READS and not (method == "dec" and name == "cluster_centers.npy"):
                assert code == 2, f"{where}: predict exited {code}: {err}"
                assert Path(name).name in err or (name.startswith("model/") and "model" in err), \
                    f"{where}: {err}"
                assert len(err.strip().splitlines()) == 1, f"{where}: {err}"
            else:
                assert code == 0, f"{where}: predict exited {code}: {err}"
            if kind in ("garbage", "deleted") or name.endswith(".json"):
                code, err = call(capsys, "report", str(copy), limit=60)
                assert code in (0, 2), f"{where}: report exited {code}: {err}"
                if code == 0 and kind == "garbage" and not name.startswith("model/") \
                        and name not in ("preprocessing.json", "plots"):
                    page = (copy / "report.html").read_text(encoding="utf-8")
                    assert Path(name).name in page, f"{where}: the page does not name the damaged file"
                report_checked += 1
    assert report_checked >= len(names)


def _edit_json(path: Path, edit) -> None:
    value = json.loads(path.read_text())
    edit(value)
    path.write_text(json.dumps(value))


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "edited"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("checkpoints"))
    return copy


CRAFTED = [  # (run, file, edit, fragment of predict's error)
    ("kmeans", "status.json", lambda d: d.update(status=[]), "status.json: has no \"status\" string"),
    ("kmeans", "config.json", lambda d: d.pop("method"), "config.json: names no method"),
    ("kmeans", "config.json", lambda d: d["method"].update(name="evil"), "unknown method 'evil'"),
    ("kmeans", "preprocessing.json", lambda d: d.update(image_size=[60000, 60000]), "outside 1..4096"),
    ("kmeans", "preprocessing.json", lambda d: d.update(image_size=[5, 5]), "do not belong to the same run"),
    ("kmeans", "preprocessing.json", lambda d: d.update(normalize="standard"), "mean is missing"),
    ("dec", "model/model.json", lambda d: d["params"].update(evil=1), "'evil', not parameters of DEC"),
    ("dec", "model/model.json", lambda d: d.update({"class": "os.system"}), "unknown estimator class"),
    ("dec", "model/model.json", lambda d: d["spec"]["encoder"][1].update(units=10**8),
     "does not hold the weights of the network"),
    ("dec", "model/model.json", lambda d: d.update(input_shape=[1, 10**5, 10**5]), "larger than any image"),
]


@pytest.mark.parametrize("method,name,edit,fragment", CRAFTED, ids=[f"{c[1]}-{c[3][:24]}" for c in CRAFTED])
def test_crafted_files_are_refused_by_predict(finished, method, name, edit, fragment, tmp_path, capsys):
    copy = _copy(finished[method], tmp_path)
    _edit_json(copy / name, edit)
    code, err = call(capsys, "predict", str(copy), str(finished["images"]), limit=30)
    assert code == 2 and fragment in err, err


def test_bad_class_mappings_are_refused(finished, tmp_path, capsys):
    copy = _copy(finished["kmeans"], tmp_path)
    for mapping, fragment in (([], "not the dict"), ({"mapping": {"x": "a"}}, "'x', not a cluster number"),
                              ({"mapping": {"0": 3}}, "not a name or null")):
        (copy / "class_mappings.json").write_text(json.dumps(mapping))
        code, err = call(capsys, "predict", str(copy), str(finished["images"]))
        assert code == 2 and "class_mappings.json" in err and fragment in err, err


def test_nan_centres_and_mismatched_weights_are_errors_not_nan_confidences(finished, tmp_path, capsys):
    copy = _copy(finished["kmeans"], tmp_path)
    centers = np.load(copy / "cluster_centers.npy")
    centers[0, 0] = np.nan
    np.save(copy / "cluster_centers.npy", centers)
    code, err = call(capsys, "predict", str(copy), str(finished["images"]))
    assert code == 2 and "cluster_centers.npy: holds NaN" in err, err
    deep = _copy(finished["dec"], tmp_path / "deep")
    from safetensors.torch import load_file, save_file

    weights = load_file(deep / "model" / "model.safetensors")
    weights["cluster_centers"] = torch.full_like(weights["cluster_centers"], float("nan"))
    save_file(weights, deep / "model" / "model.safetensors")
    code, err = call(capsys, "predict", str(deep), str(finished["images"]))
    assert code == 2 and "model.safetensors" in err and "not finite" in err, err
    weights.pop("cluster_centers")
    save_file(weights, deep / "model" / "model.safetensors")
    code, err = call(capsys, "predict", str(deep), str(finished["images"]))
    assert code == 2 and "model.safetensors" in err, err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_report_reads_images_only_inside_the_run_data_root_and_never_a_fifo(finished, tmp_path, capsys):
    copy = _copy(finished["kmeans"], tmp_path)
    outside = tmp_path / "secret.png"
    Image.fromarray(np.full((9, 9), 7, np.uint8)).save(outside)
    fifo = Path(finished["images"]) / "zz_fifo.png"
    os.mkfifo(fifo)
    try:
        code, err = call(capsys, "predict", str(copy), str(finished["images"]), limit=30)  # FIFO skipped
        assert code == 0, err
        code, err = call(capsys, "predict", str(copy), str(fifo), limit=30)
        assert code == 2 and "not a regular file" in err, err
        lines = (copy / "assignments.csv").read_text().splitlines()
        header = lines[0].split(",")
        col = header.index("path")
        rows = [line.split(",") for line in lines[1:]]
        rows[0][col], rows[1][col] = str(outside), str(fifo)
        (copy / "assignments.csv").write_text("\n".join([lines[0], *(",".join(r) for r in rows)]) + "\n")
        _edit_json(copy / "config.json", lambda d: d["data"].update(dataset=str(tmp_path / "gone")))
        # The data root is now tmp_path/gone: no image path lies inside it.
        code, err = call(capsys, "report", str(copy), limit=30)
        assert code == 0, err
        page = (copy / "report.html").read_text(encoding="utf-8")
        assert "outside the run" in page
        secret = Image.open(outside).tobytes()
        assert secret not in page.encode()
        _edit_json(copy / "config.json", lambda d: d["data"].update(dataset=str(finished["images"])))
        (copy / "config.json").write_text((copy / "config.json").read_text())
        code, err = call(capsys, "report", str(copy), limit=30)  # the FIFO is in the root: not opened
        assert code == 0, err
    finally:
        fifo.unlink()


def test_report_never_downloads(finished, tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr("deepclust.data._registry.download_file", lambda *a, **k: calls.append(a))
    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: calls.append(a))
    copy = _copy(finished["kmeans"], tmp_path)
    elsewhere = str(tmp_path / "elsewhere")
    _edit_json(copy / "config.json", lambda d: d["data"].update(dataset="mnist", data_dir=elsewhere))
    code, err = call(capsys, "report", str(copy), limit=30)
    assert code == 0, err
    assert "could not be loaded again" in (copy / "report.html").read_text(encoding="utf-8")
    assert calls == []


def test_a_crafted_evaluate_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "results.json").write_text(json.dumps({"rows": [1, 2], "protocol": "x"}))
    code, err = call(capsys, "report", str(tmp_path))
    assert code == 2 and "results.json" in err and "not objects" in err, err
