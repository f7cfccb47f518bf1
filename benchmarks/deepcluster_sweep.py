"""Seed 004's DeepCluster grid on one data set: network x input x network optimizer x top optimizer.

Every combination is fitted for a few epochs with the same seed; the per-epoch logs go to
``sweep.csv`` (one row per combination and clustering), the final scores to ``summary.csv``, and for
each factor one comparison plot (``by_<factor>.png``: a column per level, rows ACC / NMI vs truth /
NMI t-1/t over epochs, one line per combination), plus ``all.png`` with every combination.

    python benchmarks/deepcluster_sweep.py -d mnist --data-dir ../shared/data/mnist --split test \\
        --subset 2000 --epochs 5 --out runs/deepcluster-sweep
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from deepclust import DeepCluster, load_dataset
from deepclust._io import atomic_open, rows_to_csv, write_text

FACTORS = ("arch", "input", "optimizer", "top_optimizer")
METRICS = (("acc", "ACC vs truth"), ("nmi", "NMI vs truth"), ("nmi_prev", "NMI t-1/t"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-d", "--dataset", default="mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--split", default="test", choices=["train", "test", "all"])
    p.add_argument("--subset", type=int, default=2000, help="random images used (0: all; default 2000)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("-k", "--clusters", type=int, default=None, help="default: the number of classes")
    p.add_argument("--archs", default="alexnet-small,vgg-small")
    p.add_argument("--inputs", default="colour,sobel,grey",
                   help="seed 004: colour (3), colour + Sobel (our 'sobel': 2), B/W (grey: 1)")
    p.add_argument("--optimizers", default="sgd,adam")
    p.add_argument("--top-optimizers", default="sgd,adam")
    p.add_argument("--batch-size", default="alexnet-small=128,vgg-small=32",
                   help="one size, or per network as name=size,... (seed 004: 128 AlexNet, 32 VGG)")
    p.add_argument("--pca-dim", type=int, default=DeepCluster().pca_dim)
    p.add_argument("--backend", default="torch", choices=["torch", "sklearn", "faiss"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/deepcluster-sweep")
    return p.parse_args(argv)


def batch_sizes(text: str) -> dict[str, int] | int:
    if "=" not in text:
        return int(text)
    return {name: int(size) for name, size in (item.split("=") for item in text.split(","))}


def grid(args: argparse.Namespace) -> list[dict]:
    levels = [args.archs.split(","), args.inputs.split(","), args.optimizers.split(","),
              args.top_optimizers.split(",")]
    return [dict(zip(FACTORS, combo, strict=True)) for combo in itertools.product(*levels)]


def name_of(combo: dict) -> str:
    return f"{combo['arch']} {combo['input']} net={combo['optimizer']} top={combo['top_optimizer']}"


def run_grid(args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    data = load_dataset(args.dataset, data_dir=args.data_dir, split=args.split)
    X, y = data.images, data.labels
    if args.subset and args.subset < len(X):
        pick = np.random.default_rng(args.seed).choice(len(X), args.subset, replace=False)
        X, y = X[pick], None if y is None else y[pick]
    k = args.clusters or (len(np.unique(y)) if y is not None else None)
    if k is None:
        raise SystemExit(f"{args.dataset} has no labels: pass -k.")
    sizes = batch_sizes(args.batch_size)
    rows, summary = [], []
    combos = grid(args)
    for i, combo in enumerate(combos, 1):
        batch = sizes if isinstance(sizes, int) else sizes.get(combo["arch"], 128)
        start = time.perf_counter()
        model = DeepCluster(k, epochs=args.epochs, batch_size=batch, pca_dim=args.pca_dim,
                            backend=args.backend, random_state=args.seed, verbose=False, **combo).fit(X, y)
        seconds = time.perf_counter() - start
        for h in model.history_:
            rows.append({**combo, "batch_size": batch, **h})
        last = model.history_[-1]
        summary.append({**combo, "batch_size": batch, "acc": last.get("acc"), "nmi": last.get("nmi"),
                        "nmi_prev": last.get("nmi_prev"), "seconds": round(seconds, 1)})
        print(f"[{i}/{len(combos)}] {name_of(combo):<45} ACC {_fmt(last.get('acc'))}  "
              f"NMI {_fmt(last.get('nmi'))}  NMI t-1/t {_fmt(last.get('nmi_prev'))}  ({seconds:.0f} s)",
              flush=True)
    return rows, summary


def plot_factor(rows: list[dict], factor: str | None, path: Path) -> Path:
    """A column per level of ``factor`` (one column for None), rows = METRICS, a line per combination."""
    levels = sorted({r[factor] for r in rows}) if factor else ["all combinations"]
    fig = Figure(figsize=(4.2 * len(levels), 2.8 * len(METRICS)), dpi=100, layout="constrained")
    axes = fig.subplots(len(METRICS), len(levels), squeeze=False)
    combos = list(dict.fromkeys(name_of(r) for r in rows))
    colours = {name: f"C{i % 10}" for i, name in enumerate(combos)}
    for col, level in enumerate(levels):
        chosen = [r for r in rows if factor is None or r[factor] == level]
        for row_i, (key, label) in enumerate(METRICS):
            ax = axes[row_i][col]
            for name in dict.fromkeys(name_of(r) for r in chosen):
                pts = [r for r in chosen if name_of(r) == name and r.get(key) is not None]
                ax.plot([r["epoch"] for r in pts], [r[key] for r in pts], marker="o", markersize=2,
                        color=colours[name], label=name, linestyle="-" if "sgd" in name.split("net=")[1][:4]
                        else "--")
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(label)
            if row_i == 0:
                ax.set_title(f"{factor} = {level}" if factor else level)
        axes[0][col].legend(fontsize=6, loc="lower right")
    with atomic_open(path, "wb") as f:
        FigureCanvasAgg(fig).print_png(f)
    return path


def _fmt(value) -> str:
    return "  -  " if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, summary = run_grid(args)
    write_text(out / "sweep.csv", rows_to_csv(rows))
    write_text(out / "summary.csv", rows_to_csv(summary))
    plot_factor(rows, None, out / "all.png")
    for factor in FACTORS:
        plot_factor(rows, factor, out / f"by_{factor}.png")
    print(f"written: {out}/sweep.csv, summary.csv, all.png, " + ", ".join(f"by_{f}.png" for f in FACTORS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
