"""What checking a data set's files against their checksums costs on a load, cold and cached.

    PYTHONPATH=src python benchmarks/verify_cost.py --dataset mnist --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from deepclust.data import DATASETS, download
from deepclust.data._registry import verify_found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-dir", default="../shared/data/mnist")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    spec = DATASETS[args.dataset]
    found = spec.locate(Path(args.data_dir), "all")
    if found is None:
        raise SystemExit(f"No {args.dataset} files in {args.data_dir}.")
    for _ in range(args.repeats):
        download._VERIFIED.clear()
        start = time.perf_counter()
        verify_found(spec, found, "all")
        cold = time.perf_counter() - start
        start = time.perf_counter()
        verify_found(spec, found, "all")
        cached = time.perf_counter() - start
        print(f"cold {cold:.3f} s  cached {cached * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
