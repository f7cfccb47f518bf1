"""A sensible autoencoder for any image shape, when no architecture is named.

``default_architecture((C, H, W), n_clusters)`` returns a spec dict (see ``deepclust.models.spec``):

- Small grey images (C == 1 and H * W <= 32 * 32: 8x8 digits, 16x16 USPS, 28x28 MNIST): the DEC
  dense network d-500-500-2000-e with ReLU, a linear bottleneck and output, and Glorot-uniform
  weights. Name
  ``auto-dense-CxHxW-dE``.
- Anything else (colour, or larger): conv blocks (3x3 conv, batchnorm, ReLU) with 2x2 max pooling,
  a dense bottleneck, a mirrored decoder with nearest up-sampling and a sigmoid output. Name
  ``auto-conv-CxHxW-dE``.

  * Number of pools p = floor(log2(min(H, W) / 4)), clipped to 0..5, so the smaller side ends at
    4..7 pixels (28 -> 7, 32 -> 4, 96 -> 6, 128 -> 4, 224 -> 7).
  * Sizes that 2^p does not divide are zero-padded first (``pad`` layer) to the next multiple and
    cropped back at the end of the decoder (``crop``), so every H and W works exactly: 50x37 with
    p = 3 is padded to 56x40 and pooled to 7x5.
  * Channels 32, 64, 128, 256, 256, 256: one conv per scale, p + 1 convs.

Embedding size e: ``max(n_clusters, 10)`` for grey images, as wide as the number of clusters like
seed 000's MNIST model and DCN, but at least the 10 dimensions of DEC's network so that a small k
does not starve the code; 128 for colour images, as seed 000's CIFAR-10 model, since colour
images carry more nuisance variation (hue, background) than a k-wide code can hold.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

MAX_POOLS = 5
DENSE_MAX_PIXELS = 32 * 32


def _check_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = ()
    if len(shape) != 3 or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1
                                  for s in shape):
        raise ValueError(f"input_shape must be (C, H, W) with positive integers; got {input_shape!r}.")
    return int(shape[0]), int(shape[1]), int(shape[2])


def _number_of_pools(height: int, width: int) -> int:
    """floor(log2(min(H, W) / 4)) clipped to [0, MAX_POOLS]: the smaller side ends at 4..7 pixels."""
    n = 0
    while n < MAX_POOLS and min(height, width) >= 8 * 2 ** n:
        n += 1
    return n


def default_architecture(input_shape: Sequence[int], n_clusters: int) -> dict[str, Any]:
    """A spec dict for images of shape (C, H, W) to be clustered into ``n_clusters`` groups.

    See the module docstring for the rule. Build it with ``build_autoencoder(spec)``.
    """
    c, h, w = _check_shape(input_shape)
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, numbers.Integral) or n_clusters < 1:
        raise ValueError(f"n_clusters must be an integer >= 1; got {n_clusters!r}.")
    grey = c == 1
    dim = max(int(n_clusters), 10) if grey else 128

    if grey and h * w <= DENSE_MAX_PIXELS:
        return {
            "name": f"auto-dense-{c}x{h}x{w}-d{dim}",
            "description": (f"DEC dense autoencoder {c * h * w}-500-500-2000-{dim} (chosen by "
                            "default_architecture for small grey images)."),
            "input": [c, h, w],
            "encoder": [
                {"type": "flatten"},
                {"type": "dense", "units": 500, "activation": "relu"},
                {"type": "dense", "units": 500, "activation": "relu"},
                {"type": "dense", "units": 2000, "activation": "relu"},
                {"type": "dense", "units": dim},
            ],
            "decoder": "mirror",
            "output_activation": "identity",
            "init": "glorot",  # as dec-dense: the public DEC/IDEC code's Keras default
        }

    n_pools = _number_of_pools(h, w)
    step = 2 ** n_pools
    pad_h, pad_w = -h % step, -w % step  # rows/columns to reach the next multiple of 2^p
    encoder: list[dict[str, Any]] = []
    if pad_h or pad_w:
        encoder.append({"type": "pad", "height": pad_h, "width": pad_w})
    for i in range(n_pools + 1):
        encoder += [
            {"type": "conv", "filters": min(32 * 2 ** i, 256), "kernel": 3},
            {"type": "batchnorm"},
            {"type": "activation", "fn": "relu"},
        ]
        if i < n_pools:
            encoder.append({"type": "maxpool", "size": 2})
    encoder += [{"type": "flatten"}, {"type": "dense", "units": dim}]
    final = f"{(h + pad_h) // step}x{(w + pad_w) // step}"
    padded = f", zero-padded to {h + pad_h}x{w + pad_w}" if pad_h or pad_w else ""
    return {
        "name": f"auto-conv-{c}x{h}x{w}-d{dim}",
        "description": (f"Conv autoencoder with {n_pools} max pools{padded}, {final} before the {dim}-d "
                        "bottleneck (chosen by default_architecture)."),
        "input": [c, h, w],
        "encoder": encoder,
        "decoder": "mirror",
        "output_activation": "sigmoid",
    }


__all__ = ["default_architecture"]
