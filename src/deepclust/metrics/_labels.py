"""The one label validator every metric shares, so users see the same error messages everywhere."""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike


def check_labels(labels: ArrayLike, *, name: str = "labels") -> np.ndarray:
    """Return ``labels`` as a 1-D int64 array, or raise a ValueError that says what is wrong.

    Accepts integer, bool and integral float arrays (e.g. ``[0., 1., 1.]``), lists and tensors. Strings,
    NaN and non-integral floats are refused: encode string labels first with
    ``np.unique(labels, return_inverse=True)[1]``.
    """
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    try:
        arr = np.asarray(labels)
    except ValueError as exc:  # ragged nested lists
        raise ValueError(f"{name} must be a 1-D array of integer labels; got {type(labels).__name__} "
                         f"that numpy cannot turn into an array ({exc}).") from None
    if arr.ndim != 1:
        shape = "a scalar" if arr.ndim == 0 else f"an array of shape {arr.shape}"
        raise ValueError(f"{name} must be 1-D of shape (n_samples,); got {shape}.")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: it has 0 samples.")
    kind = arr.dtype.kind
    if kind in "biu":
        return arr.astype(np.int64, copy=False)
    if kind == "f":
        nan = np.isnan(arr)
        if nan.any():
            raise ValueError(f"{name} contains NaN at {int(nan.sum())} of {arr.shape[0]} positions "
                             f"(first: {np.flatnonzero(nan)[:5].tolist()}); every sample needs a label.")
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            raise ValueError(f"{name} must hold integer labels; got non-integer values such as "
                             f"{arr[bad][:3].tolist()}.")
        return arr.astype(np.int64)
    raise ValueError(
        f"{name} must hold integer labels; got an array of dtype {arr.dtype}. Encode other labels as "
        "integers first, e.g. np.unique(labels, return_inverse=True)[1]."
    )


def check_clusterings(labels_true: ArrayLike, labels_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate a pair of labelings: each with :func:`check_labels`, then their lengths against each other."""
    labels_true = check_labels(labels_true, name="labels_true")
    labels_pred = check_labels(labels_pred, name="labels_pred")
    if labels_true.shape[0] != labels_pred.shape[0]:
        raise ValueError(
            "labels_true and labels_pred must have the same length; got "
            f"{labels_true.shape[0]} and {labels_pred.shape[0]}."
        )
    return labels_true, labels_pred


# Labels are coded through a lookup table when their largest id is below this (or below their count):
# no sort of n values, and one (n,) array of codes instead of np.unique's several (n,) temporaries.
_TABLE_IDS = 2**16


def unique_codes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(labels, return_inverse=True)``: the sorted distinct ids and each sample's code.

    Small non-negative ids (cluster and class numbers) go through a table, which needs no sort and
    one (n,) array: on millions of labels this is most of what scoring a run holds."""
    if labels.size and labels.dtype.kind in "iu":
        low, high = int(labels.min()), int(labels.max())
        if low >= 0 and high < max(_TABLE_IDS, labels.size):
            values = np.flatnonzero(np.bincount(labels, minlength=high + 1))
            table = np.zeros(high + 1, dtype=np.intp)
            table[values] = np.arange(values.size)
            return values.astype(labels.dtype), table[labels]
    values, codes = np.unique(labels, return_inverse=True)
    return values, codes.reshape(-1)
