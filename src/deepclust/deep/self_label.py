"""Self-labelling on confident points with augmented views: a small convnet learns a clustering's labels.

A clustering of images (N2D's mixture) is mostly right where it is confident. A classifier trained on
those points alone, on augmented views (shifts scaled to the image size, rotations, scale jitter),
learns what the whole class looks like rather than where the points lie in one embedding, and its
predictions on the clean images relabel the doubtful points. Each further round selects again from the
classifier's own labels. Views much stronger than the defaults hurt (USPS: 0.975 -> 0.930), as do none
(0.966). The idea is SCAN's last step (Van Gansbeke et al., ECCV 2020)
with ConvDEC-DA's augmentation (Guo et al., ICONIP 2018), both written here from the papers' text.

Selection: each cluster keeps its ``fraction`` of members whose ``n_neighbors`` nearest neighbours in
``features`` (N2D: the autoencoder's embedding) most often share their label, so every cluster is
represented. A Gaussian mixture's probabilities cannot pick them: on a UMAP map nearly every point has
probability > 0.99 (MNIST-test: 99.7 %), and the top half by probability is barely more often right than
all points (USPS: 97.3 % against 96.4 %), where the top half by neighbour agreement is right 99.8 % of
the time (benchmarks/RESULTS.md, "Self-labelling on top of N2D"). Without ``features`` the score is the
probability. Training: class-balanced cross-entropy (each kept class weighs inversely to its count),
Adam, ``epochs`` passes over the kept points per round, at a constant rate or falling to 0 along a cosine
(``schedule``). How good the classifier is matters as much as its labels: trained on the TRUE labels of
a random half of MNIST-test it labels all of it at 0.976 with 10 flat epochs at 1e-3 and at 0.992 with 30
epochs on the cosine schedule from 3e-3. Learning only the confident half caps it, though (0.983 with the
true labels of the half the selection picks): a last "student" round, a fresh network on every image's
label, learns the hard half as well.

Everything random (the network's initial weights, batches, augmentations) is drawn from one
``torch.Generator`` seeded from ``random_state``.
"""

from __future__ import annotations

import math
import numbers
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator
from torch import nn

from .._validation import check_positive_int, resolve_device
from ..data.rows import ImageRows
from ..progress import progress
from .training import affine_warp


