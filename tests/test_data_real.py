"""deepclust.data on the real data sets in ../shared/data (skipped when that folder is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepclust.data import describe_datasets, load_dataset

pytestmark = pytest.mark.data

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not found: real-data tests need the shared data sets")
    return SHARED_DATA


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not found: this real-data test needs it")
    return path


@pytest.fixture(scope="module")
def mnist_all(shared_data):
    _need(shared_data / "mnist")
    return load_dataset("mnist", data_dir=shared_data, download=False)


def test_mnist_all(mnist_all):
    ds = mnist_all
    assert len(ds) == 70_000
    assert ds.images.shape == (70_000, 28, 28, 1) and ds.images.dtype == np.uint8
    assert ds.class_names == [str(d) for d in range(10)]
    # Published training-set statistics: mean 0.1307, std 0.3081 (of 255).
    train = ds.images[:60_000] / 255.0
    assert train.mean() == pytest.approx(0.1307, abs=5e-4)
    assert train.std() == pytest.approx(0.3081, abs=5e-4)
    assert np.bincount(ds.labels[:60_000]).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851,
                                                       5949]


def test_mnist_splits(shared_data, mnist_all):
    mnist = _need(shared_data / "mnist")
    train = load_dataset("mnist", data_dir=mnist, split="train", download=False)
    test = load_dataset("mnist", data_dir=mnist, split="test", download=False)
    assert len(train) == 60_000 and len(test) == 10_000
    assert test.image_shape == (28, 28, 1)
    assert np.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    np.testing.assert_array_equal(test.images, mnist_all.images[60_000:])  # "all" = train then test


def test_usps(shared_data):
    _need(shared_data / "usps" / "usps.h5")
    ds = load_dataset("usps", data_dir=shared_data, download=False)
    train = load_dataset("usps", data_dir=shared_data, split="train", download=False)
    test = load_dataset("usps", data_dir=shared_data, split="test", download=False)
    assert len(ds) == 9298 and len(train) == 7291 and len(test) == 2007
    assert ds.images.shape == (9298, 16, 16, 1) and ds.images.dtype == np.uint8
    assert np.bincount(train.labels).tolist() == [1194, 1005, 731, 658, 652, 556, 664, 645, 542, 644]
    assert np.bincount(test.labels).tolist() == [359, 264, 198, 166, 200, 160, 170, 147, 166, 177]
    assert train.labels[:5].tolist() == [6, 5, 4, 7, 3]
    assert ds.images.min() == 0 and ds.images.max() == 255


def test_coil20(shared_data):
    _need(shared_data / "coil20")
    ds = load_dataset("coil20", data_dir=shared_data, download=False)
    assert len(ds) == 1440
    assert ds.images.shape == (1440, 128, 128, 1)
    assert np.bincount(ds.labels).tolist() == [72] * 20
    assert ds.images.mean() == pytest.approx(76.9, abs=0.05)
    assert Path(ds.paths[0]).name == "obj1__0.png" and Path(ds.paths[72]).name == "obj2__0.png"
    assert Path(ds.paths[10]).name == "obj1__10.png"  # numeric, not text, order of poses


def test_imagenette_val_as_image_folder(shared_data):
    folder = _need(shared_data / "imagenette-val")
    ds = load_dataset(str(folder), size=64)
    assert len(ds) == 3925
    assert ds.images.shape == (3925, 64, 64, 3) and ds.images.dtype == np.uint8
    counts = dict(zip(ds.class_names, np.bincount(ds.labels).tolist(), strict=True))
    assert counts == {"n01440764": 387, "n02102040": 395, "n02979186": 357, "n03000684": 386,
                      "n03028079": 409, "n03394916": 394, "n03417042": 389, "n03425413": 419,
                      "n03445777": 399, "n03888257": 390}
    # The 69 single-channel JPEGs become RGB with R = G = B.
    grey = np.all(ds.images[..., :1] == ds.images, axis=(1, 2, 3))
    assert grey.sum() >= 69


def test_describe_finds_the_shared_data(shared_data):
    text = describe_datasets(shared_data)
    found = {line.split()[0]: line.split()[2] for line in text.splitlines()[1:10]}
    assert found["mnist"] == "yes" and found["usps"] == "yes" and found["coil20"] == "yes"
    assert found["cifar10"] == "no"
