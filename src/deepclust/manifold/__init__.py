"""The optional manifold stage: a low-dimensional map of an embedding that keeps its neighbourhoods."""

from .umap import umap_embed

__all__ = ["umap_embed"]
