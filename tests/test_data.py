"""deepclust.data on small files written here in each real format (no network, no shared data)."""

from __future__ import annotations

import bz2
import functools
import gzip
import io
import pickle
import socket
import struct
import tarfile
import threading
import warnings
import zipfile
from dataclasses import replace
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepclust.data import (
    DATASETS,
    ChecksumError,
    DatasetNotFoundError,
    ImageDataset,
    RemoteFile,
    describe_datasets,
    download_file,
    flatten,
    load_dataset,
    load_image_folder,
    load_reference_images,
    prepare_features,
    resize,
    resolve_data_dir,
    sobel,
    to_float,
    to_grayscale,
)
from deepclust.data.cifar10 import RestrictedUnpickler, safe_load_pickle
from deepclust.data.download import md5sum
from deepclust.data.idx import read_idx

RNG = np.random.default_rng(0)


# --------------------------------------------------------------------------- writers for each format

def write_idx(path: Path, array: np.ndarray, *, gz: bool) -> Path:
    """IDX: magic 0x0000 08 <ndim>, big-endian uint32 dims, then the uint8 data."""
    array = np.asarray(array, dtype=np.uint8)
    raw = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def make_idx_folder(folder: Path, *, gz: bool = True, dotted: bool = False, n_train: int = 6,
                    n_test: int = 4) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "train_images": RNG.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": np.arange(n_train, dtype=np.uint8) % 10,
        "test_images": RNG.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test, dtype=np.uint8) + 3) % 10,
    }
    stems = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
    for role, stem in stems.items():
        name = stem.replace("-idx", ".idx") if dotted else stem
        write_idx(folder / (name + (".gz" if gz else "")), data[role], gz=gz)
    return data


def png_bytes(array: np.ndarray, mode: str | None = None, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format=fmt)
    return buf.getvalue()


def save_image(path: Path, array: np.ndarray, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)
    return path


def grey(h=8, w=8, value=None):
    if value is not None:
        return np.full((h, w), value, dtype=np.uint8)
    return RNG.integers(0, 256, (h, w), dtype=np.uint8)


def colour(h=8, w=8):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(autouse=True)
def _isolated_data_root(tmp_path, monkeypatch):
    """Never read a real cache: $DEEPCLUST_DATA points into the test's own folder."""
    monkeypatch.setenv("DEEPCLUST_DATA", str(tmp_path / "deepclust-data"))


@pytest.fixture(autouse=True)
def _synthetic_downloads(monkeypatch):
    """The small files written here stand in for the real downloads, so the published checksums cannot
    apply to them (tests/test_download.py tests the checks)."""
    for name, spec in list(DATASETS.items()):
        downloads = tuple(replace(r, md5=None, sha256=None, gunzip_md5=None) for r in spec.downloads)
        monkeypatch.setitem(DATASETS, name, replace(spec, downloads=downloads))


# --------------------------------------------------------------------------- ImageDataset

def test_image_dataset_basics():
    images = np.zeros((3, 4, 5, 1), dtype=np.uint8)
    ds = ImageDataset("toy", images, np.array([0, 2, 1]), ["a", "b", "c"], "toy data")
    assert len(ds) == 3
    assert ds.n_classes == 3
    assert ds.image_shape == (4, 5, 1)
    image, label = ds[1]
    assert image.shape == (4, 5, 1) and label == 2 and isinstance(label, int)
    assert ds.labels.dtype == np.int64
    assert "n_samples=3" in repr(ds)


def test_image_dataset_unlabelled_items_have_label_minus_one():
    ds = ImageDataset("toy", np.zeros((2, 3, 3, 3), dtype=np.uint8))
    assert ds[0][1] == -1
    assert ds.n_classes == 0


@pytest.mark.parametrize("images, labels, match", [
    (np.zeros((2, 3, 3), dtype=np.uint8), None, "shape"),
    (np.zeros((2, 3, 3, 2), dtype=np.uint8), None, "1 or 3 channels"),
    (np.zeros((2, 3, 3, 1), dtype=np.float32), None, "uint8"),
    (np.zeros((2, 3, 3, 1), dtype=np.uint8), np.array([0, 1, 2]), r"shape \(2,\)"),
])
def test_image_dataset_rejects_bad_arrays(images, labels, match):
    with pytest.raises(ValueError, match=match):
        ImageDataset("bad", images, labels)


def test_dataset_not_found_error_is_a_file_not_found_error():
    assert issubclass(DatasetNotFoundError, FileNotFoundError)


# --------------------------------------------------------------------------- registry, names, folders

def test_registry_entries_are_complete():
    assert set(DATASETS) >= {"digits", "mnist", "fashion-mnist", "kmnist", "usps", "coil20", "coil100",
                             "cifar10", "stl10"}
    for name, spec in DATASETS.items():
        assert spec.name == name
        assert callable(spec.loader)
        assert spec.description
        assert spec.splits in (("all",), ("train", "test", "all"))
        if not spec.bundled:
            assert spec.files and spec.downloads
            for remote in spec.downloads:
                assert remote.url.startswith(("http://", "https://"))
                assert remote.md5 is None or len(remote.md5) == 32


def test_resolve_data_dir(tmp_path, monkeypatch):
    assert resolve_data_dir("mnist", tmp_path) == [tmp_path, tmp_path / "mnist"]
    monkeypatch.setenv("DEEPCLUST_DATA", str(tmp_path / "env"))
    assert resolve_data_dir("mnist") == [tmp_path / "env" / "mnist"]
    monkeypatch.delenv("DEEPCLUST_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir("mnist") == [tmp_path / "home" / ".cache" / "deepclust" / "mnist"]


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match=r"Unknown data set 'nope'.*mnist.*cifar10"):
        load_dataset("nope")