class ConvClassifier(nn.Module):
    """Three 3 x 3 convolutions (``width``, 2 ``width``, 4 ``width`` filters; batch norm, ReLU; 2 x 2
    pooling after the first two), average pooling to 3 x 3, one linear layer to ``n_clusters`` logits.

    Small on purpose: on 28 x 28 images with ``width`` 16 a forward pass is ~1.9 M multiply-adds, like
    N2D's dense encoder, so a round trains in tens of seconds on one CPU core.
    """

    SPEC = ("in_channels", "n_clusters", "width")  # what rebuilds it (saved with N2D's model)
    GRID = 3  # the last feature maps are pooled to 3 x 3, not 1 x 1: a digit is told by where its strokes are

    def __init__(self, in_channels: int, n_clusters: int, width: int = 16,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.spec = {"in_channels": int(in_channels), "n_clusters": int(n_clusters), "width": int(width)}
        widths = [in_channels, width, 2 * width, 4 * width]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1, bias=False)
                                   for a, b in zip(widths, widths[1:], strict=False))
        self.norms = nn.ModuleList(nn.BatchNorm2d(b) for b in widths[1:])
        self.head = nn.Linear(4 * width * self.GRID**2, n_clusters)
        if generator is not None:  # seeded weights: torch's default ranges, drawn from ``generator``
            with torch.no_grad():
                for layer in [*self.convs, self.head]:
                    bound = 1.0 / math.sqrt(layer.weight[0].numel())
                    layer.weight.uniform_(-bound, bound, generator=generator)
                self.head.bias.uniform_(-bound, bound, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            x = F.relu(norm(conv(x)))
            if i < 2 and min(x.shape[-2:]) >= 2:
                x = F.max_pool2d(x, 2)  # (N, C, H, W) -> (N, C, H/2, W/2)
        x = F.adaptive_avg_pool2d(x, self.GRID).flatten(1)  # (N, 4 width, 3, 3) -> (N, 36 width)
        return self.head(x)  # (N, n_clusters)


def augment_views(x: torch.Tensor, generator: torch.Generator, *, shift: float = 0.1, degrees: float = 15.0,
                  scale: float = 0.1) -> torch.Tensor:
    """Randomly shifted (up to ``shift`` x the image side), rotated (up to ``degrees``) and scaled (by
    1 +- ``scale``) copies of ``x`` (N, C, H, W), zero-padded: one draw per image from ``generator``."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(degrees)
    zoom = 1 + (torch.rand(n, generator=generator) * 2 - 1) * scale
    offset = (torch.rand(n, 2, generator=generator) * 2 - 1) * shift * 2  # [-1, 1] grid units: side = 2
    return affine_warp(x, angle, offset, zoom)


def neighbours(features: torch.Tensor, n_neighbors: int, *, chunk: int = 1024) -> torch.Tensor:
    """Indices (N, n_neighbors) of each row's nearest other rows of ``features`` (N, d), Euclidean.
    Memory: chunk x N distances at a time."""
    n_neighbors = min(n_neighbors, features.shape[0] - 1)
    out = torch.empty(features.shape[0], n_neighbors, dtype=torch.int64)
    for start in range(0, features.shape[0], chunk):
        dist = torch.cdist(features[start:start + chunk], features)  # (b, N)
        rows = torch.arange(dist.shape[0])
        dist[rows, rows + start] = math.inf  # not its own neighbour
        out[start:start + dist.shape[0]] = dist.topk(n_neighbors, largest=False).indices
    return out


def agreement_scores(labels: torch.Tensor, neighbor_idx: torch.Tensor, proba: torch.Tensor) -> torch.Tensor:
    """Share of each point's neighbours that have its label, ties broken by its probability of it."""
    agree = (labels[neighbor_idx] == labels[:, None]).float().mean(1)
    return agree + 1e-3 * proba.gather(1, labels[:, None]).squeeze(1)


def select_confident(labels: torch.Tensor, scores: torch.Tensor, fraction: float,
                     n_clusters: int) -> torch.Tensor:
    """Boolean mask of the points to learn from: each cluster's ``fraction`` of members with the highest
    ``scores`` (at least one), so every cluster has examples and none dominates by its doubtful points."""
    keep = torch.zeros(labels.numel(), dtype=torch.bool)
    for c in range(n_clusters):
        members = torch.nonzero(labels == c).flatten()
        want = max(1, math.ceil(fraction * members.numel())) if members.numel() else 0
        keep[members[scores[members].argsort(descending=True, stable=True)[:want]]] = True
    return keep


SCHEDULES = ("constant", "cosine")


class SelfLabel(BaseEstimator):
    """Train :class:`ConvClassifier` on a clustering's confident points, on augmented views.

    Parameters
    ----------
    rounds : int, default=2
        Rounds of select -> train; round 1 selects from the given probabilities, later rounds from the
        classifier's own predictions on the clean images.
    students : int, default=0
        After the rounds, this many fresh classifiers, each trained on EVERY image with the previous
        classifier's label (the "noisy student" of Xie et al., CVPR 2020: a new network on augmented
        views learns the teacher's labels of the doubtful points too, and generalises past them). The
        rounds learn only the confident share, mostly easy images; the student also learns the hard ones.
        A student sees as many images as a round (``epochs`` x ``fraction`` passes over all of them), so
        it costs what a round does (RESULTS.md, "Self-labelling: students on every image").
    epochs : int, default=10
        Passes over the selected points per round.
    min_steps : int, default=300
        At least this many batches per round: more epochs on a small set (the 1,797 digits' selected
        half gives 7 batches an epoch, and 10 epochs left the convnet far behind the mixture: ACC 0.75
        against 0.82). MNIST-test and USPS pass it in 10 epochs.
    fraction : float, default=0.5
        Share of each cluster's members selected (the most confident ones) in every round.
    n_neighbors : int, default=20
        Neighbours in ``features`` whose labels score a point's confidence.
    width : int, default=16
        Filters of the classifier's first convolution.
    batch_size : int, default=128
    lr : float or None, default=None
        Adam's learning rate (weight decay 1e-4); None: 3e-3 with the cosine schedule, 1e-3 constant.
    shift, degrees, scale : float, default=0.1, 15, 0.1
        The augmentation (see :func:`augment_views`).
    schedule : {"constant", "cosine"}, default="constant"
        "cosine": each round's rate falls from ``lr`` to 0 over its batches. With 30 epochs it took one
        round on MNIST-test from 0.956 to 0.971 and on USPS from 0.968 to 0.980 (3 seeds; RESULTS.md,
        "Self-labelling: a longer round, a cosine schedule and label smoothing"). N2D's small-grey
        recipe uses it.
    label_smoothing : float, default=0.0
        The cross-entropy's label smoothing: a share of each target spread over all clusters, so the
        network is not pushed to certainty on the few wrong pseudo-labels (with the cosine round above:
        MNIST-test 0.971 -> 0.977, USPS 0.980 -> 0.984, 3 seeds).
    device : str, default="cpu"
    random_state : int or None
    verbose : bool or None
        Progress bar (None: on a terminal).

    Attributes
    ----------
    network_ : ConvClassifier (eval mode)
    labels_ : (n_samples,) int64, the classifier's clusters of the training images
    proba_ : (n_samples, n_clusters) float32
    initial_labels_ : the labels the given probabilities imply
    agreement_ : float, share of points whose label is unchanged (clusters keep their numbers)
    selected_ : list of float, the share of points selected in each round (1.0 for a student)
    round_labels_ : list of (n_samples,) int64 arrays, the clusters after each round (students included)
    history_ : list of dict, one row per epoch (round, epoch, loss, selected, lr); the students' rounds
        are numbered after the rounds
    """

    def __init__(self, *, rounds: int = 2, students: int = 0, epochs: int = 10, min_steps: int = 300,
                 fraction: float = 0.5,
                 n_neighbors: int = 20, width: int = 16, batch_size: int = 128, lr: float | None = None,
                 shift: float = 0.1, degrees: float = 15.0, scale: float = 0.1, schedule: str = "constant",
                 label_smoothing: float = 0.0, device: str = "cpu", random_state=None, verbose=None):
        self.rounds = rounds
        self.students = students
        self.epochs = epochs
        self.min_steps = min_steps
        self.fraction = fraction
        self.n_neighbors = n_neighbors
        self.width = width
        self.batch_size = batch_size
        self.lr = lr
        self.shift = shift
        self.degrees = degrees
        self.scale = scale
        self.schedule = schedule
        self.label_smoothing = label_smoothing
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X: torch.Tensor, proba, features=None) -> SelfLabel:
        """Learn the clusters of images ``X`` (N, C, H, W) float from ``proba`` (N, k), the clustering's
        probabilities (rows sum to 1); ``features`` (N, d), optional, score the points' confidence by
        their neighbours' labels. Returns self."""
        self._check_params()
        if not isinstance(X, torch.Tensor | ImageRows) or X.dim() != 4:  # ImageRows: a data cache
            raise ValueError(f"X must be an image tensor (N, C, H, W); got {getattr(X, 'shape', type(X))}.")
        proba = torch.as_tensor(np.asarray(proba), dtype=torch.float32)
        if proba.dim() != 2 or proba.shape[0] != X.shape[0]:
            raise ValueError(f"proba must be (n_samples, n_clusters) with n_samples = {X.shape[0]}; "
                             f"got shape {tuple(proba.shape)}.")
        start = time.perf_counter()
        neighbor_idx = None
        if features is not None:
            features = torch.as_tensor(np.asarray(features), dtype=torch.float32)
            if features.dim() != 2 or features.shape[0] != X.shape[0]:
                raise ValueError(f"features must be (n_samples, d) with n_samples = {X.shape[0]}; "
                                 f"got shape {tuple(features.shape)}.")
            neighbor_idx = neighbours(features, int(self.n_neighbors))
        device = resolve_device(self.device)
        gen = torch.Generator().manual_seed(0 if self.random_state is None else int(self.random_state))
        k = proba.shape[1]
        self.initial_labels_ = proba.argmax(1).numpy()
        self.history_, self.selected_, self.round_labels_ = [], [], []
        bar = progress(total=self.rounds + self.students, desc="self-label", unit="round",
                       enabled=self.verbose)
        net, optimizer = self._network(X.shape[1], k, gen, device)
        for round_ in range(1, self.rounds + self.students + 1):
            labels = proba.argmax(1)
            if round_ > self.rounds:  # a student: a fresh network, every image with the last one's label
                net, optimizer = self._network(X.shape[1], k, gen, device)
                keep = torch.ones(labels.numel(), dtype=torch.bool)
            else:
                scores = proba.max(1).values if neighbor_idx is None else agreement_scores(
                    labels, neighbor_idx, proba)
                keep = select_confident(labels, scores, float(self.fraction), k)
            self.selected_.append(float(keep.float().mean()))
            epochs = self.epochs if round_ <= self.rounds else self._student_epochs()
            self._train(net, optimizer, X, torch.nonzero(keep).flatten(), labels[keep], k, gen, device,
                        round_, epochs, bar)
            bar.update(1)
            proba = classify(net, X, device=device)
            self.round_labels_.append(proba.argmax(1).numpy())
        bar.close()
        self.network_ = net.eval()
        self.proba_ = proba.numpy()
        self.labels_ = self.proba_.argmax(1).astype(np.int64)
        self.agreement_ = float((self.labels_ == self.initial_labels_).mean())
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def _network(self, in_channels: int, k: int, gen: torch.Generator,
                 device: torch.device) -> tuple[ConvClassifier, torch.optim.Optimizer]:
        """A new classifier with weights drawn from ``gen``, and its Adam (weight decay 1e-4)."""
        net = ConvClassifier(in_channels, k, int(self.width), generator=gen).to(device)
        return net, torch.optim.Adam(net.parameters(), lr=self._lr(), weight_decay=1e-4)

    def _student_epochs(self) -> int:
        """A student sees as many images as a round: ``epochs`` x ``fraction`` passes over all of them."""
        return max(1, math.ceil(self.epochs * self.fraction))

    def _lr(self) -> float:
        return self.lr if self.lr is not None else (3e-3 if self.schedule == "cosine" else 1e-3)

    def _train(self, net: ConvClassifier, optimizer: torch.optim.Optimizer, X, idx: torch.Tensor,
               targets: torch.Tensor, k: int, gen: torch.Generator, device: torch.device, round_: int,
               epochs: int, bar) -> None:
        """One round: ``net`` learns ``targets`` of images ``X[idx]`` from augmented views, each class
        weighted inversely to its count, for ``epochs`` passes (at least ``min_steps`` batches)."""
        counts = torch.bincount(targets, minlength=k).float()
        weight = torch.where(counts > 0, counts.sum() / counts.clamp(min=1) / k, 0.0).to(device)
        net.train()
        per_epoch = max(1, idx.numel() // self.batch_size)
        n_epochs = max(epochs, math.ceil(self.min_steps / per_epoch))
        lr = self._lr()
        for group in optimizer.param_groups:
            group["lr"] = lr
        steps = n_epochs * math.ceil(idx.numel() / self.batch_size)  # cosine: down to 0 at the last
        cosine = self.schedule == "cosine"
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps) if cosine else None
        selected = self.selected_[-1]
        for epoch in range(1, n_epochs + 1):
            total = 0.0
            order = torch.randperm(idx.numel(), generator=gen)
            for s in range(0, idx.numel(), self.batch_size):
                batch = order[s:s + self.batch_size]
                if batch.numel() < 2:  # batch norm needs two images
                    continue
                x = augment_views(X[idx[batch]], gen, shift=self.shift, degrees=self.degrees,
                                  scale=self.scale).to(device)
                loss = F.cross_entropy(net(x), targets[batch].to(device), weight=weight,
                                       label_smoothing=self.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if sched is not None:
                    sched.step()
                total += loss.item() * batch.numel()
            row = {"round": round_, "epoch": epoch, "loss": total / max(idx.numel(), 1),
                   "selected": selected, "lr": optimizer.param_groups[0]["lr"]}
            self.history_.append(row)
            bar.set_postfix(round=round_, epoch=epoch, loss=f"{row['loss']:.4f}", selected=f"{selected:.2f}")

    def _check_params(self) -> None:
        for name in ("rounds", "epochs", "width", "batch_size", "n_neighbors"):
            check_positive_int(getattr(self, name), name)
        for name in ("min_steps", "students"):
            check_positive_int(getattr(self, name), name, minimum=0)
        for name, low, high in (("fraction", 0.0, 1.0),
                                ("shift", 0.0, 1.0), ("degrees", 0.0, 180.0),
                                ("scale", 0.0, 0.9), ("lr", 0.0, math.inf),
                                ("label_smoothing", 0.0, 1.0)):
            value = getattr(self, name)
            if name == "lr" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value <= high:
                raise ValueError(f"{name} must be a number in [{low:g}, {high:g}]; got {value!r}.")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0; got {self.lr!r}.")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}.")


@torch.no_grad()
def classify(net: nn.Module, X: torch.Tensor, *, device: torch.device | str = "cpu",
             batch_size: int = 1024) -> torch.Tensor:
    """Class probabilities (N, k) of images ``X`` under ``net`` (put in eval mode), on the CPU."""
    net.eval()
    return torch.cat([net(X[s:s + batch_size].to(device)).softmax(1).cpu()
                      for s in range(0, X.shape[0], batch_size)])


__all__ = ["ConvClassifier", "SelfLabel", "agreement_scores", "augment_views", "classify", "neighbours",
           "select_confident"]
