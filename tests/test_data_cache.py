"""The memory-mapped data cache: built once by streaming, opened without reading, read by index.

A cache must hold exactly what the loader gives, never be half-written or written over anything, be
checked when opened (it may come from elsewhere), and give a run the clusters the in-memory data gives.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from deepclust.cli import main
from deepclust.data import CacheWriter, cache_dataset, is_cache, load_dataset, load_image_folder, open_cache
from deepclust.data import cache as cache_module
from deepclust.data.cache import CacheError
from deepclust.data.rows import ImageRows, is_memory_mapped
from deepclust.data.transforms import prepare_features
from deepclust.deep import AEKMeans
from deepclust.deep.training import encode


def _folder(root: Path, *, broken: bool = False) -> Path:
    """Two class folders of small PNGs (one grey among colour ones, one of another size)."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(("cats", "dogs")):
        (root / name).mkdir(parents=True)
        for i in range(5):
            img = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8) // (c + 1)
            Image.fromarray(img).save(root / name / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (12, 10), dtype=np.uint8)).save(root / "cats" / "grey.png")
    Image.fromarray(rng.integers(0, 256, (20, 16, 3), dtype=np.uint8)).save(root / "dogs" / "big.png")
    if broken:
        (root / "dogs" / "bad.png").write_bytes(b"not an image")
    return root


def _no_leftovers(parent: Path, keep: set[str]) -> None:
    assert {p.name for p in parent.iterdir()} == keep  # no '.NAME.partial-*' folder left behind


def test_named_data_set_round_trip(tmp_path):
    ref = load_dataset("digits")
    folder = cache_dataset("digits", tmp_path / "digits")
    assert is_cache(folder)
    ds = load_dataset(folder)
    assert is_memory_mapped(ds.images) and not ds.images.flags.writeable
    np.testing.assert_array_equal(ds.images, ref.images)
    np.testing.assert_array_equal(ds.labels, ref.labels)
    assert ds.class_names == ref.class_names and ds.name == "digits"
    _no_leftovers(tmp_path, {"digits"})


def test_never_writes_over_anything(tmp_path):
    folder = cache_dataset("digits", tmp_path / "digits")
    before = (folder / "images.npy").read_bytes()
    with pytest.raises(FileExistsError, match="never written over"):
        cache_dataset("digits", folder)
    (tmp_path / "taken").write_text("mine")
    assert main(["cache", "-d", "digits", "--out", str(tmp_path / "taken")]) != 0
    assert (tmp_path / "taken").read_text() == "mine" and (folder / "images.npy").read_bytes() == before


def test_image_folder_is_streamed_in_chunks_like_the_loader(tmp_path, monkeypatch):
    src = _folder(tmp_path / "photos", broken=True)
    monkeypatch.setattr(cache_module, "CHUNK", 4)  # several chunks, and the bad file in one of them
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unreadable file and the odd size are announced
        ref = load_image_folder(src, size=(12, 10))
        folder = cache_dataset(src, tmp_path / "cached", size=(12, 10))
    ds = open_cache(folder)
    assert len(ds) == len(ref) == 12  # the unreadable file left out; the file shrunk to the rows kept
    np.testing.assert_array_equal(ds.images, ref.images)
    np.testing.assert_array_equal(ds.labels, ref.labels)
    assert ds.paths == ref.paths and ds.class_names == ["cats", "dogs"]
    _no_leftovers(tmp_path, {"photos", "cached"})


def test_image_folder_shape_read_from_headers(tmp_path):
    src = _folder(tmp_path / "photos")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = load_image_folder(src)  # most common size 12 x 10, colour
    ds = open_cache(cache_dataset(src, tmp_path / "c"))
    np.testing.assert_array_equal(ds.images, ref.images)
    grey = open_cache(cache_dataset(src, tmp_path / "g", grayscale=True))
    assert grey.image_shape == (12, 10, 1)


