"""Benchmark k-means on MNIST-70k pixels: deepclust (torch) vs scikit-learn vs faiss.

    python benchmarks/kmeans.py [--data-dir DIR] [--n-init 10] [--repeats 3] [--seed 0]

Loads the 70,000 MNIST images (train + test) as float32 pixels / 255, shape (70000, 784), and clusters them
into k=10 with

* ``ours``        deepclust.cluster.KMeans(backend="torch"), defaults (init_size="auto": seedings on a
                  subsample of n // 8 points, the best refined on all points), max_iter=300, tol=1e-4;
* ``ours-full``   the same with init_size=None (every restart on all 70k points, as scikit-learn does);
* ``sklearn``     sklearn.cluster.KMeans(algorithm="lloyd", n_init, max_iter=300, tol=1e-4) on float32 X;
* ``faiss``       faiss.Kmeans(d, 10, niter=300, nredo=n_init, max_points_per_centroid=70000, seed), then
                  one index.search for the labels (included in the time). faiss has no tolerance: it
                  always runs all niter iterations of every redo, and seeds with k random points.

Each backend runs in a fresh subprocess (this script with the hidden ``--worker`` flag), once per seed
``seed, seed+1, ...`` (``--repeats``). Reported per backend: wall time of ``fit`` (mean +- std), the final
inertia recomputed identically for every backend from its labels and centres in float64 (mean and best),
time and inertia relative to scikit-learn, and peak memory: the whole worker process's ru_maxrss, and
ru_maxrss at the end minus ru_maxrss after the data is loaded and the backend's libraries imported
(the data are decoded in small blocks, so loading leaves no transient peak above the loaded array).
Thread counts are left at their defaults and printed.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ("ours", "ours-full", "sklearn", "faiss")
K = 10


# ------------------------------------------------------------------------------------------------- data
def default_data_dir() -> Path:
    env = os.environ.get("DEEPCLUST_DATA")
    if env:
        return Path(env) / "mnist"
    return REPO.parent / "shared" / "data" / "mnist"


def _read_idx_images_into(path: Path, out: np.ndarray, block_rows: int = 4096) -> None:
    """Decode an IDX3 gz file into ``out`` (float32, pixels / 255) a few thousand rows at a time."""
    n, d = out.shape
    with gzip.open(path, "rb") as fh:
        header = fh.read(16)
        magic, count, rows, cols = np.frombuffer(header, dtype=">u4")
        if magic != 0x803 or count != n or rows * cols != d:
            raise ValueError(f"{path}: unexpected IDX header {magic:#x} {count} {rows}x{cols}")
        for start in range(0, n, block_rows):
            m = min(block_rows, n - start)
            raw = fh.read(m * d)
            block = np.frombuffer(raw, dtype=np.uint8).reshape(m, d)
            np.divide(block, 255.0, out=out[start:start + m], dtype=np.float32)


def _read_idx_labels(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        return np.frombuffer(fh.read(), dtype=np.uint8, offset=8).astype(np.int64)


def load_mnist70k(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(70000, 784) float32 in [0, 1] (train then test) and the labels (70000,) int64."""
    files = {name: data_dir / f"{name}-idx{3 if 'images' in name else 1}-ubyte.gz"
             for name in ("train-images", "train-labels", "t10k-images", "t10k-labels")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        sys.exit(f"MNIST files not found: {missing}. Pass --data-dir or set DEEPCLUST_DATA.")
    X = np.empty((70_000, 784), dtype=np.float32)
    _read_idx_images_into(files["train-images"], X[:60_000])
    _read_idx_images_into(files["t10k-images"], X[60_000:])
    y = np.concatenate([_read_idx_labels(files["train-labels"]), _read_idx_labels(files["t10k-labels"])])
    return X, y


def inertia_f64(X: np.ndarray, labels: np.ndarray, centers: np.ndarray, block: int = 8192) -> float:
    """sum_i ||x_i - c_{label_i}||^2 in float64, the same computation for every backend."""
    C = np.asarray(centers, dtype=np.float64)
    total = 0.0
    for start in range(0, X.shape[0], block):
        diff = X[start:start + block].astype(np.float64) - C[labels[start:start + block]]
        total += float(np.einsum("ij,ij->", diff, diff))
    return total


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# ----------------------------------------------------------------------------------------------- worker
def _fit_once(backend: str, X: np.ndarray, n_init: int, seed: int):
    if backend in ("ours", "ours-full"):
        from deepclust.cluster import KMeans

        km = KMeans(n_clusters=K, n_init=n_init, max_iter=300, tol=1e-4, backend="torch", random_state=seed,
                    init_size="auto" if backend == "ours" else None)
        t0 = time.perf_counter()
        km.fit(X)
        seconds = time.perf_counter() - t0
        return seconds, km.labels_, km.cluster_centers_, km.n_iter_
    if backend == "sklearn":
        from sklearn.cluster import KMeans as SKKMeans

        km = SKKMeans(n_clusters=K, n_init=n_init, max_iter=300, tol=1e-4, algorithm="lloyd",
                      random_state=seed)
        t0 = time.perf_counter()
        km.fit(X)
        seconds = time.perf_counter() - t0
        return seconds, km.labels_, km.cluster_centers_, int(km.n_iter_)
    if backend == "faiss":
        import faiss

        km = faiss.Kmeans(X.shape[1], K, niter=300, nredo=n_init, seed=seed,
                          max_points_per_centroid=X.shape[0], verbose=False)
        t0 = time.perf_counter()
        km.train(X)
        _, labels = km.index.search(X, 1)
        seconds = time.perf_counter() - t0
        return seconds, labels[:, 0].astype(np.int64), km.centroids, 300
    raise ValueError(backend)


def _import_backend(backend: str) -> dict:
    """Import the backend's libraries before the memory baseline; return its thread settings."""
    if backend.startswith("ours"):
        import torch

        import deepclust.cluster  # noqa: F401
        return {"torch_threads": torch.get_num_threads()}
    if backend == "sklearn":
        import sklearn.cluster  # noqa: F401
        from threadpoolctl import threadpool_info

        return {"threadpools": sorted({f"{p['internal_api']}:{p['num_threads']}" for p in threadpool_info()})}
    import faiss

    return {"faiss_omp_threads": faiss.omp_get_max_threads()}


def worker(args) -> None:
    info = _import_backend(args.worker)
    X, _ = load_mnist70k(Path(args.data_dir))
    base = maxrss_mib()
    runs = []
    for r in range(args.repeats):
        seed = args.seed + r
        seconds, labels, centers, n_iter = _fit_once(args.worker, X, args.n_init, seed)
        runs.append({"seed": seed, "seconds": seconds, "inertia": inertia_f64(X, labels, centers),
                     "n_iter": int(n_iter), "loadavg": os.getloadavg()[0]})
        print(f"  {args.worker:9s} seed {seed}: {seconds:7.2f} s  inertia {runs[-1]['inertia']:.1f}",
              file=sys.stderr, flush=True)
    peak = maxrss_mib()
    print(json.dumps({"backend": args.worker, "runs": runs, "maxrss_base_mib": base, "maxrss_mib": peak,
                      **info}))


# ------------------------------------------------------------------------------------------------ report
def versions() -> str:
    import faiss
    import scipy
    import sklearn
    import torch

    import deepclust

    return (f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, "
            f"scikit-learn {sklearn.__version__}, scipy {scipy.__version__}, faiss-cpu {faiss.__version__}, "
            f"deepclust {deepclust.__version__}")


def table(results: list[dict], n_init: int) -> str:
    ref = next((r for r in results if r["backend"] == "sklearn"), None)
    ref_time = np.mean([x["seconds"] for x in ref["runs"]]) if ref else float("nan")
    ref_inertia = np.mean([x["inertia"] for x in ref["runs"]]) if ref else float("nan")
    ref_best = min(x["inertia"] for x in ref["runs"]) if ref else float("nan")
    lines = [
        "| backend | n_init | time (s), mean +- std | mean iters | mean inertia | best inertia "
        "| time / sklearn | inertia gap vs sklearn, mean (best) | peak RSS, whole process "
        "| peak RSS - after load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        t = np.array([x["seconds"] for x in r["runs"]])
        inert = np.array([x["inertia"] for x in r["runs"]])
        iters = np.mean([x["n_iter"] for x in r["runs"]])
        gap = 100.0 * (inert.mean() / ref_inertia - 1.0)
        gap_best = 100.0 * (inert.min() / ref_best - 1.0)
        lines.append(
            f"| {r['backend']} | {n_init} | {t.mean():.2f} +- {t.std(ddof=1) if t.size > 1 else 0.0:.2f} "
            f"| {iters:.0f} | {inert.mean():,.0f} | {inert.min():,.0f} | {t.mean() / ref_time:.3f} "
            f"| {gap:+.3f} % ({gap_best:+.3f} %) | {r['maxrss_mib']:.0f} MiB "
            f"| {r['maxrss_mib'] - r['maxrss_base_mib']:.0f} MiB |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="folder with the four MNIST IDX .gz files")
    parser.add_argument("--n-init", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help=f"comma-separated subset of {','.join(BACKENDS)}")
    parser.add_argument("--json", default=None, help="also write the raw results here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.data_dir = str(Path(args.data_dir) if args.data_dir else default_data_dir())
    if args.worker:
        return worker(args)

    backends = [b for b in args.backends.split(",") if b]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backends {sorted(unknown)}; choose from {BACKENDS}")
    print(f"# k-means, MNIST-70k pixels (70000 x 784 float32), k={K}, n_init={args.n_init}, "
          f"repeats={args.repeats} (seeds {args.seed}..{args.seed + args.repeats - 1})")
    print(f"# {versions()}")
    print(f"# {os.cpu_count()} CPUs; load average at start {os.getloadavg()[0]:.2f}")
    results = []
    for backend in backends:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", backend,
               "--data-dir", args.data_dir, "--n-init", str(args.n_init), "--repeats", str(args.repeats),
               "--seed", str(args.seed)]
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    threads = {k: v for r in results for k, v in r.items() if k.endswith("threads") or k == "threadpools"}
    print(f"# threads (defaults): {threads}")
    loads = [f"{x['loadavg']:.2f}" for r in results for x in r["runs"]]
    print(f"# 1-min load average after each fit: {', '.join(loads)}")
    print(table(results, args.n_init))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