def test_a_file_path_is_not_a_data_set(tmp_path):
    path = tmp_path / "usps.h5"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file"):
        load_dataset(str(path))


def test_names_ignore_case_and_separators(tmp_path):
    make_idx_folder(tmp_path)
    ds = load_dataset("Fashion_MNIST", data_dir=tmp_path, download=False)
    assert ds.name == "fashion-mnist"
    assert ds.class_names[0] == "T-shirt/top"


@pytest.mark.parametrize("name", ["digits", "coil20", "coil100"])
def test_data_sets_without_official_split_only_accept_all(name):
    with pytest.raises(ValueError, match="'all' is the only split"):
        load_dataset(name, split="train", download=False)


def test_bad_size_and_on_error_are_refused_before_loading():
    with pytest.raises(ValueError, match="on_error must be 'skip' or 'raise'"):
        load_dataset("digits", on_error="ignore")
    with pytest.raises(ValueError, match="size must be positive"):
        load_dataset("digits", size=-3)
    with pytest.raises(ValueError, match=r"size must be an int or a \(height, width\) pair"):
        load_dataset("digits", size=(2.5, 3))


def test_path_objects_are_accepted(tmp_path):
    save_image(tmp_path / "imgs" / "a.png", grey())
    assert len(load_dataset(tmp_path / "imgs")) == 1


def test_bad_split_value():
    with pytest.raises(ValueError, match="split must be one of"):
        load_dataset("mnist", split="val", download=False)


def test_describe_datasets_says_what_is_found(tmp_path):
    make_idx_folder(tmp_path / "mnist")
    text = describe_datasets(tmp_path)
    lines = {line.split()[0]: line for line in text.splitlines() if line and not line.startswith(" ")}
    for name in DATASETS:
        assert name in lines
    assert lines["mnist"].split()[2] == "yes"
    assert str(tmp_path / "mnist") in lines["mnist"]
    assert lines["cifar10"].split()[2] == "no"
    assert "cifar-10-python.tar.gz" in lines["cifar10"]
    assert lines["digits"].split()[2] == "yes"


# --------------------------------------------------------------------------- digits

def test_digits():
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    raw = load_digits()
    assert ds.images.shape == (1797, 8, 8, 1) and ds.images.dtype == np.uint8
    assert ds.images.max() == 255
    np.testing.assert_array_equal(ds.images[..., 0], np.rint(raw.images * 255 / 16).astype(np.uint8))
    np.testing.assert_array_equal(ds.labels, raw.target)
    assert ds.class_names == [str(d) for d in range(10)]


def test_size_resizes_array_data_sets():
    ds = load_dataset("digits", size=16)
    assert ds.images.shape == (1797, 16, 16, 1)
    ds = load_dataset("digits", size=(4, 6))
    assert ds.images.shape == (1797, 4, 6, 1)


# --------------------------------------------------------------------------- IDX (MNIST family)

@pytest.mark.parametrize("gz, dotted", [(True, False), (False, False), (False, True), (True, True)])
def test_idx_formats(tmp_path, gz, dotted):
    data = make_idx_folder(tmp_path, gz=gz, dotted=dotted)
    ds = load_dataset("mnist", data_dir=tmp_path, download=False)
    assert ds.images.shape == (10, 28, 28, 1) and ds.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.images[:6, ..., 0], data["train_images"])
    np.testing.assert_array_equal(ds.images[6:, ..., 0], data["test_images"])
    np.testing.assert_array_equal(ds.labels, np.r_[data["train_labels"], data["test_labels"]])
    assert ds.labels.dtype == np.int64
    assert ds.paths is None


def test_idx_splits(tmp_path):
    make_idx_folder(tmp_path)
    assert len(load_dataset("kmnist", data_dir=tmp_path, split="train", download=False)) == 6
    test = load_dataset("kmnist", data_dir=tmp_path, split="test", download=False)
    assert len(test) == 4 and test.class_names[:2] == ["o", "ki"]


def test_test_split_needs_only_test_files(tmp_path):
    make_idx_folder(tmp_path)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (tmp_path / name).unlink()
    assert len(load_dataset("mnist", data_dir=tmp_path, split="test", download=False)) == 4
    with pytest.raises(DatasetNotFoundError):
        load_dataset("mnist", data_dir=tmp_path, split="train", download=False)


def test_data_dir_may_be_the_parent_folder(tmp_path):
    make_idx_folder(tmp_path / "mnist")
    assert len(load_dataset("mnist", data_dir=tmp_path, download=False)) == 10
    assert len(load_dataset("mnist", data_dir=tmp_path / "mnist", download=False)) == 10


def test_env_var_sets_the_data_root(tmp_path, monkeypatch):
    make_idx_folder(tmp_path / "root" / "fashion-mnist")
    monkeypatch.setenv("DEEPCLUST_DATA", str(tmp_path / "root"))
    assert len(load_dataset("fashion-mnist", download=False)) == 10


def test_read_idx_rejects_bad_magic(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x12\x34\x08\x03" + b"\x00" * 20)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte is not an IDX file"):
        read_idx(path)


