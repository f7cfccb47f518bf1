"""Decode many image files with Pillow into one uint8 batch: one colour mode, one size, bad files handled."""

from __future__ import annotations

import warnings
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from typing import IO

import numpy as np
from PIL import Image

from ..progress import progress
from .transforms import LUMA_WEIGHTS, resize_image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

_GREY_MODES = {"1", "L", "LA", "La"}
_HIGH_DEPTH_GREY_MODES = {"I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
_PALETTE_MODES = {"P", "PA"}
# What Pillow raises for a file that is not an image, is truncated or is otherwise damaged.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError,
                  zipfile.BadZipFile)

Source = tuple[str, Callable[[], "str | IO[bytes]"]]


def is_image_name(name: str) -> bool:
    """True for a non-hidden file name with an accepted image extension (case-insensitive)."""
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


def _to_array(img: Image.Image, size: tuple[int, int] | None) -> tuple[np.ndarray, bool]:
    """Decode one Pillow image to (h, w, 1) or (h, w, 3) uint8; return it and whether it is colour."""
    mode = img.mode
    if mode in _PALETTE_MODES:
        rgb = img.convert("RGB")
        arr = np.asarray(rgb)
        # A palette of greys is a grey image.
        if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
            img = rgb.convert("L")
        else:
            img = rgb
    elif mode in _GREY_MODES:
        img = img.convert("L")
    elif mode in _HIGH_DEPTH_GREY_MODES:
        values = np.asarray(img, dtype=np.float64)
        peak = values.max() if values.size else 0.0
        # 16-bit images use 0..65535: scale them (Pillow's own convert("L") would clip at 255).
        # Mode "I" (32-bit int) and "F" (float) carry no depth, so guess it from the values.
        if mode.startswith("I;16") or peak > 255:
            values = values * (255.0 / 65535.0)
        elif mode == "F" and peak <= 1.0:
            values = values * 255.0
        img = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
    elif mode != "RGB":
        img = img.convert("RGB")  # RGBA, CMYK, YCbCr, LAB, ...: drop alpha, convert colour space
    if size is not None and img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    arr = np.asarray(img)
    if arr.ndim == 2:
        return arr[..., np.newaxis], False
    return arr, True


def decode_images(sources: Sequence[Source], *, size: tuple[int, int] | None, on_error: str,
                  where: str, channels: int | None = None, desc: str = "Decoding images",
                  ) -> tuple[np.ndarray | None, list[int]]:
    """Decode ``sources`` (display name, opener) into an (n, h, w, c) uint8 array.

    Grey images give c = 1 only if every image is grey; otherwise all become RGB. Without
    ``size``, images of different sizes are resized to the most common size (with a warning).
    ``channels`` (1 or 3) forces the colour mode. Unreadable files are skipped with a warning
    (``on_error="skip"``) or raise a ValueError naming the file (``on_error="raise"``).

    Returns the array (None if no image could be read) and the indices of the decoded sources.
    """
    arrays: list[np.ndarray] = []
    kept: list[int] = []
    any_colour = False
    for i, (name, opener) in enumerate(progress(sources, total=len(sources), desc=desc, unit="img")):
        try:
            with Image.open(opener()) as img:
                if size is not None:
                    # JPEG can decode straight at 1/2, 1/4 or 1/8 scale (never below `size`): much faster.
                    img.draft(img.mode, (size[1], size[0]))
                arr, colour = _to_array(img, size)
        except _DECODE_ERRORS as exc:
            if on_error == "raise":
                raise ValueError(f"Cannot read image file {name}: {exc}. Fix or delete it, or leave "
                                 "unreadable files out (on_error='skip'; deepclust predict "
                                 "--skip-unreadable).") from exc
            warnings.warn(f"Skipping unreadable image file {name}: {exc}", UserWarning, stacklevel=3)
            continue
        arrays.append(arr)
        kept.append(i)
        any_colour |= colour
    if not arrays:
        return None, kept

    n_channels = channels if channels is not None else (3 if any_colour else 1)
    if size is None:
        shapes = Counter(a.shape[:2] for a in arrays)
        target = shapes.most_common(1)[0][0]
        if len(shapes) > 1:
            warnings.warn(
                f"Images in {where} have {len(shapes)} different sizes; resized all {len(arrays)} to the "
                f"most common size {target[0]}x{target[1]} (height x width, {shapes[target]} images). "
                "Pass size=(height, width) or size=N (square) to choose the size.",
                UserWarning, stacklevel=3,
            )
    else:
        target = size
    out = np.empty((len(arrays), target[0], target[1], n_channels), dtype=np.uint8)
    for j, arr in enumerate(arrays):
        arr = resize_image(arr, target)
        if arr.shape[-1] != n_channels:
            arr = _match_channels(arr, n_channels)
        out[j] = arr
        arrays[j] = None  # free as we go: peak memory stays near one copy
    return out, kept


def _match_channels(arr: np.ndarray, n_channels: int) -> np.ndarray:
    if n_channels == 3:
        return np.repeat(arr, 3, axis=-1)  # grey -> RGB: R = G = B, as Pillow's convert("RGB")
    luma = arr.astype(np.float64) @ LUMA_WEIGHTS
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., np.newaxis]