def test_a_failure_leaves_no_folder(tmp_path, monkeypatch):
    src = _folder(tmp_path / "photos")
    monkeypatch.setattr(cache_module, "CHUNK", 3)
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    real = cache_module.decode_images
    monkeypatch.setattr(cache_module, "decode_images", failing)
    with pytest.raises(OSError, match="No space"):
        cache_dataset(src, tmp_path / "cached", size=8)
    _no_leftovers(tmp_path, {"photos"})


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "deepclust-cache.json").write_text("{not json"), "cannot be read"),
    (lambda f: (f / "deepclust-cache.json").write_text(json.dumps({"format": 1})), "not a format-1"),
    (lambda f: np.save(f / "labels.npy", np.full(1797, 12)), "outside 0..9"),
    (lambda f: np.save(f / "labels.npy", np.zeros(5, dtype=np.int64)), "not 1797 integers"),
    (lambda f: np.save(f / "labels.npy", np.array([{"x": 1}] * 1797, dtype=object)), "cannot be read"),
    (lambda f: np.save(f / "images.npy", np.zeros((1797, 8, 8, 1), dtype=np.float32)), "not uint8"),
    (lambda f: (f / "images.npy").unlink(), "cannot be read"),
])
def test_a_damaged_cache_is_refused_in_one_line(tmp_path, damage, message):
    folder = cache_dataset("digits", tmp_path / "digits")
    damage(folder)
    with pytest.raises(CacheError, match=message) as err:
        load_dataset(folder)
    assert "\n" not in str(err.value) and "deepclust cache" in str(err.value)


def test_a_cache_has_one_split(tmp_path):
    folder = cache_dataset("digits", tmp_path / "digits")
    with pytest.raises(ValueError, match="one split"):
        load_dataset(folder, split="train")


@pytest.mark.parametrize("options", [dict(), dict(normalize="standard"), dict(normalize=None),
                                     dict(grayscale=True), dict(grayscale=True, normalize="standard")])
