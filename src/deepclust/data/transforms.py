"""Image-batch transforms: pure numpy functions on (n_samples, height, width, channels) arrays.

``prepare_features`` chains them in the usual order (grey, resize, scale, Sobel, flatten)
to turn a data set into the float32 matrix the clustering methods take.
"""

from __future__ import annotations

import numbers

import numpy as np
from PIL import Image

from ._base import ImageDataset

# ITU-R BT.601 luma weights, as used by Pillow's convert("L") and most image libraries.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float64)

SOBEL_X = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=np.float32)
SOBEL_Y = SOBEL_X.T.copy()


def check_images(images, *, name: str = "images") -> np.ndarray:
    """Return ``images`` as an (n, h, w, c) array with c in {1, 3}; (n, h, w) gains a channel axis."""
    if isinstance(images, ImageDataset):
        images = images.images
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"{name} must have shape (n_samples, height, width, channels) with 1 or 3 channels, or "
            f"(n_samples, height, width) for grey images; got shape {images.shape}."
        )
    if not (np.issubdtype(images.dtype, np.number) or images.dtype == bool):
        raise ValueError(f"{name} must hold numbers; got dtype {images.dtype}.")
    return images


def check_size(size) -> tuple[int, int] | None:
    """Turn ``size`` (None, int, or (height, width)) into (height, width), or raise a ValueError."""
    if size is None:
        return None
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        pair = (int(size), int(size))
    else:
        try:
            pair = tuple(int(s) for s in size)
        except (TypeError, ValueError):
            pair = ()
        if len(pair) != 2 or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in size):
            raise ValueError(f"size must be an int or a (height, width) pair of ints; got {size!r}.")
    if min(pair) < 1:
        raise ValueError(f"size must be positive; got {size!r}.")
    return pair


def to_grayscale(images: np.ndarray) -> np.ndarray:
    """Convert RGB images to one luma channel, Y = 0.299 R + 0.587 G + 0.114 B (ITU-R 601).

    uint8 input gives uint8 (rounded) output of shape (n, h, w, 1); float input gives float32.
    Grey input is returned unchanged.
    """
    images = check_images(images)
    if images.shape[-1] == 1:
        return images
    luma = images.astype(np.float64) @ LUMA_WEIGHTS  # (N, H, W)
    if images.dtype == np.uint8:
        return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., np.newaxis]
    return luma.astype(np.float32)[..., np.newaxis]


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize one (h, w, c) image to ``size`` = (height, width) with Pillow's antialiased bilinear filter."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    if image.dtype == np.uint8:
        mode = "L" if image.shape[-1] == 1 else "RGB"
        pil = Image.fromarray(image[..., 0] if mode == "L" else image, mode=mode)
        out = np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR))
        return out.reshape(height, width, image.shape[-1])
    # Float images: resize each channel in Pillow's 32-bit float mode to keep the values exact.
    channels = [
        np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32), mode="F")
                   .resize((width, height), Image.Resampling.BILINEAR))
        for c in range(image.shape[-1])
    ]
    return np.stack(channels, axis=-1)


def resize(images: np.ndarray, size) -> np.ndarray:
    """Resize a batch to ``size`` (int for square, or (height, width)); bilinear with antialiasing.

    uint8 stays uint8; other dtypes come back float32.
    """
    images = check_images(images)
    target = check_size(size)
    if target is None or images.shape[1:3] == target:
        return images
    dtype = np.uint8 if images.dtype == np.uint8 else np.float32
    out = np.empty((images.shape[0], *target, images.shape[-1]), dtype=dtype)
    for i, image in enumerate(images):
        out[i] = resize_image(image if dtype == np.uint8 else image.astype(np.float32), target)
    return out


