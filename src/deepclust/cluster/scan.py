"""SCAN's clustering step on frozen features: neighbours agree, clusters stay balanced, then self-labels.

Reference: Van Gansbeke, Vandenhende, Georgoulis, Proesmans & Van Gool, "SCAN: learning to classify
images without labels", ECCV 2020. Written here from the paper's description (the authors' code is
CC BY-NC and was not used). Here the backbone is frozen, so only a small head is trained:

1. **Mine neighbours.** Rows are L2-normalised (so dot products are cosine similarities) and each row's
   ``n_neighbors`` nearest other rows are found in chunks: memory beyond ``X`` is
   O(chunk_size * n_samples).
2. **Clustering loss.** ``n_heads`` independent heads (linear, or one hidden layer; logits divided by
   ``temperature``) map a row to ``n_clusters`` probabilities. For a row i and a random neighbour j
   the loss is ``-log <p_i, p_j>`` (neighbours should land in the same cluster, confidently) minus
   ``entropy_weight`` times the entropy of the batch's mean prediction (so not all in one cluster).
   The head with the lowest loss on all rows and all their neighbours is kept: no labels are used.
3. **Self-labelling** (``self_label=True``). Rows the kept head assigns with probability above
   ``confidence`` become pseudo-labels, and the head is trained with a class-balanced cross-entropy to
   predict them from a perturbed copy of the row. Images would be strongly augmented here; on frozen
   features the perturbation is ``augment``: dropout of feature dimensions (default), Gaussian noise,
   or mixing the row with one of its neighbours. The pseudo-labels are re-read every batch.

Everything random (initial weights, batches, neighbours, perturbations) is drawn from one
``torch.Generator`` seeded from ``random_state``: the same seed gives the same clusters on one machine.
"""

from __future__ import annotations

import math
import numbers
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClusterMixin
from torch import nn

from .._validation import (
    check_features,
    check_n_clusters,
    check_positive_int,
    check_random_state,
    resolve_device,
)
from ..progress import progress
from ..traits import MethodTraits
from ._means import cluster_means

_AUGMENTS = ("dropout", "noise", "neighbor-mix", "none")


