"""UMAP (McInnes, Healy & Melville 2018) of an embedding, seeded and single-threaded so it repeats."""

from __future__ import annotations

import numpy as np

from ._numba_cache import enable_umap_cache


def umap_embed(Z: np.ndarray, n_components: int, n_neighbors: int, min_dist: float, seed: int, *,
               metric: str = "euclidean", n_epochs: int | None = None) -> np.ndarray:
    """UMAP of ``Z`` (n, d) to (n, n_components) float32.

    ``n_jobs=1`` with a ``random_state``: umap-learn's parallel path gives different layouts run to run.
    ``n_neighbors`` is capped at n - 1 so tiny data sets work. ``n_epochs``: the layout's epochs
    (None: umap-learn's 500 below 10,000 points, 200 above).
    """
    try:
        import umap
    except ImportError:
        raise ImportError("The UMAP stage needs umap-learn: pip install umap-learn.") from None
    enable_umap_cache()  # later processes load umap-learn's compiled code instead of compiling it
    if n_components >= Z.shape[0]:
        raise ValueError(f"UMAP to {n_components} dimensions needs more than {n_components} samples; got "
                         f"{Z.shape[0]}. Map to fewer dimensions (--umap-dim).")
    n_neighbors = min(n_neighbors, Z.shape[0] - 1)
    reducer = umap.UMAP(n_components=n_components, n_neighbors=n_neighbors, min_dist=min_dist,
                        metric=metric, random_state=seed, n_jobs=1, n_epochs=n_epochs)
    return reducer.fit_transform(Z).astype(np.float32)
