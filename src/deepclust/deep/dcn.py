"""DCN: k-means loss plus reconstruction, with running-mean centre updates.

Reference: Yang, Fu, Sidiropoulos & Hong, "Towards k-means-friendly spaces: simultaneous deep
learning and clustering", ICML 2017.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import distributed as D
from ..recipes import LARGE_GREY, SMALL_GREY, Recipe
from .base import (
    DEC_CODE_MIN_SAMPLES,
    DEC_CODE_PRETRAINING,
    LARGE_GREY_AUTOENCODER,
    DeepClusterer,
    Initialization,
)
from .global_batch import global_batch_layers
from .shares import backward_share, reduce_totals
from .training import (
    check_augment,
    check_finite_loss,
    encode_all,
    minibatches,
    random_affine,
    reconstruction_loss,
)


def kmeans_loss(z: torch.Tensor, centers: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ||z_i - mu_{s_i}||^2 (DCN eq. 5's clustering term, without lambda/2)."""
    return (z - centers[labels]).pow(2).sum(dim=1).mean()


def update_centers(centers: torch.Tensor, counts: torch.Tensor, z: torch.Tensor,
                   labels: torch.Tensor, *, across_ranks: bool = False) -> None:
    """In place: DCN's per-sample step mu_k <- mu_k - (1 / c_k) (mu_k - z_i) (eq. 8) for a whole batch.

    Applied sample by sample with c_k counting every update so far, the step keeps each centre the
    running mean of everything assigned to it, so one batch gives
    mu_k <- (c_k mu_k + sum_{i in k} z_i) / (c_k + m_k), which is what is computed here.
    ``across_ranks``: ``z`` is this rank's part of a global batch; the sums and counts are added over
    ranks (in rank order, so every rank keeps the same centres).
    """
    k = centers.shape[0]
    batch_sums = torch.zeros_like(centers).index_add_(0, labels, z)  # (k, d)
    batch_counts = torch.bincount(labels, minlength=k).to(counts.dtype)  # (k,)
    if across_ranks and D.is_distributed():
        stats = D.sum_in_rank_order(torch.cat([batch_sums, batch_counts.to(centers.dtype)[:, None]], dim=1))
        batch_sums, batch_counts = stats[:, :-1], stats[:, -1].to(counts.dtype)  # (k, d), (k,)
    new_counts = counts + batch_counts
    centers.mul_((counts / new_counts).unsqueeze(1)).add_(batch_sums / new_counts.unsqueeze(1))
    counts.copy_(new_counts)


