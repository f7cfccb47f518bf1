"""How close deepclust's pretraining loop sits to the bare arithmetic.

Times one epoch of dec-dense autoencoder pretraining on MNIST-70k through deepclust
(``deepclust.deep.training.train_autoencoder``) and through a minimal hand-written PyTorch loop over
the same pre-loaded tensor, with the same model, batch size, optimizer and shuffling, alternating
the two ``--repeats`` times, and prints the ratio of the medians.

    python benchmarks/overhead.py [--data-dir ../shared/data/mnist] [--repeats 3] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from deepclust.data import load_dataset
from deepclust.deep.base import as_image_tensor
from deepclust.deep.training import TrainSettings, train_autoencoder
from deepclust.models import build_autoencoder


def hand_written_epoch(model, X, batch_size, optimizer, generator) -> None:
    """The baseline: the few lines anyone would write."""
    model.train()
    for idx in torch.randperm(X.shape[0], generator=generator).split(batch_size):
        x = X[idx]
        _, x_hat = model(x)
        loss = F.mse_loss(x_hat, x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def main() -> None:
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    default_dir = Path(os.environ.get("DEEPCLUST_DATA", shared))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(default_dir / "mnist"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

    X = as_image_tensor(load_dataset("mnist", data_dir=args.data_dir).images)  # (70000, 1, 28, 28)
    device = torch.device("cpu")
    settings = TrainSettings(epochs=1, batch_size=args.batch_size, lr=1e-3)
    times = {"deepclust": [], "hand-written": []}
    for _ in range(args.repeats):
        for name in times:
            torch.manual_seed(0)
            model = build_autoencoder("dec-dense", input_shape=(1, 28, 28))
            optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
            generator = torch.Generator().manual_seed(0)
            start = time.perf_counter()
            if name == "deepclust":
                train_autoencoder(model, X, settings, device=device, generator=generator, optimizer=optimizer,
                                  show_progress=False)
            else:
                hand_written_epoch(model, X, args.batch_size, optimizer, generator)
            times[name].append(time.perf_counter() - start)
    ours, base = statistics.median(times["deepclust"]), statistics.median(times["hand-written"])
    print(f"dec-dense pretraining, 1 epoch of MNIST-70k, batch {args.batch_size}, Adam, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print("| loop | seconds per epoch (median) | all runs |")
    print("| --- | --- | --- |")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} | {', '.join(f'{v:.2f}' for v in values)} |")
    print(f"ratio deepclust / hand-written: {ours / base:.3f} (target <= 1.15)")


if __name__ == "__main__":
    main()
