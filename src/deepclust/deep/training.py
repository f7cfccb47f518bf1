"""Autoencoder training: explicit arguments, a ``device``, no globals.

The data is one float tensor ``X`` (N, C, H, W) held in memory and read by index: each epoch draws a
permutation from a seeded ``torch.Generator`` and slices batches out of ``X``. That keeps the loop at
the speed of the bare arithmetic (``benchmarks/overhead.py``) and makes runs repeatable.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..progress import progress
from .loop import EpochLoop

LOSSES = ("mse", "mse-cosine", "bce")
OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class TrainSettings:
    """How to train an autoencoder; stored with every run and checkpoint."""

    epochs: int = 50
    batch_size: int = 256
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    loss: str = "mse"
    noise: float = 0.0  # denoising: std of Gaussian noise added to the input (0: off)
    augment: bool = False  # random shifts (+-2 px) and rotations (+-10 degrees)

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}; got {self.loss!r}.")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}; got {self.optimizer!r}.")
        if self.epochs < 0 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"epochs must be >= 0, batch_size >= 1 and lr > 0; got epochs={self.epochs}, "
                             f"batch_size={self.batch_size}, lr={self.lr}.")

    def optimizer_for(self, params) -> torch.optim.Optimizer:
        """This training's optimizer over ``params``."""
        return make_optimizer(params, self.optimizer, self.lr, momentum=self.momentum,
                              weight_decay=self.weight_decay)


def make_optimizer(params, kind: str, lr: float, *, momentum: float = 0.9,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """The one optimizer factory: SGD (with ``momentum``) or Adam (betas 0.9, 0.999), weight decay."""
    if kind not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}; got {kind!r}.")
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Mean reconstruction error. ``mse-cosine`` is MSE minus the mean cosine similarity (seed 000)."""
    if kind == "mse":
        return F.mse_loss(x_hat, x)
    if kind == "bce":
        return F.binary_cross_entropy(x_hat.clamp(1e-6, 1 - 1e-6), x.clamp(0, 1))
    if kind == "mse-cosine":
        cos = F.cosine_similarity(x_hat.flatten(1), x.flatten(1), dim=1, eps=1e-8)
        return F.mse_loss(x_hat, x) - cos.mean()
    raise ValueError(f"loss must be one of {LOSSES}; got {kind!r}.")


def minibatches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Index tensors of a fresh random permutation of ``range(n)``, ``batch_size`` at a time."""
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def corrupt(x: torch.Tensor, settings: TrainSettings, generator: torch.Generator) -> torch.Tensor:
    """The input the network sees: augmented and/or noisy; the target stays the clean ``x``."""
    if settings.augment and x.dim() == 4:
        x = random_affine(x, generator)
    if settings.noise > 0:
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype) * settings.noise
        x = x + noise.to(x.device)
    return x


def random_affine(x: torch.Tensor, generator: torch.Generator, max_shift: float = 2.0,
                  max_degrees: float = 10.0) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels and rotate it by up to ``max_degrees``."""
    n, _, h, w = x.shape
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(max_degrees)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * max_shift
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    theta[:, 0, 2] = shift[:, 0] * 2 / w  # affine_grid works in [-1, 1] coordinates
    theta[:, 1, 2] = shift[:, 1] * 2 / h
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)


def check_augment(enabled: bool, X: torch.Tensor, name: str) -> bool:
    """Whether training may shift and rotate ``X`` (``random_affine``): only images, (N, C, H, W) with
    H and W above 1; feature vectors, which arrive as (N, 1, 1, d), get an error naming option ``name``."""
    if enabled and not (X.dim() == 4 and X.shape[2] > 1 and X.shape[3] > 1):
        raise ValueError(f"{name} shifts and rotates images, but these data are feature vectors "
                         f"(shape {tuple(X.shape)}): leave {name} off for them.")
    return bool(enabled)


EpochCallback = Callable[[int, dict], None]


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite: the learning rate (usually) is too high for the data."""


def check_finite_loss(loss: float, epoch: int, option: str, lr: float) -> None:
    """Stop with one clear line when an epoch's mean loss is not finite (else the NaN surfaces later as
    "X contains NaN", blaming the user's data)."""
    if not math.isfinite(loss):
        raise TrainingDiverged(f"Training diverged: the loss is {loss} after epoch {epoch} at learning rate "
                               f"{lr:g}; lower --{option.replace('_', '-')} (e.g. ten times) and run again.")


