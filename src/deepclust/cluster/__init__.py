"""Clustering algorithms that work on feature vectors."""

from .kmeans import KMeans

__all__ = ["KMeans"]
