"""k-means, our own: PyTorch, k-means++ seeding, chunked distances, CPU or GPU.

``KMeans`` follows scikit-learn's estimator contract. Three things make it fast on large image sets:

1. **Subsampled seeding.** Each of the ``n_init`` seedings runs k-means++ and Lloyd on a random subset of
   ``init_size`` points; only the best of them (lowest inertia on the subset) is refined on all points.
   The ``n_init`` restarts therefore cost a fraction of one full run. ``init_size=None`` turns this off
   and runs every restart on all points, as scikit-learn does.
2. **Elkan's bounds** skip the rows that cannot change cluster (see ``_lloyd.py``).
3. **float32 GEMM distances** in row chunks: memory beyond ``X`` is O(chunk_size * n_clusters).

``algorithm="minibatch"`` (Sculley 2010) reads ``X`` by index one batch at a time, so ``X`` may be a
``numpy.memmap`` larger than memory. ``backend="sklearn"`` and ``backend="faiss"`` delegate to those
libraries with the same parameters.

**Across ranks.** Under ``torchrun`` (a ``torch.distributed`` group of more than one process), ``fit``
is collective: every rank passes its own shard of the rows and the ranks exchange only O(k * d) sums
and counts (``_distributed.py``). With contiguous shards in rank order the same seed gives the centres
and labels one process gets on all rows, to float rounding. ``fit(X, distributed=False)`` fits one
process's data alone.
"""

from __future__ import annotations

import numbers
import time

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin

from .. import distributed as dist_utils
from .._heap import release_free_memory
from .._validation import (
    check_features,
    check_n_clusters,
    check_positive_int,
    check_random_state,
    resolve_device,
)
from ..progress import progress
from ..traits import MethodTraits
from . import _distributed, _lloyd

_BACKENDS = ("torch", "sklearn", "faiss")
_ALGORITHMS = ("lloyd", "minibatch")