def test_truncated_idx_names_the_file(tmp_path):
    make_idx_folder(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte is truncated or corrupt"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_truncated_gzip_names_the_file(tmp_path):
    make_idx_folder(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz is a corrupt or truncated gzip"):
        load_dataset("mnist", data_dir=tmp_path, split="test", download=False)


def test_images_and_labels_must_match_in_number(tmp_path):
    make_idx_folder(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(3, dtype=np.uint8), gz=True)
    with pytest.raises(ValueError, match="holds 4 images but .* holds 3 labels"):
        load_dataset("mnist", data_dir=tmp_path, split="test", download=False)


def test_labels_file_must_hold_labels(tmp_path):
    make_idx_folder(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros((4, 2, 2), dtype=np.uint8), gz=True)
    with pytest.raises(ValueError, match="must hold uint8 labels"):
        load_dataset("mnist", data_dir=tmp_path, split="test", download=False)


def test_missing_files_without_download(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("download=False must not touch the network")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", data_dir=tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path) in message and str(tmp_path / "mnist") in message
    assert "train-images-idx3-ubyte.gz" in message and "t10k-labels-idx1-ubyte.gz" in message
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/" in message
    assert "download=False" in message
    assert info.value.files and info.value.name == "mnist"


# --------------------------------------------------------------------------- USPS

def write_usps_h5(path: Path, n_train=5, n_test=3) -> dict[str, np.ndarray]:
    import h5py

    # Values on the 0.0005 grid of (x + 1) / 2 for x with three decimals, like the real file.
    data = {
        "train": (RNG.integers(0, 2001, (n_train, 256)) / 2000).astype(np.float32),
        "test": (RNG.integers(0, 2001, (n_test, 256)) / 2000).astype(np.float32),
    }
    targets = {"train": np.arange(n_train) % 10, "test": (np.arange(n_test) + 5) % 10}
    with h5py.File(path, "w") as f:
        for part in ("train", "test"):
            f.create_dataset(f"{part}/data", data=data[part])
            f.create_dataset(f"{part}/target", data=targets[part].astype(np.int32))
    return {**data, **{f"{k}_target": v for k, v in targets.items()}}


def test_usps_h5(tmp_path):
    written = write_usps_h5(tmp_path / "usps.h5")
    ds = load_dataset("usps", data_dir=tmp_path, download=False)
    assert ds.images.shape == (8, 16, 16, 1) and ds.images.dtype == np.uint8
    expected = np.rint(np.r_[written["train"], written["test"]] * 255).reshape(-1, 16, 16)
    assert np.abs(ds.images[..., 0] - expected).max() <= 1  # round(x * 255); halves go up
    np.testing.assert_array_equal(ds.labels, np.r_[written["train_target"], written["test_target"]])
    assert len(load_dataset("usps", data_dir=tmp_path, split="train", download=False)) == 5
    assert len(load_dataset("usps", data_dir=tmp_path, split="test", download=False)) == 3


def write_esl(path: Path, labels, pixels) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [" ".join([f"{float(lab):.4f}", *(f"{v:.3f}" for v in row)])
             for lab, row in zip(labels, pixels, strict=True)]
    text = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(text) if path.suffix == ".gz" else text)


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_usps_esl_text(tmp_path, suffix):
    pixels = np.full((2, 256), 0.0)
    pixels[0, :3] = [-1.0, 1.0, 0.0]  # -> 0, 255, 127.5 rounded up = 128
    write_esl(tmp_path / f"zip.train{suffix}", [6, 5], pixels)
    write_esl(tmp_path / f"zip.test{suffix}", [9], np.full((1, 256), 1.0))
    ds = load_dataset("usps", data_dir=tmp_path, download=False)
    assert ds.images.shape == (3, 16, 16, 1)
    assert ds.images[0, 0, :3, 0].tolist() == [0, 255, 128]
    assert ds.images[2].min() == 255
    assert ds.labels.tolist() == [6, 5, 9]


def test_usps_h5_and_esl_give_the_same_pixels(tmp_path):
    """usps.h5 is ESL's (x + 1) / 2 stored as float32; both must decode to the same uint8 image."""
    x = RNG.integers(-1000, 1001, (4, 256)) / 1000  # ESL: three decimals in [-1, 1]
    x[0, :4] = [-1.0, 1.0, -0.4, 0.0]  # -> 0, 255, 76.5 -> 77, 127.5 -> 128
    write_esl(tmp_path / "esl" / "zip.train", [1, 2, 3, 4], x)
    write_esl(tmp_path / "esl" / "zip.test", [5], x[:1])
    import h5py

    with h5py.File(tmp_path / "usps.h5", "w") as f:
        for part, rows in (("train", x), ("test", x[:1])):
            f.create_dataset(f"{part}/data", data=((rows + 1) / 2).astype(np.float32))
            f.create_dataset(f"{part}/target", data=np.arange(len(rows), dtype=np.int32))
    from_esl = load_dataset("usps", data_dir=tmp_path / "esl", download=False)
    from_h5 = load_dataset("usps", data_dir=tmp_path, download=False)
    np.testing.assert_array_equal(from_esl.images, from_h5.images)
    assert from_h5.images[0, 0, :4, 0].tolist() == [0, 255, 77, 128]


def test_usps_esl_truncated(tmp_path):
    write_esl(tmp_path / "zip.train", [1], np.zeros((1, 256)))
    (tmp_path / "zip.train").write_bytes((tmp_path / "zip.train").read_bytes()[:-30])
    with pytest.raises(ValueError, match="zip.train is truncated or corrupt"):
        load_dataset("usps", data_dir=tmp_path, split="train", download=False)


def test_usps_h5_with_wrong_layout(tmp_path):
    import h5py

    with h5py.File(tmp_path / "usps.h5", "w") as f:
        f.create_dataset("X", data=np.zeros((2, 256)))
    with pytest.raises(ValueError, match="usps.h5 has no 'train/data'"):
        load_dataset("usps", data_dir=tmp_path, download=False)


# --------------------------------------------------------------------------- COIL

def make_coil(folder: Path, objects=(1, 2, 10), poses=(0, 1, 2, 10), rgb=False) -> dict[tuple, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    images = {}
    for obj in objects:
        for pose in poses:
            arr = colour(6, 6) if rgb else grey(6, 6)
            images[(obj, pose)] = arr
            (folder / f"obj{obj}__{pose}.png").write_bytes(png_bytes(arr))
    return images


def _coil_order(images):
    return sorted(images)  # (object, pose) numerically


def test_coil20_folder(tmp_path):
    images = make_coil(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="expected 1440"):
        ds = load_dataset("coil20", data_dir=tmp_path, download=False)
    order = _coil_order(images)
    assert ds.images.shape == (12, 6, 6, 1)
    np.testing.assert_array_equal(ds.images[..., 0], np.stack([images[k] for k in order]))
    assert ds.labels.tolist() == [obj - 1 for obj, _ in order]
    assert ds.n_classes == 20 and ds.class_names[9] == "obj10"
    assert ds.paths[4].endswith("obj2__0.png") and ds.paths[3].endswith("obj1__10.png")


def test_coil20_zip_read_without_extracting(tmp_path):
    images = make_coil(tmp_path / "src")
    with zipfile.ZipFile(tmp_path / "coil-20-proc.zip", "w") as zf:
        for (obj, pose), arr in images.items():
            zf.writestr(f"coil-20-proc/obj{obj}__{pose}.png", png_bytes(arr))
        zf.writestr("__MACOSX/coil-20-proc/._obj1__0.png", b"junk")
    with pytest.warns(UserWarning, match="expected 1440"):
        ds = load_dataset("coil20", data_dir=tmp_path, download=False, size=3)
    assert ds.images.shape == (12, 3, 3, 1)
    assert ds.labels.tolist() == [obj - 1 for obj, _ in _coil_order(images)]
    assert ds.paths[0] == f"{tmp_path / 'coil-20-proc.zip'}/coil-20-proc/obj1__0.png"
    assert not (tmp_path / "coil-20-proc").exists()


def test_coil100_colour(tmp_path):
    make_coil(tmp_path / "coil100" / "coil-100", objects=(1, 100), poses=(0, 5, 355), rgb=True)
    with pytest.warns(UserWarning, match="expected 7200"):
        ds = load_dataset("coil100", data_dir=tmp_path, download=False)
    assert ds.images.shape == (6, 6, 6, 3)
    assert ds.labels.tolist() == [0, 0, 0, 99, 99, 99]


def test_coil_corrupt_zip(tmp_path):
    (tmp_path / "coil-20-proc.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="coil-20-proc.zip is not a readable zip file"):
        load_dataset("coil20", data_dir=tmp_path, download=False)


def test_coil_corrupt_png_is_skipped_or_raised(tmp_path):
    make_coil(tmp_path, objects=(1,), poses=(0, 1))
    (tmp_path / "obj1__2.png").write_bytes(b"\x89PNG not really")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset("coil20", data_dir=tmp_path, download=False)
    assert len(ds) == 2
    assert any("obj1__2.png" in str(w.message) for w in caught)
    with pytest.raises(ValueError, match=r"obj1__2\.png"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_dataset("coil20", data_dir=tmp_path, download=False, on_error="raise")


# --------------------------------------------------------------------------- CIFAR-10

def cifar_arrays(n):
    images = RNG.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = RNG.integers(0, 10, n)
    return images, labels


def python_batch(images, labels) -> bytes:
    """Like the real files: a dict with bytes keys, numpy (n, 3072) R, G, B planes, pickle protocol 2."""
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    batch = {b"batch_label": b"testing batch", b"labels": [int(x) for x in labels], b"data": data,
             b"filenames": [b"x.png"] * len(images)}
    return pickle.dumps(batch, protocol=2)


CIFAR_META = pickle.dumps({b"label_names": [n.encode() for n in
                                            ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse",
                                             "ship", "truck"]],
                           b"num_cases_per_batch": 2, b"num_vis": 3072}, protocol=2)


def make_cifar(root: Path, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Write a tiny CIFAR-10 (2 images per batch) as "py", "py-tar" or "bin"; return all images/labels."""
    batches = [cifar_arrays(2) for _ in range(6)]  # data_batch_1..5, test_batch
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    root.mkdir(parents=True, exist_ok=True)
    if kind in ("py", "py-tar"):
        blobs = {n: python_batch(*b) for n, b in zip(names, batches, strict=True)}
        blobs["batches.meta"] = CIFAR_META
        folder = "cifar-10-batches-py"
    else:
        blobs = {f"{n}.bin": np.concatenate([b[1][:, None].astype(np.uint8),
                                             b[0].transpose(0, 3, 1, 2).reshape(2, -1)], axis=1).tobytes()
                 for n, b in zip(names, batches, strict=True)}
        blobs["batches.meta.txt"] = b"".join(f"a{i}\n".encode() for i in range(10))
        folder = "cifar-10-batches-bin"
    if kind == "py-tar":
        with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
            for name, blob in blobs.items():
                info = tarfile.TarInfo(f"{folder}/{name}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
    else:
        (root / folder).mkdir()
        for name, blob in blobs.items():
            (root / folder / name).write_bytes(blob)
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


@pytest.mark.parametrize("kind", ["py", "py-tar", "bin"])
def test_cifar10_formats(tmp_path, kind):
    images, labels = make_cifar(tmp_path, kind)
    ds = load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert ds.images.shape == (12, 32, 32, 3) and ds.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.images, images)  # R, G, B planes -> (H, W, C)
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.class_names[0] == ("a0" if kind == "bin" else "plane")
    train = load_dataset("cifar10", data_dir=tmp_path, split="train", download=False)
    test = load_dataset("cifar10", data_dir=tmp_path, split="test", download=False)
    assert len(train) == 10 and len(test) == 2
    np.testing.assert_array_equal(test.images, images[10:])


def test_cifar10_batch_folder_given_directly(tmp_path):
    images, _ = make_cifar(tmp_path, "py")
    ds = load_dataset("cifar10", data_dir=tmp_path / "cifar-10-batches-py", split="test", download=False)
    np.testing.assert_array_equal(ds.images, images[10:])


def test_cifar10_truncated_binary_batch(tmp_path):
    make_cifar(tmp_path, "bin")
    path = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match="test_batch.bin is truncated or corrupt"):
        load_dataset("cifar10", data_dir=tmp_path, split="test", download=False)


EVIL = b"cos\nsystem\n(S'echo pwned'\ntR."  # protocol 0: os.system("echo pwned")


def test_restricted_unpickler_refuses_os_system():
    with pytest.raises(pickle.UnpicklingError, match=r"os\.system"):
        safe_load_pickle(EVIL)
    with pytest.raises(pickle.UnpicklingError, match=r"builtins\.eval"):
        RestrictedUnpickler(io.BytesIO(pickle.dumps(eval))).load()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_unpickler_reads_numpy_arrays(protocol):
    data = {"data": np.arange(12, dtype=np.uint8).reshape(3, 4), "labels": [1, 2, 3], "x": np.int64(7)}
    out = safe_load_pickle(pickle.dumps(data, protocol=protocol))
    np.testing.assert_array_equal(out["data"], data["data"])
    assert out["labels"] == [1, 2, 3] and out["x"] == 7


def test_cifar10_tampered_batch_is_refused(tmp_path):
    make_cifar(tmp_path, "py")
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(EVIL)
    with pytest.raises(pickle.UnpicklingError, match=r"os\.system"):
        load_dataset("cifar10", data_dir=tmp_path, split="test", download=False)


# --------------------------------------------------------------------------- STL-10

def make_stl10(root: Path, *, tar: bool, n_train=3, n_test=2):
    images = {"train": RNG.integers(0, 256, (n_train, 96, 96, 3), dtype=np.uint8),
              "test": RNG.integers(0, 256, (n_test, 96, 96, 3), dtype=np.uint8)}
    labels = {"train": np.array([1, 10, 4], dtype=np.uint8)[:n_train],
              "test": np.array([2, 3], dtype=np.uint8)[:n_test]}
    blobs = {}
    for part in ("train", "test"):
        # Column-major per channel: stored as (n, C, W, H).
        blobs[f"{part}_X.bin"] = images[part].transpose(0, 3, 2, 1).tobytes()
        blobs[f"{part}_y.bin"] = labels[part].tobytes()
    blobs["class_names.txt"] = b"\n".join(f"c{i}".encode() for i in range(10)) + b"\n"
    root.mkdir(parents=True, exist_ok=True)
    if tar:
        with tarfile.open(root / "stl10_binary.tar.gz", "w:gz") as archive:
            for name, blob in blobs.items():
                info = tarfile.TarInfo(f"stl10_binary/{name}")
                info.size = len(blob)
                archive.addfile(info, io.BytesIO(blob))
    else:
        (root / "stl10_binary").mkdir()
        for name, blob in blobs.items():
            (root / "stl10_binary" / name).write_bytes(blob)
    return images, labels


@pytest.mark.parametrize("tar", [False, True])
def test_stl10(tmp_path, tar):
    images, labels = make_stl10(tmp_path, tar=tar)
    ds = load_dataset("stl10", data_dir=tmp_path, download=False)
    assert ds.images.shape == (5, 96, 96, 3)
    np.testing.assert_array_equal(ds.images, np.concatenate([images["train"], images["test"]]))
    assert ds.labels.tolist() == [0, 9, 3, 1, 2]
    assert ds.class_names == [f"c{i}" for i in range(10)]
    assert len(load_dataset("stl10", data_dir=tmp_path, split="train", download=False)) == 3
    test = load_dataset("stl10", data_dir=tmp_path, split="test", download=False)
    np.testing.assert_array_equal(test.images, images["test"])


def test_stl10_truncated(tmp_path):
    make_stl10(tmp_path, tar=False)
    path = tmp_path / "stl10_binary" / "test_X.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match="test_X.bin is truncated or corrupt"):
        load_dataset("stl10", data_dir=tmp_path, split="test", download=False)


# --------------------------------------------------------------------------- image folders

def test_class_subfolders(tmp_path):
    save_image(tmp_path / "cats" / "b.png", grey(value=10))
    save_image(tmp_path / "cats" / "a.PNG", grey(value=20))
    save_image(tmp_path / "dogs" / "x.jpg", grey(value=200), fmt="JPEG")
    save_image(tmp_path / "dogs" / ".hidden.png", grey(value=0))
    (tmp_path / ".git").mkdir()
    save_image(tmp_path / ".git" / "z.png", grey())
    (tmp_path / "empty").mkdir()
    ds = load_dataset(str(tmp_path))
    assert ds.class_names == ["cats", "dogs"]
    assert ds.labels.tolist() == [0, 0, 1]
    assert [Path(p).name for p in ds.paths] == ["a.PNG", "b.png", "x.jpg"]
    assert ds.images.shape == (3, 8, 8, 1)
    assert ds.images[0].max() == 20 and ds.images[1].max() == 10
    assert abs(int(ds.images[2].mean()) - 200) <= 2  # JPEG is lossy


def test_flat_folder_is_unlabelled(tmp_path):
    for i in range(3):
        save_image(tmp_path / f"img{i}.bmp", colour())
    ds = load_image_folder(tmp_path)
    assert ds.labels is None and ds.class_names == []
    assert ds.images.shape == (3, 8, 8, 3)
    assert ds[0][1] == -1


def test_mixed_grey_and_rgb_become_rgb(tmp_path):
    g = grey(value=77)
    save_image(tmp_path / "a" / "grey.jpg", g, fmt="JPEG")
    save_image(tmp_path / "a" / "rgb.png", colour())
    ds = load_image_folder(tmp_path)
    assert ds.images.shape == (2, 8, 8, 3)
    grey_image = ds.images[0]
    assert np.array_equal(grey_image[..., 0], grey_image[..., 1])
    assert np.array_equal(grey_image[..., 0], grey_image[..., 2])


def test_all_grey_modes_give_one_channel(tmp_path):
    save_image(tmp_path / "l.png", grey())
    Image.fromarray(grey() > 128).save(tmp_path / "bw.png")  # mode "1"
    palette = Image.fromarray(grey()).convert("P")  # a palette of greys
    palette.save(tmp_path / "p.gif")
    eight_bit = grey()
    Image.fromarray(eight_bit.astype(np.uint16) * 257).save(tmp_path / "deep.png")  # 16-bit PNG
    ds = load_image_folder(tmp_path)
    assert ds.images.shape == (4, 8, 8, 1)
    deep = ds.images[[Path(p).name for p in ds.paths].index("deep.png")]
    np.testing.assert_array_equal(deep[..., 0], eight_bit)  # 16-bit values are scaled, not clipped


def test_colour_palette_and_rgba_are_colour(tmp_path):
    Image.fromarray(colour()).convert("P").save(tmp_path / "p.png")
    Image.fromarray(np.dstack([colour(), grey()])).save(tmp_path / "rgba.png")
    ds = load_image_folder(tmp_path)
    assert ds.images.shape == (2, 8, 8, 3)


def test_mixed_sizes_resize_to_most_common_with_warning(tmp_path):
    save_image(tmp_path / "a.png", grey(8, 8))
    save_image(tmp_path / "b.png", grey(8, 8))
    save_image(tmp_path / "c.png", grey(4, 6))
    with pytest.warns(UserWarning, match=r"most common size 8x8.*size="):
        ds = load_image_folder(tmp_path)
    assert ds.images.shape == (3, 8, 8, 1)


@pytest.mark.parametrize("size, shape", [(5, (5, 5)), ((4, 6), (4, 6))])
def test_size_resizes_on_load(tmp_path, size, shape):
    save_image(tmp_path / "a.png", colour(8, 8))
    save_image(tmp_path / "b.jpg", colour(16, 10), fmt="JPEG")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no mixed-size warning when size is given
        ds = load_image_folder(tmp_path, size=size)
    assert ds.images.shape == (2, *shape, 3)


def test_constant_image_stays_constant_after_resize(tmp_path):
    save_image(tmp_path / "a.png", grey(20, 20, value=90))
    ds = load_image_folder(tmp_path, size=7)
    assert ds.images.min() == ds.images.max() == 90


def test_corrupt_image_skip_and_raise(tmp_path):
    save_image(tmp_path / "c" / "good.png", grey())
    (tmp_path / "c" / "bad.jpg").write_bytes(b"not a jpeg at all")
    truncated = png_bytes(grey(32, 32))
    (tmp_path / "c" / "half.png").write_bytes(truncated[: len(truncated) // 2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_image_folder(tmp_path)
    assert len(ds) == 1 and Path(ds.paths[0]).name == "good.png"
    messages = [str(w.message) for w in caught if w.category is UserWarning]
    assert len(messages) == 2
    assert any("bad.jpg" in m for m in messages) and any("half.png" in m for m in messages)
    with pytest.raises(ValueError, match=r"Cannot read image file .*bad\.jpg"):
        load_image_folder(tmp_path, on_error="raise")


def test_only_unreadable_images(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="None of the 1 image files"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_image_folder(tmp_path)


def test_empty_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"No image files found in .*\.png, \.jpg, \.jpeg"):
        load_image_folder(tmp_path)


def test_missing_folder():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder("/definitely/not/here")


def test_bad_on_error_and_split_for_plain_folders(tmp_path):
    save_image(tmp_path / "a.png", grey())
    with pytest.raises(ValueError, match="on_error must be"):
        load_image_folder(tmp_path, on_error="ignore")
    with pytest.raises(ValueError, match="'all' is the only split"):
        load_dataset(str(tmp_path), split="train")


def make_seed003(root: Path):
    for cls, value in (("circle", 50), ("square", 150)):
        for i in range(3):
            save_image(root / "train" / cls / f"{i}.png", colour())
        save_image(root / "test" / cls / "t.png", grey(value=value))
        save_image(root / "reference" / cls / "ref.jpg", colour(), fmt="JPEG")
    save_image(root / "test" / "triangle" / "t.png", grey())


def test_train_test_reference_layout(tmp_path):
    make_seed003(tmp_path)
    train = load_dataset(str(tmp_path), split="train")
    test = load_dataset(str(tmp_path), split="test")
    both = load_dataset(str(tmp_path))
    assert len(train) == 6 and train.class_names == ["circle", "square"]
    assert len(test) == 3 and test.images.shape[-1] == 1
    assert test.class_names == ["circle", "square", "triangle"]
    assert len(both) == 9
    assert both.class_names == ["circle", "square", "triangle"]
    assert both.labels.tolist() == [0, 0, 0, 1, 1, 1, 0, 1, 2]
    assert both.images.shape == (9, 8, 8, 3)  # grey test images joined with RGB train images -> RGB
    assert {Path(p).relative_to(tmp_path).parts[0] for p in both.paths} == {"train", "test"}

    ref = load_reference_images(tmp_path, size=4)
    assert ref.images.shape == (2, 4, 4, 3) and ref.labels.tolist() == [0, 1]
    assert ref.class_names == ["circle", "square"]


def test_reference_images_absent(tmp_path):
    save_image(tmp_path / "train" / "a.png", grey())
    assert load_reference_images(tmp_path) is None
    assert load_image_folder(tmp_path, split="train").labels is None
    with pytest.raises(ValueError, match="no test/ sub-folder"):
        load_image_folder(tmp_path, split="test")


# --------------------------------------------------------------------------- downloads

class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - keep test output clean
        pass


@pytest.fixture
def http_server(tmp_path):
    """Serve tmp_path/www on 127.0.0.1 from a thread; yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_file_checks_md5(http_server, tmp_path):
    root, url = http_server
    payload = RNG.integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()  # several chunks
    (root / "blob.bin").write_bytes(payload)
    dest = tmp_path / "out" / "blob.bin"
    expected = md5sum(root / "blob.bin")
    assert download_file(f"{url}/blob.bin", dest, md5=expected) == dest
    assert dest.read_bytes() == payload and md5sum(dest) == expected


def test_download_file_wrong_md5_leaves_no_file(http_server, tmp_path):
    root, url = http_server
    (root / "blob.bin").write_bytes(b"hello")
    dest = tmp_path / "out" / "blob.bin"
    with pytest.raises(ChecksumError, match=r"expected md5 0{32}, got 5d41402abc4b2a76b9719d911017c592"):
        download_file(f"{url}/blob.bin", dest, md5="0" * 32)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # no .part file left behind


def _point_spec_at(monkeypatch, name: str, base_url: str, md5s: dict[str, str | None]):
    spec = DATASETS[name]
    downloads = tuple(RemoteFile(r.filename, f"{base_url}/{r.filename}", md5s.get(r.filename), r.splits)
                      for r in spec.downloads)
    monkeypatch.setitem(DATASETS, name, replace(spec, downloads=downloads))


def write_libsvm(path: Path, digits, pixels) -> None:
    """USPS in LIBSVM's format (the download), bzip2ed: label = digit + 1, then index:value pairs."""
    lines = [" ".join([str(d + 1), *(f"{i}:{v:g}" for i, v in enumerate(row, start=1))])
             for d, row in zip(digits, pixels, strict=True)]
    path.write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))


def test_loader_downloads_missing_files(http_server, tmp_path, monkeypatch):
    root, url = http_server
    write_libsvm(root / "usps.bz2", [3, 4], np.zeros((2, 256)))
    write_libsvm(root / "usps.t.bz2", [7], np.ones((1, 256)))
    _point_spec_at(monkeypatch, "usps", url, {"usps.bz2": md5sum(root / "usps.bz2")})
    data_dir = tmp_path / "data"
    ds = load_dataset("usps", data_dir=data_dir)
    assert ds.labels.tolist() == [3, 4, 7]
    assert (data_dir / "usps.bz2").is_file() and (data_dir / "usps.t.bz2").is_file()  # first candidate


def test_loader_download_only_fetches_the_split(http_server, tmp_path, monkeypatch):
    root, url = http_server
    write_libsvm(root / "usps.t.bz2", [7], np.ones((1, 256)))
    _point_spec_at(monkeypatch, "usps", url, {})
    ds = load_dataset("usps", split="test")  # default root: $DEEPCLUST_DATA/usps
    assert len(ds) == 1
    assert (tmp_path / "deepclust-data" / "usps" / "usps.t.bz2").is_file()


def test_loader_wrong_md5_raises_checksum_error(http_server, tmp_path, monkeypatch):
    root, url = http_server
    make_idx_folder(root)
    _point_spec_at(monkeypatch, "mnist", url, {"t10k-images-idx3-ubyte.gz": "f" * 32})
    with pytest.raises(ChecksumError, match="expected md5 f{32}"):
        load_dataset("mnist", data_dir=tmp_path / "d", split="test")
    assert not (tmp_path / "d" / "t10k-images-idx3-ubyte.gz").exists()


def test_unreachable_url_gives_dataset_not_found(tmp_path, monkeypatch):
    _point_spec_at(monkeypatch, "cifar10", f"http://127.0.0.1:{_unused_port()}", {})
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", data_dir=tmp_path / "cache")
    message = str(info.value)
    assert "cifar-10-python.tar.gz" in message
    assert str(tmp_path / "cache") in message
    assert "Downloading http://127.0.0.1" in message and "failed" in message
    assert not any((tmp_path / "cache").glob("*.part"))


# --------------------------------------------------------------------------- transforms

def test_sobel_on_a_hand_computed_image():
    image = np.zeros((1, 3, 3, 1), dtype=np.float32)
    image[0, 1, 1, 0] = 1.0  # a single bright pixel
    out = sobel(image)
    assert out.shape == (1, 3, 3, 2) and out.dtype == np.float32
    # Cross-correlation: Gx[i, j] = sum_{a,b} K[a, b] * I[i + a - 1, j + b - 1], so the pixel at (1, 1)
    # shows up at (i, j) with weight K[2 - i, 2 - j] (the kernel flipped).
    np.testing.assert_array_equal(out[0, ..., 0], np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32))
    np.testing.assert_array_equal(out[0, ..., 1], np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], np.float32))


