"""Standard augmentation in torch: random resized crop and horizontal flip, batched.

Each image gets its own crop (area fraction in ``scale``, aspect ratio in ``ratio``, anywhere in the
image) resized back to the input size with bilinear sampling, and is mirrored with probability
1/2 when ``flip``. Drawn from a ``torch.Generator``, so runs repeat. Under torchrun a rank passes its
``share`` of the global batch: the draws are made for the whole batch and sliced, so each image gets the
crop one process gives it and every rank's generator advances alike (as ``deep.training.corrupt``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..shares import Share

AUGMENTATIONS = ("none", "crop", "flip", "crop+flip")


def random_resized_crop(x: torch.Tensor, generator: torch.Generator, *,
                        scale: tuple[float, float] = (0.5, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        crop: bool = True, flip: bool = False, share: Share | None = None) -> torch.Tensor:
    """Randomly crop (and flip) each image of ``x`` (N, C, H, W); the output has the same shape.

    With ``share``, ``x`` is rows ``share.rows`` of a batch of ``share.size``: the draws are made for the
    whole batch and sliced.
    """
    n = x.shape[0] if share is None else share.size
    if crop:
        area = torch.empty(n).uniform_(scale[0], scale[1], generator=generator)
        log_r = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
        r = log_r.exp()
        cw = (area * r).sqrt().clamp(max=1.0)  # crop width / image width
        ch = (area / r).sqrt().clamp(max=1.0)
        cx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - cw)  # crop centre in [-1, 1] coordinates
        cy = (torch.rand(n, generator=generator) * 2 - 1) * (1 - ch)
    else:
        cw = ch = torch.ones(n)
        cx = cy = torch.zeros(n)
    sign = torch.ones(n)
    if flip:
        sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    if share is not None:
        cw, ch, cx, cy, sign = (v[share.rows] for v in (cw, ch, cx, cy, sign))
    if x.shape[0] == 0:
        return x
    theta = torch.zeros(x.shape[0], 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = cw * sign, cx
    theta[:, 1, 1], theta[:, 1, 2] = ch, cy
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def augment_batch(x: torch.Tensor, kind: str, generator: torch.Generator,
                  scale: tuple[float, float] = (0.5, 1.0), share: Share | None = None) -> torch.Tensor:
    """Apply augmentation ``kind`` (one of ``AUGMENTATIONS``) to a batch (or a rank's ``share`` of one)."""
    if kind == "none":
        return x
    return random_resized_crop(x, generator, scale=scale, crop="crop" in kind, flip="flip" in kind,
                               share=share)


__all__ = ["AUGMENTATIONS", "augment_batch", "random_resized_crop"]
