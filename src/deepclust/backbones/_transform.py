"""How a backbone wants its pixels: resize rule, size and normalisation, as one picklable value.

:class:`Preprocessing` turns one decoded Pillow image (any mode) or uint8 (h, w, c) array into a uint8
(3, H, W) tensor at the backbone's input size (done per image, in DataLoader workers), and a uint8 batch
into the normalised float tensor the network takes (done per batch). Grey images become RGB (R = G = B).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from ..data._images import _to_array

RESIZE_RULES = ("squash", "shorter-side-then-center-crop")
_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclass(frozen=True)
class Preprocessing:
    """Resize then normalise.

    ``resize="squash"`` resizes straight to ``input_size`` (aspect ratio not kept, nothing cut);
    ``"shorter-side-then-center-crop"`` scales the shorter side to ``resize_size`` and crops the centre
    ``input_size``. Pillow's filters antialias when shrinking. ``mean``/``std`` apply to values in [0, 1].
    """

    input_size: tuple[int, int]  # (height, width)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str = "squash"
    resize_size: int | None = None  # shorter side before the crop; only for the crop rule
    interpolation: str = "bilinear"

    def __post_init__(self):
        if self.resize not in RESIZE_RULES:
            raise ValueError(f"resize must be one of {RESIZE_RULES}; got {self.resize!r}.")
        if self.interpolation not in _FILTERS:
            raise ValueError(f"interpolation must be one of {tuple(_FILTERS)}; got {self.interpolation!r}.")

    def identity(self) -> dict:
        """Everything that changes the pixels the network sees (part of the feature-cache key)."""
        out = asdict(self)
        out["input_size"] = list(self.input_size)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        out["jpeg_draft"] = True
        return out

    def describe(self) -> str:
        h, w = self.input_size
        if self.resize == "squash":
            how = f"{self.interpolation} resize to {h}x{w}"
        else:
            how = (f"{self.interpolation} resize of the shorter side to {self.resize_size}, "
                   f"centre crop {h}x{w}")
        return f"{how}, mean={list(self.mean)}, std={list(self.std)}"

    # -- one image -------------------------------------------------------------------------------
    def image_to_uint8(self, img: Image.Image) -> np.ndarray:
        """One Pillow image (any mode) -> (H, W, 3) uint8 at the input size."""
        h, w = self.input_size
        # JPEGs decode straight at 1/2, 1/4 or 1/8 scale when that stays above the target: much faster
        # for large photos, and deterministic.
        img.draft(img.mode, (w, h) if self.resize == "squash" else (self.resize_size, self.resize_size))
        arr, _ = _to_array(img, None)  # grey, palette, 16-bit, CMYK, alpha -> L or RGB, uint8
        return self.array_to_uint8(arr)

    def array_to_uint8(self, arr: np.ndarray) -> np.ndarray:
        """One uint8 (h, w), (h, w, 1) or (h, w, 3) image -> (H, W, 3) uint8 at the input size."""
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        pil = Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8))
        if pil.mode != "RGB":
            pil = pil.convert("RGB")
        h, w = self.input_size
        flt = _FILTERS[self.interpolation]
        if self.resize == "squash":
            if pil.size != (w, h):
                pil = pil.resize((w, h), flt)
        else:
            scale = self.resize_size / min(pil.size)
            new = (max(w, round(pil.size[0] * scale)), max(h, round(pil.size[1] * scale)))
            if pil.size != new:
                pil = pil.resize(new, flt)
            left, top = (new[0] - w) // 2, (new[1] - h) // 2
            pil = pil.crop((left, top, left + w, top + h))
        return np.array(pil)  # a writable copy (torch.from_numpy warns on read-only arrays)

    # -- a batch ---------------------------------------------------------------------------------
    def normalise(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> float32 (B, 3, H, W), (x / 255 - mean) / std."""
        mean = torch.tensor(self.mean, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
        return (batch.float() / 255.0 - mean) / std

    def __call__(self, images) -> torch.Tensor:
        """uint8 images (N, h, w, c), (N, h, w) or one (h, w, c) -> normalised float32 (N, 3, H, W)."""
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (0..255); got dtype {images.dtype}. Convert with "
                             "(x * 255).round().astype('uint8') if they are floats in [0, 1].")
        if images.ndim == 3 and images.shape[-1] in (1, 3):
            images = images[np.newaxis]
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
            raise ValueError("images must have shape (n, height, width, channels) with 1 or 3 channels, "
                             f"(n, height, width) or (height, width, channels); got {images.shape}.")
        batch = np.stack([self.array_to_uint8(a) for a in images])  # (N, H, W, 3)
        return self.normalise(torch.from_numpy(batch).permute(0, 3, 1, 2))
