"""Clustering quality of every method on the real data sets, beside the published numbers.

For each data set and seed, one autoencoder is pretrained and shared by AE + k-means, DEC, IDEC,
DCN and N2D (as the papers do); k-means on pixels runs beside them. Prints a Markdown table of
mean +- std of ACC / NMI / ARI and wall time, and with ``--append`` adds it to benchmarks/RESULTS.md.

    python benchmarks/quality.py --datasets usps,mnist-test --seeds 0 --pretrain 50 --cluster 50
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from deepclust import KMeans
from deepclust.data import load_dataset
from deepclust.data.transforms import prepare_features
from deepclust.deep import DCN, DEC, IDEC, N2D, AEKMeans, load_model, save_model
from deepclust.metrics import adjusted_rand_index, clustering_accuracy, normalized_mutual_info

SHARED = Path(os.environ.get("DEEPCLUST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
# name -> (loader name, folder, split, architecture, published ACC references, overrides)
# Overrides: "size" resizes the images (load_dataset's size=), "batch_size" replaces 256.
# coil20-64: COIL-20 at 64x64 with conv-coil20-64 and batches of 32 (1,440 images are 6 batches of 256);
# conv-coil20 at 128x128 took ~43 s an epoch on one (shared) thread, conv-coil20-64 ~6 s.
DATASETS = {
    "mnist": ("mnist", "mnist", "all", "dec-dense", "DEC 0.843, IDEC 0.881, DCN 0.83, N2D 0.979", {}),
    "mnist-test": ("mnist", "mnist", "test", "dec-dense", "DEC 0.856, N2D 0.948", {}),
    "usps": ("usps", "usps", "all", "dec-dense", "DEC 0.619, IDEC 0.761, N2D 0.948", {}),
    "coil20": ("coil20", "coil20", "all", "conv-coil20", "pixels 0.689, IDEC (seed 002) 0.762", {}),
    "coil20-64": ("coil20", "coil20", "all", "conv-coil20-64", "pixels 0.689, IDEC (seed 002) 0.762",
                  {"size": 64, "batch_size": 32}),
}
METHODS = ("kmeans", "ae-kmeans", "dec", "idec", "dcn", "n2d")
DEFAULT_RECIPE = ("adam", 1e-3)  # pretraining optimizer and rate that keys and commands leave unsaid


def run_seed(name: str, seed: int, args) -> list[dict]:
    loader, folder, split, arch, _, overrides = DATASETS[name]
    arch = args.arch or arch
    data = load_dataset(loader, data_dir=SHARED / folder, split=split, size=overrides.get("size"))
    y = data.labels
    rows = []

    def score(method, labels, seconds):
        rows.append({"dataset": name, "method": method, "seed": seed, "seconds": seconds,
                     "acc": clustering_accuracy(y, labels), "nmi": normalized_mutual_info(y, labels),
                     "ari": adjusted_rand_index(y, labels)})
        print(f"  {name} seed {seed} {method:<10} ACC {rows[-1]['acc']:.4f} NMI {rows[-1]['nmi']:.4f} "
              f"({seconds:.0f} s)", flush=True)

    k = len(np.unique(y))
    common = dict(n_clusters=k, arch=arch, batch_size=overrides.get("batch_size", 256), n_init=args.n_init,
                  random_state=seed, verbose=args.progress)
    start = time.perf_counter()
    X = prepare_features(data)
    score("kmeans", KMeans(k, random_state=seed).fit(X).labels_, time.perf_counter() - start)

    start = time.perf_counter()
    ae = AEKMeans(pretrain_epochs=args.pretrain, layerwise_epochs=args.layerwise, augment=args.augment,
                  noise=args.noise, optimizer=args.optimizer, lr=args.lr, **common)
    cached = _cache_dir(args, name, seed, arch)
    if cached is not None and (cached / "model.json").is_file():  # reuse this seed's autoencoder
        ae = ae.set_params(pretrain_epochs=0, autoencoder=load_model(cached).autoencoder_).fit(data.images)
        pretrain_seconds = json.loads((cached / "seconds.json").read_text())["seconds"]
    else:
        ae.fit(data.images)
        pretrain_seconds = time.perf_counter() - start
        if cached is not None:
            save_model(ae, cached)
            (cached / "seconds.json").write_text(json.dumps({"seconds": pretrain_seconds}))
    score("ae-kmeans", ae.labels_, pretrain_seconds)
    shared = dict(common, pretrain_epochs=0, autoencoder=ae.autoencoder_)
    stage = dict(clustering_epochs=args.cluster, cluster_augment=args.cluster_augment)
    finetuned = {
        "dec": lambda: DEC(**stage, update_interval=args.update_interval, **shared),
        "idec": lambda: IDEC(**stage, update_interval=args.update_interval, **shared),
        "dcn": lambda: DCN(**stage, **shared),
        "n2d": lambda: N2D(**shared),
    }
    for method in args.methods:
        if method in finetuned:
            start = time.perf_counter()
            est = finetuned[method]().fit(data.images)
            # Wall time of the whole method: the shared pretraining plus its own stage.
            score(method, est.labels_, pretrain_seconds + time.perf_counter() - start)
    return rows


def _cache_dir(args, name: str, seed: int, arch: str) -> Path | None:
    """Where this seed's pretrained autoencoder is kept with ``--cache`` (keyed by every pretraining
    setting), so another clustering stage can be measured without pretraining again."""
    if not args.cache:
        return None
    key = cache_key(name, seed, arch, args.pretrain, args.layerwise, args.augment, args.noise,
                    args.optimizer, args.lr)
    return Path(args.cache) / key


def cache_key(name: str, seed: int, arch: str | None, pretrain: int, layerwise: int = 0,
              augment: bool = False, noise: float = 0.0, optimizer: str = "adam", lr: float = 1e-3) -> str:
    """The cache entry's name: the data set, the seed and every pretraining setting (the optimizer
    only where it is not the default Adam at 1e-3, so entries made before it was a setting still match)."""
    recipe = "" if (optimizer, lr) == DEFAULT_RECIPE else f"-{optimizer}{lr:g}"
    return (f"{name}-seed{seed}-{Path(arch).stem if arch else 'auto'}-p{pretrain}-l{layerwise}"
            f"-a{int(augment)}-n{noise}{recipe}")


def summarise(rows: list[dict], args) -> str:
    lines = ["| data | method | ACC | NMI | ARI | time (s) | seeds | published ACC |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in args.datasets:
        for method in METHODS:
            sel = [r for r in rows if r["dataset"] == name and r["method"] == method]
            if not sel:
                continue
            cells = [_mean_std([r[m] for r in sel]) for m in ("acc", "nmi", "ari")]
            seconds = statistics.mean(r["seconds"] for r in sel)
            ref = DATASETS[name][4] if method == "kmeans" else ""
            lines.append(f"| {name} | {method} | {' | '.join(cells)} | {seconds:.0f} | {len(sel)} | {ref} |")
    return "\n".join(lines)


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="usps,mnist-test")
    parser.add_argument("--methods", default=",".join(METHODS[2:]))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--pretrain", type=int, default=50)
    parser.add_argument("--layerwise", type=int, default=0)
    parser.add_argument("--cluster", type=int, default=50)
    parser.add_argument("--arch", default=None, help="architecture of every data set (default: per data set)")
    parser.add_argument("--cache", default=None, metavar="DIR",
                        help="keep each seed's pretrained autoencoder here and reuse it on the next run")
    parser.add_argument("--augment", action="store_true", help="random shifts/rotations while pretraining")
    parser.add_argument("--noise", type=float, default=0.0, help="denoising: std of input noise")
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default=DEFAULT_RECIPE[0],
                        help="pretraining optimizer (sgd: momentum 0.9)")
    parser.add_argument("--lr", type=float, default=DEFAULT_RECIPE[1], help="pretraining learning rate")
    parser.add_argument("--cluster-augment", action="store_true",
                        help="DEC, IDEC and DCN train their clustering stage on shifted/rotated views")
    parser.add_argument("--update-interval", type=int, default=140,
                        help="DEC/IDEC: batches between target refreshes (the papers' 140 on MNIST)")
    parser.add_argument("--n-init", type=int, default=20,
                        help="restarts of the k-means on the embedding that starts every deep method "
                             "(the DEC code's 20)")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--append", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args()
    args.datasets = args.datasets.split(",")
    args.methods = args.methods.split(",")
    unknown = [d for d in args.datasets if d not in DATASETS]
    if unknown:
        parser.error(f"unknown data sets {unknown}; choose from {sorted(DATASETS)}")
    rows = []
    for name in args.datasets:
        for seed in (int(s) for s in args.seeds.split(",")):
            rows += run_seed(name, seed, args)
    table = summarise(rows, args)
    command = (f"python benchmarks/quality.py --datasets {','.join(args.datasets)} --seeds {args.seeds} "
               f"--pretrain {args.pretrain} --layerwise {args.layerwise} --cluster {args.cluster}"
               + (" --augment" if args.augment else "") + (f" --arch {args.arch}" if args.arch else "")
               + (f" --noise {args.noise}" if args.noise else "")
               + (f" --optimizer {args.optimizer} --lr {args.lr:g}"
                  if (args.optimizer, args.lr) != DEFAULT_RECIPE else "")
               + (" --cluster-augment" if args.cluster_augment else "")
               + (f" --update-interval {args.update_interval}"
                  if args.update_interval != parser.get_default("update_interval") else "")
               + (f" --n-init {args.n_init}" if args.n_init != parser.get_default("n_init") else ""))
    print(table)
    if args.append:
        path = Path(__file__).with_name("RESULTS.md")
        with open(path, "a") as f:
            f.write(f"\n### Quality: `{command}`\n\n{table}\n")


if __name__ == "__main__":
    main()
