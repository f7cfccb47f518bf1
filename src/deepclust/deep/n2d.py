"""N2D: the autoencoder embedding, then UMAP to a few dimensions, then a Gaussian mixture.

Reference: McConville, Santos-Rodriguez, Piechocki & Craddock, "N2D: (not too) deep clustering via
clustering the local manifold of an autoencoded embedding", ICPR 2020 (UMAP to n_clusters dimensions,
n_neighbors 20, min_dist 0, then a GMM). The manifold and clustering stages are
:class:`~deepclust.cluster.UMAPGMM`, run on the autoencoder's embedding.
"""

from __future__ import annotations

import numpy as np
import torch

from ..cluster._means import cluster_means
from ..cluster.umap_gmm import UMAPGMM
from ..recipes import LARGE_GREY, SMALL_GREY, Recipe, UpTo
from .base import LARGE_GREY_AUTOENCODER, DeepClusterer, Initialization, as_image_tensor, stage_seed
from .self_label import ConvClassifier, SelfLabel, classify


class N2D(DeepClusterer):
    """Autoencoder embedding -> :class:`~deepclust.cluster.UMAPGMM` (UMAP to ``manifold_dim`` dims,
    default n_clusters, then a Gaussian mixture).

    New points are assigned by a distance-weighted vote of their ``n_vote`` nearest training points in
    the autoencoder embedding; a training point's own label is returned for itself. With
    ``self_label_rounds`` > 0 a last stage (:class:`~deepclust.deep.self_label.SelfLabel`) trains a small
    convnet on each cluster's most trustworthy half, on shifted, rotated and scaled views; its predictions
    become the clusters, of the training images and of new ones.

    Under torchrun the autoencoder trains across the ranks (DDP) and every rank then runs the
    single-threaded UMAP + mixture stage on the same gathered embedding: no rank waits minutes on another
    inside a collective (which the collective timeout would end), and on one machine every rank gets
    rank 0's result, which is the one written. The self-labelling stage likewise runs whole on every rank.

    Parameters (besides :class:`~deepclust.deep.base.DeepClusterer`'s): ``n_neighbors`` (20),
    ``min_dist`` (0.0), ``manifold_dim`` (None: n_clusters), ``metric`` ("euclidean"), ``n_vote`` (10),
    ``gmm_n_init`` (10), as :class:`~deepclust.cluster.UMAPGMM`; ``self_label_rounds`` (0: off),
    ``self_label_students`` (0: fresh convnets after the rounds, each on every image's last label),
    ``self_label_epochs`` (10 per round) and ``self_label_schedule`` ("constant": Adam at 1e-3;
    "cosine": from 3e-3 down to 0 each round) and ``self_label_smoothing`` (0.0: the cross-entropy's
    label smoothing), as :class:`~deepclust.deep.self_label.SelfLabel`.

    Attributes (besides :class:`~deepclust.deep.base.DeepClusterer`'s): ``mixture_labels_`` (the
    mixture's clusters), ``self_label_network_`` (the convnet; None when off) and ``self_label_agreement_``
    (share of the mixture's labels the convnet kept; None when off).
    """

    method_name = "n2d"
    summary = "autoencoder, then UMAP, then a Gaussian mixture (McConville et al. 2020)"
    option_groups = ("autoencoder", "manifold", "self_labelling")
    fine_tunes_autoencoder = False  # UMAP, the mixture and self-labelling's own convnet leave it as it is
    fits_across_processes = True  # DDP pretraining; the manifold stage on every rank (above)
    recipes = {
        # One round of self-labelling from 5,000 images (RESULTS.md, "Self-labelling on top of N2D"): two
        # rounds gave USPS more (0.972) but dropped one MNIST-test seed from 0.954 to 0.892, and on the
        # 1,797 digits it stayed level (3 seeds, 0.875 -> 0.877), so the digits keep N2D alone. The round
        # trains 30 epochs, its rate falling from 3e-3 to 0, with label smoothing 0.1 (RESULTS.md,
        # "Self-labelling: a longer round, a cosine schedule and label smoothing"); 10 flat epochs at 1e-3
        # gave MNIST-test 0.956, USPS 0.968. Then three students, each a fresh convnet on every image's
        # label from the one before (RESULTS.md, "Self-labelling: students on every image"): MNIST-test
        # 0.977 -> 0.982 -> 0.984 -> 0.985. Each costs what the round costs (~100 s on MNIST-test, one
        # thread), so sets above 20,000 images go without: on MNIST-70k three would add ~25 min to a
        # 27-min run that reaches 0.988 without them.
        SMALL_GREY: Recipe({"self_label_rounds": 1, "self_label_epochs": 30, "self_label_schedule": "cosine",
                            "self_label_smoothing": 0.1, "self_label_students": UpTo(20_000, 3)},
                           "N2D's defaults + 1 round of self-labelling (30 epochs, cosine schedule, label "
                           "smoothing 0.1) + 3 students up to 20,000 images, 3 seeds on the same N2D fits: "
                           "MNIST-test 0.985 (N2D alone 0.950, the round alone 0.977)",
                           min_samples=5000),
        LARGE_GREY: Recipe(LARGE_GREY_AUTOENCODER, "COIL-20 at 64 x 64, 3 seeds: 0.830 ± 0.025",
                           resize_to=64),
    }

    def __init__(self, n_clusters: int = 10, *, n_neighbors: int = 20, min_dist: float = 0.0,
                 manifold_dim: int | None = None, metric: str = "euclidean", n_vote: int = 10,
                 gmm_n_init: int = 10, self_label_rounds: int = 0, self_label_students: int = 0,
                 self_label_epochs: int = 10, self_label_schedule: str = "constant",
                 self_label_smoothing: float = 0.0, **kwargs):
        super().__init__(n_clusters, **kwargs)
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.manifold_dim = manifold_dim
        self.metric = metric
        self.n_vote = n_vote
        self.gmm_n_init = gmm_n_init
        self.self_label_rounds = self_label_rounds
        self.self_label_students = self_label_students
        self.self_label_epochs = self_label_epochs
        self.self_label_schedule = self_label_schedule
        self.self_label_smoothing = self_label_smoothing

    def _fit_clusters(self, X, init: Initialization, y=None) -> None:
        self._stage = self._manifold_stage(random_state=self._seed()).fit(init.embedding.numpy())
        self.manifold_ = self._stage.manifold_
        self.labels_ = self.mixture_labels_ = self._stage.labels_
        self.cluster_centers_ = self._stage.cluster_centers_  # mean embedding per cluster
        self._log({"stage": "cluster", "iteration": 0}, y, self.labels_)
        self.self_label_network_ = self.self_label_agreement_ = None
        if self.self_label_rounds:
            self._self_label(X, init, y)

    _SELF_LABEL_MIN_STEPS = 300  # SelfLabel's floor of batches a round (tests lower it)

    def _self_label(self, X, init: Initialization, y=None) -> None:
        """The last stage: a convnet learns the mixture's confident clusters from augmented views."""
        stage = SelfLabel(rounds=self.self_label_rounds, students=self.self_label_students,
                          epochs=self.self_label_epochs,
                          schedule=self.self_label_schedule, label_smoothing=self.self_label_smoothing,
                          min_steps=self._SELF_LABEL_MIN_STEPS,
                          device=self.device,
                          random_state=stage_seed(self._base_seed(), "self-label"), verbose=self.verbose)
        stage.fit(X, self._stage.posterior_, init.embedding)
        for row in stage.history_:
            self.history_.append({"stage": "self-label", **row})
        if y is not None:  # the scores after each round and student; the last is the result's row below
            for round_, labels in enumerate(stage.round_labels_[:-1], start=1):
                self._log({"stage": "self-label", "round": round_}, y, labels)
        self.self_label_network_ = stage.network_
        self.self_label_agreement_ = stage.agreement_
        self.labels_ = stage.labels_
        self.cluster_centers_ = cluster_means(init.embedding.numpy(), self.labels_, self.n_clusters)
        last = {"stage": "self-label", "round": len(stage.round_labels_), "agreement": stage.agreement_}
        self._log(last, y, self.labels_)

    def _manifold_stage(self, **params) -> UMAPGMM:
        return UMAPGMM(self.n_clusters, n_neighbors=self.n_neighbors, min_dist=self.min_dist,
                       manifold_dim=self.manifold_dim, metric=self.metric, n_vote=self.n_vote,
                       gmm_n_init=self.gmm_n_init, **params)

    def predict(self, X) -> np.ndarray:
        """Cluster of each image of ``X``: the self-labelling convnet's, else the neighbours' vote."""
        if getattr(self, "self_label_network_", None) is None:
            return super().predict(X)
        return self.predict_proba(X).argmax(1).astype(np.int64)

    def predict_proba(self, X) -> np.ndarray:
        """(n_samples, n_clusters), rows sum to 1: the self-labelling convnet's probabilities, else each
        cluster's share of the distance-weighted vote of the ``n_vote`` nearest training points."""
        self._check_fitted()
        X = as_image_tensor(X)
        if getattr(self, "self_label_network_", None) is not None:
            if tuple(X.shape[1:]) != tuple(self.autoencoder_.input_shape):
                raise ValueError(f"X has images of shape {tuple(X.shape[1:])}; the model was fitted on "
                                 f"{tuple(self.autoencoder_.input_shape)}.")
            return classify(self.self_label_network_, X, device=self._device).numpy()
        return self._stage.predict_proba(self._embed(X).numpy())

    def _assign(self, Z: torch.Tensor) -> np.ndarray:
        return self._stage.predict(Z.numpy())

    def _extra_tensors(self) -> dict:
        tensors = self._stage._extra_tensors()
        out = {"cluster_centers": tensors["cluster_centers"], "train_embedding": tensors["train_input"],
               "train_labels": tensors["train_labels"]}
        net = getattr(self, "self_label_network_", None)
        if net is not None:  # the convnet's weights and its shape (in_channels, n_clusters, width)
            out["self_label_spec"] = np.asarray([net.spec[k] for k in ConvClassifier.SPEC], np.int64)
            out.update({f"self_label.{k}": v for k, v in net.state_dict().items()})
            out["labels"] = self.labels_
        return out

    def _restore_extra_tensors(self, tensors: dict) -> None:
        self._stage = self._manifold_stage()
        self._stage._restore_extra_tensors({"cluster_centers": tensors["cluster_centers"],
                                            "train_input": tensors["train_embedding"],
                                            "train_labels": tensors["train_labels"]})
        self.cluster_centers_ = self._stage.cluster_centers_
        self.labels_ = self.mixture_labels_ = self._stage.labels_
        self.self_label_network_ = None
        if "self_label_spec" in tensors:
            spec = dict(zip(ConvClassifier.SPEC, (int(v) for v in tensors["self_label_spec"]), strict=True))
            net = ConvClassifier(**spec)
            net.load_state_dict({k[len("self_label."):]: v for k, v in tensors.items()
                                 if k.startswith("self_label.")})
            self.self_label_network_ = net.eval()
            self.labels_ = tensors["labels"].numpy()
