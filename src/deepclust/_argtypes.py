"""argparse ``type=`` checks of the numeric and path options, so a bad value is refused while parsing
(``deepclust run: error: argument --batch-size: ...``) before anything runs.

:func:`apply` sets them on a parser's options by destination, so the option definitions stay as they are.
The same rules are enforced for the Python API by :func:`deepclust.pipeline.validate.validate`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def whole(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An integer in [minimum, maximum]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number; got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and <= {maximum}" if maximum is not None else ""
            raise argparse.ArgumentTypeError(f"must be >= {minimum}{upper}; got {value}")
        return value

    parse.__name__ = "whole number"
    return parse


def finite(*, zero: bool = False) -> Callable[[str], float]:
    """A finite float > 0 (>= 0 with ``zero``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
            bound = ">= 0" if zero else "> 0"
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}; got {text}")
        return value

    parse.__name__ = "number"
    return parse


def non_empty(text: str) -> str:
    """A path or name that is not empty ("" would mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _validators() -> dict[str, Callable[[str], object]]:
    from .pipeline.validate import MAX_BATCH_SIZE, MAX_RESIZE, MAX_SEED

    return {
        "seed": whole(0, MAX_SEED), "resize": whole(1, MAX_RESIZE), "n_init": whole(1),
        "pretrain": whole(0), "cluster": whole(0), "layerwise": whole(0),
        "batch_size": whole(1, MAX_BATCH_SIZE), "umap_neighbors": whole(2), "umap_dim": whole(1),
        "self_label_rounds": whole(0), "self_label_students": whole(0),
        "self_label_epochs": whole(1),
        "scan_neighbors": whole(1), "scan_epochs": whole(1),
        "backbone": non_empty, "backbone_weights": non_empty, "feature_cache": non_empty,
        "dc_epochs": whole(1), "pca_dim": whole(1), "train_clusters": whole(1),
        "lr": finite(), "cluster_lr": finite(), "dc_lr": finite(), "noise": finite(zero=True),
        "self_label_smoothing": finite(zero=True),
        "dataset": non_empty, "data_dir": non_empty, "resume": non_empty, "from_run": non_empty,
        "out": non_empty, "arch": non_empty, "run_dir": non_empty,
    }


def apply(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Set the checks above as ``type`` of ``parser``'s options (by ``dest``); returns ``parser``."""
    checks = _validators()
    for action in parser._actions:
        if action.dest in checks and action.nargs in (None, "?"):
            action.type = checks[action.dest]
    return parser


__all__ = ["apply", "finite", "non_empty", "whole"]
