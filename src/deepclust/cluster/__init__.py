"""Clustering algorithms that work on feature vectors."""

from .kmeans import KMeans
from .scan import SCAN
from .umap_gmm import UMAPGMM
from .umap_spectral import UMAPSpectral

__all__ = ["KMeans", "SCAN", "UMAPGMM", "UMAPSpectral"]
