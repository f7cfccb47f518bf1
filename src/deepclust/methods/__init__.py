"""Registry of clustering methods: every estimator class that declares a ``method_name``.

What a method is (its input, whether it trains a network, the options it reads) lives on its class
(:class:`deepclust.traits.MethodTraits`); the registry only maps names to classes.
"""

from __future__ import annotations

from ..cluster import SCAN, UMAPGMM, GraphDegreeLinkage, KMeans, UMAPSpectral
from ..deep import DCN, DEC, IDEC, N2D, AEKMeans, DeepCluster

METHODS: dict[str, type] = {cls.method_name: cls for cls in (
    KMeans, UMAPGMM, UMAPSpectral, GraphDegreeLinkage, SCAN, AEKMeans, DEC, IDEC, DCN, N2D, DeepCluster)}


def method_class(name: str) -> type:
    """The class registered as ``name``; unknown names get an error listing the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"Unknown method {name!r}. Available: {', '.join(sorted(METHODS))}.") from None


def get_method(name: str, **params):
    """Build the method registered as ``name`` with ``params``; unknown names list the known ones."""
    return method_class(name)(**params)


def describe_methods() -> str:
    """One line per method: its name and summary (for ``--help``)."""
    return "\n".join(f"{name:<12} {cls.summary}" for name, cls in sorted(METHODS.items()))
