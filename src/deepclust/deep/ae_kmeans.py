"""AE + k-means: k-means on the embedding of a pretrained autoencoder (the seeds' second step)."""

from __future__ import annotations

from .base import DeepClusterer, Initialization


class AEKMeans(DeepClusterer):
    """Pretrain an autoencoder, then run k-means on its embedding; nothing is fine-tuned.

    All parameters are those of :class:`~deepclust.deep.base.DeepClusterer`.
    """

    method_name = "ae-kmeans"
    summary = "k-means on a pretrained autoencoder's embedding"
    pretrains_autoencoder = True
    fine_tunes_autoencoder = False
    fits_across_processes = True  # under torchrun: DDP pretraining, k-means across ranks

    def _fit_clusters(self, X, init: Initialization, y=None) -> None:
        self.cluster_centers_ = init.centers
        self.labels_ = init.labels.astype("int64", copy=False)
        self._log({"stage": "cluster", "iteration": 0}, y, self.labels_)