def test_sobel_on_a_ramp_with_zero_padding():
    ramp = np.tile(np.arange(4, dtype=np.float32), (4, 1))[None, ..., None]  # I[i, j] = j
    gx = sobel(ramp)[0, ..., 0]
    # Interior: (left - right) * (1 + 2 + 1) = -2 * 4 = -8. Top/bottom rows lose one kernel row: -6.
    assert gx[1:3, 1:3].tolist() == [[-8, -8], [-8, -8]]
    assert gx[0, 1] == -6
    # Left column sees zero padding on its left: -(1*1 + 2*1 + 1*1) = -4 on interior rows.
    assert gx[1, 0] == -4
    # Right column: left neighbour 2, right padding 0 -> 2 * 4 = 8.
    assert gx[1, 3] == 8


def test_sobel_uses_luma_for_colour():
    rgb = RNG.random((2, 5, 5, 3)).astype(np.float32)
    luma = (rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])).astype(np.float32)[..., None]
    np.testing.assert_allclose(sobel(rgb), sobel(luma), atol=1e-5)


def test_grayscale_weights():
    images = np.zeros((3, 1, 1, 3), dtype=np.uint8)
    images[0, 0, 0] = [255, 0, 0]
    images[1, 0, 0] = [0, 255, 0]
    images[2, 0, 0] = [0, 0, 255]
    out = to_grayscale(images)
    assert out.shape == (3, 1, 1, 1) and out.dtype == np.uint8
    assert out.ravel().tolist() == [76, 150, 29]  # round(255 * 0.299), 0.587, 0.114
    same = np.full((1, 2, 2, 3), 123, dtype=np.uint8)
    assert (to_grayscale(same) == 123).all()
    grey_in = np.zeros((2, 3, 3, 1), dtype=np.uint8)
    assert to_grayscale(grey_in) is grey_in