class KMeans(MethodTraits, ClusterMixin, TransformerMixin, BaseEstimator):
    """k-means clustering with k-means++ seeding.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters k.
    init : {"k-means++", "random"} or array of shape (n_clusters, n_features), default="k-means++"
        Seeding: greedy k-means++, k distinct random points, or given centres (then ``n_init`` is 1).
    n_init : int, default=10
        Number of seedings; the one with the lowest inertia is kept.
    max_iter : int, default=300
        Most Lloyd iterations per run (for ``algorithm="minibatch"``: passes over the data).
    tol : float, default=1e-4
        Stop when the summed squared centre shift falls below ``tol`` times the mean feature variance
        (scikit-learn's criterion), or when no label changes.
    init_size : "auto", int or None, default="auto"
        Points used for each seeding and its warm-up Lloyd run. "auto" uses all points below 20,000
        samples, else ``max(n_samples // 8, 100 * n_clusters)``. None uses all points.
    algorithm : {"lloyd", "minibatch"}, default="lloyd"
        Full-batch Lloyd (exact) or mini-batch k-means for data that does not fit in memory.
    batch_size : int, default=4096
        Rows per mini-batch for ``algorithm="minibatch"``.
    backend : {"torch", "sklearn", "faiss"}, default="torch"
        Our implementation, or scikit-learn's / faiss's (``pip install deepclust[faiss]``).
    device : str, default="cpu"
        "cpu", "cuda" or "auto" (torch backend only).
    chunk_size : int, default=16384
        Rows per distance block; bounds the memory used beyond ``X``.
    copy_x : bool, default=True
        The torch backend centres the data before computing distances (more accurate in float32). True
        centres a copy; False centres ``X`` itself in place and gives it back exactly before ``fit``
        returns (scikit-learn's ``copy_x``, without its rounding: the few entries that ``(x - m) + m``
        would not restore are kept aside). That saves a copy of the data. Only a C-contiguous float32
        ``X`` is centred in place, and only when at most 1/8 of its entries need keeping; otherwise a
        copy is centred.
    random_state : int, numpy Generator or None, default=None
        Seed for seeding and subsampling; the same seed gives the same clusters on the CPU.
    verbose : bool, default=False
        Show a progress bar over restarts / epochs.

    Notes
    -----
    **Distributed fit.** ``fit(X, distributed="auto")`` fits across the ranks of an initialised
    ``torch.distributed`` group with more than one process: each rank passes its shard (contiguous
    blocks in rank order, ``deepclust.distributed.shard_indices``) and must call ``fit`` with the same
    parameters and seed. ``cluster_centers_``, ``inertia_`` and ``n_iter_`` are global and identical on
    every rank; ``labels_`` are the rank's own rows (``deepclust.distributed.concat_shards`` joins
    them). ``init_size`` counts global rows and the subsample is drawn over global indices, so seeding,
    restarts and Elkan's bounds behave as in one process. Only ``backend="torch"`` with
    ``algorithm="lloyd"`` runs across ranks; ``predict``, ``transform`` and ``score`` are per shard (no
    communication). ``distributed=False`` fits this process's data alone; ``True`` insists on a group.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features), float32
    labels_ : ndarray of shape (n_samples,), int64
    inertia_ : float
        Sum of squared distances of samples to their closest centre.
    n_iter_ : int
        Iterations of the kept run on all points (``algorithm="minibatch"``: passes over the data).
    n_empty_repaired_ : int
        Empty clusters re-seeded during the kept run.
    n_features_in_ : int

    References
    ----------
    Arthur & Vassilvitskii, "k-means++: the advantages of careful seeding", SODA 2007.
    Elkan, "Using the triangle inequality to accelerate k-means", ICML 2003.
    Sculley, "Web-scale k-means clustering", WWW 2010.

    Examples
    --------
    >>> import numpy as np
    >>> from deepclust import KMeans
    >>> X = np.array([[0, 0], [0, 1], [10, 10], [10, 11]], dtype=np.float32)
    >>> km = KMeans(n_clusters=2, random_state=0).fit(X)
    >>> sorted(np.bincount(km.labels_).tolist())
    [2, 2]
    """

    method_name = "kmeans"
    summary = "k-means on the pixels (our own: PyTorch, k-means++, Elkan)"
    option_groups = ("kmeans",)
    fits_across_processes = True

    def __init__(self, n_clusters: int = 8, *, init="k-means++", n_init: int = 10, max_iter: int = 300,
                 tol: float = 1e-4, init_size="auto", algorithm: str = "lloyd", batch_size: int = 4096,
                 backend: str = "torch", device: str = "cpu", chunk_size: int = 16384,
                 copy_x: bool = True, random_state=None, verbose: bool = False):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.init_size = init_size
        self.algorithm = algorithm
        self.batch_size = batch_size
        self.backend = backend
        self.device = device
        self.chunk_size = chunk_size
        self.copy_x = copy_x
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None, *, distributed="auto") -> KMeans:
        """Compute the clusters of ``X`` (n_samples, n_features) or images (n_samples, ...).

        ``distributed``: "auto" fits across ranks when a ``torch.distributed`` group of more than one
        process is initialised (``X`` is then this rank's shard; see Notes), True requires a group,
        False fits this process's ``X`` alone.
        """
        self._check_params()
        sharded = self._resolve_distributed(distributed)
        rng = check_random_state(self.random_state)
        if self.algorithm == "minibatch" and self.backend == "torch":
            return self._fit_minibatch(X, rng)
        X = check_features(X)
        shards = _distributed.Shards.gather(X.shape[0], X.shape[1]) if sharded else None
        n_clusters = check_n_clusters(self.n_clusters, X.shape[0] if shards is None else shards.n_total)
        init = self._check_init(X.shape[1])
        if shards is not None and not isinstance(init, str):  # rank 0's centres, whatever others got
            init = dist_utils.broadcast_tensor(torch.from_numpy(init)).numpy()
        start = time.perf_counter()
        if self.backend == "sklearn":
            self._fit_sklearn(X, n_clusters, init, rng)
        elif self.backend == "faiss":
            self._fit_faiss(X, n_clusters, init, rng)
        else:
            self._fit_torch(X, n_clusters, init, rng, shards)
        self.n_features_in_ = X.shape[1]
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def _fit_torch(self, X: np.ndarray, k: int, init, rng: np.random.Generator,
                   shards: _distributed.Shards | None = None) -> None:
        """Seed and run Lloyd; with ``shards``, ``X`` is this rank's block and every draw is global."""
        device = resolve_device(self.device)
        # Centre a copy (as sklearn does): float32 GEMM distances lose digits far from the origin.
        if shards is None:
            mean = X.mean(axis=0, dtype=np.float64).astype(np.float32)
        else:
            col_sums = shards.sum(torch.from_numpy(X.sum(axis=0, dtype=np.float64)))
            mean = (col_sums / shards.n_total).numpy().astype(np.float32)
        kept = None
        if not self.copy_x and device.type == "cpu":
            kept = _centre_in_place(torch.from_numpy(X), torch.from_numpy(mean), self.chunk_size)
        Xt = torch.from_numpy(X) if kept is not None else \
            torch.from_numpy(X).to(device) - torch.from_numpy(mean).to(device)
        try:
            self._fit_centred(Xt, mean, k, init, rng, shards)
        finally:
            if kept is not None:
                _uncentre(Xt, torch.from_numpy(mean), kept)

    def _fit_centred(self, Xt: torch.Tensor, mean: np.ndarray, k: int, init, rng: np.random.Generator,
                     shards: _distributed.Shards | None) -> None:
        """``_fit_torch`` on the centred rows ``Xt``."""
        device = Xt.device
        if not isinstance(init, str):
            init = init - mean
        chunk = self.chunk_size
        x_sq = _lloyd.squared_norms(Xt, chunk)
        tol = self.tol * _mean_variance(Xt, x_sq, shards)
        n = Xt.shape[0] if shards is None else shards.n_total
        m = self._resolve_init_size(n, k)
        n_init = 1 if not isinstance(init, str) else self.n_init

        best = None
        show = self.verbose and n_init > 1 and dist_utils.is_main_process()
        for _ in progress(range(n_init), desc="k-means restarts", enabled=show):
            sub_shards = shards
            if m < n:  # seed and warm up on a random subset (of global row indices)
                sub = np.sort(rng.choice(n, size=m, replace=False))
                if shards is not None:
                    sub_shards, sub = shards.subset(sub)
                sub = torch.as_tensor(sub, device=device)
                Xs, xs_sq = Xt[sub], x_sq[sub]
            else:
                Xs, xs_sq = Xt, x_sq
            centers = self._seed(Xs, xs_sq, k, init, rng, sub_shards)
            run = _lloyd.lloyd(Xs, xs_sq, centers, max_iter=self.max_iter, tol=tol, chunk_size=chunk,
                               comm=sub_shards)
            if best is None or run.inertia < best.inertia:
                best = run
            del run, centers, Xs, xs_sq
            release_free_memory()  # each restart's freed arrays, or resident memory ratchets up
        if m < n:  # refine the best warm start on every point
            best = _lloyd.lloyd(Xt, x_sq, best.centers, max_iter=self.max_iter, tol=tol, chunk_size=chunk,
                                comm=shards)
        self.cluster_centers_ = best.centers.cpu().numpy() + mean
        self.labels_ = best.labels.cpu().numpy()
        self.inertia_ = best.inertia
        self.n_iter_ = best.n_iter
        self.n_empty_repaired_ = best.n_repaired

    def _seed(self, X, x_sq, k, init, rng, shards=None) -> torch.Tensor:
        if not isinstance(init, str):
            return torch.as_tensor(init, dtype=X.dtype, device=X.device)
        if shards is not None:
            if init == "random":
                return _distributed.random_init(X, k, rng, shards)
            return _distributed.kmeans_plusplus(X, x_sq, k, rng, self.chunk_size, shards)
        if init == "random":
            return X[torch.as_tensor(rng.choice(X.shape[0], size=k, replace=False), device=X.device)].clone()
        return _lloyd.kmeans_plusplus(X, x_sq, k, rng, self.chunk_size)

    def _fit_minibatch(self, X, rng: np.random.Generator) -> KMeans:
        """Mini-batch k-means: centres move towards each batch with per-centre rate 1 / count."""
        n = _n_rows(X)
        k = check_n_clusters(self.n_clusters, n)
        device = resolve_device(self.device)
        batch = min(check_positive_int(self.batch_size, "batch_size"), n)
        m = min(n, max(self._resolve_init_size(n, k), batch, 3 * k))
        seed_rows = check_features(_read_rows(X, np.sort(rng.choice(n, size=m, replace=False))))
        init = self._check_init(seed_rows.shape[1])
        Xs = torch.from_numpy(seed_rows).to(device)
        xs_sq = _lloyd.squared_norms(Xs, self.chunk_size)
        best = None
        for _ in range(1 if not isinstance(init, str) else self.n_init):
            centers = self._seed(Xs, xs_sq, k, init, rng)
            run = _lloyd.lloyd(Xs, xs_sq, centers, max_iter=self.max_iter, tol=0.0,
                               chunk_size=self.chunk_size)
            if best is None or run.inertia < best.inertia:
                best = run
        centers = best.centers.double()
        counts = torch.zeros(k, dtype=torch.float64, device=device)
        # Same stopping rule as Lloyd, per pass over the data: the summed squared shift of the centres
        # over one epoch below tol times the mean feature variance (estimated on the seeding rows).
        tol = self.tol * _mean_variance(Xs, xs_sq)
        epochs = 0
        bar = progress(range(self.max_iter), desc="mini-batch k-means", unit="epoch", enabled=self.verbose)
        for epochs in bar:  # noqa: B007 - reported after the loop
            order = rng.permutation(n)
            before = centers.clone()
            for start in range(0, n, batch):
                rows = torch.from_numpy(check_features(_read_rows(X, np.sort(order[start:start + batch]))))
                rows = rows.to(device).double()
                labels, _ = _lloyd.assign(rows, (rows * rows).sum(1), centers, self.chunk_size)
                sums = torch.zeros_like(centers).index_add_(0, labels, rows)
                batch_counts = torch.bincount(labels, minlength=k).to(torch.float64)
                counts += batch_counts
                rate = (batch_counts / counts.clamp(min=1)).unsqueeze(1)  # per-centre learning rate
                target = sums / batch_counts.clamp(min=1).unsqueeze(1)
                centers += rate * (target - centers)
            shift = float(((centers - before) ** 2).sum())
            bar.set_postfix(shift=f"{shift:.3g}")
            if shift <= tol:
                break
        steps = epochs + 1
        centers = centers.to(torch.float32)
        self.labels_, inertia = self._predict_chunked(X, centers)
        self.cluster_centers_ = centers.cpu().numpy()
        self.inertia_ = inertia
        self.n_iter_ = steps
        self.n_empty_repaired_ = 0
        self.n_features_in_ = self.cluster_centers_.shape[1]
        return self

    def _fit_sklearn(self, X, k, init, rng) -> None:
        from sklearn.cluster import KMeans as SKKMeans
        from sklearn.cluster import MiniBatchKMeans

        seed = int(rng.integers(2**31 - 1))
        common = dict(n_clusters=k, init=init, max_iter=self.max_iter, tol=self.tol, random_state=seed,
                      n_init=1 if not isinstance(init, str) else self.n_init)
        if self.algorithm == "minibatch":
            est = MiniBatchKMeans(batch_size=self.batch_size, **common).fit(X)
        else:
            est = SKKMeans(**common).fit(X)
        self.cluster_centers_ = est.cluster_centers_.astype(np.float32)
        self.labels_ = est.labels_.astype(np.int64)
        self.inertia_ = float(est.inertia_)
        self.n_iter_ = int(est.n_iter_)
        self.n_empty_repaired_ = 0

    def _fit_faiss(self, X, k, init, rng) -> None:
        try:
            import faiss
        except ImportError:
            raise ImportError(
                "backend='faiss' needs the faiss package: pip install 'deepclust[faiss]' (or faiss-cpu)."
            ) from None
        seed = int(rng.integers(2**31 - 1))
        nredo = self.n_init if isinstance(init, str) else 1  # given centres: every redo would repeat it
        km = faiss.Kmeans(X.shape[1], k, niter=self.max_iter, nredo=nredo, seed=seed,
                          max_points_per_centroid=X.shape[0], spherical=False, verbose=False,
                          gpu=resolve_device(self.device).type == "cuda")
        if isinstance(init, str):
            km.train(X)
        else:
            km.train(X, init_centroids=np.ascontiguousarray(init, dtype=np.float32))
        dist, labels = km.index.search(X, 1)
        self.cluster_centers_ = km.centroids.astype(np.float32)
        self.labels_ = labels[:, 0].astype(np.int64)
        self.inertia_ = float(dist.sum(dtype=np.float64))
        self.n_iter_ = self.max_iter
        self.n_empty_repaired_ = 0

    # --------------------------------------------------------------- prediction
    def predict(self, X) -> np.ndarray:
        """Index of the nearest centre for each sample: (n_samples,) int64."""
        self._check_fitted(X)
        labels, _ = self._predict_chunked(X, torch.from_numpy(self.cluster_centers_))
        return labels

    def fit_predict(self, X, y=None, *, distributed="auto") -> np.ndarray:
        return self.fit(X, distributed=distributed).labels_

    def transform(self, X) -> np.ndarray:
        """Euclidean distance of each sample to each centre: (n_samples, n_clusters) float32."""
        self._check_fitted(X)
        X = torch.from_numpy(check_features(X))
        C = torch.from_numpy(self.cluster_centers_)
        return _lloyd.all_distances(X, _lloyd.squared_norms(X, self.chunk_size), C, self.chunk_size).numpy()

    def score(self, X, y=None) -> float:
        """Opposite of the inertia of ``X`` under the fitted centres (higher is better)."""
        self._check_fitted(X)
        return -self._predict_chunked(X, torch.from_numpy(self.cluster_centers_))[1]

    def _predict_chunked(self, X, centers: torch.Tensor):
        """Labels and inertia, reading ``X`` one chunk of rows at a time (works on memmaps)."""
        n = _n_rows(X)
        labels = np.empty(n, dtype=np.int64)
        inertia = 0.0
        centers = centers.to(torch.float32).cpu()
        for start in range(0, n, self.chunk_size):
            rows = torch.from_numpy(check_features(_read_rows(X, slice(start, start + self.chunk_size))))
            lab, dist = _lloyd.assign(rows, _lloyd.squared_norms(rows, self.chunk_size), centers,
                                      self.chunk_size)
            labels[start:start + rows.shape[0]] = lab.numpy()
            inertia += float(dist.sum(dtype=torch.float64))
        return labels, inertia

    # --------------------------------------------------------------- validation
    def _check_params(self) -> None:
        if self.backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}; got {self.backend!r}.")
        if self.algorithm not in _ALGORITHMS:
            raise ValueError(f"algorithm must be one of {_ALGORITHMS}; got {self.algorithm!r}.")
        check_positive_int(self.n_init, "n_init")
        check_positive_int(self.max_iter, "max_iter")
        check_positive_int(self.chunk_size, "chunk_size")
        if not isinstance(self.tol, numbers.Real) or self.tol < 0:
            raise ValueError(f"tol must be a number >= 0; got {self.tol!r}.")
        if not (self.init_size is None or self.init_size == "auto"
                or (isinstance(self.init_size, numbers.Integral) and self.init_size >= 1)):
            raise ValueError(f"init_size must be 'auto', None or an integer >= 1; got {self.init_size!r}.")

    def _resolve_distributed(self, distributed) -> bool:
        """Whether this fit runs across ranks; unsupported combinations fail on every rank alike."""
        if distributed == "auto":
            sharded = dist_utils.is_distributed()
        elif isinstance(distributed, bool):
            if distributed and not dist_utils.is_initialized():
                raise ValueError("distributed=True needs an initialised torch.distributed group: run under "
                                 "torchrun and call deepclust.distributed.init_distributed() first.")
            sharded = distributed
        else:
            raise ValueError(f"distributed must be 'auto', True or False; got {distributed!r}.")
        if sharded and (self.backend != "torch" or self.algorithm != "lloyd"):
            raise ValueError(
                f"backend={self.backend!r}, algorithm={self.algorithm!r} cannot fit shards across ranks; "
                "use backend='torch', algorithm='lloyd', or fit(X, distributed=False) on one rank's data.")
        return sharded

    def _check_init(self, n_features: int):
        if isinstance(self.init, str):
            if self.init not in ("k-means++", "random"):
                raise ValueError(f"init must be 'k-means++', 'random' or an array; got {self.init!r}.")
            return self.init
        init = np.asarray(self.init, dtype=np.float32)
        if init.shape != (self.n_clusters, n_features):
            raise ValueError(f"init centres must have shape (n_clusters, n_features) = "
                             f"({self.n_clusters}, {n_features}); got {init.shape}.")
        return check_features(init, name="init")

    def _resolve_init_size(self, n: int, k: int) -> int:
        if self.init_size is None:
            return n
        if self.init_size == "auto":
            return n if n < 20_000 else min(n, max(n // 8, 100 * k))
        return max(min(int(self.init_size), n), k)

    def _check_fitted(self, X) -> None:
        if not hasattr(self, "cluster_centers_"):
            raise RuntimeError("This KMeans instance is not fitted yet; call fit(X) first.")
        n_features = int(np.prod(np.shape(X)[1:])) if np.ndim(X) > 1 else None
        if n_features is not None and n_features != self.n_features_in_:
            raise ValueError(f"X has {n_features} features, but KMeans was fitted with "
                             f"{self.n_features_in_} features.")


def _mean_variance(X: torch.Tensor, x_sq: torch.Tensor, shards=None) -> float:
    """Mean over features of the per-feature variance: (sum_i ||x_i||^2 / n - ||mean||^2) / d.

    With ``shards``, ``X`` is one rank's block and the sums run over all ranks.
    """
    mean = torch.zeros(X.shape[1], dtype=torch.float64, device=X.device)
    for start in range(0, X.shape[0], 1024):  # a float64 sum of all of X at once copies X to float64
        mean += X[start:start + 1024].sum(dim=0, dtype=torch.float64)
    sq = x_sq.sum(dtype=torch.float64)
    n = X.shape[0]
    if shards is not None:
        mean, sq, n = shards.sum(mean), shards.sum(sq), shards.n_total
    mean /= n
    total = float(sq) / n - float((mean * mean).sum())
    return max(total, 0.0) / X.shape[1]


def _n_rows(X) -> int:
    if not hasattr(X, "shape") or len(X.shape) < 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features) or images (n_samples, ...); got {type(X)}.")
    return int(X.shape[0])


def _read_rows(X, index) -> np.ndarray:
    """Rows of ``X`` as a 2-D array; works on numpy arrays, memmaps, h5py datasets and tensors."""
    rows = X[index]
    if isinstance(rows, torch.Tensor):
        rows = rows.detach().cpu().numpy()
    rows = np.asarray(rows)
    return rows.reshape(rows.shape[0], -1)


def _centre_in_place(X: torch.Tensor, mean: torch.Tensor, chunk_size: int):
    """Subtract ``mean`` from the rows of ``X`` in place, ``chunk_size`` rows at a time. Returns the flat
    positions and original values of the entries that adding ``mean`` back would not restore bit for bit,
    or None, with ``X`` as it was, when more than 1/8 of the entries would need keeping (a copy is then
    cheaper)."""
    limit, positions, values, count = X.numel() // 8, [], [], 0
    width = X.shape[1]
    for start in range(0, X.shape[0], chunk_size):
        block = X[start:start + chunk_size]
        before = block.clone()
        block.sub_(mean)
        lost = torch.nonzero((block + mean).ne_(before).view(-1)).flatten()
        if lost.numel():
            positions.append(lost + start * width)
            values.append(before.view(-1)[lost])
            count += lost.numel()
        if count > limit:
            X[:start + block.shape[0]].add_(mean)
            _put_back(X, positions, values)
            return None
    return positions, values


def _uncentre(X: torch.Tensor, mean: torch.Tensor, kept) -> None:
    """Undo :func:`_centre_in_place` exactly."""
    X.add_(mean)
    _put_back(X, *kept)


def _put_back(X: torch.Tensor, positions: list, values: list) -> None:
    flat = X.view(-1)
    for where, value in zip(positions, values, strict=True):
        flat[where] = value
