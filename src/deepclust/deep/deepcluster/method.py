"""DeepCluster: alternate k-means on the network's features and training the network on the clusters.

Each epoch, visible in :meth:`DeepCluster.fit`:

1. features of the whole set with the current network (eval mode, no top layer);
2. PCA, whitening and L2 normalisation (``pca_whitening.PCAWhitening``);
3. k-means on them (ours, or scikit-learn's / faiss's), then empty-cluster repair, so every cluster
   has members (``empty_clusters.repair_empty_clusters``); the assignments are the pseudo-labels;
4. a new top layer (ReLU + linear, N(0, 0.01) weights), its own fresh optimizer;
5. one pass of cross-entropy training on ``n_samples`` images drawn uniformly over the non-empty
   pseudo-classes (``sampler.uniform_label_sampler``), optionally augmented (``crop_flip``).

After the last training pass the features are clustered once more with ``n_clusters``: that is the
result (``labels_``, ``cluster_centers_`` in the final PCA space, ``embedding_``). With
``train_clusters`` larger than ``n_clusters`` the training epochs over-cluster (k=100 for 10
classes, say), which on small data sets keeps the pseudo-labels from locking into a poor
partition; the final clustering still has ``n_clusters`` groups.

**Across ranks** (``torchrun --nproc_per_node N``; every rank calls ``fit`` with all of ``X``): each rank
computes the features of its contiguous shard of the rows; the PCA is fitted from the mean and
covariance of all ranks' rows and our k-means fits the ranks' shards together (only sums, counts and
centres cross); the PCA features (n, pca dim) and the pseudo-labels are gathered in order, so every
rank holds the same ones and repairs empty clusters alike. The network and top layer train under
``DistributedDataParallel`` with the global batch of one process: every rank draws the same sample
order and each takes a contiguous share of every batch, its loss weighted by its share
(``deep.shares.batch_share`` / ``backward_share``); crops are drawn for the whole batch and sliced,
and batch norm and dropout see the whole batch (``deep.global_batch``): the training is one process's
up to float rounding.

Reference: Caron, Bojanowski, Joulin & Douze, "Deep clustering for unsupervised learning of visual
features", ECCV 2018. Written from the paper and our notes on it; no code is taken from the authors'.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from torch import nn

from ... import distributed as D
from ..._validation import check_n_clusters, check_positive_int, resolve_device
from ...cluster import KMeans
from ...metrics import clustering_accuracy, normalized_mutual_info
from ...models.convnets import INPUT_MODES, ConvNet, build_convnet
from ...progress import progress
from ...recipes import SMALL_GREY, PerCluster, Recipe
from ...traits import IMAGES, MethodTraits
from ..base import as_image_tensor
from ..global_batch import use_global_batch
from ..loop import EpochLoop
from ..shares import backward_share, batch_share, reduce_totals
from ..training import make_optimizer
from .crop_flip import AUGMENTATIONS, augment_batch
from .empty_clusters import repair_empty_clusters
from .pca_whitening import PCAWhitening
from .sampler import uniform_label_sampler

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("constant", "cosine")
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3}
_STAGE = "deepcluster"


def new_top_layer(in_features: int, n_classes: int, generator: torch.Generator) -> nn.Sequential:
    """ReLU then a linear classifier with N(0, 0.01) weights and zero bias, re-made every epoch
    because cluster ids mean nothing from one clustering to the next."""
    linear = nn.Linear(in_features, n_classes)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) * 0.01)
        linear.bias.zero_()
    return nn.Sequential(nn.ReLU(), linear)


class DeepCluster(MethodTraits, ClusterMixin, TransformerMixin, BaseEstimator):
    """DeepCluster for small images (28x28 grey, 32x32 colour, 96x96), on the CPU or a GPU.

    Parameters
    ----------
    n_clusters : int, default=10
        Clusters of the final result.
    train_clusters : int or None, default=None
        k of the clusterings between training epochs (over-clustering); None: ``n_clusters`` (the
        paper's protocol). Twice the number of classes worked best on MNIST-test (seeds 0-2: final
        ACC 0.800 / 0.894 / 0.799, NMI 0.72-0.79, against 0.690 / 0.723 for seed 0 with k=10 throughout;
        50 and 100 training clusters gave 0.743 and 0.764).
    arch : str, dict or path, default="alexnet-small"
        A registered network (``deepclust.models.convnets.list_convnets()``: alexnet-small, vgg-small)
        or a JSON/YAML file / dict with a ``layers`` list.
    input : {"grey", "colour", "sobel", "colour+sobel"}, default="sobel"
        The fixed front end (see ``deepclust.models.convnets``).
    epochs : int, default=15
        Training passes (each preceded by a clustering).
    batch_size : int, default=256
    samples_per_epoch : int or None, default=None
        Images drawn per epoch; None: the size of the data set (the paper's choice).
    pca_dim : int, default=16
        PCA dimension before k-means (capped by the feature size). Small nets on small data want a
        small one: whitening gives every kept direction unit variance, so with many directions the
        noise ones drown the few that separate the classes (on 2,000 MNIST digits NMI 0.74 at 16 vs
        0.60 at 64 after six epochs).
    lr : float or None, default=None
        Network learning rate; None: 0.05 for SGD, 1e-3 for Adam.
    lr_schedule : {"constant", "cosine"}, default="constant"
        "cosine" lowers the network's rate from ``lr`` towards 0 over the epochs (half a cosine, one
        value per epoch), so the pseudo-labels settle instead of being reshuffled late in training.
    top_lr : float or None, default=None
        Top layer learning rate; None: as ``lr`` for the top optimizer's kind.
    optimizer, top_optimizer : {"sgd", "adam"}, default="sgd"
        Network and top layer optimizers (SGD: momentum 0.9; both: weight decay ``weight_decay``).
    momentum : float, default=0.9
    weight_decay : float, default=1e-5
    augment : {"none", "crop", "flip", "crop+flip"} or bool, default="crop"
        Training-time augmentation (True: "crop+flip"); features for clustering are never augmented.
    crop_scale : float, default=0.5
        Smallest area fraction of a random crop.
    n_init : int, default=10
        k-means restarts per clustering.
    backend : {"torch", "sklearn", "faiss"}, default="torch"
        k-means implementation.
    device : str, default="cpu"
    random_state : int or None
    verbose : bool or None
        Progress bars (None: on a terminal).
    checkpoint_dir : str or None
        Save the training state after every epoch there; ``fit`` resumes from it.

    Attributes
    ----------
    labels_ (n_samples,), cluster_centers_ (n_clusters, pca dim) in the final feature space,
    embedding_ (n_samples, pca dim): PCA-whitened, L2-normalised features of the final network,
    network_ (``ConvNet``), pca_ (``PCAWhitening``), history_ (one dict per clustering: epoch, k,
    clustering_loss (mean squared distance to the centre), cross_entropy (of the training pass that
    follows; empty for the final clustering), nmi_prev (NMI with the previous clustering),
    acc / nmi against ``y`` when given, n_empty_repaired, seconds), n_features_in_, fit_seconds_.
    """

    method_name = "deepcluster"
    summary = "a convnet trained on its own k-means pseudo-labels (Caron et al. 2018)"
    input_kind = IMAGES
    trains_network = True
    saves_model = True
    option_groups = ("convnet",)
    fits_across_processes = True  # under torchrun: features, PCA and k-means across ranks, DDP training
    # training on twice the classes, then the final clustering with k (RESULTS.md, "DeepCluster on
    # MNIST-test: over-clustering while training meets the target"); the paper trains on k itself
    recipes = {SMALL_GREY: Recipe({"train_clusters": PerCluster(2)},
                                  "MNIST-test, 3 seeds: ACC 0.831, NMI 0.747 (trained on k: NMI < 0.70)")}

    def __init__(self, n_clusters: int = 10, *, train_clusters: int | None = None, arch="alexnet-small",
                 input: str = "sobel", epochs: int = 15, batch_size: int = 256,
                 samples_per_epoch: int | None = None, pca_dim: int = 16, lr: float | None = None,
                 lr_schedule: str = "constant", top_lr: float | None = None, optimizer: str = "sgd",
                 top_optimizer: str = "sgd",
                 momentum: float = 0.9, weight_decay: float = 1e-5, augment="crop", crop_scale: float = 0.5,
                 n_init: int = 10, backend: str = "torch", device: str = "cpu", random_state=None,
                 verbose=None, checkpoint_dir=None):
        self.n_clusters = n_clusters
        self.train_clusters = train_clusters
        self.arch = arch
        self.input = input
        self.epochs = epochs
        self.batch_size = batch_size
        self.samples_per_epoch = samples_per_epoch
        self.pca_dim = pca_dim
        self.lr = lr
        self.lr_schedule = lr_schedule
        self.top_lr = top_lr
        self.optimizer = optimizer
        self.top_optimizer = top_optimizer
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.augment = augment
        self.crop_scale = crop_scale
        self.n_init = n_init
        self.backend = backend
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.checkpoint_dir = checkpoint_dir

    # ------------------------------------------------------------------------------------- fit
    def fit(self, X, y=None):
        """Learn the network and the clusters of ``X`` (images). ``y`` only feeds the log (ACC/NMI)."""
        X = as_image_tensor(X)
        n = X.shape[0]
        k = check_n_clusters(self.n_clusters, n)
        k_train = k if self.train_clusters is None else check_n_clusters(self.train_clusters, n)
        augment = self._check_params()
        y = None if y is None else np.asarray(y)
        self._device = resolve_device(self.device)
        seed = 0 if self.random_state is None else int(self.random_state)
        torch.manual_seed(seed)  # network initialisation and dropout
        self._generator = torch.Generator().manual_seed(seed)  # sampling, augmentation, top layers, k-means
        net = build_convnet(self.arch, X.shape[1:], self.input).to(self._device)
        # under torchrun: batch norm and dropout of the global batch, not of this rank's share
        self._batch = use_global_batch(net) if D.is_distributed() else None
        rows = X[D.shard_slice(n)]  # this rank's rows for the features (all of them in one process)
        net_optimizer = make_optimizer(net.parameters(), self.optimizer, self._lr(self.optimizer, self.lr),
                                       momentum=self.momentum, weight_decay=self.weight_decay)
        # Epochs 0..epochs: each clusters the features; all but the last then train on the pseudo-labels.
        loop = EpochLoop(_STAGE, self.epochs + 1, folder=self.checkpoint_dir, generator=self._generator,
                         stateful={"network": net, "optimizer": net_optimizer}, torch_rng=True,
                         desc="DeepCluster", verbose=self.verbose)
        state = loop.restore()
        self.history_, previous = [], None
        if state is not None:  # resume after the last finished epoch, with every random stream as it was
            self.history_ = list(state["history"])
            previous = state["labels"].numpy() if state["labels"].numel() else None
        start = loop.start
        if start > self.epochs:
            raise ValueError(f"The checkpoint in {self.checkpoint_dir} is at epoch {start}, past epochs="
                             f"{self.epochs}; raise epochs or use an empty checkpoint_dir.")
        began = time.perf_counter()
        for epoch in loop:
            tick = time.perf_counter()
            final = epoch == self.epochs
            kk = k if final else k_train
            features = self._features(net, rows)
            pca = PCAWhitening(self.pca_dim).fit(features, distributed=True)
            Z, labels, centers, repaired = self._cluster(pca.transform(features), kk)
            row = {"epoch": epoch, "k": kk, "clustering_loss": _kmeans_objective(Z, labels, centers),
                   "cross_entropy": None,
                   "nmi_prev": (normalized_mutual_info(previous, labels)
                                if previous is not None and len(previous) == n else None)}
            if not final:
                row["lr"] = self._set_epoch_lr(net_optimizer, epoch)
                row["cross_entropy"], speed = self._train_epoch(net, net_optimizer, X, labels, kk, augment,
                                                                epoch)
                row["samples_per_s"] = speed
            if y is not None:
                row["acc"] = clustering_accuracy(y, labels)
                row["nmi"] = normalized_mutual_info(y, labels)
            row["n_empty_repaired"] = repaired
            row["seconds"] = time.perf_counter() - tick
            self.history_.append(row)
            loop.set_postfix(**{key: f"{row[key]:.3f}" for key in ("cross_entropy", "nmi_prev", "acc", "nmi")
                                if row.get(key) is not None})
            previous = labels
            if not final:
                loop.save(epoch + 1, self.history_, labels=torch.as_tensor(labels))
        self.network_ = net.eval()
        self.pca_ = pca
        self.embedding_ = Z.numpy()
        self.labels_ = np.asarray(labels, dtype=np.int64)
        self.cluster_centers_ = np.asarray(centers, dtype=np.float32)
        self.n_features_in_ = int(np.prod(X.shape[1:]))
        self.fit_seconds_ = time.perf_counter() - began
        return self

    # ------------------------------------------------------------------------------- the steps
    @torch.no_grad()
    def _features(self, net: ConvNet, X: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Features of ``X`` in order, (n, feature_dim), float32 on the CPU (eval mode: BN running stats)."""
        net.eval()
        if X.shape[0] == 0:  # a rank with no rows (fewer rows than ranks)
            return torch.zeros(0, net.feature_dim)
        return torch.cat([net(X[s:s + batch_size].to(self._device)).float().cpu()
                          for s in range(0, X.shape[0], batch_size)])

    def _cluster(self, Z: torch.Tensor, k: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray, int]:
        """k-means on the PCA features ``Z`` (this rank's rows under torchrun), then empty-cluster repair;
        returns the features of all rows, the labels, the centres and the number of repairs.

        Under torchrun our k-means fits the ranks' shards together and the labels and features are
        gathered in row order; the other back ends fit all rows on rank 0, which sends its result.
        Every rank then repairs alike (same rows, same generator state).
        """
        km = KMeans(k, n_init=self.n_init, backend=self.backend, device=str(self._device),
                    random_state=self._seed())
        if self.backend == "torch" or not D.is_distributed():
            km.fit(Z.numpy())  # across ranks under torchrun
            labels, centers = D.concat_shards(km.labels_), km.cluster_centers_
            Z = torch.from_numpy(D.concat_shards(Z.numpy()))
        else:
            Z = torch.from_numpy(D.concat_shards(Z.numpy()))
            found = (km.fit(Z.numpy(), distributed=False).labels_, km.cluster_centers_) \
                if D.is_main_process() else None
            labels, centers = D.broadcast_object(found)
        return Z, *repair_empty_clusters(Z, labels, centers, self._generator)

    def _train_epoch(self, net: ConvNet, optimizer, X: torch.Tensor, labels: np.ndarray, k: int,
                     augment: str, epoch: int) -> tuple[float, float]:
        """One pass of cross-entropy on uniformly sampled pseudo-labels; returns (mean loss, images/s)."""
        n_draw = self.samples_per_epoch or X.shape[0]
        top = new_top_layer(net.feature_dim, k, self._generator).to(self._device)
        top_kind = self.top_optimizer
        top_lr = self.top_lr
        if top_lr is None:  # the network's rate when both use the same kind of optimizer
            top_lr = self._lr(top_kind, self.lr if top_kind == self.optimizer else None)
        top_optimizer = make_optimizer(top.parameters(), top_kind, top_lr, momentum=0.0 if top_kind == "sgd"
                                       else self.momentum, weight_decay=self.weight_decay)
        targets = torch.as_tensor(labels, dtype=torch.long)
        order = uniform_label_sampler(labels, n_draw, self._generator)  # the same on every rank
        net.train()
        model = D.data_parallel(nn.Sequential(net, top))  # under torchrun: gradients averaged over ranks
        smallest = max(2, D.world_size())  # batch norm needs two samples (and every rank one)
        start, total, seen = time.perf_counter(), 0.0, 0
        batches = progress(range(0, n_draw, self.batch_size), desc=f"epoch {epoch + 1}/{self.epochs}",
                           unit="batch", enabled=self.verbose)
        for s in batches:
            batch = order[s:s + self.batch_size]
            if len(batch) < smallest:
                continue
            idx, share = batch_share(batch)  # this rank's rows of the global batch (all in one process)
            if self._batch is not None:
                self._batch.share = share
            x = augment_batch(X[idx], augment, self._generator, (self.crop_scale, 1.0), share=share)
            logits = model(x.to(self._device))
            loss = F.cross_entropy(logits, targets[idx].to(self._device))
            optimizer.zero_grad(set_to_none=True)
            top_optimizer.zero_grad(set_to_none=True)
            total += backward_share(loss, (logits,), share)
            optimizer.step()
            top_optimizer.step()
            seen += len(idx)
            speed = seen / (time.perf_counter() - start)
            batches.set_postfix(loss=f"{total / seen:.4f}", img_s=f"{speed:.0f}")
        batches.close()
        seconds = max(time.perf_counter() - start, 1e-9)
        _share_buffers(net)
        total, seen = reduce_totals(total, seen)  # every rank logs the same loss
        return total / max(seen, 1), seen / seconds

    # --------------------------------------------------------------------------- use after fit
    def architecture(self, input_shape: tuple[int, int, int], n_clusters: int | None = None) -> dict:
        """The network a fit on (C, H, W) inputs builds: ``arch`` behind the ``input`` front end."""
        from ...models.convnets import convnet_spec

        return convnet_spec(self.arch, tuple(input_shape), self.input)

    def transform(self, X) -> np.ndarray:
        """Features of ``X`` in the final space (PCA-whitened, L2-normalised): (n, pca dim) float32."""
        self._check_fitted()
        return self.pca_.transform(self._features(self.network_, as_image_tensor(X))).numpy()

    def predict(self, X) -> np.ndarray:
        """The nearest final centre of each image of ``X``."""
        Z = torch.as_tensor(self.transform(X))
        return torch.cdist(Z, torch.as_tensor(self.cluster_centers_)).argmin(dim=1).numpy()

    def fit_predict(self, X, y=None) -> np.ndarray:
        return self.fit(X, y).labels_

    # -------------------------------------------------------------------- saving (checkpoint.py)
    _network_attr = "network_"

    @staticmethod
    def _rebuild_network(spec: dict, input_shape=None) -> ConvNet:
        return ConvNet(spec)

    def _extra_tensors(self) -> dict:
        pca = {f"pca.{key}": value for key, value in self.pca_.state().items()}
        return {"cluster_centers": self.cluster_centers_, **pca}

    def _restore_extra_tensors(self, tensors: dict) -> None:
        self.cluster_centers_ = tensors["cluster_centers"].numpy()
        self.pca_ = PCAWhitening.from_state({key[4:]: value for key, value in tensors.items()
                                             if key.startswith("pca.")})

    # ------------------------------------------------------------------------------ helpers
    def _check_params(self) -> str:
        for name in ("optimizer", "top_optimizer"):
            if getattr(self, name) not in OPTIMIZERS:
                raise ValueError(f"{name} must be one of {', '.join(OPTIMIZERS)}; "
                                 f"got {getattr(self, name)!r}.")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}; "
                             f"got {self.lr_schedule!r}.")
        if self.input not in INPUT_MODES:
            raise ValueError(f"input must be one of {', '.join(INPUT_MODES)}; got {self.input!r}.")
        augment = {True: "crop+flip", False: "none", None: "none"}.get(self.augment, self.augment)
        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)} or a bool; "
                             f"got {self.augment!r}.")
        check_positive_int(self.epochs, "epochs", minimum=0)
        check_positive_int(self.batch_size, "batch_size", minimum=2)
        check_positive_int(self.pca_dim, "pca_dim")
        check_positive_int(self.n_init, "n_init")
        if self.samples_per_epoch is not None:
            check_positive_int(self.samples_per_epoch, "samples_per_epoch")
        if not 0 < self.crop_scale <= 1:
            raise ValueError(f"crop_scale must be in (0, 1]; got {self.crop_scale!r}.")
        for name in ("lr", "top_lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 (or None for the optimizer's default); got {value!r}.")
        return augment

    def _set_epoch_lr(self, optimizer: torch.optim.Optimizer, epoch: int) -> float:
        """The network's learning rate for training pass ``epoch`` (0-based) under ``lr_schedule``."""
        lr = self._lr(self.optimizer, self.lr)
        if self.lr_schedule == "cosine":
            lr *= 0.5 * (1.0 + math.cos(math.pi * epoch / self.epochs))
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    @staticmethod
    def _lr(kind: str, lr: float | None) -> float:
        return DEFAULT_LR[kind] if lr is None else float(lr)

    def _seed(self) -> int:
        return int(torch.randint(0, 2**31 - 1, (1,), generator=self._generator))

    def _check_fitted(self) -> None:
        if not hasattr(self, "network_"):
            raise RuntimeError("This DeepCluster instance is not fitted yet; call fit(X) first.")


def _share_buffers(net: nn.Module) -> None:
    """Rank 0's buffers (batch-norm running statistics) on every rank, so that the features of the next
    clustering are the same on every rank whatever a layer did with its own."""
    if D.is_distributed():
        with torch.no_grad():
            for buffer in net.buffers():
                buffer.copy_(D.broadcast_tensor(buffer))


def _kmeans_objective(Z: torch.Tensor, labels: np.ndarray, centers: np.ndarray) -> float:
    """Mean squared distance of each point to its cluster's centre."""
    C = torch.as_tensor(centers)[torch.as_tensor(labels, dtype=torch.long)]
    return float((Z - C).pow(2).sum(dim=1).mean())


__all__ = ["DeepCluster", "new_top_layer"]
