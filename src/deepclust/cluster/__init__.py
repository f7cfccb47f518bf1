"""Clustering algorithms that work on feature vectors."""

from .kmeans import KMeans
from .scan import SCAN
from .umap_gmm import UMAPGMM

__all__ = ["KMeans", "SCAN", "UMAPGMM"]
