"""Benchmark distributed k-means on MNIST-70k pixels: N torchrun processes against one process.

    python benchmarks/distributed_kmeans.py [--data-dir DIR] [--nproc 2] [--n-init 10] [--seed 0]
                                            [--init-size auto none] [--threads 1]

Loads the 70,000 MNIST images (train then test, ``deepclust.data.load_dataset("mnist", split="all")``)
as float32 pixels / 255, shape (70000, 784), and fits ``KMeans(n_clusters=10, n_init, random_state=seed,
init_size=...)`` three ways, each in a fresh subprocess (this script with ``--worker``):

* ``1 process``            plain ``python``, no process group, ``--threads`` torch threads;
* ``1 process, N threads`` the same with ``--nproc`` threads (the cores the N processes get);
* ``N processes``          ``torchrun --standalone --nproc_per_node N``, each rank holding its
                           contiguous 70000 / N rows and ``--threads`` threads (``fit`` collective).

Timed: ``fit`` alone, after a barrier (loading excluded); for N processes the slowest rank's time.
Reported: time, inertia (the estimator's, global), iterations, and against the one-process fit the
relative inertia difference, the fraction of identical labels (gathered in rank order) and the largest
centre difference.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
K = 10


def default_data_dir() -> Path:
    env = os.environ.get("DEEPCLUST_DATA")
    return Path(env) / "mnist" if env else REPO.parent / "shared" / "data" / "mnist"


# ----------------------------------------------------------------------------------------------- worker
def worker(args) -> None:
    import torch

    from deepclust import KMeans, load_dataset
    from deepclust import distributed as D

    torch.set_num_threads(args.threads)
    with D.distributed_session("cpu"):
        data = load_dataset("mnist", data_dir=args.data_dir, split="all", download=False)
        X = data.images.reshape(len(data.images), -1).astype(np.float32)  # uint8 (N, 28, 28, 1)
        X /= 255.0
        shard = X[D.shard_slice(len(X))]
        init_size = None if args.init_size == "none" else args.init_size
        km = KMeans(n_clusters=K, n_init=args.n_init, random_state=args.seed, init_size=init_size)
        D.barrier()
        t0 = time.perf_counter()
        km.fit(shard)
        seconds = time.perf_counter() - t0
        slowest = float(torch.cat(D.all_gather_tensors(torch.tensor([seconds], dtype=torch.float64))).max())
        labels = D.concat_shards(km.labels_)
        if D.is_main_process():
            np.savez(args.out, labels=labels, centers=km.cluster_centers_)
            print("RESULT " + json.dumps({"seconds": slowest, "inertia": km.inertia_, "n_iter": km.n_iter_,
                                          "world": D.world_size(), "threads": torch.get_num_threads(),
                                          "rows_per_rank": int(shard.shape[0])}), flush=True)


# ----------------------------------------------------------------------------------------------- driver
def _run(cmd: list[str], env: dict) -> dict:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        sys.exit(f"worker failed ({' '.join(cmd)}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=default_data_dir())
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--n-init", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-size", nargs="+", default=["auto", "none"],
                   help="'auto', 'none' or an integer; one set of runs per value")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        (args.init_size,) = args.init_size
        if args.init_size not in ("auto", "none"):
            args.init_size = int(args.init_size)
        return worker(args)

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": str(args.threads), "DEEPCLUST_PROGRESS": "0"}
    me = [str(Path(__file__).resolve()), "--worker", "--data-dir", str(args.data_dir),
          "--n-init", str(args.n_init), "--seed", str(args.seed)]
    print(f"MNIST-70k k-means, k={K}, n_init={args.n_init}, seed={args.seed}; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    print("| init_size | run | processes x threads | fit time (s) | inertia | n_iter | inertia vs 1 process "
          "| same labels | max centre diff |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for init_size in args.init_size:
            runs = {
                "1 process": [sys.executable] + me + ["--threads", str(args.threads)],
                f"1 process, {args.nproc} threads": [sys.executable] + me + ["--threads", str(args.nproc)],
                f"{args.nproc} processes": [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                            "--nproc_per_node", str(args.nproc)] + me
                                           + ["--threads", str(args.threads)],
            }
            ref = None
            for name, cmd in runs.items():
                out = Path(tmp) / f"{init_size}-{len(name)}.npz"
                res = _run(cmd + ["--init-size", init_size, "--out", str(out)], env)
                got = np.load(out)
                if ref is None:
                    ref = (res, got)
                rel = 100.0 * (res["inertia"] / ref[0]["inertia"] - 1.0)
                same = float(np.mean(got["labels"] == ref[1]["labels"]))
                diff = float(np.abs(got["centers"] - ref[1]["centers"]).max())
                print(f"| {init_size} | {name} | {res['world']} x {res['threads']} | {res['seconds']:.2f} | "
                      f"{res['inertia']:,.1f} | {res['n_iter']} | {rel:+.5f} % | {same:.5f} | {diff:.2e} |",
                      flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
