"""Worker that tests/test_distributed.py starts under ``torchrun --nproc_per_node 2`` (not a test file).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/dist_worker.py SCENARIO IN OUT

kmeans  fit distributed k-means on each configuration in IN (an .npz with X and a JSON list of
        configurations), check on every rank that predict(shard) == labels_ and that every rank holds
        the same centres, and let rank 0 alone write the gathered labels and centres to OUT/result.npz;
        every rank also asks ``main_process_only`` to write OUT/written_by_rank{r}.txt.
deep    fit each deep-method configuration in IN (images X and a JSON list of [class name, parameters]);
        every rank checks that all ranks hold the same labels, centres and weights, and rank 0 writes
        the labels, centres and history losses to OUT/deep.npz. A configuration's "checkpoint_dir" is
        made per rank (rank r: OUT/<name>-rank<r>), so the test sees which ranks wrote checkpoints; one
        with "resume_after" is first fitted with that many clustering epochs, then refitted in full on
        the same folders (rank 1's stays empty: every rank resumes from rank 0's checkpoint).
        DeepCluster configurations are handled alike (its ``epochs`` are cut short for "resume_after",
        its network is compared, and its cross-entropy and clustering losses are written).
extract extract backbone features under torchrun: IN is an .npz with the uint8 images and the path of a
        tiny exported backbone (``save_tiny_backbone``), OUT the run's folder: a folder of PNGs of the images
        (one of them unreadable: skipped) and the array are each extracted twice into OUT/cache; every rank
        checks that it holds the same features, and rank 0 writes them and how many images each rank's
        network saw (the second extraction must read the cache) to OUT/extract.npz.
unreadable  the same folder extracted with on_error="raise": the rank that meets the bad file reports it and
        every rank stops with its message.
killed / resumed  extract the images of IN into OUT/cache with batches of 4: "killed" stops every rank
        right after its first saved batch; "resumed" extracts again, and rank 0 writes the features and
        how many images each rank's network saw to OUT/resumed.npz.
die     rank 1 raises before the fit while rank 0 waits in the fit's first collective.
stall   rank 1 sleeps instead of fitting; rank 0 must fail after DEEPCLUST_DIST_TIMEOUT seconds.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from deepclust import KMeans
from deepclust import deep as deep_methods
from deepclust import distributed as D
from deepclust._io import write_text
from deepclust.backbones import extract_features, get_backbone


def _shard(X: np.ndarray, sizes) -> np.ndarray:
    if sizes is None:
        return X[D.shard_slice(len(X))]
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return X[bounds[D.rank()]:bounds[D.rank() + 1]]


def kmeans(src: Path, out: Path) -> None:
    data = np.load(src)
    X, configs = data["X"], json.loads(str(data["configs"]))
    results = {}
    for i, cfg in enumerate(configs):
        shard = _shard(X, cfg.pop("sizes", None))
        if isinstance(cfg.get("init"), list):
            cfg["init"] = np.asarray(cfg["init"], dtype=np.float32)
        km = KMeans(**cfg).fit(shard)  # distributed="auto": the group has 2 ranks
        if not np.array_equal(km.predict(shard), km.labels_):
            raise AssertionError(f"config {i}: predict(shard) differs from labels_ on rank {D.rank()}")
        centres = D.all_gather_tensors(torch.from_numpy(km.cluster_centers_))
        if not all(torch.equal(c, centres[0]) for c in centres):
            raise AssertionError(f"config {i}: the ranks hold different centres")
        results[f"labels{i}"] = D.concat_shards(km.labels_)
        results[f"centers{i}"] = km.cluster_centers_
        results[f"inertia{i}"] = np.array(km.inertia_)
        results[f"repaired{i}"] = np.array(km.n_empty_repaired_)
    # The small helpers, across two real ranks.
    if D.broadcast_object({"from": D.rank()}) != {"from": 0}:
        raise AssertionError("broadcast_object did not deliver rank 0's object")
    if D.all_reduce_sum(torch.tensor([D.rank() + 1.0])).item() != 3.0:
        raise AssertionError("all_reduce_sum over ranks 0 and 1 is not 1 + 2")
    # Shards of unequal length with trailing dimensions, moved together a few rows at a time.
    mine = np.arange(14, dtype=np.float32).reshape(7, 2) if D.rank() == 0 else np.full((4, 2), -1, np.float32)
    whole = D.concat_shards(mine, chunk_rows=2)
    if not np.array_equal(whole, np.concatenate([np.arange(14, dtype=np.float32).reshape(7, 2),
                                                 np.full((4, 2), -1, np.float32)])):
        raise AssertionError(f"concat_shards gave {whole.tolist()} on rank {D.rank()}")
    # Each rank writes its block of an (11, 2) array; the rest arrives 3 rows per rank at a time (6 + 5
    # rows: the last round carries rank 1's padding).
    filled = np.full((11, 2), np.nan, dtype=np.float32)
    filled[D.shard_slice(11)] = np.arange(22, dtype=np.float32).reshape(11, 2)[D.shard_slice(11)]
    if D.fill_from_shards(filled, chunk_rows=3) is not filled or not np.array_equal(
            filled, np.arange(22, dtype=np.float32).reshape(11, 2)):
        raise AssertionError(f"fill_from_shards gave {filled.tolist()} on rank {D.rank()}")
    D.barrier()
    D.main_process_only(np.savez)(out / "result.npz", **results)
    D.main_process_only(write_text)(out / f"written_by_rank{D.rank()}.txt", "hello\n")


def _same_on_every_rank(name: str, array) -> None:
    parts = D.all_gather_tensors(torch.as_tensor(np.ascontiguousarray(array)))
    if not all(torch.equal(p, parts[0]) for p in parts):
        raise AssertionError(f"{name}: the ranks differ")


def deep(src: Path, out: Path) -> None:
    data = np.load(src)
    X, configs = data["X"], json.loads(str(data["configs"]))
    results = {}
    for i, (cls_name, params) in enumerate(configs):
        cls = getattr(deep_methods, cls_name)
        if params.get("checkpoint_dir"):
            params["checkpoint_dir"] = str(out / f"{params['checkpoint_dir']}-rank{D.rank()}")
        resume_after = params.pop("resume_after", None)
        deepcluster = cls_name == "DeepCluster"
        if resume_after is not None:  # an interrupted fit: the first clustering epochs only
            cls(**{**params, "epochs" if deepcluster else "clustering_epochs": resume_after}).fit(X)
        est = cls(**params).fit(X)
        _same_on_every_rank(f"config {i} labels", est.labels_)
        _same_on_every_rank(f"config {i} centres", est.cluster_centers_)
        _same_on_every_rank(f"config {i} embedding", est.embedding_)
        network = est.network_ if deepcluster else est.autoencoder_
        for key, value in network.state_dict().items():
            _same_on_every_rank(f"config {i} weight {key}", value)
        results[f"labels{i}"] = est.labels_
        results[f"centers{i}"] = est.cluster_centers_
        loss_key = "cross_entropy" if deepcluster else "loss"
        results[f"loss{i}"] = np.array([_number(row.get(loss_key)) for row in est.history_])
        if deepcluster:
            results[f"clustering_loss{i}"] = np.array([row["clustering_loss"] for row in est.history_])
    D.main_process_only(np.savez)(out / "deep.npz", **results)


class TinyBackbone(torch.nn.Module):
    """A random conv layer, pooled: (B, 3, 16, 16) -> (B, 16); a feature extractor at a test's speed."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)