def test_rows_are_what_prepare_features_gives(tmp_path, options):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (50, 6, 5, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    rows = ImageRows(mapped, release_bytes=100, **options)  # pages dropped every 100 bytes read
    expected = prepare_features(images, flatten=False, **options)  # (N, H, W, C)
    idx = torch.tensor([7, 3, 3, 49, 0])
    got = rows[idx].permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(got, expected[idx.numpy()], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rows.view(flat=True)[2:9].numpy(),
                               prepare_features(images, flatten=True, **options)[2:9], rtol=1e-5, atol=1e-5)
    assert rows.shape == (50, 1 if options.get("grayscale") else 3, 6, 5) and len(rows) == 50
    whole = torch.cat([rows[s:s + 7] for s in range(0, len(rows), 7)]).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(whole, expected, rtol=1e-5, atol=1e-5)


def test_training_on_rows_is_training_in_memory(tmp_path):
    """The autoencoder reads the same float batches either way: the same weights and clusters."""
    folder = cache_dataset("digits", tmp_path / "digits")
    rows = ImageRows(load_dataset(folder).images)
    images = load_dataset("digits").images
    fits = [AEKMeans(10, pretrain_epochs=2, n_init=2, random_state=0, verbose=False).fit(x)
            for x in (rows, images)]
    np.testing.assert_array_equal(fits[0].labels_, fits[1].labels_)
    np.testing.assert_allclose(fits[0].embedding_, fits[1].embedding_, rtol=0, atol=0)
    part = encode(fits[0].autoencoder_, rows, device=torch.device("cpu"), batch_size=100, rows=slice(10, 20))
    np.testing.assert_allclose(part, fits[0].embedding_[10:20], atol=1e-6)  # other batches: rounding


def test_run_on_a_cache_gives_the_clusters_of_the_data_set(tmp_path):
    folder = tmp_path / "digits-cache"
    assert main(["cache", "-d", "digits", "--out", str(folder), "--no-progress"]) == 0
    args = ["--method", "ae-kmeans", "--pretrain", "2", "--n-init", "2", "--seed", "4", "--no-progress",
            "--metrics", "--visualize"]
    assert main(["run", "-d", str(folder), *args, "--out", str(tmp_path / "cached")]) == 0
    assert main(["run", "-d", "digits", *args, "--out", str(tmp_path / "memory")]) == 0
    (cached,), (memory,) = (list((tmp_path / d).iterdir()) for d in ("cached", "memory"))
    assert (cached / "assignments.csv").read_text() == (memory / "assignments.csv").read_text()
    m_cached, m_memory = (json.loads((d / "metrics.json").read_text()) for d in (cached, memory))
    assert m_cached["acc"] == m_memory["acc"]
    assert m_cached["spaces"]["pixels"] == pytest.approx(m_memory["spaces"]["pixels"])  # 1797 < the sample
    assert (cached / "report.html").is_file() and (cached / "plots" / "reconstructions.png").is_file()
    assert "protocol" not in m_cached  # a cache is a data set, not an image folder with a layout


def test_writer_for_data_no_loader_knows(tmp_path):
    rng = np.random.default_rng(2)
    chunks = [rng.integers(0, 256, (m, 4, 4, 1), dtype=np.uint8) for m in (5, 3)]
    with CacheWriter(tmp_path / "gen", 8, (4, 4, 1), labelled=True) as cache:
        with pytest.raises(ValueError, match="uint8 images of shape"):
            cache.write(chunks[0].astype(np.float32), np.zeros(5))
        with pytest.raises(ValueError, match="labels must be given"):
            cache.write(chunks[0])
        for chunk in chunks:
            cache.write(chunk, np.arange(len(chunk)) % 2)
        cache.finish(name="generated", class_names=["a", "b"])
    ds = load_dataset(tmp_path / "gen")
    np.testing.assert_array_equal(ds.images, np.concatenate(chunks))
    assert ds.labels.tolist() == [0, 1, 0, 1, 0, 0, 1, 0] and ds.class_names == ["a", "b"]
    with CacheWriter(tmp_path / "unfinished", 8, (4, 4, 1), labelled=False) as cache:
        cache.write(chunks[0])  # never finished: removed on leaving the block
    _no_leftovers(tmp_path, {"gen"})


def test_predict_reads_a_cache_in_chunks(tmp_path, monkeypatch):
    from deepclust.pipeline import predict as predict_module

    folder = cache_dataset("digits", tmp_path / "digits")
    assert main(["run", "--method", "kmeans", "--n-init", "1", "--seed", "0", "--no-progress",
                 "--out", str(tmp_path / "runs")]) == 0
    (run,) = list((tmp_path / "runs").iterdir())
    monkeypatch.setattr(predict_module, "PREDICT_CHUNK", 500)  # four chunks
    rows = predict_module.predict_images(run, [folder])
    trained = np.loadtxt(run / "assignments.csv", delimiter=",", skiprows=1, usecols=1, dtype=np.int64)
    assert [r["cluster"] for r in rows] == trained.tolist()  # the same images get their own clusters
    assert rows[3]["file"] == f"{folder}#3"
    small = cache_dataset("digits", tmp_path / "small", size=4)
    with pytest.raises(ValueError, match="holds images of 4x4x1; the run was fitted on 8x8x1"):
        predict_module.predict_images(run, [small])


def test_reader_counts_the_pages_mapped_around_each_fault(tmp_path, monkeypatch):
    """Rows read at random each leave the kernel's fault-around window (64 KiB) resident, not only their
    own page or two: the reader must release the map at least that often (1,000,000 images left ~300 MB
    resident when it counted rows' own pages)."""
    from deepclust.data import rows as rows_module

    np.save(tmp_path / "x.npy", np.zeros((400, 28, 28, 1), np.uint8))
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    rows = ImageRows(mapped, release_bytes=rows_module.FAULT_AROUND_BYTES * 10)
    released = []
    monkeypatch.setattr(rows, "_map", SimpleNamespace(madvise=lambda advice: released.append(advice)))
    for i in range(0, 400, 37):  # 11 single rows at random places: one release after the tenth
        rows[np.array([i])]
    assert len(released) == 1
    released.clear()
    rows[0:400]  # a slice is one run of pages: its bytes (313 KB) and one window, < 10 windows
    assert released == []


def test_writer_streams_paths_and_refuses_chunks_without_them(tmp_path):
    """paths.txt is written as chunks come (a million paths are never held in a list), so every chunk
    must bring its paths, one per image, or none does."""
    from deepclust.data import CacheWriter

    images = np.zeros((2, 4, 4, 1), np.uint8)
    with CacheWriter(tmp_path / "c", 6, (4, 4, 1), labelled=False) as cache:
        cache.write(images, paths=["a.png", "b.png"])
        with pytest.raises(ValueError, match="paths must be given with every chunk"):
            cache.write(images)
        with pytest.raises(ValueError, match="one per image"):
            cache.write(images, paths=["c.png"])
        cache.write(images, paths=["c.png", "d\nnewline.png"])
        folder = cache.finish(name="t")
    assert load_dataset(folder).paths == ["a.png", "b.png", "c.png", "d newline.png"]
