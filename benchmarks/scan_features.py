"""Cluster a cached feature matrix with k-means, UMAP + GMM and SCAN; report ACC / NMI / ARI and seconds.

    python benchmarks/scan_features.py FEATURES.npy LABELS.npy [--seeds 0 1 2]
        [--methods kmeans umap-gmm scan scan-noself] [--set name=value ...] [--json out.jsonl]

* ``kmeans``       scikit-learn KMeans(k, n_init=10) on the features as given (the issue's baseline);
* ``umap-gmm``     UMAP(10 dims, 10 neighbours, cosine, min_dist 0) then a full-covariance Gaussian
                   mixture (10 restarts), as N2D without its autoencoder;
* ``scan``         deepclust.cluster.SCAN with its defaults (``--set`` overrides any parameter, e.g.
                   ``--set hidden=256 --set epochs=50``);
* ``scan-noself``  the same with self_label=False (the clustering-loss stage alone).

k is the number of distinct labels. Every method runs once per seed; the table gives each run and the
mean +- std per method. Thread counts are left at their defaults (set OMP_NUM_THREADS to pin them).
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from deepclust.cluster.scan import SCAN  # noqa: E402
from deepclust.metrics import evaluate_clustering  # noqa: E402

METHODS = ("kmeans", "umap-gmm", "scan", "scan-noself")


def run_kmeans(X: np.ndarray, k: int, seed: int, params: dict) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(k, n_init=10, random_state=seed).fit(X).labels_


def run_umap_gmm(X: np.ndarray, k: int, seed: int, params: dict) -> np.ndarray:
    import umap
    from sklearn.mixture import GaussianMixture

    Z = umap.UMAP(n_components=10, n_neighbors=10, min_dist=0.0, metric="cosine", random_state=seed,
                  n_jobs=1).fit_transform(X)
    return GaussianMixture(k, covariance_type="full", n_init=10, random_state=seed).fit(Z).predict(Z)


def run_scan(X: np.ndarray, k: int, seed: int, params: dict) -> np.ndarray:
    return SCAN(k, random_state=seed, **params).fit(X).labels_


def run_scan_noself(X: np.ndarray, k: int, seed: int, params: dict) -> np.ndarray:
    return SCAN(k, random_state=seed, **{**params, "self_label": False}).fit(X).labels_


RUNNERS = {"kmeans": run_kmeans, "umap-gmm": run_umap_gmm, "scan": run_scan, "scan-noself": run_scan_noself}


def parse_set(items: list[str]) -> dict:
    """``name=value`` pairs; values are Python literals where they parse (numbers, True, None), else text."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects name=value; got {item!r}.")
        try:
            out[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[name] = value
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("features", type=Path)
    parser.add_argument("labels", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--set", dest="params", action="append", default=[], metavar="NAME=VALUE",
                        help="SCAN parameter override (repeatable)")
    parser.add_argument("--json", type=Path, help="append one JSON line per run to this file")
    args = parser.parse_args(argv)
    X = np.load(args.features).astype(np.float32)
    y = np.load(args.labels)
    k = int(np.unique(y).size)
    params = parse_set(args.params)
    print(f"{args.features.name}: {X.shape[0]} x {X.shape[1]}, k={k}; SCAN overrides: {params or 'none'}")
    print("| method | seed | ACC | NMI | ARI | seconds |\n| --- | --- | --- | --- | --- | --- |")
    summary = {}
    for method in args.methods:
        rows = []
        for seed in args.seeds:
            start = time.perf_counter()
            labels = RUNNERS[method](X, k, seed, params)
            seconds = time.perf_counter() - start
            m = evaluate_clustering(labels, y)
            rows.append((m["acc"], m["nmi"], m["ari"], seconds))
            print(f"| {method} | {seed} | {m['acc']:.4f} | {m['nmi']:.4f} | {m['ari']:.4f} | {seconds:.1f} |",
                  flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps({"features": str(args.features), "method": method, "seed": seed,
                                        "params": params if method.startswith("scan") else {},
                                        "acc": m["acc"], "nmi": m["nmi"], "ari": m["ari"],
                                        "seconds": seconds}) + "\n")
        summary[method] = np.asarray(rows)
    print("\n| method | ACC | NMI | ARI | seconds |\n| --- | --- | --- | --- | --- |")
    for method, r in summary.items():
        mean, std = r.mean(0), r.std(0)
        print(f"| {method} | {mean[0]:.4f} ± {std[0]:.4f} | {mean[1]:.4f} ± {std[1]:.4f} | "
              f"{mean[2]:.4f} ± {std[2]:.4f} | {mean[3]:.1f} |")


if __name__ == "__main__":
    main()
