"""Peak and kept anonymous memory of scoring N random 10-d points (``evaluate_clustering`` with true
labels: ACC, NMI, ARI, sampled silhouette and Dunn), with glibc's mmap threshold as the command line pins
it or left adaptive (issue 14: freed blocks kept in the heap ratchet memory up).

    python benchmarks/scoring_memory.py --n 100000 1000000

Each N runs in a fresh process, pinned and unpinned; one thread.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading


def _anon_mib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("RssAnon"))


def probe(n: int, pinned: bool) -> str:
    import numpy as np

    from deepclust._heap import pin_mmap_threshold
    from deepclust.metrics import evaluate_clustering

    if pinned and not pin_mmap_threshold():
        return "pinning unavailable here (not glibc, or MALLOC_MMAP_THRESHOLD_ set)"
    peak, done = [0], threading.Event()

    def watch() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], _anon_mib())

    threading.Thread(target=watch, daemon=True).start()
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(n, 10)).astype(np.float32)
    truth, labels = rng.integers(0, 10, n), rng.integers(0, 10, n)
    base = _anon_mib()
    evaluate_clustering(labels, truth, Z, random_state=0)
    done.set()
    mode = "pinned" if pinned else "adaptive"
    return f"n={n:,} {mode}: peak +{peak[0] - base} MiB, kept +{_anon_mib() - base} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--probe", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        print(probe(int(args.probe[0]), args.probe[1] == "pinned"))
        return
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"} | {"OMP_NUM_THREADS": "1"}
    for n in args.n:
        for mode in ("adaptive", "pinned"):
            out = subprocess.run([sys.executable, __file__, "--probe", str(n), mode], env=env,
                                 capture_output=True, text=True, check=True)
            print(out.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
