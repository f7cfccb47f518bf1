"""Feature extraction speed, cache reads and memory (deepclust.backbones.extract_features).

speed: on ``--n`` photos of imagenette-val (every k-th file of the sorted listing), at the backbone's
input size (224 px for efficientnet-lite0), times

- ``bare``: a hand-written loop over the same model and the same decoded uint8 tensors, already in
  memory (normalise, forward, copy out);
- ``deepclust (array)``: ``extract_features`` on those same decoded images (DataLoader, cache writes);
- ``deepclust (files)``: ``extract_features`` on the JPEG files (decoding and resizing in workers);
- ``cache read``: the same call again (reads the cache).

The three extraction runs alternate ``--repeats`` times; medians are reported.

memory: writes ``--sizes`` (default 4000 and 40000) small JPEGs into a folder under /tmp and extracts
each folder in a fresh process, reporting that process's peak RSS (and its workers'). ``--rss-input-size``
feeds the network smaller inputs so 40,000 images fit in minutes on a busy 2-core machine.

    python benchmarks/extraction.py speed [--n 200] [--repeats 2] [--batch-size 32] [--workers 1]
    python benchmarks/extraction.py memory [--sizes 4000 40000] [--rss-input-size 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from deepclust.backbones import extract_features, get_backbone
from deepclust.data import list_image_folder


def bare_loop(backbone, pixels: torch.Tensor, batch_size: int) -> np.ndarray:
    """The baseline anyone would write: normalise, forward, collect, over pre-decoded tensors."""
    out = np.empty((len(pixels), backbone.feature_dim), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(pixels), batch_size):
            x = backbone.preprocessing.normalise(pixels[start:start + batch_size])
            out[start:start + batch_size] = backbone.net(x).numpy()
    return out


def decode(files, backbone) -> np.ndarray:
    from PIL import Image

    out = []
    for f in files:
        with Image.open(f) as img:
            out.append(backbone.preprocessing.image_to_uint8(img))
    return np.stack(out)  # (n, H, W, 3) uint8 at the input size


def speed(args) -> None:
    files, _, _ = list_image_folder(args.data)
    step = max(1, len(files) // args.n)
    files = files[::step][:args.n]
    backbone = get_backbone(args.backbone)
    images = decode(files, backbone)
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    times: dict[str, list[float]] = {"bare": [], "deepclust (array)": [], "deepclust (files)": [],
                                     "cache read": []}
    results = {}
    for _ in range(args.repeats):
        t = time.perf_counter()
        results["bare"] = bare_loop(backbone, pixels, args.batch_size)
        times["bare"].append(time.perf_counter() - t)
        for name, source in (("deepclust (array)", images), ("deepclust (files)", files)):
            cache = tempfile.mkdtemp(prefix="dc-bench-cache-")
            try:
                t = time.perf_counter()
                first = extract_features(source, backbone, cache_dir=cache, batch_size=args.batch_size,
                                         num_workers=args.workers, progress_bar=False)
                times[name].append(time.perf_counter() - t)
                results[name] = np.array(first)
                if name == "deepclust (files)":
                    t = time.perf_counter()
                    again = extract_features(source, backbone, cache_dir=cache, batch_size=args.batch_size,
                                             num_workers=args.workers, progress_bar=False)
                    times["cache read"].append(time.perf_counter() - t)
                    assert np.array_equal(again, first)
            finally:
                shutil.rmtree(cache, ignore_errors=True)
    diff = float(np.abs(results["deepclust (array)"] - results["bare"]).max())
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.backbone}, {len(files)} imagenette-val photos at {backbone.input_size[0]} px, batch "
          f"{args.batch_size}, {args.workers} worker(s), torch threads {torch.get_num_threads()}, "
          f"median of {args.repeats}:")
    for name, seconds in med.items():
        print(f"  {name:<18} {seconds:8.2f} s  {len(files) / seconds:8.1f} images/s")
    print(f"  ratio deepclust (array) / bare: {med['deepclust (array)'] / med['bare']:.3f}")
    print(f"  ratio deepclust (files) / bare: {med['deepclust (files)'] / med['bare']:.3f}")
    print(f"  cache read / first extraction (files): {med['cache read'] / med['deepclust (files)']:.4f}")
    print(f"  max |deepclust - bare| feature difference: {diff:.2e}")


def make_jpegs(folder: Path, n: int, size: int) -> None:
    """``n`` small JPEGs (smooth colour gradients plus noise) in 10 class folders, made once."""
    from PIL import Image

    marker = folder / ".complete"
    if marker.exists():
        return
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        sub = folder / f"c{i % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        a, b, c = rng.random(3)
        base = np.stack([a * xx + (1 - a) * yy, b * yy, c * xx * yy], axis=-1) * 255
        img = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(sub / f"{i:06d}.jpg", quality=85)
    marker.touch()


def memory(args) -> None:
    rows = []
    for n in args.sizes:
        folder = Path(args.tmp) / f"dc-bench-jpegs-{n}-{args.image_size}px"
        t = time.perf_counter()
        make_jpegs(folder, n, args.image_size)
        made = time.perf_counter() - t
        cache = tempfile.mkdtemp(prefix="dc-bench-cache-")
        try:
            cmd = [sys.executable, __file__, "_child", str(folder), cache, args.backbone,
                   str(args.rss_input_size), str(args.batch_size), str(args.workers), str(args.threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        row = json.loads(out.strip().splitlines()[-1])
        row.update(n=n, made_s=round(made, 1))
        rows.append(row)
        print(json.dumps(row), flush=True)
    if len(rows) >= 2:
        growth = rows[-1]["peak_rss_mib"] - rows[0]["peak_rss_mib"]
        print(f"peak RSS {rows[0]['n']}: {rows[0]['peak_rss_mib']:.0f} MiB, {rows[-1]['n']}: "
              f"{rows[-1]['peak_rss_mib']:.0f} MiB, difference {growth:.0f} MiB "
              f"(workers: {rows[0]['workers_peak_rss_mib']:.0f} / "
              f"{rows[-1]['workers_peak_rss_mib']:.0f} MiB)")


def child(folder: str, cache: str, backbone: str, input_size: str, batch_size: str, workers: str,
          threads: str) -> None:
    """Run one extraction in this fresh process; print its peak RSS as JSON."""
    torch.set_num_threads(int(threads))
    size = int(input_size)
    b = get_backbone(backbone, input_size=size if size > 0 else None)
    t = time.perf_counter()
    feats = extract_features(folder, b, cache_dir=cache, batch_size=int(batch_size), num_workers=int(workers),
                             progress_bar=False)
    seconds = time.perf_counter() - t
    self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"shape": list(feats.shape), "input_size": list(b.input_size),
                      "seconds": round(seconds, 1),
                      "images_per_s": round(len(feats) / seconds, 1), "peak_rss_mib": self_kib / 1024,
                      "workers_peak_rss_mib": kids_kib / 1024}))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child(*sys.argv[2:])
        return
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("speed")
    p.add_argument("--data", default=str(Path(os.environ.get("DEEPCLUST_DATA", shared)) / "imagenette-val"))
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--backbone", default="efficientnet-lite0")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=1)
    m = sub.add_parser("memory")
    m.add_argument("--sizes", type=int, nargs="+", default=[4000, 40000])
    m.add_argument("--image-size", type=int, default=64, help="side of the generated JPEGs")
    m.add_argument("--rss-input-size", type=int, default=32,
                   help="network input side (0: the backbone's own)")
    m.add_argument("--backbone", default="efficientnet-lite0")
    m.add_argument("--batch-size", type=int, default=64)
    m.add_argument("--workers", type=int, default=1)
    m.add_argument("--tmp", default=tempfile.gettempdir())
    for each in (p, m):
        each.add_argument("--threads", type=int, default=2, help="torch threads of the network")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    speed(args) if args.what == "speed" else memory(args)


if __name__ == "__main__":
    main()
