"""What a pretrained backbone declares (:class:`BackboneSpec`) and the frozen feature extractor it builds.

A spec is metadata only (nothing is loaded), so listing backbones and writing them into run folders
and reports is free. :class:`Backbone` wraps the loaded network: ``forward`` takes a normalised
(B, 3, H, W) batch and returns (B, D) features; ``preprocess`` makes that batch from uint8 images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ._transform import Preprocessing

# builder(spec, weights) -> (network whose forward gives (B, D) features, feature dim, weights identity)
Builder = Callable[["BackboneSpec", "str | None"], "tuple[nn.Module, int, str]"]


@dataclass(frozen=True)
class BackboneSpec:
    """One registry entry: a name, how to build it, and what a user must know about it."""

    name: str
    family: str  # "efficientnet-lite", "dinov2", "clip", ...
    description: str
    preprocessing: Preprocessing
    feature_dim: int
    weights: str  # where the weights come from by default: a package, a hub id, ...
    licence: str  # of the weights
    builder: Builder = dataclasses.field(repr=False, compare=False)
    requires: str | None = None  # the optional extra it needs, e.g. "pretrained" (transformers)
    flexible_size: bool = True  # the network takes other input sizes than the declared one

    def describe(self) -> dict:
        """JSON-ready facts for run folders and reports (always ``pretrained: True``)."""
        return {"backbone": self.name, "family": self.family, "description": self.description,
                "pretrained": True, "weights": self.weights, "licence": self.licence,
                "feature_dim": self.feature_dim, "input_size": list(self.preprocessing.input_size),
                "preprocessing": self.preprocessing.describe(),
                "extra": self.requires}


class Backbone(nn.Module):
    """A frozen pretrained feature extractor in eval mode; see :func:`deepclust.backbones.get_backbone`.

    Attributes
    ----------
    spec : BackboneSpec
    preprocessing : Preprocessing
        Its resize rule and normalisation (may differ from the spec's when the input size was changed).
    feature_dim : int
        D, the length of one feature vector (read from the loaded network).
    weights_source : str
        Where these weights came from (the package file, hub id or local path).
    weights_identity : str
        A fingerprint of the loaded weights; part of the feature-cache key.
    """

    def __init__(self, spec: BackboneSpec, net: nn.Module, *, feature_dim: int, weights_source: str,
                 weights_identity: str, preprocessing: Preprocessing | None = None):
        super().__init__()
        self.spec = spec
        self.net = net.eval()
        self.feature_dim = int(feature_dim)
        self.weights_source = weights_source
        self.weights_identity = weights_identity
        self.preprocessing = preprocessing or spec.preprocessing
        for p in self.net.parameters():
            p.requires_grad_(False)

    # The metadata, read straight from the spec.
    name = property(lambda self: self.spec.name)
    input_size = property(lambda self: self.preprocessing.input_size)
    mean = property(lambda self: self.preprocessing.mean)
    std = property(lambda self: self.preprocessing.std)
    licence = property(lambda self: self.spec.licence)

    @property
    def device(self) -> torch.device:
        for p in self.net.parameters():
            return p.device
        return torch.device("cpu")

    def train(self, mode: bool = True) -> Backbone:
        """A backbone stays frozen: batch-norm statistics and dropout never switch to training."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised (B, 3, H, W) float images -> (B, D) float32 features."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name} takes a (batch, 3, height, width) tensor; got shape "
                             f"{tuple(x.shape)}; backbone.preprocess(images) makes one from uint8 images.")
        with torch.inference_mode():
            return self.net(x).float()

    def preprocess(self, images) -> torch.Tensor:
        """uint8 images (N, h, w, c), (N, h, w) or (h, w, c), grey or RGB -> normalised (N, 3, H, W)."""
        return self.preprocessing(images)

    def embed(self, images) -> torch.Tensor:
        """Preprocess a small in-memory batch and return its (N, D) features (for big sets use
        :func:`deepclust.backbones.extract_features`)."""
        return self(self.preprocess(images).to(self.device))

    def describe(self) -> dict:
        """The spec's facts plus the weights actually loaded and the preprocessing used."""
        out = self.spec.describe()
        out.update(feature_dim=self.feature_dim, weights=self.weights_source,
                   weights_identity=self.weights_identity, input_size=list(self.input_size),
                   preprocessing=self.preprocessing.describe())
        return out

    def extra_repr(self) -> str:
        return f"name={self.name!r}, feature_dim={self.feature_dim}, input_size={self.input_size}"