def train_autoencoder(model: nn.Module, X: torch.Tensor, settings: TrainSettings, *, device: torch.device,
                      generator: torch.Generator, optimizer: torch.optim.Optimizer | None = None,
                      start_epoch: int = 0, on_epoch: EpochCallback | None = None,
                      show_progress: bool | None = None, desc: str = "pretrain",
                      loop: EpochLoop | None = None) -> list[dict]:
    """Train ``model`` (``forward(x) -> (z, x_hat)``) to reconstruct ``X``; one dict per epoch.

    ``loop`` (a restored :class:`~deepclust.deep.loop.EpochLoop`) counts the epochs and shows the bar;
    without one, epochs ``start_epoch..settings.epochs - 1`` run. ``on_epoch(epoch, row)`` is called after
    every epoch (checkpointing).
    """
    model.to(device).train()
    optimizer = optimizer or settings.optimizer_for(model.parameters())
    history = []
    if loop is None:
        bar = progress(range(start_epoch, settings.epochs), total=settings.epochs, desc=desc, unit="epoch",
                       enabled=show_progress)
        bar.update(start_epoch)
    else:
        bar = loop
    for epoch in bar:
        start, total, seen = time.perf_counter(), 0.0, 0
        for idx in minibatches(X.shape[0], settings.batch_size, generator):
            x = X[idx].to(device, non_blocking=True)
            _, x_hat = model(corrupt(x, settings, generator))
            loss = reconstruction_loss(x_hat, x, settings.loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * idx.numel()
            seen += idx.numel()
        seconds = time.perf_counter() - start
        row = {"epoch": epoch + 1, "loss": total / seen, "seconds": seconds}
        check_finite_loss(row["loss"], epoch + 1, "lr", settings.lr)
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.4f}", samples_s=f"{seen / seconds:.0f}")
        if on_epoch is not None:
            on_epoch(epoch + 1, row)
    model.eval()
    return history


def pretrain_layerwise(model: nn.Module, X: torch.Tensor, settings: TrainSettings, *, device: torch.device,
                       generator: torch.Generator, dropout: float = 0.2,
                       show_progress: bool | None = None) -> list[dict]:
    """Greedy layer-wise denoising pretraining of a dense stack (the DEC paper's SAE, Xie et al. 2016).

    Block i (encoder Linear and its mirrored decoder Linear, with the activations the model uses
    after each) is trained as a one-hidden-layer autoencoder on the output of the already trained
    blocks < i, with dropout corruption of its input and of its hidden layer. The whole stack is
    fine-tuned afterwards by :func:`train_autoencoder`.
    """
    blocks = model.dense_blocks()
    history: list[dict] = []
    h = X.flatten(1)
    for i, block in enumerate(blocks):
        params = list(block.encoder.parameters()) + list(block.decoder.parameters())
        optimizer = settings.optimizer_for(params)
        model.to(device)
        bar = progress(range(settings.epochs), desc=f"layer {i + 1}/{len(blocks)}", unit="epoch",
                       enabled=show_progress)
        for epoch in bar:
            start, total = time.perf_counter(), 0.0
            for idx in minibatches(h.shape[0], settings.batch_size, generator):
                x = h[idx].to(device)
                z = block.encoder_activation(block.encoder(_drop(x, dropout, generator)))
                x_hat = block.decoder_activation(block.decoder(_drop(z, dropout, generator)))
                loss = F.mse_loss(x_hat, x)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * idx.numel()
            row = {"layer": i + 1, "epoch": epoch + 1, "loss": total / h.shape[0],
                   "seconds": time.perf_counter() - start}
            history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        with torch.no_grad():  # the next block learns to reconstruct this block's clean output
            h = torch.cat([block.encoder_activation(block.encoder(h[s:s + 4096].to(device))).cpu()
                           for s in range(0, h.shape[0], 4096)])
    return history


def _drop(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Dropout drawn from ``generator`` (repeatable), scaled to keep the expectation."""
    if p <= 0:
        return x
    keep = (torch.rand(x.shape, generator=generator) >= p).to(x.device, x.dtype)
    return x * keep / (1 - p)


@torch.no_grad()
def encode(model: nn.Module, X: torch.Tensor, *, device: torch.device,
           batch_size: int = 1024) -> torch.Tensor:
    """Embeddings of ``X`` in order, (N, d), on the CPU; the model is left in eval mode."""
    model.eval()
    out = [model.encode(X[s:s + batch_size].to(device)).cpu() for s in range(0, X.shape[0], batch_size)]
    return torch.cat(out)
