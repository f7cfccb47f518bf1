"""What a clustering method *is*, declared on its class so the registry, the CLI and the pipeline read it.

Every registered estimator inherits :class:`MethodTraits` and sets the class attributes that differ
from the defaults. Nothing else in the package keeps lists of method names: a run asks the class.
"""

from __future__ import annotations

from typing import ClassVar

VECTORS, IMAGES = "vectors", "images"
_CLASSES: dict[str, type] = {}  # every estimator class with traits, by class name (saved models name it)


def estimator_class(name: str) -> type | None:
    """The estimator class called ``name`` (as a saved ``model.json`` names it), or None."""
    return _CLASSES.get(name)


def method_names() -> list[str]:
    """The ``method_name`` of every estimator class defined so far (``import deepclust`` defines them
    all); for readers of saved files, which must not import the registry's packages back."""
    return sorted({cls.method_name for cls in _CLASSES.values() if cls.method_name})


class MethodTraits:
    """Class-level description of a clustering method (no state, no ``__init__``).

    Attributes
    ----------
    method_name : str or None
        The name it is registered under (``deepclust run --method NAME``); None: not a run method.
    summary : str
        One line for ``--help`` and the docs.
    input_kind : {"vectors", "images"}
        ``vectors``: flattened pixels or feature vectors (n, d); ``images``: (n, h, w, c) arrays.
    trains_network : bool
        It trains a network, so a run saves ``history.csv``, ``embeddings.npy`` and resumable
        ``checkpoints/``, keeps a failed run's folder, and logs ACC/NMI per epoch when labels exist
        (labels never train it).
    saves_model : bool
        A run saves it in ``model/`` (safetensors + JSON) for ``predict``; without it, ``predict``
        assigns new points to the nearest of the saved ``cluster_centers.npy``.
    pretrains_autoencoder : bool
        Its fit is exactly autoencoder pretraining plus k-means on the embedding, so a protocol that
        pretrains one shared autoencoder per fold can use that fit as this method's result.
    reuses_autoencoder : bool
        It can start from an autoencoder pretrained elsewhere (``autoencoder=``), skipping pretraining.
    option_groups : tuple of str
        The groups of run options it reads (see :data:`deepclust.config.OPTION_GROUPS`).
    fits_across_processes : bool
        Under ``torchrun`` its ``fit`` is collective. A method that trains a network is given all the
        rows on every process (read by index; each trains on its share of every batch); the others are
        given the process's contiguous shard of the rows.
    recipes : dict
        Its best measured options by data shape (:mod:`deepclust.recipes`): what a run fills in for the
        options the user leaves unset.
    """

    method_name: ClassVar[str | None] = None
    summary: ClassVar[str] = ""
    input_kind: ClassVar[str] = VECTORS
    trains_network: ClassVar[bool] = False
    saves_model: ClassVar[bool] = False
    pretrains_autoencoder: ClassVar[bool] = False
    reuses_autoencoder: ClassVar[bool] = False
    option_groups: ClassVar[tuple[str, ...]] = ()
    fits_across_processes: ClassVar[bool] = False
    recipes: ClassVar[dict] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _CLASSES[cls.__name__] = cls

    @classmethod
    def traits(cls) -> dict:
        """The traits as a dict (for ``config.json`` and tests)."""
        names = ("method_name", "summary", "input_kind", "trains_network", "saves_model",
                 "pretrains_autoencoder", "reuses_autoencoder", "option_groups", "fits_across_processes")
        return {name: getattr(cls, name) for name in names}
