"""Clustering algorithms that work on feature vectors."""

from .kmeans import KMeans
from .scan import SCAN

__all__ = ["KMeans", "SCAN"]
