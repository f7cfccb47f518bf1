"""Where a ``deepclust run`` spends its time: the run under cProfile, summed by stage.

    python benchmarks/profile_run.py                       # the default run (N2D on the digits)
    python benchmarks/profile_run.py -- --method umap-gmm  # any run options after --

Prints one row per stage (cumulative seconds of the functions that make it up; a stage inside another
is not subtracted from it) and the whole wall time. cProfile slows Python-heavy code by ~1.5x, so the
shares matter more than the seconds; time the plain command with /usr/bin/time for those.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time

# (stage, module path fragment, function name): the functions whose cumulative time is the stage
STAGES = (
    ("import deepclust and its libraries", None, None),
    ("load and prepare the data", "pipeline/inputs.py", "load_run_inputs"),
    ("autoencoder pretraining", "deep/training.py", "train_autoencoder"),
    ("k-means (N2D: its unused start)", "cluster/kmeans.py", "fit"),
    ("UMAP (all of it)", "umap/umap_.py", "fit"),
    ("  of which numba compiles code", "numba/core/dispatcher.py", "_compile_for_args"),
    ("Gaussian mixture", "sklearn/mixture/_base.py", "fit_predict"),
    ("scores (ACC, NMI, silhouette, Dunn)", "metrics/__init__.py", "evaluate_clustering"),
    ("report.html", "report/page.py", "try_write_report"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_args", nargs="*", help="options for deepclust run (after --)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    profile = cProfile.Profile()
    profile.enable()
    from deepclust.cli import main as deepclust_main

    imported = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        status = deepclust_main(["run", "--no-progress", "--out", out, *args.run_args])
    profile.disable()
    wall = time.perf_counter() - start
    stats = pstats.Stats(profile).stats
    print(f"deepclust run {' '.join(args.run_args)}  (exit {status}, under cProfile)")
    print(f"{'stage':<42} {'seconds':>8} {'share':>6}")
    for name, path, function in STAGES:
        if path is None:
            seconds = imported - start
        else:
            seconds = sum(row[3] for (file, _, func), row in stats.items()
                          if func == function and file.replace("\\", "/").endswith(path))
        print(f"{name:<42} {seconds:8.1f} {seconds / wall:6.0%}")
    print(f"{'whole run':<42} {wall:8.1f}")
    return status


if __name__ == "__main__":
    sys.exit(main())
