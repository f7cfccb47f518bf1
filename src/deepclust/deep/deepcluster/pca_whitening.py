"""PCA, whitening and L2 normalisation of features: DeepCluster's preprocessing before k-means.

Fitted in float64 from the eigen-decomposition of the covariance, so the whitened output has
identity covariance (up to ``eps``) and, after L2 normalisation, unit rows. The same as
``faiss.PCAMatrix(d_in, d_out, eigen_power=-0.5)`` followed by row normalisation.

Across ranks (``fit(X_shard, distributed=True)`` under torchrun) the PCA is fitted from the mean and
covariance of all ranks' rows: each rank adds up its own rows' sums and centred cross-products, and the
sums of the ranks are added in rank order in float64, so every rank holds the same bits and the axes
are one process's up to float64 rounding. Only O(d^2) numbers cross between ranks, whatever the number
of rows, and nothing is sampled.
"""

from __future__ import annotations

import numpy as np
import torch

from ... import distributed as D


class PCAWhitening:
    """Project on the top ``n_components`` principal axes, scale each to unit variance, L2-normalise.

    Parameters
    ----------
    n_components : int
        Output dimension; capped at the feature dimension and at ``n_samples - 1``.
    whiten : bool, default=True
        Divide each component by its standard deviation.
    l2_normalize : bool, default=True
        Scale each output row to unit Euclidean norm.
    eps : float, default=1e-6
        Added to each variance, relative to the largest one, so near-zero directions stay finite.

    Attributes
    ----------
    mean_ (d_in,), components_ (n_components_, d_in), explained_variance_ (n_components_,),
    n_components_ : the output dimension actually used.
    """

    def __init__(self, n_components: int = 256, *, whiten: bool = True, l2_normalize: bool = True,
                 eps: float = 1e-6):
        if (isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer))
                or n_components < 1):
            raise ValueError(f"n_components (pca_dim) must be an integer >= 1; got {n_components!r}.")
        self.n_components = int(n_components)
        self.whiten = whiten
        self.l2_normalize = l2_normalize
        self.eps = eps

    def fit(self, X, *, distributed: bool = False) -> PCAWhitening:
        """Fit on the rows of ``X`` (n, d). ``distributed=True`` under torchrun (a collective: every rank
        calls it): ``X`` is this rank's shard and the fit is on all ranks' rows (module docstring)."""
        X = _as_float64(X)
        d = X.shape[1]
        if distributed and D.is_distributed():
            stats = D.sum_in_rank_order(torch.cat([torch.tensor([float(X.shape[0])], dtype=torch.float64),
                                                   X.sum(dim=0)]))
            n = int(stats[0])
            mean = stats[1:] / max(n, 1)
            Xc = X - mean
            cross = D.sum_in_rank_order(Xc.T @ Xc)  # (d, d): every rank's centred cross-products
        else:
            n = X.shape[0]
            mean = X.mean(dim=0)
            Xc = X - mean
            cross = Xc.T @ Xc
        if n < 2:
            raise ValueError(f"PCA needs at least 2 samples; got {n}.")
        self.mean_ = mean
        cov = cross / (n - 1)  # (d, d)
        variance, axes = torch.linalg.eigh(cov)  # ascending
        order = torch.argsort(variance, descending=True)
        k = min(self.n_components, d, n - 1)
        self.explained_variance_ = variance[order[:k]].clamp_min(0.0)
        self.components_ = axes[:, order[:k]].T.contiguous()  # (k, d)
        # A fixed sign per axis (largest coefficient positive), so refits give the same output.
        signs = torch.sign(self.components_.gather(1, self.components_.abs().argmax(1, keepdim=True)))
        self.components_ *= torch.where(signs == 0, torch.ones_like(signs), signs)
        floor = self.eps * float(self.explained_variance_.max().clamp_min(1e-30))
        self.scale_ = (1.0 / torch.sqrt(self.explained_variance_ + floor) if self.whiten
                       else torch.ones_like(self.explained_variance_))
        self.n_components_ = k
        return self

    def transform(self, X) -> torch.Tensor:
        """(n, d_in) -> (n, n_components_) float32."""
        if not hasattr(self, "components_"):
            raise RuntimeError("PCAWhitening is not fitted yet; call fit(X) first.")
        X = _as_float64(X)
        if X.shape[1] != self.mean_.shape[0]:
            raise ValueError(f"X has {X.shape[1]} features; the PCA was fitted on {self.mean_.shape[0]}.")
        Z = (X - self.mean_) @ self.components_.T * self.scale_
        if self.l2_normalize:
            Z = Z / Z.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return Z.float()

    def fit_transform(self, X) -> torch.Tensor:
        return self.fit(X).transform(X)

    def state(self) -> dict[str, torch.Tensor]:
        """The fitted arrays, for saving beside a model."""
        return {"mean": self.mean_, "components": self.components_, "scale": self.scale_}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], *, l2_normalize: bool = True) -> PCAWhitening:
        pca = cls(int(state["components"].shape[0]), l2_normalize=l2_normalize)
        pca.mean_ = state["mean"].double()
        pca.components_ = state["components"].double()
        pca.scale_ = state["scale"].double()
        pca.explained_variance_ = 1.0 / pca.scale_.pow(2)
        pca.n_components_ = int(pca.components_.shape[0])
        return pca


def _as_float64(X) -> torch.Tensor:
    X = X.detach().cpu() if isinstance(X, torch.Tensor) else torch.from_numpy(np.asarray(X))
    if X.dim() != 2:
        raise ValueError(f"Features must be a 2-D array (n_samples, n_features); got shape {tuple(X.shape)}.")
    return X.double()


__all__ = ["PCAWhitening"]
