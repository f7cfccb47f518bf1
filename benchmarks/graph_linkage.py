"""Graph degree linkage on the pixels (issue 17): how ACC depends on the image size, the graph's
neighbours and the small-cluster rule on COIL-20, and what the same method gives on digit sets.

    python benchmarks/graph_linkage.py --data ../shared/data                 # COIL-20 grid
    python benchmarks/graph_linkage.py --data ../shared/data --digits        # digits, USPS, MNIST-test

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="the shared data folder")
    parser.add_argument("--digits", action="store_true", help="the digit sets instead of the COIL-20 grid")
    args = parser.parse_args()
    (digit_sets if args.digits else coil_grid)(args.data)


if __name__ == "__main__":
    main()
