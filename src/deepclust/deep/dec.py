"""DEC and IDEC: a Student-t clustering layer on the embedding, trained towards a sharpened target.

Pure maths first (tested against hand-computed numbers), then the clustering head, then the
estimators, which add no maths of their own.

References: Xie, Girshick & Farhadi, "Unsupervised deep embedding for clustering analysis", ICML 2016.
Guo, Gao, Liu & Yin, "Improved deep embedded clustering with local structure preservation", IJCAI 2017.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

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


def soft_assign(z: torch.Tensor, centers: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Student-t similarity of each embedding to each centre, normalised per row (DEC eq. 1).

    q_ij = (1 + ||z_i - mu_j||^2 / alpha)^(-(alpha + 1) / 2) / sum_j' (...); (n, d), (k, d) -> (n, k).
    """
    dist_sq = torch.cdist(z, centers).pow(2)  # (n, k)
    q = (1.0 + dist_sq / alpha).pow(-(alpha + 1.0) / 2.0)
    return q / q.sum(dim=1, keepdim=True)


def target_distribution(q: torch.Tensor) -> torch.Tensor:
    """Sharpened targets p_ij = (q_ij^2 / f_j) / sum_j' (q_ij'^2 / f_j'), f_j = sum_i q_ij (DEC eq. 3)."""
    weight = q.pow(2) / q.sum(dim=0, keepdim=True)  # (n, k)
    return weight / weight.sum(dim=1, keepdim=True)