def l2_normalize(X: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length (all-zero rows stay zero)."""
    return X / X.norm(dim=1, keepdim=True).clamp(min=1e-12)


def mine_neighbors(X: torch.Tensor, n_neighbors: int, *, chunk_size: int = 2048) -> torch.Tensor:
    """Indices (n_samples, n_neighbors) of each row's most cosine-similar other rows, most similar first.

    ``X`` must be L2-normalised. Similarities are computed ``chunk_size`` rows at a time.
    """
    n = X.shape[0]
    out = torch.empty(n, n_neighbors, dtype=torch.int64, device=X.device)
    for start in range(0, n, chunk_size):
        sim = X[start:start + chunk_size] @ X.T  # (chunk, n)
        rows = torch.arange(sim.shape[0], device=X.device)
        sim[rows, rows + start] = -math.inf  # a row is not its own neighbour
        out[start:start + sim.shape[0]] = sim.topk(n_neighbors, dim=1).indices
    return out


class _Heads(nn.Module):
    """``n_heads`` independent heads evaluated at once: (batch, in) -> logits (n_heads, batch, k).

    ``hidden == 0``: one linear layer per head; else Linear -> ReLU -> Linear. The logits are divided
    by ``spec["temperature"]``. ``spec`` holds everything needed to rebuild it (see
    ``SCAN._rebuild_network``).
    """

    def __init__(self, spec: dict, generator: torch.Generator | None = None):
        super().__init__()
        self.spec = dict(spec)
        self.input_shape = (int(spec["in_features"]),)
        h, d, k, hidden = spec["n_heads"], spec["in_features"], spec["n_clusters"], spec["hidden"]
        sizes = [d, hidden, k] if hidden else [d, k]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            bound = 1.0 / math.sqrt(fan_in)  # PyTorch's default Linear initialisation range
            self.weights.append(nn.Parameter(torch.empty(h, fan_in, fan_out).uniform_(
                -bound, bound, generator=generator)))
            self.biases.append(nn.Parameter(torch.empty(h, 1, fan_out).uniform_(
                -bound, bound, generator=generator)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.unsqueeze(0).expand(len(self.weights[0]), -1, -1)  # (heads, batch, in)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            z = torch.baddbmm(b, z, w)  # (heads, batch, out)
            if i < len(self.weights) - 1:
                z = F.relu(z)
        return z / self.spec.get("temperature", 1.0)

    def select(self, head: int) -> _Heads:
        """A one-head copy of head number ``head``."""
        single = _Heads({**self.spec, "n_heads": 1})
        with torch.no_grad():
            for dst, src in zip(single.parameters(), self.parameters(), strict=True):
                dst.copy_(src[head:head + 1])
        return single.to(self.weights[0].device)


def scan_loss(logits_i: torch.Tensor, logits_j: torch.Tensor, entropy_weight: float) -> tuple:
    """Per-head SCAN loss of rows i and their neighbours j: logits (heads, batch, k).

    Returns (total, consistency, entropy), each of shape (heads,); total = consistency - w * entropy.
    """
    p_i, p_j = logits_i.softmax(-1), logits_j.softmax(-1)
    agree = (p_i * p_j).sum(-1).clamp(min=1e-8)  # (heads, batch)
    consistency = -agree.log().mean(-1)
    mean_p = p_i.mean(1).clamp(min=1e-8)  # (heads, k)
    entropy = -(mean_p * mean_p.log()).sum(-1)
    return consistency - entropy_weight * entropy, consistency, entropy


class SCAN(MethodTraits, ClusterMixin, BaseEstimator):
    """SCAN clustering head trained on frozen feature vectors (e.g. pretrained backbone features).

    Rows are L2-normalised inside ``fit``/``predict`` (cosine geometry, as pretrained features are
    usually compared). See the module docstring for the method.

    Parameters
    ----------
    n_clusters : int, default=10
    n_neighbors : int, default=20
        Neighbours mined per row (at most n_samples - 1).
    n_heads : int, default=10
        Heads trained side by side; the one with the lowest clustering loss is kept.
    hidden : int, default=0
        Hidden units per head; 0 means a linear head.
    epochs : int, default=50
        Passes over the data for the clustering loss.
    batch_size : int, default=256
    lr : float, default=1e-3
        Adam learning rate (both stages).
    weight_decay : float, default=1e-4
    entropy_weight : float, default=5.0
        Weight of the entropy of the mean prediction (SCAN's default).
    temperature : float, default=0.1
        Logits are divided by it. Rows are unit vectors, so a linear head's logits are small; at 1.0 few
        predictions pass ``confidence`` and self-labelling can merge clusters (imagenette-val features:
        16 % confident, ACC 0.97 -> 0.51), at 0.1 89 % do.
    self_label : bool, default=True
        Fine-tune the kept head on its own confident predictions.
    self_label_epochs : int, default=50
    confidence : float, default=0.9
        Probability above which a prediction becomes a pseudo-label (SCAN's images use 0.99).
    augment : {"dropout", "noise", "neighbor-mix", "none"}, default="dropout"
        Perturbation of the rows seen by the loss in place of image augmentation.
    augment_strength : float, default=0.5
        Dropout probability, noise standard deviation relative to a unit row, or the largest weight
        given to the neighbour.
    augment_scan : bool, default=False
        Also perturb both rows in the clustering-loss stage (else only in self-labelling).
    chunk_size : int, default=2048
        Rows per similarity block when mining neighbours.
    device : str, default="cpu"
    random_state : int, numpy Generator or None, default=None
    verbose : bool, default=False

    Attributes
    ----------
    labels_ : ndarray (n_samples,) int64
    cluster_centers_ : ndarray (n_clusters, n_features) float32
        Mean input row (as given, before normalisation) of each cluster; zeros for an empty cluster.
    head_ : the kept head, a torch module (one head)
    best_head_ : int
        Index of the kept head among the ``n_heads``.
    head_losses_ : ndarray (n_heads,)
        Final clustering loss of every head on all rows.
    neighbors_ : ndarray (n_samples, n_neighbors) int64
    history_ : list of dict
        One row per epoch: ``stage`` ("scan" or "self-label"), ``epoch`` and ``loss``; "scan" rows add
        ``consistency`` and ``entropy`` (means over the heads), "self-label" rows the ``confident``
        fraction of rows (``loss`` is None in an epoch with none).
    n_features_in_ : int
    fit_seconds_ : float
    """

    method_name = "scan"
    summary = "SCAN's clustering head and self-labelling on feature vectors (Van Gansbeke et al. 2020)"
    option_groups = ("scan",)
    saves_model = True
    _network_attr = "head_"  # for deepclust.deep.checkpoint.save_model / load_model

    def __init__(self, n_clusters: int = 10, *, n_neighbors: int = 20, n_heads: int = 10, hidden: int = 0,
                 epochs: int = 50, batch_size: int = 256, lr: float = 1e-3, weight_decay: float = 1e-4,
                 entropy_weight: float = 5.0, temperature: float = 0.1, self_label: bool = True,
                 self_label_epochs: int = 50, confidence: float = 0.9, augment: str = "dropout",
                 augment_strength: float = 0.5, augment_scan: bool = False, chunk_size: int = 2048,
                 device: str = "cpu", random_state=None, verbose: bool = False):
        self.n_clusters = n_clusters
        self.n_neighbors = n_neighbors
        self.n_heads = n_heads
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.entropy_weight = entropy_weight
        self.temperature = temperature
        self.self_label = self_label
        self.self_label_epochs = self_label_epochs
        self.confidence = confidence
        self.augment = augment
        self.augment_strength = augment_strength
        self.augment_scan = augment_scan
        self.chunk_size = chunk_size
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None) -> SCAN:
        """Mine neighbours, train the heads, keep the best, self-label. ``y`` is ignored."""
        self._check_params()
        X = check_features(X)
        n = X.shape[0]
        k = check_n_clusters(self.n_clusters, n)
        if n < 2:
            raise ValueError("SCAN needs at least 2 samples to mine neighbours; got 1.")
        start = time.perf_counter()
        rng = check_random_state(self.random_state)
        gen = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
        self._device = resolve_device(self.device)
        Xn = l2_normalize(torch.from_numpy(X).to(self._device))
        neighbors = mine_neighbors(Xn, min(self.n_neighbors, n - 1), chunk_size=self.chunk_size)

        spec = {"in_features": X.shape[1], "n_clusters": k, "n_heads": self.n_heads, "hidden": self.hidden,
                "temperature": float(self.temperature)}
        heads = _Heads(spec, gen).to(self._device)
        self.history_ = []
        self._train_scan(heads, Xn, neighbors, gen)
        self.head_losses_ = self._head_losses(heads, Xn, neighbors)
        self.best_head_ = int(np.argmin(self.head_losses_))
        self.head_ = heads.select(self.best_head_)
        if self.self_label:
            self._train_self_label(self.head_, Xn, neighbors, gen)
        self.head_.eval()

        self.labels_ = self._logits(Xn).argmax(1).cpu().numpy()
        self.cluster_centers_ = cluster_means(X, self.labels_, k)
        self.neighbors_ = neighbors.cpu().numpy()
        self.n_features_in_ = X.shape[1]
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def _batches(self, n: int, gen: torch.Generator):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, self.batch_size):
            yield order[start:start + self.batch_size].to(self._device)

    def _perturb(self, x: torch.Tensor, idx: torch.Tensor, Xn: torch.Tensor, neighbors: torch.Tensor,
                 gen: torch.Generator) -> torch.Tensor:
        """The feature-space stand-in for a strong image augmentation (see ``augment``)."""
        s = float(self.augment_strength)
        if self.augment == "dropout":
            keep = (torch.rand(x.shape, generator=gen) >= s).to(x.device)
            return x * keep / max(1.0 - s, 1e-6)
        if self.augment == "noise":
            noise = torch.randn(x.shape, generator=gen).to(x.device)
            return l2_normalize(x + s * noise / math.sqrt(x.shape[1]))
        if self.augment == "neighbor-mix":
            other = Xn[_random_neighbor(neighbors, idx, gen)]
            lam = (torch.rand(x.shape[0], 1, generator=gen) * s).to(x.device)
            return l2_normalize((1 - lam) * x + lam * other)
        return x

    def _train_scan(self, heads: _Heads, Xn, neighbors, gen) -> None:
        opt = torch.optim.Adam(heads.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        bar = progress(range(self.epochs), desc="SCAN", unit="epoch", enabled=self.verbose)
        for epoch in bar:
            sums = torch.zeros(3, dtype=torch.float64)
            count = 0
            for idx in self._batches(Xn.shape[0], gen):
                jdx = _random_neighbor(neighbors, idx, gen)
                xi, xj = Xn[idx], Xn[jdx]
                if self.augment_scan:
                    xi = self._perturb(xi, idx, Xn, neighbors, gen)
                    xj = self._perturb(xj, jdx, Xn, neighbors, gen)
                logits = heads(torch.cat([xi, xj]))  # one pass for both: (heads, 2 * batch, k)
                total, cons, ent = scan_loss(logits[:, :len(idx)], logits[:, len(idx):], self.entropy_weight)
                opt.zero_grad(set_to_none=True)
                total.sum().backward()  # heads are independent: the sum trains each on its own loss
                opt.step()
                parts = torch.stack([total.mean(), cons.mean(), ent.mean()]).detach()
                sums += parts.double().cpu() * len(idx)
                count += len(idx)
            loss, cons, ent = (sums / count).tolist()
            self.history_.append({"stage": "scan", "epoch": epoch + 1, "loss": loss, "consistency": cons,
                                  "entropy": ent})
            bar.set_postfix(loss=f"{loss:.4f}")

    @torch.no_grad()
    def _head_losses(self, heads: _Heads, Xn, neighbors) -> np.ndarray:
        """Each head's clustering loss on all rows against all their neighbours (no labels)."""
        heads.eval()
        probs = torch.cat([heads(Xn[s:s + self.chunk_size]).softmax(-1)
                           for s in range(0, Xn.shape[0], self.chunk_size)], dim=1)  # (heads, n, k)
        cons = torch.zeros(probs.shape[0], dtype=torch.float64, device=probs.device)
        for col in range(neighbors.shape[1]):
            agree = (probs * probs[:, neighbors[:, col]]).sum(-1).clamp(min=1e-8)
            cons += -agree.log().mean(-1).double()
        cons /= neighbors.shape[1]
        mean_p = probs.mean(1).clamp(min=1e-8)
        entropy = -(mean_p * mean_p.log()).sum(-1).double()
        heads.train()
        return (cons - self.entropy_weight * entropy).cpu().numpy()

    def _train_self_label(self, head: _Heads, Xn, neighbors, gen) -> None:
        opt = torch.optim.Adam(head.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        k = head.spec["n_clusters"]
        bar = progress(range(self.self_label_epochs), desc="self-label", unit="epoch", enabled=self.verbose)
        for epoch in bar:
            loss_sum, confident, n_seen = 0.0, 0, 0
            for idx in self._batches(Xn.shape[0], gen):
                x = Xn[idx]
                with torch.no_grad():
                    prob = head(x)[0].softmax(-1)
                top, target = prob.max(-1)
                mask = top > self.confidence
                n_seen += len(idx)
                if not bool(mask.any()):
                    continue
                confident += int(mask.sum())
                # Class-balanced: each pseudo-class weighs inversely to its count among the confident rows.
                counts = torch.bincount(target[mask], minlength=k).to(x.dtype)
                weight = torch.where(counts > 0, counts.sum() / counts.clamp(min=1) / k, 0.0)
                logits = head(self._perturb(x[mask], idx[mask], Xn, neighbors, gen))[0]
                loss = F.cross_entropy(logits, target[mask], weight=weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += loss.item() * int(mask.sum())
            frac = confident / max(n_seen, 1)
            row = {"stage": "self-label", "epoch": epoch + 1,
                   "loss": loss_sum / confident if confident else None, "confident": frac}
            self.history_.append(row)
            bar.set_postfix(confident=f"{frac:.3f}")

    # --------------------------------------------------------------- prediction
    @torch.no_grad()
    def _logits(self, Xn: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.head_(Xn[s:s + self.chunk_size])[0]
                          for s in range(0, Xn.shape[0], self.chunk_size)])

    def predict_proba(self, X) -> np.ndarray:
        """Cluster probabilities of the kept head: (n_samples, n_clusters) float32."""
        self._check_fitted(X)
        Xn = l2_normalize(torch.from_numpy(check_features(X)).to(self._device))
        return self._logits(Xn).softmax(1).cpu().numpy()

    def predict(self, X) -> np.ndarray:
        """Most probable cluster of each row: (n_samples,) int64."""
        return self.predict_proba(X).argmax(1).astype(np.int64)

    def fit_predict(self, X, y=None) -> np.ndarray:
        return self.fit(X).labels_

    # ------------------------------------------------------- saving and loading
    @staticmethod
    def _rebuild_network(spec: dict, input_shape=None) -> _Heads:
        """An untrained head of the saved shape, for ``deepclust.deep.checkpoint.load_model``."""
        return _Heads(spec)

    def _extra_tensors(self) -> dict:
        return {"cluster_centers": self.cluster_centers_, "labels": self.labels_,
                "head_losses": self.head_losses_, "best_head": np.asarray([self.best_head_])}

    def _restore_extra_tensors(self, tensors: dict) -> None:
        self.cluster_centers_ = tensors["cluster_centers"].numpy()
        self.labels_ = tensors["labels"].numpy()
        self.head_losses_ = tensors["head_losses"].numpy()
        self.best_head_ = int(tensors["best_head"][0])

    # --------------------------------------------------------------- validation
    def _check_params(self) -> None:
        for name in ("n_neighbors", "n_heads", "epochs", "batch_size", "chunk_size"):
            check_positive_int(getattr(self, name), name)
        check_positive_int(self.hidden, "hidden", minimum=0)
        check_positive_int(self.self_label_epochs, "self_label_epochs", minimum=0)
        for name in ("lr", "weight_decay", "entropy_weight", "temperature", "augment_strength"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
                raise ValueError(f"{name} must be a number >= 0; got {value!r}.")
        for name in ("lr", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)!r}.")
        if isinstance(self.confidence, bool) or not isinstance(self.confidence, numbers.Real) \
                or not 0 <= self.confidence < 1:
            raise ValueError(f"confidence must be a number in [0, 1); got {self.confidence!r}.")
        if self.augment not in _AUGMENTS:
            raise ValueError(f"augment must be one of {_AUGMENTS}; got {self.augment!r}.")
        if self.augment == "dropout" and not self.augment_strength < 1:
            raise ValueError(f"augment_strength is a dropout probability here: it must be < 1; "
                             f"got {self.augment_strength!r}.")

    def _check_fitted(self, X) -> None:
        if not hasattr(self, "head_"):
            raise RuntimeError("This SCAN instance is not fitted yet; call fit(X) first.")
        n_features = int(np.prod(np.shape(X)[1:])) if np.ndim(X) > 1 else None
        if n_features is not None and n_features != self.n_features_in_:
            raise ValueError(f"X has {n_features} features, but SCAN was fitted with "
                             f"{self.n_features_in_} features.")


def _random_neighbor(neighbors: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One neighbour of each row in ``idx``, drawn uniformly from its mined neighbours."""
    col = torch.randint(neighbors.shape[1], (len(idx),), generator=gen).to(neighbors.device)
    return neighbors[idx, col]


__all__ = ["SCAN", "mine_neighbors", "l2_normalize", "scan_loss"]
