"""Registry of clustering methods: one name per method, one constructor per name."""

from __future__ import annotations

from ..cluster import KMeans
from ..deep import DCN, DEC, IDEC, N2D, AEKMeans, DeepCluster

METHODS: dict[str, type] = {
    "kmeans": KMeans,
    "ae-kmeans": AEKMeans,
    "dec": DEC,
    "idec": IDEC,
    "dcn": DCN,
    "n2d": N2D,
    "deepcluster": DeepCluster,
}
# Methods that train a network on images (not flat pixels), log per-epoch history and save a model.
DEEP_METHODS = ("ae-kmeans", "dec", "idec", "dcn", "n2d", "deepcluster")


def get_method(name: str, **params):
    """Build the method registered as ``name`` with ``params``; unknown names list the known ones."""
    try:
        cls = METHODS[name]
    except KeyError:
        raise ValueError(f"Unknown method {name!r}. Available: {', '.join(sorted(METHODS))}.") from None
    return cls(**params)