def kl_clustering_loss(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) averaged over the batch (DEC eq. 2)."""
    return F.kl_div(q.clamp_min(1e-12).log(), p, reduction="batchmean")


class ClusteringLayer(nn.Module):
    """Learnable centres in embedding space; ``forward(z) -> q`` (n, k)."""

    def __init__(self, centers: torch.Tensor, alpha: float = 1.0):
        super().__init__()
        self.centers = nn.Parameter(centers.clone())
        self.alpha = alpha

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return soft_assign(z, self.centers, self.alpha)


class _Trained(nn.Module):
    """What the clustering stage trains, as one module (so DDP averages the centres' gradients too):
    ``forward(x) -> (z, x_hat, q)``; ``x_hat`` is None when the decoder is not trained (DEC)."""

    def __init__(self, autoencoder: nn.Module, head: ClusteringLayer, decode: bool):
        super().__init__()
        self.autoencoder = autoencoder
        self.head = head
        self.decode = decode

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        if self.decode:
            z, x_hat = self.autoencoder(x)
        else:
            z, x_hat = self.autoencoder.encode(x), None
        return z, x_hat, self.head(z)


class DEC(DeepClusterer):
    """Deep Embedded Clustering.

    After pretraining, the encoder and the centres are trained to minimise KL(P || Q), where Q are the
    Student-t soft assignments and P the sharpened targets, refreshed every ``update_interval`` batches
    from the whole data set. Training stops after ``clustering_epochs`` or when fewer than ``tol`` of
    the labels change between two target refreshes.

    Under torchrun the targets are computed from the whole embedding (each rank encodes its shard, all
    gather), so every rank holds the same P and takes the same decisions; each trains on its share of
    every batch, with batch norm and dropout of the whole batch (``deep.global_batch``).

    Parameters (besides :class:`~deepclust.deep.base.DeepClusterer`'s)
    ----------
    clustering_epochs : int, default=100
    update_interval : int, default=140
        Batches between target refreshes (the IDEC paper's MNIST setting).
    tol : float, default=0.001
    alpha : float, default=1.0
        Degrees of freedom of the Student-t kernel.
    cluster_optimizer : {"sgd", "adam"}, default="sgd"
        Optimizer of the clustering stage. SGD with momentum 0.9 at 0.01 is the DEC paper's and
        its public code's choice, and it matters: from the same MNIST-test autoencoder (AE + k-means
        0.716) DEC reaches ACC 0.781 with it and 0.738 with Adam at 1e-3, which freezes the labels
        after ~20 epochs.
    cluster_lr : float or None, default=None
        Learning rate of the clustering stage (None: 0.01 for SGD, ``lr`` for Adam).
    cluster_augment : bool, default=False
        Train the clustering stage on randomly shifted (+-2 px) and rotated (+-10 degrees) views of the
        images, with the targets P computed from the clean images (DEC-DA, Guo et al. 2018): the
        encoder must give a digit and its shifted copy the same cluster. Images only (4-d input).
        From the same autoencoders (seed 0) IDEC goes from 0.785 to 0.848 on MNIST-test and from 0.831
        to 0.850 (NMI 0.855 to 0.905) on MNIST-70k, DEC from 0.833 to 0.855 there. Off by default, so
        ``DEC``/``IDEC`` are the papers' methods unless asked.
    """

    method_name = "dec"
    summary = "autoencoder, then self-training of Student-t soft assignments (Xie et al. 2016)"
    option_groups = ("autoencoder", "clustering_stage")
    recipes = {
        SMALL_GREY: Recipe(DEC_CODE_PRETRAINING, "MNIST-70k, 3 seeds: 0.945 ± 0.011 (Adam, 50 epochs: 0.833)",
                           min_samples=DEC_CODE_MIN_SAMPLES),
        LARGE_GREY: Recipe(LARGE_GREY_AUTOENCODER, "COIL-20 at 64 x 64, 2 seeds: 0.747", resize_to=64),
    }
    fits_across_processes = True  # under torchrun: DDP, targets from the gathered embedding

    def __init__(self, n_clusters: int = 10, *, clustering_epochs: int = 100, update_interval: int = 140,
                 tol: float = 0.001, alpha: float = 1.0, cluster_optimizer: str = "sgd",
                 cluster_lr: float | None = None, cluster_augment: bool = False, **kwargs):
        super().__init__(n_clusters, **kwargs)
        self.clustering_epochs = clustering_epochs
        self.update_interval = update_interval
        self.cluster_augment = cluster_augment
        self.tol = tol
        self.alpha = alpha
        self.cluster_optimizer = cluster_optimizer
        self.cluster_lr = cluster_lr

    # DEC's loss ignores the decoder (its parameters get no gradient), which DDP must be told.
    _trains_decoder = False

    def _loss(self, q: torch.Tensor, p: torch.Tensor, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """DEC's objective: KL(P || Q) alone (the decoder is discarded; ``x_hat`` is None)."""
        return kl_clustering_loss(q, p)

    def _fit_clusters(self, X, init: Initialization, y=None) -> None:
        model = init.autoencoder
        head = ClusteringLayer(torch.as_tensor(init.centers), self.alpha).to(self._device)
        settings = self._cluster_settings(self.clustering_epochs)
        optimizer = settings.optimizer_for(list(model.parameters()) + list(head.parameters()))
        labels = init.labels.astype(np.int64)
        augment = check_augment(self.cluster_augment, X, "cluster_augment")
        n, iteration, p, stop = X.shape[0], 0, None, False
        loop = self._epoch_loop("cluster", self.clustering_epochs,
                                {"model": model, "head": head, "optimizer": optimizer})
        state = loop.restore()
        if state is not None:  # resume after the last finished epoch, exactly where it stood
            self.history_ = list(state["history"])
            iteration, stop = int(state["iteration"]), bool(state["stop"])
            labels, p = state["labels"].numpy(), state["target"]
            if stop:
                loop.stop()
        else:
            self._log({"stage": "cluster", "iteration": 0, "delta_label": 1.0}, y, labels)
        # under torchrun: batch norm and dropout of the global batch, gradients averaged over ranks
        with global_batch_layers(model) as batch:
            net = D.data_parallel(_Trained(model, head, self._trains_decoder),
                                  find_unused_parameters=not self._trains_decoder)
            for epoch in loop:
                model.train()
                total, seen = 0.0, 0
                for rows in minibatches(n, settings.batch_size, self._generator):
                    if iteration % self.update_interval == 0:
                        p, labels, delta = self._refresh_targets(model, head, X, labels)
                        if iteration > 0:
                            loss_sum, count = reduce_totals(total, seen)  # every rank logs the same loss
                            mean = loss_sum / max(count, 1)
                            check_finite_loss(mean, epoch + 1, "cluster_lr", settings.lr)
                            row = self._log({"stage": "cluster", "iteration": iteration, "epoch": epoch + 1,
                                             "loss": mean, "delta_label": delta}, y, labels)
                            loop.set_postfix(loss=f"{row['loss']:.4f}", changed=f"{delta:.4f}")
                            if delta < self.tol:
                                stop = True
                                break
                        model.train()
                    idx, share = batch.take(rows)  # this rank's rows of the global batch
                    x = X[idx].to(self._device)
                    # DEC-DA: with ``cluster_augment`` the network sees a shifted/rotated view; the target
                    # p and the reconstruction target stay those of the clean image.
                    z, x_hat, q = net(random_affine(x, self._generator, share=share) if augment else x)
                    loss = self._loss(q, p[idx].to(self._device), x, x_hat) if idx.numel() else None
                    optimizer.zero_grad(set_to_none=True)
                    total += backward_share(loss, (z, q) if x_hat is None else (z, x_hat, q), share)
                    optimizer.step()
                    seen += idx.numel()
                    iteration += 1
                loop.save(epoch + 1, self.history_, iteration=iteration, stop=stop,
                          labels=torch.as_tensor(labels), target=p)
                if stop:
                    break
        model.eval()
        self.cluster_centers_ = head.centers.detach().cpu().numpy()
        self.labels_ = self._assign(encode_all(model, X, device=self._device))
        self.n_iter_ = iteration

    @torch.no_grad()
    def _refresh_targets(self, model, head, X, labels):
        q = head(encode_all(model, X, device=self._device).to(self._device)).cpu()
        new_labels = q.argmax(dim=1).numpy()
        delta = float(np.mean(new_labels != labels))
        return target_distribution(q), new_labels, delta

    def _assign(self, Z: torch.Tensor) -> np.ndarray:
        """Cluster = the largest soft assignment (equivalently the nearest centre)."""
        q = soft_assign(Z, torch.as_tensor(self.cluster_centers_, dtype=Z.dtype), self.alpha)
        return q.argmax(dim=1).numpy()

    def predict_proba(self, X) -> np.ndarray:
        """Soft assignments Q of ``X``: (n_samples, n_clusters)."""
        Z = torch.as_tensor(self.transform(X))
        return soft_assign(Z, torch.as_tensor(self.cluster_centers_), self.alpha).numpy()


class IDEC(DEC):
    """Improved DEC: the reconstruction loss plus ``gamma`` times DEC's KL loss, L = L_r + gamma * L_c
    (Guo et al. 2017, eq. 9, gamma = 0.1), keeping the decoder so the embedding keeps the data's local
    structure; gamma weighs the clustering term, not the reconstruction."""

    method_name = "idec"
    summary = "DEC that keeps the reconstruction loss (Guo et al. 2017)"
    recipes = {
        SMALL_GREY: Recipe(DEC_CODE_PRETRAINING, "MNIST-70k, 3 seeds: 0.949 ± 0.013 (Adam, 50 epochs: 0.828)",
                           min_samples=DEC_CODE_MIN_SAMPLES),
        # 100 restarts steady the k-means start where k is large for the data; the stage on shifted and
        # rotated views (DEC-DA) adds the rest (RESULTS.md, "COIL-20 (64x64): 100 k-means restarts")
        LARGE_GREY: Recipe({**LARGE_GREY_AUTOENCODER, "n_init": 100, "cluster_augment": True},
                           "COIL-20 at 64 x 64, 3 seeds: 0.766 ± 0.001 (the paper's stage: 0.755)",
                           resize_to=64),
    }
    _trains_decoder = True

    def __init__(self, n_clusters: int = 10, *, gamma: float = 0.1, **kwargs):
        super().__init__(n_clusters, **kwargs)
        self.gamma = gamma

    # SGD at 0.1 (the IDEC paper's MNIST rate): the KL term's step is then DEC's at 0.01, since gamma
    # scales it by 0.1. From the same autoencoders (seed 0): USPS 0.730 at 0.01 vs 0.765 at 0.1,
    # MNIST-test 0.728 vs 0.785.
    _CLUSTER_LR = {"sgd": 0.1, "adam": None}

    def _loss(self, q: torch.Tensor, p: torch.Tensor, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        return reconstruction_loss(x_hat, x, self.loss) + self.gamma * kl_clustering_loss(q, p)
