"""Each method's best measured recipe for the shape of the data: what a run gets for options left unset.

A method class lists its recipes by data shape (its ``recipes`` trait, :class:`Recipe` values). A run
looks at the loaded images, names their shape (:func:`data_shape`) and fills every option the user left
unset (``None`` in :class:`~deepclust.config.RunConfig`) from the method's recipe for that shape; an
option given on the command line always wins, and options no recipe names keep the estimator's own
default. ``config.json`` records the shape, the options the recipe set and the measurement behind it
(``resolved.recipe``), so a run says where each value came from. The README's recipe table and
``benchmarks/RESULTS.md`` hold the figures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SMALL_GREY, LARGE_GREY, COLOUR = "small-grey", "large-grey", "colour"
#: The data shapes a recipe can be for, with what each covers.
SHAPES = {
    SMALL_GREY: "one channel, at most 32 x 32 pixels (digits, MNIST, USPS)",
    LARGE_GREY: "one channel, larger than 32 x 32 pixels (COIL-20's objects)",
    COLOUR: "three channels (photographs, CIFAR-10, STL-10)",
}
SMALL_SIDE = 32  # the largest side of a "small" image


@dataclass(frozen=True)
class PerCluster:
    """A recipe value that is a multiple of the run's k (e.g. DeepCluster trains on 2k clusters)."""

    factor: int

    def of(self, n_clusters: int) -> int:
        return self.factor * n_clusters


@dataclass(frozen=True)
class Recipe:
    """Option values (``RunConfig`` field -> value) and the measurement that chose them."""

    options: Mapping[str, Any]
    evidence: str  # what these values gave, on which data, over how many seeds (RESULTS.md section)
    resize_to: int | None = field(default=None)  # images are resized to this side first (None: as they are)
    min_samples: int = 0  # the recipe applies from this many images on (it was measured on large sets)


@dataclass(frozen=True)
class UpTo:
    """A recipe value only for runs of at most ``max_samples`` images; on more, the option keeps the
    estimator's default (for a step whose time grows with the data past what its gain is worth)."""

    max_samples: int
    value: Any


def data_shape(image_shape: tuple[int, ...]) -> str:
    """The shape class of images of ``image_shape`` (H, W) or (H, W, C), as the method will see them but
    before any resizing."""
    height, width = image_shape[0], image_shape[1]
    channels = image_shape[2] if len(image_shape) > 2 else 1
    if channels >= 3:
        return COLOUR
    return SMALL_GREY if max(height, width) <= SMALL_SIDE else LARGE_GREY


def recipe_for(cls: type, image_shape: tuple[int, ...], n_samples: int) -> tuple[str, Recipe | None]:
    """The data shape of ``image_shape`` and ``cls``'s recipe for it and ``n_samples`` images (None: it
    has none)."""
    shape = data_shape(image_shape)
    recipe = getattr(cls, "recipes", {}).get(shape)
    return shape, recipe if recipe is not None and n_samples >= recipe.min_samples else None


def apply_recipe(config, cls: type, image_shape: tuple[int, ...], n_samples: int,
                 n_clusters: int | str | None) -> tuple[Any, dict | None]:
    """``config`` with the options it leaves unset filled from ``cls``'s recipe for ``n_samples`` images
    of ``image_shape``, and the record ``config.json`` keeps (``None`` when no recipe applied).

    ``--resize`` is filled too (``Recipe.resize_to``) when the images are another size: the caller
    reloads the data at that size. Options the user set are never touched.
    """
    shape, recipe = recipe_for(cls, image_shape, n_samples)
    if recipe is None:
        return config, None
    changes: dict[str, Any] = {}
    for name, value in recipe.options.items():
        if getattr(config, name) is not None:
            continue  # the user chose
        if isinstance(value, UpTo):
            if n_samples > value.max_samples:
                continue
            value = value.value
        if isinstance(value, PerCluster):
            if not isinstance(n_clusters, int):
                continue  # k is chosen later (--clusters auto): the method's own default
            value = value.of(n_clusters)
        changes[name] = value
    side = recipe.resize_to
    if side is not None and config.size is None and tuple(image_shape[:2]) != (side, side):
        changes["size"] = side
    return (dataclasses.replace(config, **changes) if changes else config,
            {"shape": shape, "options": changes, "evidence": recipe.evidence})


__all__ = ["COLOUR", "LARGE_GREY", "SHAPES", "SMALL_GREY", "PerCluster", "Recipe", "UpTo", "apply_recipe",
           "data_shape", "recipe_for"]
