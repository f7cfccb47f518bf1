"""Self-labelling on top of N2D: does a convnet trained on N2D's confident points, on augmented views,
relabel the rest better? (benchmarks/RESULTS.md, "Self-labelling on top of N2D")

    # once per data set and seed: N2D alone, its labels and mixture probabilities cached
    python benchmarks/self_label_n2d.py base mnist 0 --data-dir ../shared/data/mnist --split test
    # then any number of self-labelling settings on that cache
    python benchmarks/self_label_n2d.py sl mnist 0 --rounds 1 --epochs 30 --schedule cosine \
        --label-smoothing 0.1
    # the same round, then three students (the ACC after each is printed)
    python benchmarks/self_label_n2d.py sl mnist 0 --rounds 1 --students 3 --epochs 30 --schedule cosine \
        --label-smoothing 0.1
    # the classifier's ceiling: true labels of a random half, or of the half the stage would select
    python benchmarks/self_label_n2d.py sl mnist 0 --epochs 30 --schedule cosine --truth
    python benchmarks/self_label_n2d.py sl mnist 0 --epochs 30 --schedule cosine --truth-on-selected

One thread (``OMP_NUM_THREADS=1``): the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from deepclust.data import load_dataset  # noqa: E402
from deepclust.deep.base import as_image_tensor, stage_seed  # noqa: E402
from deepclust.deep.n2d import N2D  # noqa: E402
from deepclust.deep.self_label import SelfLabel, agreement_scores, neighbours, select_confident  # noqa: E402
from deepclust.metrics import clustering_accuracy, normalized_mutual_info  # noqa: E402

CACHE = Path(os.environ.get("SELF_LABEL_CACHE", "/tmp/self_label_n2d"))


def load(args) -> tuple[torch.Tensor, np.ndarray]:
    data = load_dataset(args.dataset, data_dir=args.data_dir, split=args.split, download=False)
    return as_image_tensor(data.images), data.labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["base", "sl"])
    parser.add_argument("dataset")
    parser.add_argument("seed", type=int)
    parser.add_argument("--data-dir")
    parser.add_argument("--split", default="all")
    for name, kind, default in (("rounds", int, 2), ("students", int, 0), ("epochs", int, 10),
                                ("min_steps", int, 300),
                                ("fraction", float, 0.5), ("n_neighbors", int, 20), ("width", int, 16),
                                ("batch_size", int, 128),
                                ("lr", float, None), ("shift", float, 0.1), ("degrees", float, 15.0),
                                ("scale", float, 0.1), ("label_smoothing", float, 0.0),
                                ("schedule", str, "constant")):
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=default)
    parser.add_argument("--no-features", action="store_true", help="select by probability alone")
    parser.add_argument("--truth", action="store_true",
                        help="the classifier's ceiling: learn the TRUE labels of a random share (--fraction)")
    parser.add_argument("--truth-on-selected", action="store_true",
                        help="learn the TRUE labels of the points the stage would select from N2D's labels")
    parser.add_argument("--save", help="write the convnet's labels and probabilities to this .npz")
    args = parser.parse_args()
    torch.set_num_threads(1)
    X, y = load(args)
    CACHE.mkdir(parents=True, exist_ok=True)
    cache = CACHE / f"{args.dataset}-{args.split}-{args.seed}.npz"
    if args.mode == "base":
        start = time.perf_counter()
        model = N2D(int(y.max()) + 1, random_state=args.seed, verbose=False).fit(X)
        seconds = time.perf_counter() - start
        np.savez(cache, labels=model.labels_, posterior=model._stage.posterior_, seconds=seconds,
                 manifold=model.manifold_, embedding=model.embedding_)
        print(json.dumps({"dataset": args.dataset, "seed": args.seed,
                          "n2d_acc": clustering_accuracy(y, model.labels_),
                          "n2d_nmi": normalized_mutual_info(y, model.labels_), "seconds": round(seconds, 1)}))
        return
    saved = np.load(cache)
    params = {k: getattr(args, k) for k in ("rounds", "students", "epochs", "min_steps", "fraction",
                                            "n_neighbors", "width", "batch_size", "lr", "shift", "degrees",
                                            "scale", "label_smoothing", "schedule")}
    posterior, features = saved["posterior"], None if args.no_features else saved["embedding"]
    if args.truth:  # one-hot true labels, a random tie-break: selection by probability = a random share
        noise = np.random.default_rng(args.seed).random(len(y)) * 1e-3
        posterior = np.eye(int(y.max()) + 1, dtype=np.float32)[y] * (1 - noise[:, None]) + noise[:, None] / 10
        features = None
    if args.truth_on_selected:  # N2D's selection, true targets: is it the selection or the labels' errors?
        n2d = torch.as_tensor(saved["labels"])
        idx = neighbours(torch.as_tensor(features), args.n_neighbors)
        keep = select_confident(n2d, agreement_scores(n2d, idx, torch.as_tensor(posterior)), args.fraction,
                                int(y.max()) + 1).numpy()
        posterior = np.eye(int(y.max()) + 1, dtype=np.float32)[y] * np.where(keep, 1.0, 0.5)[:, None]
        posterior, features = posterior + (1 - posterior.sum(1, keepdims=True)) / posterior.shape[1], None
        params["fraction"] = float(keep.mean())
    sl = SelfLabel(**params, random_state=stage_seed(args.seed, "self-label"),  # as N2D seeds it
                   verbose=False).fit(X, posterior, features)
    if args.save:
        np.savez(args.save, labels=sl.labels_, proba=sl.proba_, initial=sl.initial_labels_)
    sel = [round(s, 3) for s in sl.selected_]
    print(json.dumps({"dataset": args.dataset, "seed": args.seed, **params, "truth": args.truth,
                      "n2d_acc": round(clustering_accuracy(y, saved["labels"]), 4),
                      "sl_acc": round(clustering_accuracy(y, sl.labels_), 4),
                      "acc_by_round": [round(clustering_accuracy(y, labels), 4)
                                       for labels in sl.round_labels_],
                      "sl_nmi": round(normalized_mutual_info(y, sl.labels_), 4),
                      "agreement_hungarian": round(clustering_accuracy(saved["labels"], sl.labels_), 4),
                      "selected": sel, "seconds": round(sl.fit_seconds_, 1),
                      "n2d_seconds": round(float(saved["seconds"]), 1)}))


if __name__ == "__main__":
    main()