def save_tiny_backbone(path: Path) -> Path:
    """Export :class:`TinyBackbone` (seeded weights) to ``path`` (.pt2) with its JSON description."""
    torch.manual_seed(0)
    program = torch.export.export(TinyBackbone().eval(), (torch.zeros(2, 3, 16, 16),),
                                  dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    torch.export.save(program, str(path))
    path.with_suffix(".json").write_text(json.dumps({"input_size": 16, "mean": [0.5] * 3, "std": [0.25] * 3}))
    return path


def extract(src: Path, out: Path, scenario: str = "extract") -> None:
    from PIL import Image

    data = np.load(src)
    images, backbone = data["images"], get_backbone(str(data["backbone"]))
    folder = out / "photos" / "all"
    if D.is_main_process():  # the folder both ranks read (rank 0 writes it before the barrier)
        folder.mkdir(parents=True)
        for i, image in enumerate(images):
            Image.fromarray(image).save(folder / f"img{i:02d}.png")
        (folder / ("img09.png" if scenario == "unreadable" else "img03.png")).write_bytes(b"not a png")
    D.barrier()
    if scenario == "unreadable":
        extract_features(folder, backbone, cache_dir=out / "cache", batch_size=4, num_workers=0,
                         on_error="raise")
        return
    seen = [0]  # images through this rank's network
    backbone.net.register_forward_hook(lambda _m, _a, output: seen.__setitem__(0, seen[0] + len(output)))
    results = {}
    for name, source in (("folder", folder), ("array", images)):
        for attempt in range(2):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the unreadable file, said by the rank that reads it
                features, index = extract_features(source, backbone, cache_dir=out / "cache", batch_size=4,
                                                   num_workers=0, return_index=True)
            _same_on_every_rank(f"{name} features", np.asarray(features))
            results[f"{name}_features{attempt}"] = np.asarray(features)
            results[f"{name}_index{attempt}"] = index
            results[f"{name}_seen{attempt}"] = np.array([int(t) for t in D.all_gather_tensors(
                torch.tensor([seen[0]]))])
            seen[0] = 0
    D.main_process_only(np.savez)(out / "extract.npz", **results)


def extract_again(src: Path, out: Path, scenario: str) -> None:
    from deepclust.backbones.feature_cache import FeatureCache

    data = np.load(src)
    images, backbone = data["images"], get_backbone(str(data["backbone"]))
    seen = [0]
    backbone.net.register_forward_hook(lambda _m, _a, output: seen.__setitem__(0, seen[0] + len(output)))
    if scenario == "killed":
        real = FeatureCache.checkpoint

        def checkpoint_then_die(self, done, skipped):
            real(self, done, skipped)
            raise KeyboardInterrupt

        FeatureCache.checkpoint = checkpoint_then_die
    features = extract_features(images, backbone, cache_dir=out / "cache", batch_size=4, num_workers=0)
    counts = [int(t) for t in D.all_gather_tensors(torch.tensor([seen[0]]))]
    D.main_process_only(np.savez)(out / "resumed.npz", features=np.asarray(features), seen=np.array(counts))


def _number(value) -> float:
    return np.nan if value is None else float(value)


def die(X: np.ndarray) -> None:
    if D.rank() == 1:
        raise RuntimeError("rank 1 dies on purpose")
    KMeans(3, random_state=0).fit(X[D.shard_slice(len(X))])


def stall(X: np.ndarray) -> None:
    if D.rank() == 1:
        time.sleep(600)  # never reaches the collective; torchrun ends it when rank 0 fails
    KMeans(3, random_state=0).fit(X[D.shard_slice(len(X))])


def main(argv: list[str]) -> None:
    scenario, src, out = argv[0], Path(argv[1]), Path(argv[2])
    with D.distributed_session("cpu"):
        if scenario == "kmeans":
            kmeans(src, out)
        elif scenario == "deep":
            deep(src, out)
        elif scenario in ("extract", "unreadable"):
            extract(src, out, scenario)
        elif scenario in ("killed", "resumed"):
            extract_again(src, out, scenario)
        else:
            X = np.load(src)["X"]
            {"die": die, "stall": stall}[scenario](X)


if __name__ == "__main__":
    main(sys.argv[1:])
