"""The shared pipeline of the autoencoder-based methods: pretrain, embed, cluster, written once.

Each method (``AEKMeans``, ``DEC``, ``IDEC``, ``DCN``, ``N2D``) subclasses ``DeepClusterer`` and adds only
its clustering stage (``_fit_clusters``) and its way to assign new points (``_assign``). The
stages compose: an embedding stage (the autoencoder), an optional manifold stage (N2D), a clustering
stage.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin

from .. import distributed as D
from .._validation import check_n_clusters, check_positive_int, resolve_device
from ..cluster import KMeans
from ..data.rows import ImageRows
from ..models import Autoencoder, build_autoencoder, default_architecture
from ..recipes import LARGE_GREY, Recipe
from ..traits import IMAGES, MethodTraits
from .loop import EpochLoop
from .training import (
    OPTIMIZERS,
    TrainSettings,
    check_augment,
    encode,
    encode_all,
    pretrain_layerwise,
    train_autoencoder,
)

#: The autoencoder every method did best with on larger grey objects (COIL-20, 1,440 images of 128 x 128,
#: resized to 64 x 64): the convolutional ``conv-coil20-64`` in batches of 32. A dense network on 32 x 32
#: stays below k-means on the pixels (AE + k-means ~0.59). benchmarks/RESULTS.md, "The issue 3 table".
LARGE_GREY_AUTOENCODER = {"arch": "conv-coil20-64", "batch_size": 32}
#: The public DEC code's MNIST pretraining (XifengGuo/DEC-keras): SGD at learning rate 1, momentum 0.9,
#: torch's default weights (``dec-dense-sgd``), here 100 epochs. On MNIST-70k it lifts AE + k-means from
#: 0.784 (Adam, 50 epochs) to 0.902 and every clustering stage to 0.94-0.95 (RESULTS.md, "MNIST-70k with
#: the public DEC code's pretraining"); SGD needs tens of thousands of steps, so on small sets (MNIST-test:
#: level with Adam; the 1,797 digits: far behind) Adam stays, hence ``min_samples``.
DEC_CODE_PRETRAINING = {"arch": "dec-dense-sgd", "optimizer": "sgd", "lr": 1.0, "pretrain_epochs": 100}
DEC_CODE_MIN_SAMPLES = 20_000


def stage_seed(seed: int, stage: str) -> int:
    """The seed of one stage of a fit, derived from ``random_state`` and the stage's name alone.

    Drawing it from the stream that pretraining consumed would make the k-means that initialises the
    clustering stage depend on whether the autoencoder was trained in this fit or reused.
    """
    state = np.random.SeedSequence([seed, zlib.crc32(stage.encode())]).generate_state(1)[0]
    return int(state) >> 1  # below 2**31: a valid seed for numpy, scikit-learn and torch


@dataclass(frozen=True)
class Initialization:
    """What every method starts its clustering stage from."""

    autoencoder: Autoencoder
    embedding: torch.Tensor  # (n_samples, embedding_dim), in data order
    labels: np.ndarray  # (n_samples,) k-means labels of the embedding
    centers: np.ndarray  # (n_clusters, embedding_dim)


class DeepClusterer(MethodTraits, ClusterMixin, TransformerMixin, BaseEstimator):
    """Base class: autoencoder pretraining, then k-means on the embedding, then a method's own stage.

    Parameters shared by every method
    ---------------------------------
    n_clusters : int, default=10
    arch : str, dict or None, default=None
        A shipped architecture name (``deepclust.models.list_architectures()``), a path to a JSON/YAML
        layer list, or a spec dict. None picks ``default_architecture`` for the data's shape.
    pretrain_epochs : int, default=50
        Epochs of end-to-end autoencoder training (0 with ``autoencoder`` given: reuse it as is).
    layerwise_epochs : int, default=0
        Epochs per layer of greedy denoising pretraining before the end-to-end stage (dense stacks only;
        the DEC paper's recipe).
    batch_size, lr, optimizer, loss, noise, augment :
        Pretraining settings (see ``deepclust.deep.training.TrainSettings``).
    autoencoder : Autoencoder or None
        A pretrained autoencoder to start from (methods of one seed share one, as the papers do).
    n_init : int, default=20
        Restarts of the k-means on the embedding that starts the clustering stage (the DEC code's 20).
        Where k is large for the data, more restarts steady that start: on COIL-20 (1,440 images,
        k = 20) 100 restarts lift IDEC from 0.722 to 0.755 over 3 seeds (benchmarks/RESULTS.md).
    device : str, default="cpu"
    random_state : int or None
    verbose : bool or None
        Progress bars (None: on a terminal).
    checkpoint_dir : str or None
        Where to save a checkpoint after every epoch; ``fit`` resumes from one found there.

    Attributes
    ----------
    labels_, cluster_centers_ (in embedding space), embedding_ (n_samples, d) float32,
    pretrained_embedding_ (the embedding before the clustering stage), autoencoder_,
    history_ (list of dicts, one per epoch or target update), n_features_in_.
    """

    input_kind = IMAGES
    trains_network = True
    #: Whether the clustering stage trains the autoencoder further (DEC, IDEC, DCN); if not, the final
    #: embedding is the pretrained one.
    fine_tunes_autoencoder = True
    saves_model = True
    reuses_autoencoder = True
    option_groups = ("autoencoder",)
    recipes = {LARGE_GREY: Recipe(LARGE_GREY_AUTOENCODER, "COIL-20 at 64 x 64, 3 seeds: AE + k-means 0.748 "
                                  "(dense network at 32 x 32: ~0.59)", resize_to=64)}

    def __init__(self, n_clusters: int = 10, *, arch=None, pretrain_epochs: int = 50,
                 layerwise_epochs: int = 0, batch_size: int = 256, lr: float = 1e-3,
                 optimizer: str = "adam", loss: str = "mse", noise: float = 0.0, augment: bool = False,
                 autoencoder: Autoencoder | None = None, n_init: int = 20, device: str = "cpu",
                 random_state=None, verbose=None, checkpoint_dir=None):
        self.n_clusters = n_clusters
        self.arch = arch
        self.pretrain_epochs = pretrain_epochs
        self.layerwise_epochs = layerwise_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.loss = loss
        self.noise = noise
        self.augment = augment
        self.autoencoder = autoencoder
        self.n_init = n_init
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.checkpoint_dir = checkpoint_dir

    @classmethod
    def _get_param_names(cls) -> list[str]:
        """Parameters of every ``__init__`` in the hierarchy, so subclasses may take ``**kwargs``."""
        names = set()
        for klass in cls.__mro__:
            if "__init__" in vars(klass) and issubclass(klass, DeepClusterer):
                params = inspect.signature(klass.__init__).parameters.values()
                names |= {p.name for p in params if p.name != "self"
                          and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        return sorted(names)

    # ----------------------------------------------------------------- public
    def fit(self, X, y=None):
        """Pretrain (or reuse) the autoencoder, cluster its embedding, then run the method's stage.

        ``y`` is never used for training; when given, the history logs ACC/NMI against it.

        Under torchrun ``fit`` is collective: every rank passes all of ``X`` (read by index) and trains
        on its share of every batch (``deep/training.py``), with batch norm and dropout of the whole
        batch (``deep/global_batch.py``); the fitted model is the same on every rank.
        """
        X = as_image_tensor(X)
        k = check_n_clusters(self.n_clusters, X.shape[0])
        self._device = resolve_device(self.device)
        seed = self._base_seed()
        torch.manual_seed(seed)
        self._generator = torch.Generator().manual_seed(seed)
        self.history_ = []
        start = time.perf_counter()
        init = self.pretrain(X, k)
        self.pretrained_embedding_ = init.embedding.numpy()
        # The clustering stage starts from its own streams, not from whatever pretraining left behind,
        # so an autoencoder reused from an earlier run gives the clustering a fresh one would.
        cluster_seed = stage_seed(seed, "cluster")
        torch.manual_seed(cluster_seed)
        self._generator = torch.Generator().manual_seed(cluster_seed)
        self._fit_clusters(X, init, y)
        # A stage that trained the network further changed the embedding; otherwise it is the one the
        # stage started from (encoding N images again would cost a pass over the data and a copy).
        self.embedding_ = (self._embed_all(X) if self.fine_tunes_autoencoder else init.embedding).numpy()
        self.n_features_in_ = int(np.prod(X.shape[1:]))
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def pretrain(self, X: torch.Tensor, n_clusters: int) -> Initialization:
        """The embedding stage: the (restored, reused or newly trained) autoencoder and k-means on it."""
        model = self._build_or_reuse(X)
        settings = self.train_settings(self.pretrain_epochs)
        check_augment(settings.augment, X, "augment")
        optimizer = settings.optimizer_for(model.parameters())
        loop = self._epoch_loop("pretrain", settings.epochs, {"model": model, "optimizer": optimizer},
                                desc="pretrain")
        state = loop.restore()
        if state is not None:  # resume: weights, optimizer, shuffling stream and history
            self.history_ = list(state["history"])
        elif self.layerwise_epochs > 0 and self.autoencoder is None:
            rows = pretrain_layerwise(model, X, self.train_settings(self.layerwise_epochs),
                                      device=self._device, generator=self._generator,
                                      show_progress=self.verbose)
            self.history_ += [{"stage": "layerwise", **r} for r in rows]

        def on_epoch(epoch: int, row: dict) -> None:
            self.history_.append({"stage": "pretrain", **row})
            loop.save(epoch, self.history_)

        if loop.start < settings.epochs:
            train_autoencoder(model, X, settings, device=self._device, generator=self._generator,
                              optimizer=optimizer, loop=loop, on_epoch=on_epoch)
        self.autoencoder_ = model.eval()
        # Under torchrun each rank encodes its contiguous shard into its rows of the embedding and k-means
        # is collective over the shards (the same centres on every rank; the gathered labels are one
        # process's). The other ranks' rows arrive only after k-means, so a rank never holds the whole
        # embedding and k-means's working set at once; k-means centres the rows in place and gives them
        # back bit for bit (``copy_x=False``), so it needs no copy of them either.
        Z = encode_all(model, X, device=self._device, fill=False)
        km = KMeans(n_clusters, n_init=self.n_init, init_size=None, copy_x=False,
                    random_state=stage_seed(self._base_seed(), "kmeans"))
        km.fit(Z[D.shard_slice(X.shape[0])].numpy())
        D.fill_from_shards(Z.numpy())
        return Initialization(model, Z, D.concat_shards(km.labels_), km.cluster_centers_)

    def predict(self, X) -> np.ndarray:
        """Cluster of each sample of ``X`` under the fitted model."""
        self._check_fitted()
        return self._assign(self._embed(as_image_tensor(X)))

    def fit_predict(self, X, y=None) -> np.ndarray:
        return self.fit(X, y).labels_

    def transform(self, X) -> np.ndarray:
        """The embedding of ``X``: (n_samples, embedding_dim) float32."""
        self._check_fitted()
        return self._embed(as_image_tensor(X)).numpy()

    def architecture(self, input_shape: tuple[int, int, int], n_clusters: int | None = None):
        """The autoencoder a fit on (C, H, W) inputs builds: ``arch`` as given (a name, path or spec), or
        the default for the shape and ``n_clusters`` (default: the estimator's)."""
        if self.arch is not None:
            return self.arch
        return default_architecture(tuple(input_shape), n_clusters or self.n_clusters)

    def train_settings(self, epochs: int) -> TrainSettings:
        return TrainSettings(epochs=epochs, batch_size=check_positive_int(self.batch_size, "batch_size"),
                             lr=self.lr, optimizer=self.optimizer, loss=self.loss, noise=self.noise,
                             augment=self.augment)

    # Default clustering-stage learning rate per optimizer (None: the pretraining ``lr`` where pretraining
    # used the same optimizer, else 1e-3: SGD's pretraining rate, up to 1, would wreck an Adam stage).
    _CLUSTER_LR: dict = {"sgd": 0.01, "adam": None}

    def _cluster_settings(self, epochs: int) -> TrainSettings:
        """Training settings of the clustering stage: the pretraining ones with ``cluster_optimizer``
        and ``cluster_lr`` (None: the class's default for that optimizer). For subclasses with a
        trained clustering stage, which define both parameters (DEC, IDEC, DCN)."""
        settings = self.train_settings(epochs)
        kind = self.cluster_optimizer
        if kind not in OPTIMIZERS:
            raise ValueError(f"cluster_optimizer must be one of {', '.join(OPTIMIZERS)}; got {kind!r}.")
        lr = self.cluster_lr
        if lr is None:
            lr = self._CLUSTER_LR[kind]
            if lr is None:
                lr = self.lr if self.optimizer == kind else 1e-3
        if not lr > 0:
            raise ValueError(f"cluster_lr must be > 0 (or None for the default); got {lr!r}.")
        return dataclasses.replace(settings, optimizer=kind, lr=float(lr))

    # --------------------------------------------------------- for subclasses
    def _fit_clusters(self, X: torch.Tensor, init: Initialization, y=None) -> None:
        raise NotImplementedError

    def _assign(self, Z: torch.Tensor) -> np.ndarray:
        """Default assignment: the nearest centre in embedding space."""
        C = torch.as_tensor(self.cluster_centers_, dtype=Z.dtype)
        return torch.cdist(Z, C).argmin(dim=1).numpy()

    def _extra_tensors(self) -> dict:
        """Fitted arrays saved beside the autoencoder weights (see ``checkpoint.save_model``)."""
        return {"cluster_centers": self.cluster_centers_}

    def _restore_extra_tensors(self, tensors: dict) -> None:
        self.cluster_centers_ = tensors["cluster_centers"].numpy()

    # ---------------------------------------------------------------- helpers
    def _embed(self, X: torch.Tensor) -> torch.Tensor:
        return encode(self.autoencoder_, X, device=self._device)

    def _embed_all(self, X: torch.Tensor) -> torch.Tensor:
        """``_embed`` inside ``fit``: under torchrun each rank encodes its shard and all gather it."""
        return encode_all(self.autoencoder_, X, device=self._device)

    def _base_seed(self) -> int:
        return 0 if self.random_state is None else int(self.random_state)

    def _seed(self) -> int:
        return int(torch.randint(0, 2**31 - 1, (1,), generator=self._generator))

    def _build_or_reuse(self, X: torch.Tensor) -> Autoencoder:
        if self.autoencoder is not None:
            import copy

            model = copy.deepcopy(self.autoencoder)  # never train the caller's module in place
            if tuple(model.input_shape) != tuple(X.shape[1:]):
                raise ValueError(f"The given autoencoder expects inputs of shape {tuple(model.input_shape)}; "
                                 f"the data has shape {tuple(X.shape[1:])}.")
            return model.to(self._device)
        shape = tuple(X.shape[1:])
        spec = self.arch if self.arch is not None else default_architecture(shape, self.n_clusters)
        return build_autoencoder(spec, input_shape=shape).to(self._device)

    def _epoch_loop(self, stage: str, epochs: int, stateful: dict, *, desc: str | None = None) -> EpochLoop:
        """The resumable loop of one training stage, checkpointed in ``checkpoint_dir``."""
        return EpochLoop(stage, epochs, folder=self.checkpoint_dir, generator=self._generator,
                         stateful=stateful, desc=desc or type(self).__name__, verbose=self.verbose)

    def _log(self, row: dict, y, labels: np.ndarray) -> dict:
        if y is not None:
            from ..metrics import clustering_accuracy, normalized_mutual_info

            row = {**row, "acc": clustering_accuracy(y, labels), "nmi": normalized_mutual_info(y, labels)}
        self.history_.append(row)
        return row

    def _check_fitted(self) -> None:
        if not hasattr(self, "autoencoder_"):
            raise RuntimeError(f"This {type(self).__name__} instance is not fitted yet; call fit(X) first.")


def as_image_tensor(X) -> torch.Tensor:
    """Images as a float32 tensor (N, C, H, W).

    numpy arrays follow deepclust's image layout: (N, H, W, C) or (N, H, W); uint8 is scaled to [0, 1].
    torch tensors follow torch's: (N, C, H, W). 2-D (N, d) features become (N, 1, 1, d).
    :class:`~deepclust.data.rows.ImageRows` (a data cache read by index) are returned as they are: they
    give float (N, C, H, W) batches, and uint8 is always finite.
    """
    if isinstance(X, ImageRows) and not X.flat:
        if len(X) == 0:
            raise ValueError("X is empty: it has 0 samples.")
        return X
    if isinstance(X, torch.Tensor):
        t = X.detach().cpu()
        channels_last = False
    else:
        X = np.asarray(X)
        t = torch.from_numpy(np.ascontiguousarray(X))
        channels_last = True
    if t.dim() not in (2, 3, 4):
        raise ValueError(f"X must be images (N, H, W[, C]) or features (N, d); got shape {tuple(t.shape)}.")
    if t.shape[0] == 0:
        raise ValueError("X is empty: it has 0 samples.")
    scale = t.dtype == torch.uint8
    t = t.float() / 255.0 if scale else t.float()
    if t.dim() == 2:
        t = t[:, None, None, :]
    elif t.dim() == 3:
        t = t[:, None]
    elif channels_last:
        t = t.permute(0, 3, 1, 2)
    if not torch.isfinite(t).all():
        raise ValueError("X contains NaN or infinite values; remove or impute them before clustering.")
    return t.contiguous()
