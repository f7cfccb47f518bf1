"""Streaming feature extraction and its cache: reuse, resume after a kill, keys, bad files, small images."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from deepclust.backbones import extract_features, get_backbone
from deepclust.backbones.feature_cache import FeatureCache
from deepclust.data import list_image_folder, load_image_folder

N = 10


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def backbone():
    # EfficientNet-Lite0 fed 32 x 32 inputs: the real network and weights, at a test's speed.
    return get_backbone("efficientnet-lite0", input_size=32)


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (N, 40, 36, 3), dtype=np.uint8)


@pytest.fixture
def folder(tmp_path, images):
    """Class folders of lossless PNGs holding ``images`` (so files and the array give the same pixels)."""
    root = tmp_path / "photos"
    for i, image in enumerate(images):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / f"c{i % 2}" / f"img{i:02d}.png")
    return root


class ForwardCounter:
    """Counts the images the network sees (a forward hook)."""

    def __init__(self, backbone):
        self.n = 0
        self.handle = backbone.net.register_forward_hook(self)

    def __call__(self, module, args, output):
        self.n += len(output)


def test_folder_features_are_cached_and_reused(backbone, folder, tmp_path):
    files, labels, _ = list_image_folder(folder)
    assert [str(f) for f in files] == load_image_folder(folder).paths and labels.tolist() == [0] * 5 + [1] * 5
    counter = ForwardCounter(backbone)
    try:
        first = extract_features(folder, backbone, cache_dir=tmp_path / "cache", batch_size=4, num_workers=0)
        assert counter.n == N
        again, index = extract_features(files, backbone, cache_dir=tmp_path / "cache", batch_size=3,
                                        num_workers=1, return_index=True)
        assert counter.n == N  # read from the cache: the network never ran
    finally:
        counter.handle.remove()
    assert isinstance(first, np.memmap) and first.shape == (N, 1280) and first.dtype == np.float32
    assert not first.flags.writeable and index.tolist() == list(range(N))
    np.testing.assert_array_equal(first, again)
    entries = list((tmp_path / "cache" / "efficientnet-lite0").iterdir())
    assert len(entries) == 1 and sorted(p.name for p in entries[0].iterdir()) == ["features.npy", "meta.json"]


def test_files_and_array_give_the_features_of_the_in_memory_path(backbone, folder, images, tmp_path):
    files, _, _ = list_image_folder(folder)
    order = [int(f.stem[3:]) for f in files]
    from_files = extract_features(files, backbone, cache_dir=tmp_path, num_workers=0)
    from_array = extract_features(images, backbone, cache_dir=tmp_path, batch_size=4, num_workers=1)
    direct = backbone.embed(images).numpy()
    np.testing.assert_allclose(from_array, direct, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(from_files, direct[order], rtol=1e-5, atol=1e-5)


def test_key_changes_with_backbone_preprocessing_and_files(backbone, folder, tmp_path):
    cache = tmp_path / "cache"
    a = np.array(extract_features(folder, backbone, cache_dir=cache, num_workers=0))
    other = get_backbone("efficientnet-lite0", input_size=48)  # another preprocessing
    with pytest.warns(UserWarning, match="smaller than the 48x48 input"):
        b = extract_features(folder, other, cache_dir=cache, num_workers=0)
    assert not np.allclose(a, b)
    touched = sorted(folder.rglob("*.png"))[0]
    Image.fromarray(np.zeros((40, 36, 3), np.uint8)).save(touched)  # same name, new content
    c = extract_features(folder, backbone, cache_dir=cache, num_workers=0)
    assert not np.allclose(a[0], c[0]) and np.allclose(a[1:], c[1:], atol=1e-5)
    assert len(list((cache / "efficientnet-lite0").iterdir())) == 3


def test_killed_extraction_resumes_from_the_last_saved_batch(backbone, images, tmp_path, monkeypatch):
    reference = np.array(extract_features(images, backbone, cache_dir=tmp_path / "ref", batch_size=4,
                                          num_workers=0))
    real_checkpoint = FeatureCache.checkpoint

    def die_after_first(self, done, skipped):
        real_checkpoint(self, done, skipped)
        raise KeyboardInterrupt

    monkeypatch.setattr(FeatureCache, "checkpoint", die_after_first)
    with pytest.raises(KeyboardInterrupt):
        extract_features(images, backbone, cache_dir=tmp_path / "c", batch_size=4, num_workers=0)
    entry = next((tmp_path / "c" / "efficientnet-lite0").iterdir())
    assert not (entry / "features.npy").exists() and not (entry / "meta.json").exists()  # not complete
    monkeypatch.setattr(FeatureCache, "checkpoint", real_checkpoint)
    counter = ForwardCounter(backbone)
    try:
        resumed = extract_features(images, backbone, cache_dir=tmp_path / "c", batch_size=4, num_workers=0)
    finally:
        counter.handle.remove()
    assert counter.n == N - 4  # the first batch was not redone
    np.testing.assert_array_equal(resumed, reference)


def test_unreadable_file_is_skipped_with_a_warning_or_raises(backbone, folder, tmp_path):
    bad = folder / "c0" / "img04.png"
    bad.write_bytes(b"not a png")
    with pytest.warns(UserWarning, match="Skipping unreadable image file .*img04.png"):
        feats, index = extract_features(folder, backbone, cache_dir=tmp_path / "skip", num_workers=0,
                                        batch_size=3, return_index=True)
    files, _, _ = list_image_folder(folder)
    assert feats.shape == (N - 1, 1280) and [files[i] for i in index] == [f for f in files if f != bad]
    good = [f for f in files if f != bad]
    clean = extract_features(good, backbone, cache_dir=tmp_path / "ref", num_workers=0)
    np.testing.assert_allclose(feats, clean, rtol=1e-5, atol=1e-5)
    with pytest.warns(UserWarning, match="1 unreadable image"):  # said again when read from the cache
        extract_features(folder, backbone, cache_dir=tmp_path / "skip", num_workers=0)

    with pytest.raises(ValueError, match="Cannot read image file .*img04.png"):
        extract_features(folder, backbone, cache_dir=tmp_path / "raise", num_workers=0, on_error="raise")
    assert not any(p.is_file() for p in (tmp_path / "raise").rglob("*"))  # nothing half-written left


def test_small_images_are_upscaled_and_said_once(tmp_path):
    backbone = get_backbone("efficientnet-lite0", input_size=48)
    tiny = np.random.default_rng(3).integers(0, 256, (5, 20, 20), dtype=np.uint8)  # grey too
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        feats = extract_features(tiny, backbone, cache_dir=tmp_path, num_workers=0, batch_size=2)
    said = [w for w in caught if "smaller than the 48x48 input" in str(w.message)]
    assert len(said) == 1 and feats.shape == (5, 1280)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_says_so(backbone, images, tmp_path):
    with pytest.raises(ValueError, match="no CUDA device is available"):
        get_backbone("efficientnet-lite0", device="cuda")
    with pytest.raises(ValueError, match="no CUDA device is available"):
        extract_features(images, backbone, cache_dir=tmp_path, device="cuda")


def test_bad_sources(backbone, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        extract_features([tmp_path / "missing.jpg"], backbone, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="uint8"):
        extract_features(np.zeros((2, 8, 8, 3), np.float32), backbone, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="No image files found"):
        extract_features(tmp_path, backbone, cache_dir=tmp_path / "c")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_extraction_matches_cpu(backbone, images, tmp_path):
    cpu = np.array(extract_features(images, backbone, cache_dir=tmp_path / "cpu", num_workers=0))
    gpu = get_backbone("efficientnet-lite0", input_size=32, device="cuda")
    cuda = extract_features(images, gpu, cache_dir=tmp_path / "gpu", num_workers=0)
    np.testing.assert_allclose(cuda, cpu, rtol=1e-3, atol=1e-3)
    assert os.path.exists(tmp_path / "gpu")
