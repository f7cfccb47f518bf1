"""Clustering algorithms that work on feature vectors."""

from .kmeans import KMeans
from .umap_gmm import UMAPGMM

__all__ = ["KMeans", "UMAPGMM"]
