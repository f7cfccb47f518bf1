"""Small layers that torch.nn lacks, and the container that carries max-pool indices to the decoder.

- ``Unpool2d``: the inverse of 2x2 (or k x k) max pooling, either from the pool's indices or by
  replicating each pixel k x k times (the ``Unpool2D`` of Siddiqui, Aljalbout & Golkov's
  deep-clustering project, which is nearest-neighbour up-sampling by an integer factor).
- ``Reshape``: ``x.reshape(N, *shape)``, the inverse of ``nn.Flatten``.
- ``Pad2d`` / ``Crop2d``: add / remove rows and columns around an image; they invert each other, so
  an encoder can pad an odd-sized image to a multiple of its pooling and the decoder crop it back.
- ``Stack``: ``nn.Sequential`` that hands the indices of encoder max pools to decoder unpools.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

UNPOOL_MODES = ("indices", "replicate")


class Unpool2d(nn.Module):
    """Undo a ``size`` x ``size`` max pooling: (N, C, H, W) -> (N, C, H * size, W * size).

    ``mode="indices"`` puts each value back where the encoder's max was (zeros elsewhere); it needs
    the indices returned by the mirrored ``nn.MaxPool2d(size, return_indices=True)``.
    ``mode="replicate"`` copies each value into its whole ``size`` x ``size`` cell; it needs nothing.
    """

    def __init__(self, size: int, mode: str = "indices"):
        super().__init__()
        if mode not in UNPOOL_MODES:
            raise ValueError(f"Unpool2d mode must be one of {UNPOOL_MODES}; got {mode!r}.")
        self.size = int(size)
        self.mode = mode

    def forward(self, x: Tensor, indices: Tensor | None = None) -> Tensor:
        if self.mode == "replicate":
            return x.repeat_interleave(self.size, dim=2).repeat_interleave(self.size, dim=3)
        if indices is None:
            raise ValueError(
                "Unpool2d(mode='indices') needs the indices of its encoder max pool. Call the whole "
                "autoencoder (forward(x)) or pass decode(z, indices=...); use mode='replicate' for a "
                "decoder that works from z alone."
            )
        n, c, h, w = x.shape
        return F.max_unpool2d(x, indices, self.size, output_size=(h * self.size, w * self.size))

    def extra_repr(self) -> str:
        return f"size={self.size}, mode={self.mode!r}"


class Reshape(nn.Module):
    """(N, ...) -> (N, *shape); e.g. (N, 6272) -> (N, 128, 7, 7) after a decoder's first dense layer."""

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


def split_border(total: int) -> tuple[int, int]:
    """Split ``total`` rows (or columns) between the two sides: the smaller half first."""
    return total // 2, total - total // 2


class Pad2d(nn.Module):
    """Add ``height`` zero rows and ``width`` zero columns: (N, C, H, W) -> (N, C, H + height, W + width).

    The rows go half above, half below (the odd one below); columns half left, half right.
    """

    def __init__(self, height: int = 0, width: int = 0):
        super().__init__()
        self.height, self.width = int(height), int(width)

    def forward(self, x: Tensor) -> Tensor:
        top, bottom = split_border(self.height)
        left, right = split_border(self.width)
        return F.pad(x, (left, right, top, bottom))

    def extra_repr(self) -> str:
        return f"height={self.height}, width={self.width}"


class Crop2d(nn.Module):
    """Remove ``height`` rows and ``width`` columns, split as in ``Pad2d``: its exact inverse."""

    def __init__(self, height: int = 0, width: int = 0):
        super().__init__()
        self.height, self.width = int(height), int(width)

    def forward(self, x: Tensor) -> Tensor:
        top, bottom = split_border(self.height)
        left, right = split_border(self.width)
        h, w = x.shape[-2:]
        return x[..., top:h - bottom, left:w - right]

    def extra_repr(self) -> str:
        return f"height={self.height}, width={self.width}"


class Stack(nn.Sequential):
    """``nn.Sequential`` that threads max-pool indices from an encoder to a decoder.

    ``forward(x, indices)``: a ``nn.MaxPool2d(return_indices=True)`` appends its indices to the
    list ``indices``; an ``Unpool2d(mode="indices")`` pops the last one (so the innermost pool pairs
    with the first unpool). With ``indices=None`` an encoder drops them and runs like a plain
    ``nn.Sequential``.
    """

    def forward(self, x: Tensor, indices: list[Tensor] | None = None) -> Tensor:  # type: ignore[override]
        for layer in self:
            if isinstance(layer, nn.MaxPool2d) and layer.return_indices:
                x, idx = layer(x)
                if indices is not None:
                    indices.append(idx)
            elif isinstance(layer, Unpool2d) and layer.mode == "indices":
                if not indices:
                    raise ValueError(
                        "This decoder unpools with the encoder's max-pool indices, and none were given. "
                        "Call the autoencoder on x (forward(x) returns (z, x_hat)), or pass the indices "
                        "collected by encode(x, indices=[]) to decode(z, indices=...)."
                    )
                x = layer(x, indices.pop())
            else:
                x = layer(x)
        return x


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,  # torch's default slope, 0.01
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "identity": nn.Identity,
}


def make_activation(fn: str) -> nn.Module:
    """The activation module called ``fn``; unknown names list the known ones."""
    try:
        return ACTIVATIONS[fn]()
    except KeyError:
        raise ValueError(f"Unknown activation {fn!r}. Available: {', '.join(ACTIVATIONS)}.") from None


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = ["ACTIVATIONS", "Crop2d", "Pad2d", "Reshape", "Stack", "Unpool2d", "count_parameters",
           "make_activation", "split_border"]

