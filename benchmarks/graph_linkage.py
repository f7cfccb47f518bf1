"""Graph degree linkage on the pixels (issue 17): how ACC depends on the image size, the graph's
neighbours and the small-cluster rule on COIL-20, and what the same method gives on digit sets.

    python benchmarks/graph_linkage.py --data ../shared/data                 # COIL-20 grid
    python benchmarks/graph_linkage.py --data ../shared/data --digits        # digits, USPS, MNIST-test
    # the largest set the plain run gives it: 19,999 MNIST training images at 64 x 64 (4,096-d), timed
    python benchmarks/graph_linkage.py --data ../shared/data --scale 19999
    # on N2D's UMAP map and autoencoder embedding of MNIST-test, cached by self_label_n2d.py's "base"
    python benchmarks/graph_linkage.py --data ../shared/data --n2d-cache /tmp/self_label_n2d/mnist-test-0.npz

The method has no random part, so each setting is one figure. Pixels in [0, 1], as ``deepclust run``
prepares them; COIL-20 resized by the data loader as ``--resize`` does. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from deepclust.cluster import GraphDegreeLinkage
from deepclust.data import load_dataset
from deepclust.data.transforms import prepare_features
from deepclust.metrics import clustering_accuracy, normalized_mutual_info

SIZES = (32, 48, 64, 96, 128)
NEIGHBOURS = (3, 4, 5, 6, 7, 8, 10)
FRACTIONS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7)


def pixels(name: str, data: Path, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    dataset = load_dataset(name, data_dir=data / name if name != "digits" else None, download=False, **kwargs)
    return prepare_features(dataset, normalize="unit"), np.asarray(dataset.labels)


def coil_grid(data: Path) -> None:
    print("| side | neighbours | " + " | ".join(f"fraction {f}" for f in FRACTIONS) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in FRACTIONS) + " |")
    for side in SIZES:
        X, y = pixels("coil20", data, size=side)
        for k in NEIGHBOURS:
            accs = [clustering_accuracy(y, GraphDegreeLinkage(20, n_neighbors=k, min_cluster_fraction=f)
                                        .fit(X).labels_) for f in FRACTIONS]
            print(f"| {side} | {k} | " + " | ".join(f"{a:.3f}" for a in accs) + " |", flush=True)


def digit_sets(data: Path) -> None:
    print("| data | n x d | neighbours | fraction | ACC | NMI | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, kwargs in (("digits", {}), ("usps", {}), ("mnist", {"split": "test"})):
        X, y = pixels(name, data, **kwargs)
        for k in (5, 10):
            for fraction in (0.0, 0.5):
                tick = time.perf_counter()
                labels = GraphDegreeLinkage(10, n_neighbors=k, min_cluster_fraction=fraction).fit(X).labels_
                seconds = time.perf_counter() - tick
                print(f"| {name} | {X.shape[0]} x {X.shape[1]} | {k} | {fraction} | "
                      f"{clustering_accuracy(y, labels):.4f} | {normalized_mutual_info(y, labels):.4f} | "
                      f"{seconds:.1f} |", flush=True)


def on_n2d(data: Path, cache: Path) -> None:
    """Does linking along the graph of N2D's spaces beat its mixture (the start of self-labelling)?"""
    saved = np.load(cache)
    y = np.asarray(load_dataset("mnist", data_dir=data / "mnist", split="test", download=False).labels)
    print(f"N2D's mixture: ACC {clustering_accuracy(y, saved['labels']):.4f}\n")
    print("| space | neighbours | ACC | seconds |")
    print("| --- | --- | --- | --- |")
    for space in ("manifold", "embedding"):
        Z = saved[space].astype(np.float32)
        for k in (5, 10, 20):
            tick = time.perf_counter()
            labels = GraphDegreeLinkage(10, n_neighbors=k).fit(Z).labels_
            print(f"| {space} ({Z.shape[1]}-d) | {k} | {clustering_accuracy(y, labels):.4f} | "
                  f"{time.perf_counter() - tick:.1f} |", flush=True)


def scale(data: Path, n: int) -> None:
    """Time and memory of one fit on ``n`` MNIST training images resized to 64 x 64."""
    import resource

    X, y = pixels("mnist", data, split="train", size=64)
    X, y = np.ascontiguousarray(X[:n]), y[:n]
    tick = time.perf_counter()
    labels = GraphDegreeLinkage(10).fit(X).labels_
    seconds = time.perf_counter() - tick
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{n} x {X.shape[1]}: fit {seconds:.1f} s, ACC {clustering_accuracy(y, labels):.4f}, "
          f"peak RSS of the process {peak:.0f} MiB (the 60,000 images at 64 x 64 are loaded first)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="the shared data folder")
    parser.add_argument("--digits", action="store_true", help="the digit sets instead of the COIL-20 grid")
    parser.add_argument("--n2d-cache", type=Path, help="an MNIST-test cache of self_label_n2d.py's base mode")
    parser.add_argument("--scale", type=int, metavar="N", help="time one fit on N MNIST images at 64 x 64")
    args = parser.parse_args()
    if args.scale:
        scale(args.data, args.scale)
    elif args.n2d_cache:
        on_n2d(args.data, args.n2d_cache)
    else:
        (digit_sets if args.digits else coil_grid)(args.data)


if __name__ == "__main__":
    main()