def to_float(images: np.ndarray, normalize: str | None = "unit", *, mean=None, std=None,
             return_stats: bool = False):
    """Convert images to float32 (n, h, w, c).

    Parameters
    ----------
    images : array of shape (n, h, w, c)
        uint8 images are divided by 255 first; float images are taken to be in [0, 1] already.
    normalize : {"unit", "standard", None}, default="unit"
        ``"unit"``: values in [0, 1]. ``"standard"``: then per channel ``(x - mean) / std``, with
        ``mean``/``std`` computed on this batch unless given (pass the training set's stats to
        transform a test set the same way). A channel with std 0 is divided by 1.
        ``None``: cast only (uint8 keeps 0..255).
    mean, std : array-like of shape (c,), optional
        Channel statistics, in [0, 1] units, for ``normalize="standard"``.
    return_stats : bool, default=False
        Also return ``(mean, std)`` (float32, shape (c,)) used by ``"standard"``.

    Returns
    -------
    x : ndarray, float32, shape (n, h, w, c)
    mean, std : ndarray
        Only when ``return_stats=True`` (None for other normalisations).
    """
    images = check_images(images)
    if normalize not in ("unit", "standard", None):
        raise ValueError(f"normalize must be 'unit', 'standard' or None; got {normalize!r}.")
    x = images.astype(np.float32)
    if normalize is not None and images.dtype == np.uint8:
        x /= 255.0
    stats_mean = stats_std = None
    if normalize == "standard":
        n_channels = x.shape[-1]
        if mean is None:
            stats_mean = x.mean(axis=(0, 1, 2), dtype=np.float64).astype(np.float32)
        else:
            stats_mean = _channel_stat(mean, n_channels, "mean")
        if std is None:
            stats_std = x.std(axis=(0, 1, 2), dtype=np.float64).astype(np.float32)
        else:
            stats_std = _channel_stat(std, n_channels, "std")
        if np.any(stats_std < 0):
            raise ValueError(f"std must be non-negative; got {stats_std.tolist()}.")
        safe_std = np.where(stats_std > 0, stats_std, np.float32(1.0))
        x -= stats_mean
        x /= safe_std
    if return_stats:
        return x, stats_mean, stats_std
    return x


def _channel_stat(value, n_channels: int, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float32).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, n_channels)
    if arr.size != n_channels:
        raise ValueError(f"{name} must have one value per channel ({n_channels}); got {arr.size} values.")
    return arr


def sobel(images: np.ndarray) -> np.ndarray:
    """Horizontal and vertical Sobel responses (Gx, Gy) of the grey image, float32 (n, h, w, 2).

    Kernels ``[[1, 0, -1], [2, 0, -2], [1, 0, -1]]`` and its transpose, applied as a
    cross-correlation (like ``torch.nn.functional.conv2d``) with zero padding, so the output
    keeps the input size. Colour input is first turned to luma; values are used as given
    (uint8 is not rescaled), so scale first with :func:`to_float` if you want [0, 1] input.
    The signed responses are kept (DeepCluster's Sobel input); take ``np.hypot`` for magnitudes.
    """
    images = check_images(images)
    grey = images.astype(np.float32)
    if grey.shape[-1] == 3:
        grey = (grey.astype(np.float64) @ LUMA_WEIGHTS).astype(np.float32)[..., np.newaxis]
    n, height, width, _ = grey.shape
    padded = np.zeros((n, height + 2, width + 2), dtype=np.float32)
    padded[:, 1:-1, 1:-1] = grey[..., 0]
    out = np.zeros((n, height, width, 2), dtype=np.float32)
    for dy in range(3):
        for dx in range(3):
            window = padded[:, dy:dy + height, dx:dx + width]  # (N, H, W): pixel (i+dy-1, j+dx-1)
            if SOBEL_X[dy, dx]:
                out[..., 0] += SOBEL_X[dy, dx] * window
            if SOBEL_Y[dy, dx]:
                out[..., 1] += SOBEL_Y[dy, dx] * window
    return out


def flatten(x: np.ndarray) -> np.ndarray:
    """Reshape (n, ...) to (n, features): one row per image."""
    x = np.asarray(x)
    if x.ndim < 1:
        raise ValueError("flatten needs an array with a sample axis; got a scalar.")
    return x.reshape(x.shape[0], -1)


def prepare_features(dataset_or_images, *, grayscale: bool = False, size=None, normalize: str | None = "unit",
                     sobel: bool = False, flatten: bool = True) -> np.ndarray:
    """Turn a data set (or image batch) into float32 features for clustering.

    Steps, in order: :func:`to_grayscale` (if ``grayscale``), :func:`resize` (if ``size``),
    :func:`to_float` with ``normalize``, :func:`sobel` (if ``sobel``), :func:`flatten` (if ``flatten``).

    Returns
    -------
    ndarray, float32
        (n, h*w*c) when ``flatten``, else (n, h, w, c) (c = 2 after Sobel).
    """
    images = check_images(dataset_or_images)
    if grayscale:
        images = to_grayscale(images)
    if size is not None:
        images = resize(images, size)
    x = to_float(images, normalize)
    if sobel:
        x = _sobel(x)
    if flatten:
        x = _flatten(x)
    return np.ascontiguousarray(x, dtype=np.float32)


# prepare_features' keyword arguments shadow the function names inside it.
_sobel = sobel
_flatten = flatten
