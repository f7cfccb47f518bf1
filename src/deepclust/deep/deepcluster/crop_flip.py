"""Standard augmentation in torch: random resized crop and horizontal flip, batched.

Each image gets its own crop (area fraction in ``scale``, aspect ratio in ``ratio``, anywhere in the
image) resized back to the input size with bilinear sampling, and is mirrored with probability
1/2 when ``flip``. Drawn from a ``torch.Generator``, so runs repeat.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("none", "crop", "flip", "crop+flip")


def random_resized_crop(x: torch.Tensor, generator: torch.Generator, *,
                        scale: tuple[float, float] = (0.5, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        crop: bool = True, flip: bool = False) -> torch.Tensor:
    """Randomly crop (and flip) each image of ``x`` (N, C, H, W); the output has the same shape."""
    n = x.shape[0]
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
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = cw * sign, cx
    theta[:, 1, 1], theta[:, 1, 2] = ch, cy
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def augment_batch(x: torch.Tensor, kind: str, generator: torch.Generator,
                  scale: tuple[float, float] = (0.5, 1.0)) -> torch.Tensor:
    """Apply augmentation ``kind`` (one of ``AUGMENTATIONS``) to a batch."""
    if kind == "none":
        return x
    return random_resized_crop(x, generator, scale=scale, crop="crop" in kind, flip="flip" in kind)


__all__ = ["AUGMENTATIONS", "augment_batch", "random_resized_crop"]