def test_standardisation_gives_zero_mean_unit_std():
    images = RNG.integers(0, 256, (20, 6, 6, 3), dtype=np.uint8)
    x, mean, std = to_float(images, "standard", return_stats=True)
    assert x.dtype == np.float32 and x.shape == images.shape
    np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(0, 1, 2)), 1, atol=1e-4)
    np.testing.assert_allclose(mean, (images / 255).mean(axis=(0, 1, 2)), rtol=1e-5)
    # Given statistics are applied as they are (e.g. a test set with the train set's stats).
    y = to_float(images[:5], "standard", mean=mean, std=std)
    np.testing.assert_allclose(y, x[:5], atol=1e-5)


def test_standardisation_of_a_constant_channel_does_not_divide_by_zero():
    x = to_float(np.full((2, 3, 3, 1), 7, dtype=np.uint8), "standard")
    assert np.isfinite(x).all() and (x == 0).all()


def test_to_float_unit_and_none():
    images = np.array([[[[0], [255]]]], dtype=np.uint8)
    assert to_float(images).ravel().tolist() == [0.0, 1.0]
    assert to_float(images, None).ravel().tolist() == [0.0, 255.0]
    with pytest.raises(ValueError, match="normalize must be"):
        to_float(images, "minmax")


def test_resize_and_flatten():
    images = RNG.integers(0, 256, (4, 10, 12, 3), dtype=np.uint8)
    small = resize(images, (5, 6))
    assert small.shape == (4, 5, 6, 3) and small.dtype == np.uint8
    assert resize(images.astype(np.float32) / 255, 3).shape == (4, 3, 3, 3)
    assert flatten(small).shape == (4, 90)
    with pytest.raises(ValueError, match="size must be"):
        resize(images, (5, 6, 7))
    with pytest.raises(ValueError, match="size must be positive"):
        resize(images, 0)


