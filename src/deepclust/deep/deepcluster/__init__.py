"""DeepCluster (Caron et al. 2018): the method (``method.py``) and its parts, one file each: random
resized crops and flips, empty-cluster repair, PCA-whitening, uniform sampling over pseudo-classes."""

from .method import DeepCluster

__all__ = ["DeepCluster"]
