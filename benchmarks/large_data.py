"""Memory of AE + k-means on a data cache of N generated 28x28 images, under torchrun (issue 14).

Writes N images (10 classes: smooth random prototypes, each sample shifted by up to 3 px, with noise) a
chunk at a time into a data cache with :class:`deepclust.data.CacheWriter`, then runs

    torchrun --standalone --nproc_per_node P benchmarks/large_data.py --worker -- deepclust run options

where every process runs ``deepclust run -d CACHE`` and prints its own peak RSS (``ru_maxrss``) and,
separately, its peak anonymous memory (what the process itself allocated; file pages it maps are counted
in RSS too, and the reader releases them as it goes). The question: does memory grow with N?

    python benchmarks/large_data.py --n 100000 1000000 --procs 2 --pretrain 1 --work /tmp/large
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

SIDE, CLASSES, CHUNK = 28, 10, 20_000


def prototypes(seed: int = 0) -> np.ndarray:
    """10 smooth 28x28 patterns in [0, 1]: sums of a few random Gaussian strokes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    out = np.zeros((CLASSES, SIDE, SIDE))
    for c in range(CLASSES):
        for _ in range(4):
            cy, cx = rng.uniform(6, 22, 2)
            sy, sx = rng.uniform(1.5, 5, 2)
            out[c] += np.exp(-((yy - cy) ** 2 / (2 * sy * sy) + (xx - cx) ** 2 / (2 * sx * sx)))
    return out / out.max(axis=(1, 2), keepdims=True)


def generate(folder: Path, n: int, seed: int = 0) -> Path:
    """A cache of ``n`` generated images (labels 0..9) in ``folder``, written CHUNK images at a time."""
    from deepclust.data import CacheWriter

    protos = prototypes(seed)
    rng = np.random.default_rng(seed + 1)
    with CacheWriter(folder, n, (SIDE, SIDE, 1), labelled=True) as cache:
        for start in range(0, n, CHUNK):
            m = min(CHUNK, n - start)
            labels = rng.integers(0, CLASSES, m)
            images = protos[labels]
            for axis, shift in ((1, rng.integers(-3, 4, m)), (2, rng.integers(-3, 4, m))):
                for s in range(-3, 4):  # shift each sample by its own offset (np.roll per group)
                    rows = shift == s
                    images[rows] = np.roll(images[rows], s, axis=axis)
            images = images + rng.normal(0, 0.15, images.shape)
            cache.write(np.clip(np.rint(images * 255), 0, 255).astype(np.uint8)[..., None], labels)
        return cache.finish(name=f"generated-{n}", class_names=[str(c) for c in range(CLASSES)],
                            description=f"{n} generated 28x28 images, 10 shifted noisy prototypes")


def _memory_kib() -> dict[str, int]:
    """This process's resident memory now (KiB): all of it (VmRSS), what it allocated itself (RssAnon)
    and the file pages it maps (RssFile: libraries, the cache's pages)."""
    found = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in found:
            found[key] = int(line.split()[1])
    return found


def _deepclust_stack(thread_id: int | None) -> str:
    """The deepclust functions the thread ``thread_id`` is in, outermost first: where a peak happened."""
    frame = sys._current_frames().get(thread_id)
    names = []
    while frame is not None:
        code = frame.f_code
        if "deepclust" in code.co_filename and "benchmarks" not in code.co_filename:
            names.append(f"{Path(code.co_filename).stem}.{code.co_name}:{frame.f_lineno}")
        frame = frame.f_back
    return " > ".join(reversed(names[:8]))


def worker(argv: list[str]) -> int:
    """One torchrun process: ``deepclust run`` with ``argv``; report peak RSS and peak anonymous memory."""
    from deepclust.cli import main

    done = threading.Event()
    main_thread = threading.main_thread().ident
    where: dict[str, tuple[int, str]] = {}  # kind -> (peak KiB, the main thread's deepclust frames then)
    timeline: list[tuple[float, int, str]] = []  # (seconds, anonymous MiB, frames) at each 8 MiB step
    start = time.perf_counter()

    def watch() -> None:
        while not done.wait(0.2):
            memory = _memory_kib()
            for kind in ("RssAnon", "RssFile", "VmRSS"):
                if memory[kind] > where.get(kind, (0, ""))[0]:
                    where[kind] = (memory[kind], _deepclust_stack(main_thread))
            anon = memory["RssAnon"] // 1024
            if not timeline or abs(anon - timeline[-1][1]) >= 8:
                timeline.append((round(time.perf_counter() - start, 1), anon, _deepclust_stack(main_thread)))

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    status = main(["run", *argv])
    done.set()
    thread.join()
    maxrss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    traced = {"timeline": timeline} if os.environ.get("LARGE_DATA_TIMELINE") else {}
    print("RESULT " + json.dumps({"rank": int(os.environ.get("RANK", 0)), "status": status,
                                  "seconds": round(time.perf_counter() - start, 1),
                                  "maxrss_mib": round(maxrss_kib / 1024),
                                  "peak_anon_mib": round(where.get("RssAnon", (0, ""))[0] / 1024),
                                  "peaks": {kind: [round(kib / 1024), stack]
                                            for kind, (kib, stack) in where.items()},
                                  **traced}),
          flush=True)
    return status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--pretrain", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/deepclust-large"))
    parser.add_argument("--timeline", action="store_true",
                        help="also record each process's anonymous memory at every 8 MiB step and where "
                             "its main thread was then")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.worker:
        sys.exit(worker(rest[1:] if rest[:1] == ["--"] else rest))
    args.work.mkdir(parents=True, exist_ok=True)
    for n in args.n:
        cache = args.work / f"cache-{n}"
        if not cache.exists():
            tick = time.perf_counter()
            generate(cache, n)
            print(f"wrote {cache} ({n} images) in {time.perf_counter() - tick:.0f} s "
                  f"(writer peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               str(args.procs), __file__, "--worker", "--", "-d", str(cache), "--method", "ae-kmeans",
               "--pretrain", str(args.pretrain), "--seed", "0", "--no-progress",
               "--out", str(args.work / "runs")]
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // args.procs)),
               **({"LARGE_DATA_TIMELINE": "1"} if args.timeline else {})}
        tick = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - tick
        results = [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        summary = [line for line in proc.stdout.splitlines() if line.strip().startswith(("ACC", "NMI"))]
        print(json.dumps({"n": n, "procs": args.procs, "wall_s": round(wall, 1),
                          "returncode": proc.returncode, "ranks": results, "summary": summary}), flush=True)
        if proc.returncode:
            print(proc.stderr[-3000:])


if __name__ == "__main__":
    main()