def test_prepare_features_applies_the_steps_in_order():
    ds = ImageDataset("toy", RNG.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8))
    x = prepare_features(ds)
    assert x.shape == (3, 192) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    x = prepare_features(ds, grayscale=True, size=4, sobel=True)
    assert x.shape == (3, 4 * 4 * 2)
    expected = flatten(sobel(to_float(resize(to_grayscale(ds.images), 4))))
    np.testing.assert_allclose(x, expected)
    x = prepare_features(ds.images, normalize="standard", flatten=False)
    assert x.shape == (3, 8, 8, 3)
    np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), 0, atol=1e-5)


def test_transforms_reject_bad_shapes():
    with pytest.raises(ValueError, match=r"\(n_samples, height, width, channels\)"):
        to_float(np.zeros((2, 3, 3, 4)))
    assert to_float(np.zeros((2, 3, 3), dtype=np.uint8)).shape == (2, 3, 3, 1)


def test_an_unreadable_class_folder_is_an_error_not_a_missing_class(tmp_path, monkeypatch):
    """os.walk skips folders it cannot list; as root nothing is unreadable, so the refusal is simulated."""
    import deepclust.data.image_folder as image_folder

    for name in ("cats", "dogs"):
        (tmp_path / name).mkdir()
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / name / "a.png")
    real_walk = image_folder.os.walk

    def walk(top, onerror=None, **kwargs):
        if Path(top).name == "dogs":
            onerror(PermissionError(13, "Permission denied", str(top)))
            return iter(())
        return real_walk(top, onerror=onerror, **kwargs)

    monkeypatch.setattr(image_folder.os, "walk", walk)
    with pytest.raises(ValueError, match=r"Cannot read the folder .*dogs \(Permission denied\)"):
        image_folder.load_image_folder(tmp_path)
