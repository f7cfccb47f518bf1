"""Train a cached autoencoder of ``quality.py --cache`` for more epochs, saving one cache entry per step.

A 300-epoch MNIST-70k autoencoder is 45 minutes of both cores; this lets the 100-epoch one that
``quality.py`` already cached be extended in steps (each step its own Adam and shuffling seed), and
``quality.py --pretrain 300 --cache DIR`` then finds the result under the usual key.

    python benchmarks/continue_pretraining.py --dataset mnist --seed 0 --from 100 --to 300 --step 100 \
        --cache benchmarks/.cache
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from deepclust.data import load_dataset
from deepclust.deep import AEKMeans, load_model, save_model
from deepclust.metrics import clustering_accuracy, normalized_mutual_info
from quality import DATASETS, SHARED, cache_key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist", choices=sorted(DATASETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--from", dest="start", type=int, required=True,
                        help="epochs of the cached autoencoder")
    parser.add_argument("--to", dest="stop", type=int, required=True)
    parser.add_argument("--step", type=int, default=100, help="epochs per step; a cache entry after each")
    parser.add_argument("--cache", default="benchmarks/.cache")
    args = parser.parse_args()
    if not 0 < args.start < args.stop or args.step < 1:
        parser.error("need 0 < --from < --to and --step >= 1")
    loader, folder, split, arch, _, overrides = DATASETS[args.dataset]
    cache = Path(args.cache)
    source = cache / cache_key(args.dataset, args.seed, arch, args.start)
    if not (source / "model.json").is_file():
        parser.error(f"no cached autoencoder at {source}; make it with quality.py --datasets {args.dataset} "
                     f"--seeds {args.seed} --pretrain {args.start} --cache {cache}")
    data = load_dataset(loader, data_dir=SHARED / folder, split=split, size=overrides.get("size"))
    autoencoder = load_model(source).autoencoder_
    seconds = json.loads((source / "seconds.json").read_text())["seconds"]
    n_clusters = len(set(data.labels.tolist()))
    done = args.start
    while done < args.stop:
        epochs = min(args.step, args.stop - done)
        start = time.perf_counter()
        # random_state=done: each step shuffles with its own stream, so a step is reproducible alone.
        est = AEKMeans(n_clusters, arch=arch, pretrain_epochs=epochs, autoencoder=autoencoder,
                       batch_size=overrides.get("batch_size", 256), random_state=done, verbose=False)
        est.fit(data.images)
        seconds += time.perf_counter() - start
        done += epochs
        autoencoder = est.autoencoder_
        target = cache / cache_key(args.dataset, args.seed, arch, done)
        save_model(est, target)
        (target / "seconds.json").write_text(json.dumps({"seconds": seconds}))
        loss = [row["loss"] for row in est.history_ if row.get("stage") == "pretrain"][-1]
        acc = clustering_accuracy(data.labels, est.labels_)
        nmi = normalized_mutual_info(data.labels, est.labels_)
        print(f"{args.dataset} seed {args.seed}: {done} epochs, loss {loss:.5f}, AE + k-means ACC {acc:.4f} "
              f"NMI {nmi:.4f}, {seconds:.0f} s of pretraining in all", flush=True)


if __name__ == "__main__":
    main()
