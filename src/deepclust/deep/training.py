"""Autoencoder training: explicit arguments, a ``device``, no globals.

The data is one float tensor ``X`` (N, C, H, W) held in memory and read by index: each epoch draws a
permutation from a seeded ``torch.Generator`` and slices batches out of ``X``. That keeps the loop at
the speed of the bare arithmetic (``benchmarks/overhead.py``) and makes runs repeatable.

Under torchrun every rank holds ``X`` and draws the same permutation (the generators are seeded alike);
each global batch of ``batch_size`` rows is split into contiguous shares, one per rank (sizes differ by
at most one), the network is wrapped in ``DistributedDataParallel``, and each rank's mean loss is
weighted by its share of the batch, so the averaged gradient is the global batch's. The global batch is
therefore the one asked for, whatever the number of processes, and the loss curve is one process's up
to float rounding (``shares``). Random corruption is drawn for the whole batch on every rank and sliced,
and batch norm and dropout see the whole batch (``global_batch``), also in the clustering stages.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed as D
from ..data.rows import ImageRows
from ..progress import progress
from .global_batch import global_batch_layers
from .loop import EpochLoop
from .shares import Share, backward_share, reduce_totals

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


def corrupt(x: torch.Tensor, settings: TrainSettings, generator: torch.Generator,
            share: Share | None = None) -> torch.Tensor:
    """The input the network sees: augmented and/or noisy; the target stays the clean ``x``.

    With ``share``, ``x`` is that part of a global batch: the draws are made for the whole batch and
    sliced, so every rank's generator advances alike and each row gets what one process would give it.
    """
    if settings.augment and x.dim() == 4:
        x = random_affine(x, generator, share=share)
    if settings.noise > 0:
        shape = x.shape if share is None else (share.size, *x.shape[1:])
        noise = torch.randn(shape, generator=generator, dtype=x.dtype) * settings.noise
        x = x + (noise if share is None else noise[share.rows]).to(x.device)
    return x


def random_affine(x: torch.Tensor, generator: torch.Generator, max_shift: float = 2.0,
                  max_degrees: float = 10.0, *, share: Share | None = None) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels and rotate it by up to ``max_degrees``.

    With ``share`` (``x`` is that part of a global batch) the draws are made for the whole batch and
    sliced, as in :func:`corrupt`.
    """
    n, _, h, w = x.shape
    drawn = n if share is None else share.size
    angle = (torch.rand(drawn, generator=generator) * 2 - 1) * math.radians(max_degrees)
    shift = (torch.rand(drawn, 2, generator=generator) * 2 - 1) * max_shift
    if share is not None:
        angle, shift = angle[share.rows], shift[share.rows]
    if n == 0:
        return x
    offset = torch.stack([shift[:, 0] * 2 / w, shift[:, 1] * 2 / h], dim=1)  # in [-1, 1] coordinates
    return affine_warp(x, angle, offset)


def affine_warp(x: torch.Tensor, angle: torch.Tensor, offset: torch.Tensor,
                zoom: torch.Tensor | None = None) -> torch.Tensor:
    """Images ``x`` (N, C, H, W) rotated by ``angle`` (N,) radians, scaled by ``zoom`` (N,) and shifted by
    ``offset`` (N, 2) in affine_grid's [-1, 1] coordinates (x, y); zero padding, bilinear."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    if zoom is not None:  # the grid samples the input: 1 / zoom
        cos, sin = cos / zoom, sin / zoom
    theta = torch.zeros(x.shape[0], 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    theta[:, :, 2] = offset
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
    if loop is None:
        bar = progress(range(start_epoch, settings.epochs), total=settings.epochs, desc=desc, unit="epoch",
                       enabled=show_progress)
        bar.update(start_epoch)
    else:
        bar = loop
    history = []
    # under torchrun: batch norm and dropout of the global batch, gradients averaged over ranks
    with global_batch_layers(model) as batch:
        net = D.data_parallel(model)
        for epoch in bar:
            start, total, seen = time.perf_counter(), 0.0, 0
            for rows in minibatches(X.shape[0], settings.batch_size, generator):
                idx, share = batch.take(rows)  # this rank's rows of the global batch (all in one process)
                x = X[idx].to(device, non_blocking=True)
                z, x_hat = net(corrupt(x, settings, generator, share))
                loss = reconstruction_loss(x_hat, x, settings.loss) if idx.numel() else None
                optimizer.zero_grad(set_to_none=True)
                total += backward_share(loss, (z, x_hat), share)
                optimizer.step()
                seen += idx.numel()
            total, seen = reduce_totals(total, seen)
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
    # Each block's output is computed for every row, so this stage holds the data in memory by nature
    # (ImageRows from a data cache are read whole here; the end-to-end training after it is not).
    h = (X[:] if isinstance(X, ImageRows) else X).flatten(1)
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
def encode(model: nn.Module, X: torch.Tensor, *, device: torch.device, batch_size: int = 1024,
           rows: slice | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Embeddings of ``X`` (or of its ``rows``) in order, (n, d), on the CPU; the model is left in eval mode.

    Reads ``batch_size`` rows at a time, so ``X`` may be :class:`~deepclust.data.rows.ImageRows` read
    from a memory-mapped cache: only the (n, d) embeddings are ever held whole. ``out`` (n, d) receives
    them when given (a view of a larger array, see :func:`encode_all`).
    """
    model.eval()
    start, stop, _ = (rows or slice(None)).indices(X.shape[0])
    for s in range(start, max(stop, start + 1), batch_size):  # an empty range still gives the width
        z = model.encode(X[s:min(s + batch_size, stop)].to(device)).cpu()
        if out is None:
            # One array filled in place: small per-batch results kept between the large temporaries
            # of each batch would pin the heap (glibc), and memory would grow with the rows encoded.
            out = torch.empty((stop - start, *z.shape[1:]), dtype=z.dtype)
        out[s - start:s - start + z.shape[0]] = z
    return out


@torch.no_grad()
def encode_all(model: nn.Module, X: torch.Tensor, *, device: torch.device, batch_size: int = 1024,
               fill: bool = True) -> torch.Tensor:
    """:func:`encode` of all of ``X`` on every rank: under torchrun each rank encodes its contiguous
    shard (``distributed.shard_slice``) into its rows of the one (N, d) result and, with ``fill``, the
    other ranks' rows are gathered into it (a collective: every rank calls it). ``fill=False`` leaves
    them to a later ``distributed.fill_from_shards``; their pages are not touched until then."""
    if not D.is_distributed():
        return encode(model, X, device=device, batch_size=batch_size)
    n = X.shape[0]
    mine = D.shard_slice(n)
    width = encode(model, X[:1], device=device).shape[1:]
    Z = torch.empty((n, *width))
    encode(model, X, device=device, batch_size=batch_size, rows=mine, out=Z[mine])
    if fill:
        D.fill_from_shards(Z.numpy())
    return Z
