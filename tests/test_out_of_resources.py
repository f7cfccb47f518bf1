"""Out of memory and out of disk: one clear line, no traceback, no half-written file (issue 15).

A network that cannot be built or cannot fit is refused before the run folder exists (it is built on
torch's meta device and sized); memory that runs out during training ends the run as "failed" with the
reason in status.json; a full disk names the file being written and leaves no temporary file behind.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_DENSE_ARCH
from deepclust import _io
from deepclust._errors import describe_error, is_out_of_memory
from deepclust.cli import main
from deepclust.models import build_autoencoder
from deepclust.pipeline import memory
from test_bad_input import call, make_folder


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("DEEPCLUST_PROGRESS", "0")


@pytest.fixture
def folder(tmp_path) -> Path:
    return make_folder(tmp_path / "imgs")


def _arch(tmp_path: Path, name: str, spec: dict) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(spec))
    return str(path)


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


# --------------------------------------------------------------------- before the run folder exists
def test_measure_counts_the_parameters_of_the_real_network_without_allocating():
    real = build_autoencoder(TINY_DENSE_ARCH, input_shape=(1, 9, 9))
    with torch.device("meta"):
        meta = build_autoencoder(TINY_DENSE_ARCH, input_shape=(1, 9, 9))
    assert all(p.device.type == "meta" for p in meta.parameters())
    found = memory.measure(meta, (1, 9, 9), batch=8, optimizer="adam")
    n = sum(p.numel() for p in real.parameters())
    assert found.n_parameters == n and found.parameter_bytes == n * 4 * 4  # weights, grads, Adam's two
    # activations of one sample: 81 (flatten) + 16 + 16 (relu) + 3, then the decoder back to 81 + sigmoid
    assert found.activation_bytes == 2 * 8 * 4 * (81 + 16 + 16 + 3 + 16 + 16 + 81 + 81 + 81)
    assert found.largest_layer == "decoder.2 (dense, 16 -> 81 units)"
    assert found.largest_parameters == 16 * 81 + 81


def test_available_memory_is_told_on_linux():
    if not Path("/proc/meminfo").is_file():
        pytest.skip("no /proc/meminfo on this system")
    free = memory.available_memory("cpu")
    assert free is not None and free > 0


def test_a_network_too_big_for_memory_is_refused_before_the_run_folder(folder, tmp_path, capsys, monkeypatch):
    """8 x 10^8 parameters with the mirrored decoder (12.9 GB to train with Adam) against 1 GB free: one
    line naming the size, the largest layer and the fix, and no run folder. Memory is pinned so the test
    means the same anywhere."""
    monkeypatch.setattr(memory, "available_memory", lambda device: 10**9)
    big = _arch(tmp_path, "big.json", {"encoder": [{"type": "flatten"}, {"type": "dense", "units": 20000},
                                                   {"type": "dense", "units": 20000}]})
    out = tmp_path / "runs"
    code, err = call(capsys, "run", "--method", "dec", "-d", str(folder), "-k", "3", "-a", big,
                     "--out", str(out))
    assert code == 2 and len(_error_lines(err)) == 1, err
    assert "the network of DEC (big.json) needs at least 12.9 GB" in err, err
    assert "but 1.0 GB is free" in err and "dense, 20000 -> 20000 units" in err and "-a" in err, err
    assert not out.exists()
    code, err = call(capsys, "evaluate", "--methods", "kmeans,idec", "-d", str(folder), "-k", "3", "-a", big,
                     "--folds", "2", "--out", str(out))
    assert code == 2 and "the network of IDEC (big.json)" in err and not out.exists(), err


def test_the_batch_counts_too(folder, tmp_path, monkeypatch):
    """The same small network fits with a small batch and not with a large one on a wide image."""
    wide = _arch(tmp_path, "wide.json", {"encoder": [{"type": "conv", "filters": 64, "kernel": 3},
                                                     {"type": "flatten"}, {"type": "dense", "units": 4}]})
    from deepclust.deep import DEC

    X = np.zeros((512, 64, 64, 1), np.float32)
    small = memory.check_network(DEC(arch=wide, batch_size=2), X, 3)
    large = memory.check_network(DEC(arch=wide, batch_size=512), X, 3)
    assert small.parameter_bytes == large.parameter_bytes
    assert large.activation_bytes == 256 * small.activation_bytes
    monkeypatch.setattr(memory, "available_memory", lambda device: small.total + 1)
    memory.check_network(DEC(arch=wide, batch_size=2), X, 3)
    with pytest.raises(MemoryError, match="for a batch of 512"):
        memory.check_network(DEC(arch=wide, batch_size=512), X, 3)


def test_a_network_whose_shapes_do_not_fit_the_data_leaves_no_run_folder(folder, tmp_path, capsys):
    """An encoder that never flattens: the builder's error, naming the file and layer, before any folder
    (it used to come from fit, after the folder was made, as a 'failed' run)."""
    arch = _arch(tmp_path, "shape.json", {"encoder": [{"type": "conv", "filters": 4, "kernel": 3,
                                                       "stride": 2}]})
    out = tmp_path / "runs"
    for method in ("dec", "deepcluster"):
        code, err = call(capsys, "run", "--method", method, "-d", str(folder), "-k", "3", "-a", arch,
                         "--out", str(out))
        assert code == 2 and len(_error_lines(err)) == 1, err
        assert "shape" in err and "flat" in err, err  # the spec is named after its file
        assert not out.exists(), method


# ---------------------------------------------------------------------------- during the training
class CpuAllocationFailed(RuntimeError):
    """What torch's CPU allocator raises (a plain RuntimeError with this text)."""

    def __init__(self):
        super().__init__("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                         "memory: you tried to allocate 40000000000 bytes. Error code 12 (Cannot allocate "
                         "memory)")


class CudaOutOfMemory(torch.OutOfMemoryError):
    def __init__(self):
        super().__init__("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
                         "15.77 GiB of which 1.12 GiB is free.")


@pytest.mark.parametrize("exc,size", [(CpuAllocationFailed, "40.0 GB"), (CudaOutOfMemory, "2 GiB"),
                                      (MemoryError, None)])
def test_memory_running_out_while_training_is_one_line_and_a_failed_run(exc, size, folder, tmp_path, capsys,
                                                                        kill_pretraining):
    arch = _arch(tmp_path, "tiny.json", TINY_DENSE_ARCH)
    kill_pretraining(1, exc)
    out = tmp_path / "runs"
    code, err = call(capsys, "run", "--method", "ae-kmeans", "-d", str(folder), "-k", "3", "-a", arch,
                     "--pretrain", "3", "--batch-size", "8", "--out", str(out))
    assert code == 2 and len(_error_lines(err)) == 1, err
    assert err.startswith("deepclust: error: ran out of memory while training ae-kmeans"), err
    assert "lower --batch-size" in err, err
    assert (f"(could not allocate {size} more)" in err) if size else "allocate" not in err, err
    run_dir = next(out.iterdir())
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and status["reason"].startswith("error: ran out of memory while")
    assert any((run_dir / "checkpoints").rglob("*.pt"))  # the epochs done are kept


def test_memory_running_out_in_a_method_without_training_leaves_no_folder(folder, tmp_path, capsys,
                                                                          monkeypatch):
    def no_memory(self, X, *args, **kwargs):  # numpy's words
        raise MemoryError("Unable to allocate 7.28 TiB for an array with shape (1000000, 1000000) and data "
                          "type float64")

    monkeypatch.setattr("deepclust.cluster.kmeans.KMeans.fit", no_memory)
    out = tmp_path / "runs"
    code, err = call(capsys, "run", "--method", "kmeans", "-d", str(folder), "-k", "3", "--out", str(out))
    assert code == 2 and len(_error_lines(err)) == 1, err
    assert "ran out of memory while fitting kmeans (could not allocate 7.28 TiB more)" in err, err
    assert not out.exists() or not any(out.iterdir())


def test_allocation_errors_are_recognised():
    assert is_out_of_memory(CpuAllocationFailed()) and is_out_of_memory(CudaOutOfMemory())
    assert is_out_of_memory(MemoryError()) and not is_out_of_memory(RuntimeError("shape mismatch"))
    assert describe_error(CudaOutOfMemory())[1] == 2


# ------------------------------------------------------------------------------------- a full disk
class _FullDisk:
    """A file object whose writes fail as on a full disk (the first bytes may go through)."""

    def __init__(self, f, code: int):
        self._f, self._code = f, code

    def write(self, data):
        raise OSError(self._code, os.strerror(self._code))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._f.close()
        return False


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(name, code=ENOSPC)``: every atomic write of a file called ``name`` fails with ``code``."""
    failing: dict[int, int] = {}
    names: dict[str, int] = {}
    real_mkstemp, real_fdopen = tempfile.mkstemp, os.fdopen

    def mkstemp(*args, prefix=None, **kwargs):
        fd, path = real_mkstemp(*args, prefix=prefix, **kwargs)
        for name, code in names.items():
            if prefix == f".{name}.":
                failing[fd] = code
        return fd, path

    def fdopen(fd, *args, **kwargs):
        f = real_fdopen(fd, *args, **kwargs)
        code = failing.pop(fd, None)
        return f if code is None else _FullDisk(f, code)

    monkeypatch.setattr(_io.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(_io.os, "fdopen", fdopen)

    def arm(name: str, code: int = errno.ENOSPC) -> None:
        names[name] = code

    return arm


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*.part"))


def test_a_full_disk_while_writing_a_run_file_names_it(folder, tmp_path, capsys, full_disk):
    arch = _arch(tmp_path, "tiny.json", TINY_DENSE_ARCH)
    full_disk("embeddings.npy")
    out = tmp_path / "runs"
    code, err = call(capsys, "run", "--method", "ae-kmeans", "-d", str(folder), "-k", "3", "-a", arch,
                     "--pretrain", "1", "--batch-size", "8", "--out", str(out))
    run_dir = next(out.iterdir())
    target = run_dir / "embeddings.npy"
    assert code == 2 and len(_error_lines(err)) == 1, err
    assert f"No space left on device while writing {target}: free some space or pass --out elsewhere" in err
    assert not target.exists() and _leftovers(run_dir) == []
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and "No space left on device" in status["reason"]


@pytest.mark.parametrize("code,cause", [(errno.EDQUOT, "Disk quota exceeded"),
                                        (errno.EROFS, "Read-only file system"),
                                        (errno.EIO, "Input/output error")])
def test_other_disk_errors_name_the_file_too(code, cause, folder, tmp_path, capsys, full_disk):
    full_disk("metrics.json", code)
    out = tmp_path / "runs"
    status, err = call(capsys, "run", "--method", "kmeans", "-d", str(folder), "-k", "3", "--out", str(out))
    assert status == 2 and len(_error_lines(err)) == 1, err
    assert f"{cause} while writing {out}" in err and "metrics.json" in err, err
    assert not out.exists() or not any(out.iterdir())  # a k-means run has nothing worth keeping


def test_a_full_disk_while_writing_predict_out_keeps_the_old_file(folder, tmp_path, capsys, full_disk):
    out = tmp_path / "runs"
    assert main(["run", "--method", "kmeans", "-d", str(folder), "-k", "3", "--out", str(out)]) == 0
    run_dir = next(out.iterdir())
    target = tmp_path / "predictions.csv"
    target.write_text("the previous file\n")
    full_disk("predictions.csv")
    code, err = call(capsys, "predict", str(run_dir), str(folder), "--out", str(target))
    assert code == 2 and len(_error_lines(err)) == 1, err
    assert f"No space left on device while writing {target}" in err and "previous file" in err, err
    assert target.read_text() == "the previous file\n" and _leftovers(tmp_path) == []


def test_a_bare_disk_error_still_gets_its_fix():
    line, code = describe_error(OSError(errno.ENOSPC, "No space left on device", "/data/runs/x"))
    assert code == 2 and "No space left on device while writing /data/runs/x: free some space" in line
    line, _ = describe_error(OSError(errno.ENOSPC, "No space left on device"))
    assert line == "error: No space left on device: free some space or pass --out elsewhere."


def test_a_reused_autoencoder_for_other_images_is_refused_before_the_run_folder(folder, tmp_path, capsys):
    arch = _arch(tmp_path, "tiny.json", TINY_DENSE_ARCH)
    first = tmp_path / "first"
    assert main(["run", "--method", "ae-kmeans", "-d", str(folder), "-k", "3", "-a", arch, "--pretrain", "1",
                 "--batch-size", "8", "--out", str(first)]) == 0
    out = tmp_path / "runs"
    code, err = call(capsys, "run", "--method", "idec", "-d", str(folder), "-k", "3", "--resize", "12",
                     "--pretrain", "0", "--from", str(next(first.iterdir())), "--out", str(out))
    assert code == 2 and "takes images of shape (1, 9, 9)" in err and "(1, 12, 12)" in err, err
    assert not out.exists()


def test_memory_running_out_in_evaluate_is_one_line(folder, tmp_path, capsys, monkeypatch):
    def no_memory(self, X, *args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr("deepclust.cluster.kmeans.KMeans.fit", no_memory)
    out = tmp_path / "runs"
    code, err = call(capsys, "evaluate", "--methods", "kmeans", "-d", str(folder), "-k", "3", "--seeds", "0",
                     "--out", str(out))
    assert code == 2 and len(_error_lines(err)) == 1, err
    assert "ran out of memory while evaluating (after 0 result rows); use fewer images" in err, err
    status = json.loads((next(out.iterdir()) / "status.json").read_text())
    assert status["status"] == "failed" and "ran out of memory" in status["error"]
