"""Input checks shared by every estimator: one place for the error messages users see."""

from __future__ import annotations

import numbers

import numpy as np
import torch


def check_features(X, *, name: str = "X", dtype=np.float32) -> np.ndarray:
    """Return ``X`` as a C-contiguous 2-D float array, or raise a ValueError that says what is wrong.

    Images of shape (n_samples, ...) are flattened to (n_samples, n_features).
    """
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    X = np.asarray(X)
    if X.dtype == object or not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise ValueError(f"{name} must hold numbers; got an array of dtype {X.dtype}.")
    if X.ndim == 1:
        raise ValueError(
            f"{name} must be 2-D (n_samples, n_features) or images (n_samples, ...); got a 1-D array of "
            f"shape {X.shape}. Reshape it with X.reshape(-1, 1) for one feature or X.reshape(1, -1) "
            "for one sample."
        )
    if X.ndim == 0:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features); got a scalar.")
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty: it has 0 samples.")
    X = X.reshape(X.shape[0], -1)
    if X.shape[1] == 0:
        raise ValueError(f"{name} has 0 features per sample.")
    X = np.ascontiguousarray(X, dtype=dtype)
    if not X.flags.writeable:  # read-only memmaps: torch.from_numpy needs a writable buffer
        X = X.copy()
    # One float64 sum is finite exactly when no entry is NaN/inf (barring overflow): a cheap first test.
    if not np.isfinite(X.sum(dtype=np.float64)) and not np.isfinite(X).all():
        bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
        raise ValueError(
            f"{name} contains NaN or infinite values in {bad.size} of {X.shape[0]} samples "
            f"(first rows: {bad[:5].tolist()}). Remove or impute them before clustering."
        )
    return X


def check_n_clusters(n_clusters, n_samples: int) -> int:
    """Validate a number of clusters against the number of samples."""
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, numbers.Integral):
        raise ValueError(f"n_clusters must be an integer >= 1; got {n_clusters!r}.")
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be >= 1; got {n_clusters}.")
    if n_clusters > n_samples:
        raise ValueError(
            f"n_clusters={n_clusters} is larger than the number of samples ({n_samples}): every "
            "cluster needs at least one sample. Use fewer clusters or more data."
        )
    return int(n_clusters)


def check_positive_int(value, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def check_random_state(seed) -> np.random.Generator:
    """Turn None, an int or a Generator into a numpy Generator."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or (isinstance(seed, numbers.Integral) and not isinstance(seed, bool)):
        return np.random.default_rng(seed)
    raise ValueError(f"random_state must be None, an int or a numpy Generator; got {seed!r}.")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Map "auto"/None to CUDA when available, else CPU; fail clearly when CUDA is asked for but absent."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but no CUDA device is available; use device='cpu'.")
    return device
