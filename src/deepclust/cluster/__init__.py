"""Clustering algorithms that work on feature vectors."""

from .graph_linkage import GraphDegreeLinkage
from .kmeans import KMeans
from .scan import SCAN
from .umap_gmm import UMAPGMM
from .umap_spectral import UMAPSpectral

__all__ = ["GraphDegreeLinkage", "KMeans", "SCAN", "UMAPGMM", "UMAPSpectral"]