class DCN(DeepClusterer):
    """Deep Clustering Network: minimise reconstruction + (lambda / 2) * k-means loss in the embedding.

    For each batch: assign each embedding to its nearest centre, update those centres as running means,
    then take a gradient step on the network with the centres fixed. After each epoch the centres are
    re-computed on the whole embedding, since the running means lag behind a network that keeps moving.

    Under torchrun each rank trains on its share of every batch (batch norm and dropout of the whole
    batch: ``deep.global_batch``); the running means add the whole batch's sums and counts over ranks,
    and the per-epoch re-centring uses the gathered embedding.

    Parameters (besides :class:`~deepclust.deep.base.DeepClusterer`'s)
    ----------
    clustering_epochs : int, default=50
    lam : float, default=0.01
        Weight lambda of the k-means term (the loss uses lambda / 2, as the paper). Larger values
        pull points towards the centres they started in, errors included. From the same pretrained
        autoencoders (AE + k-means ACC: MNIST-test 0.716, USPS 0.711), DCN reaches 0.698 on
        MNIST-test with 0.05 (ClustPy's default), 0.711 on USPS with 0.02, and 0.733 / 0.716 with 0.01.
    cluster_optimizer : {"adam", "sgd"}, default="adam"
    cluster_lr : float or None, default=None
        Learning rate of the clustering stage (None: 1e-4 for Adam, 0.01 for SGD). Adam's steps do
        not shrink with ``lam``, so at the pretraining rate (1e-3) the k-means term drags the
        bottleneck fast enough to merge clusters (USPS: 10 clusters -> 6, ACC 0.71 -> 0.37 in 30
        epochs); 1e-4 (ClustPy's clustering-stage rate) keeps all of them (ACC 0.70).
    cluster_augment : bool, default=False
        Train the clustering stage on randomly shifted and rotated views of the images (as DEC's
        ``cluster_augment``), reconstructing the clean image. Images only. Unlike DEC's, it gained
        nothing on MNIST-70k (seed 0: 0.812 without, 0.814 with).
    """

    method_name = "dcn"
    summary = "autoencoder trained jointly with a k-means loss (Yang et al. 2017)"
    option_groups = ("autoencoder", "clustering_stage")
    recipes = {
        SMALL_GREY: Recipe(DEC_CODE_PRETRAINING, "MNIST-70k, 3 seeds: 0.946 ± 0.007 (Adam, 50 epochs: 0.812)",
                           min_samples=DEC_CODE_MIN_SAMPLES),
        LARGE_GREY: Recipe(LARGE_GREY_AUTOENCODER, "COIL-20 at 64 x 64, 2 seeds: 0.728", resize_to=64),
    }
    fits_across_processes = True  # under torchrun: DDP, centres updated from every rank's rows

    def __init__(self, n_clusters: int = 10, *, clustering_epochs: int = 50, lam: float = 0.01,
                 cluster_optimizer: str = "adam", cluster_lr: float | None = None,
                 cluster_augment: bool = False, **kwargs):
        super().__init__(n_clusters, **kwargs)
        self.clustering_epochs = clustering_epochs
        self.lam = lam
        self.cluster_optimizer = cluster_optimizer
        self.cluster_lr = cluster_lr
        self.cluster_augment = cluster_augment

    _CLUSTER_LR = {"sgd": 0.01, "adam": 1e-4}

    def _fit_clusters(self, X, init: Initialization, y=None) -> None:
        model = init.autoencoder
        settings = self._cluster_settings(self.clustering_epochs)
        optimizer = settings.optimizer_for(model.parameters())
        centers = torch.as_tensor(init.centers, dtype=torch.float32).to(self._device)
        # The k-means centres count as 100 samples each (as in the public DCN code), so the first
        # batches nudge them instead of replacing them.
        counts = torch.full((centers.shape[0],), 100.0, device=self._device)
        labels = init.labels.astype(np.int64)
        augment = check_augment(self.cluster_augment, X, "cluster_augment")
        loop = self._epoch_loop("cluster", self.clustering_epochs, {"model": model, "optimizer": optimizer})
        state = loop.restore()
        if state is not None:  # resume after the last finished epoch
            self.history_ = list(state["history"])
            centers, counts = state["centers"].to(self._device), state["counts"].to(self._device)
            labels = state["labels"].numpy()
            self.cluster_centers_ = centers.cpu().numpy()
        else:
            self._log({"stage": "cluster", "epoch": 0}, y, labels)
        # under torchrun: batch norm and dropout of the global batch, gradients averaged over ranks
        with global_batch_layers(model) as batch:
            net = D.data_parallel(model)
            for epoch in loop:
                model.train()
                total = rec_total = km_total = 0.0
                for rows in minibatches(X.shape[0], settings.batch_size, self._generator):
                    idx, share = batch.take(rows)  # this rank's rows of the global batch
                    x = X[idx].to(self._device)
                    # With ``cluster_augment``: a shifted/rotated view in, the clean image as the target.
                    z, x_hat = net(random_affine(x, self._generator, share=share) if augment else x)
                    with torch.no_grad():
                        assigned = torch.cdist(z, centers).argmin(dim=1)
                        update_centers(centers, counts, z.detach(), assigned, across_ranks=True)
                    loss = None
                    if idx.numel():
                        rec = reconstruction_loss(x_hat, x, self.loss)
                        km = kmeans_loss(z, centers, assigned)
                        loss = rec + 0.5 * self.lam * km
                    optimizer.zero_grad(set_to_none=True)
                    total += backward_share(loss, (z, x_hat), share)
                    optimizer.step()
                    if idx.numel():
                        n = idx.numel()
                        rec_total, km_total = rec_total + rec.item() * n, km_total + km.item() * n
                total, rec_total, km_total = reduce_totals(total, rec_total, km_total)
                # Re-centre on the whole embedding once per epoch: the network kept moving while the
                # running means lagged behind (a k-means M-step, then the E-step for the labels).
                Z = encode_all(model, X, device=self._device).to(self._device)
                assigned = torch.cdist(Z, centers).argmin(dim=1)
                sums = torch.zeros_like(centers).index_add_(0, assigned, Z)
                sizes = torch.bincount(assigned, minlength=centers.shape[0]).to(Z.dtype)
                nonempty = sizes > 0
                centers[nonempty] = sums[nonempty] / sizes[nonempty].unsqueeze(1)
                self.cluster_centers_ = centers.cpu().numpy()
                new_labels = self._assign(Z.cpu())
                delta = float(np.mean(new_labels != labels))
                labels = new_labels
                n = X.shape[0]
                check_finite_loss(total / n, epoch + 1, "cluster_lr", settings.lr)
                row = self._log({"stage": "cluster", "epoch": epoch + 1, "loss": total / n,
                                 "reconstruction": rec_total / n, "kmeans": km_total / n,
                                 "delta_label": delta}, y, labels)
                loop.set_postfix(loss=f"{row['loss']:.4f}", changed=f"{delta:.4f}")
                loop.save(epoch + 1, self.history_, centers=centers.cpu(), counts=counts.cpu(),
                          labels=torch.as_tensor(labels))
        model.eval()
        self.cluster_centers_ = centers.cpu().numpy()
        self.labels_ = labels
