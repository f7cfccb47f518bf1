"""The plain ``deepclust run`` on the bundled digits against UMAP + a Gaussian mixture on the pixels.

Issue 17's target: the default's mean ACC over seeds 0-2 at least 0.93, and faster than UMAP (10-d,
10 neighbours) + a Gaussian mixture on the raw pixels measured in the same script. Every run is a fresh
``deepclust run`` process (imports, numba's compiled code loaded or compiled, report.html included),
timed from outside; the fit time is the run's own (``metrics.json``'s ``seconds``).

    python benchmarks/digits_default.py [--seeds 0 1 2] [--n2d] [--cold]

Rows, for every seed, in this order: the default (``deepclust run --seed S``), the baseline
(``deepclust run --method umap-gmm --umap-neighbors 10 --umap-dim 10 --seed S``), and with ``--n2d``
N2D, the default before it (``--method n2d``). Each runs with numba's cache of umap-learn's code on
(``deepclust.manifold._numba_cache``, warmed by a first run of each) and, for the first seed, off
(``DEEPCLUST_NUMBA_CACHE=0``: umap-learn compiles its code in every process, as before the cache).
``--cold`` first runs the default once with an empty ``NUMBA_CACHE_DIR``: a first run after
installing, when numba compiles umap-learn's and pynndescent's code (then the cache of that folder is
used for the rest). Prints a markdown table; the machine's load average is printed with each row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT = []
BASELINE = ["--method", "umap-gmm", "--umap-neighbors", "10", "--umap-dim", "10"]
N2D = ["--method", "n2d"]


def timed_run(options: list[str], seed: int, out: Path, env: dict) -> dict:
    """One ``deepclust run`` in a fresh process: its wall time, fit time, method, ACC and NMI."""
    before = set(out.iterdir()) if out.exists() else set()
    tick = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "deepclust", "run", *options, "--seed", str(seed),
                           "--no-progress", "--out", str(out)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - tick
    if proc.returncode != 0:
        raise SystemExit(f"deepclust run {' '.join(options)} failed:\n{proc.stderr[-3000:]}")
    (run_dir,) = set(out.iterdir()) - before
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    return {"method": config["method"]["name"], "seed": seed, "wall": wall, "fit": metrics["seconds"],
            "acc": metrics["acc"], "nmi": metrics["nmi"], "load": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n2d", action="store_true", help="also N2D, the default before umap-spectral")
    parser.add_argument("--cold", action="store_true", help="first a run with an empty numba cache folder")
    args = parser.parse_args()
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "DEEPCLUST_PROGRESS": "0"}
    off = {**env, "DEEPCLUST_NUMBA_CACHE": "0"}
    pipelines = [("default", DEFAULT), ("UMAP + GMM", BASELINE)] + ([("N2D", N2D)] if args.n2d else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "runs"
        if args.cold:
            env["NUMBA_CACHE_DIR"] = off["NUMBA_CACHE_DIR"] = str(Path(tmp) / "numba")
            rows.append({"what": "default, first run (empty numba cache)",
                         **timed_run(DEFAULT, args.seeds[0], out, env)})
        for _, options in pipelines:  # warm the cache, so every timed row below loads the code
            timed_run(options, args.seeds[0], out, env)
        for seed in args.seeds:
            for name, options in pipelines:
                rows.append({"what": name, **timed_run(options, seed, out, env)})
                if seed == args.seeds[0]:
                    rows.append({"what": f"{name}, numba cache off", **timed_run(options, seed, out, off)})
    print("| pipeline | method | seed | wall s | fit s | ACC | NMI | load |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['what']} | {r['method']} | {r['seed']} | {r['wall']:.1f} | {r['fit']:.1f} "
              f"| {r['acc']:.4f} | {r['nmi']:.4f} | {r['load']:.1f} |")
    print()
    for name, _ in pipelines:
        mine = [r for r in rows if r["what"] == name]
        print(f"{name}: mean ACC {statistics.mean(r['acc'] for r in mine):.4f} over seeds "
              f"{[r['seed'] for r in mine]}, mean wall {statistics.mean(r['wall'] for r in mine):.1f} s, "
              f"mean fit {statistics.mean(r['fit'] for r in mine):.1f} s")


if __name__ == "__main__":
    main()
