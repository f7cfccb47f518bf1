"""Small AlexNet- and VGG-style networks for DeepCluster, with a fixed input front end (Sobel).

A network is declared as a layer list in the architecture-file vocabulary of ``deepclust.models.spec``
(conv, batchnorm, activation, maxpool, flatten, dropout, dense) and built by the same builder, so a
saved network is plain JSON. The registry ``CONVNETS`` maps a name to a function that writes the
list for one input shape: the number of poolings adapts to 28x28, 32x32 or 96x96 images (pool while
the side stays even and at least 3; a stride-2 first convolution from 64 pixels up). The list ends
with a dense layer whose (pre-activation) output is the feature vector, as in DeepCluster, where the
top classifier reads the ReLU of fc7.

The front end is not trained: ``grey`` (1 channel, luma of colour input), ``colour`` (3 channels; grey
input is repeated), ``sobel`` (2 channels: horizontal and vertical Sobel responses of the grey
image, DeepCluster's input) and ``colour+sobel`` (the 3 colour channels and the 2 Sobel channels).

>>> net = build_convnet("alexnet-small", (1, 28, 28), input_mode="sobel")
>>> net(torch.zeros(4, 1, 28, 28)).shape            # (N, feature_dim)
torch.Size([4, 512])
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.transforms import LUMA_WEIGHTS, SOBEL_X, SOBEL_Y
from .layers import Stack
from .spec import _Builder, _parse_layers, load_spec

INPUT_MODES = ("grey", "colour", "sobel", "colour+sobel")
_MODE_CHANNELS = {"grey": 1, "colour": 3, "sobel": 2, "colour+sobel": 5}


# ------------------------------------------------------------------------------------ front end
class InputFrontEnd(nn.Module):
    """Fixed (never trained) map from the data's 1 or 3 channels to the network's input channels."""

    def __init__(self, mode: str = "sobel", in_channels: int = 1):
        super().__init__()
        if mode not in INPUT_MODES:
            raise ValueError(f"input must be one of {', '.join(INPUT_MODES)}; got {mode!r}.")
        if in_channels not in (1, 3):
            raise ValueError(f"The {mode!r} input needs grey (1 channel) or colour (3 channel) images; "
                             f"got {in_channels} channels. Convert the images first.")
        self.mode = mode
        self.in_channels = in_channels
        self.out_channels = _MODE_CHANNELS[mode]
        self.register_buffer("luma", torch.tensor(LUMA_WEIGHTS, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        sobel = torch.stack([torch.from_numpy(SOBEL_X), torch.from_numpy(SOBEL_Y)])[:, None]  # (2, 1, 3, 3)
        self.register_buffer("sobel", sobel.float(), persistent=False)

    def grey(self, x: Tensor) -> Tensor:
        return x if x.shape[1] == 1 else (x * self.luma).sum(dim=1, keepdim=True)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"Expected {self.in_channels}-channel images; got {x.shape[1]} channels.")
        if self.mode == "grey":
            return self.grey(x)
        colour = x if x.shape[1] == 3 else x.expand(-1, 3, -1, -1)
        if self.mode == "colour":
            return colour
        edges = F.conv2d(self.grey(x), self.sobel, padding=1)  # (N, 2, H, W): Gx, Gy
        return edges if self.mode == "sobel" else torch.cat([colour, edges], dim=1)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, in_channels={self.in_channels}, out_channels={self.out_channels}"


# ---------------------------------------------------------------------------------- declarations
def _conv_block(filters: int, kernel: int, stride: int = 1) -> list[dict[str, Any]]:
    return [{"type": "conv", "filters": filters, "kernel": kernel, "stride": stride},
            {"type": "batchnorm"}, {"type": "activation", "fn": "relu"}]


def _classifier(width: int, dropout: float) -> list[dict[str, Any]]:
    """Flatten, then fc6 (with ReLU) and fc7: fc7's pre-activation output is the feature vector."""
    drop = [{"type": "dropout", "rate": dropout}] if dropout > 0 else []
    relu = {"type": "activation", "fn": "relu"}
    return [{"type": "flatten"}, *drop, {"type": "dense", "units": width}, relu, *drop,
            {"type": "dense", "units": width}]


class _Side:
    """Tracks the spatial size so pools are only placed where they divide it."""

    def __init__(self, height: int, width: int):
        self.h, self.w = height, width

    def stride(self, s: int) -> None:
        self.h, self.w = -(-self.h // s), -(-self.w // s)

    def pool(self) -> list[dict[str, Any]]:
        if self.h % 2 or self.w % 2 or min(self.h, self.w) < 6:
            return []
        self.h, self.w = self.h // 2, self.w // 2
        return [{"type": "maxpool", "size": 2}]


def alexnet_small(height: int, width: int, *, width_mult: float = 1.0, dropout: float = 0.5,
                  features: int = 512) -> list[dict[str, Any]]:
    """AlexNet's five conv layers (kernels 5, 5, 3, 3, 3; pools after the 1st, 2nd and 5th) with batch
    norm, at a quarter of its widths, then fc6/fc7 of ``features`` units."""
    side = _Side(height, width)
    first_stride = 2 if min(height, width) >= 64 else 1
    side.stride(first_stride)
    c = [max(8, int(round(f * width_mult))) for f in (32, 64, 128, 128, 64)]
    layers = _conv_block(c[0], 5, first_stride) + side.pool()
    layers += _conv_block(c[1], 5) + side.pool()
    layers += _conv_block(c[2], 3) + _conv_block(c[3], 3) + _conv_block(c[4], 3) + side.pool()
    return layers + _classifier(features, dropout)


def vgg_small(height: int, width: int, *, width_mult: float = 1.0, dropout: float = 0.5,
              features: int = 512) -> list[dict[str, Any]]:
    """VGG-16's pattern (blocks of 3x3 conv + batch norm + ReLU, a pool after each block) in four
    blocks of 2, 2, 3, 3 convolutions at widths 32, 64, 128, 128, then fc6/fc7 of ``features`` units."""
    side = _Side(height, width)
    layers: list[dict[str, Any]] = []
    for i, (filters, n_convs) in enumerate(((32, 2), (64, 2), (128, 3), (128, 3))):
        for j in range(n_convs):
            stride = 2 if i == 0 and j == 0 and min(height, width) >= 64 else 1
            side.stride(stride)
            layers += _conv_block(max(8, int(round(filters * width_mult))), 3, stride)
        layers += side.pool()
    return layers + _classifier(features, dropout)


# name -> function (height, width) -> layer list. Adding a function here registers a network.
CONVNETS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "alexnet-small": alexnet_small,
    "vgg-small": vgg_small,
}


def list_convnets() -> list[str]:
    return sorted(CONVNETS)


# -------------------------------------------------------------------------------------- building
class ConvNet(nn.Module):
    """Fixed front end, then the trainable layers; ``forward(x) -> features`` (N, feature_dim).

    ``spec`` (JSON-able: name, input [C, H, W] of the data, input_mode, layers) rebuilds the same
    network with ``ConvNet(spec)``.
    """

    def __init__(self, spec: Mapping[str, Any]):
        super().__init__()
        spec = copy.deepcopy(dict(spec))
        name = str(spec.get("name", "convnet"))
        shape = tuple(int(s) for s in spec["input"])
        self.frontend = InputFrontEnd(spec.get("input_mode", "sobel"), shape[0])
        layers = _parse_layers(spec["layers"], "layers", name)
        dummy = torch.zeros(1, self.frontend.out_channels, *shape[1:])
        built, out = _Builder().build(layers, dummy)
        if out.dim() != 2:
            raise ValueError(f"{name}: the layers must end flat (a dense layer giving the features); they "
                             f"end with shape {tuple(out.shape[1:])}.")
        self.body = Stack(*(b.module for b in built))
        self.spec = {**spec, "layers": [b.layer.as_dict() for b in built]}
        self.input_shape = shape
        self.feature_dim = int(out.shape[1])

    def forward(self, x: Tensor) -> Tensor:
        return self.body(self.frontend(x))


def convnet_spec(arch: str | Mapping[str, Any] | os.PathLike, input_shape: Sequence[int],
                 input_mode: str = "sobel") -> dict[str, Any]:
    """The JSON-able spec of network ``arch`` for images of ``input_shape`` (C, H, W).

    ``arch`` is a registered name (``list_convnets()``), or a dict / JSON / YAML file holding a
    ``layers`` list (or an ``encoder`` list, e.g. an autoencoder file's) in the spec vocabulary.
    """
    c, h, w = (int(s) for s in input_shape)
    if isinstance(arch, str) and arch in CONVNETS:
        name, layers = arch, CONVNETS[arch](h, w)
    elif isinstance(arch, (str, os.PathLike, Mapping)):
        if isinstance(arch, str) and not str(arch).endswith((".json", ".yaml", ".yml")):
            raise ValueError(f"Unknown network {arch!r} for DeepCluster. Registered: "
                             f"{', '.join(list_convnets())}; or pass a JSON/YAML file with a 'layers' list.")
        loaded = load_spec(arch)
        name = str(loaded.get("name", "convnet"))
        layers = loaded.get("layers", loaded.get("encoder"))
        if layers is None:
            raise ValueError(f"{name}: a DeepCluster network needs a 'layers' list (or an 'encoder' list).")
    else:
        raise TypeError(f"arch must be a name, a path or a dict; got {type(arch).__name__}.")
    return {"name": name, "input": [c, h, w], "input_mode": input_mode, "layers": layers}


def build_convnet(arch: str | Mapping[str, Any] | os.PathLike, input_shape: Sequence[int],
                  input_mode: str = "sobel") -> ConvNet:
    """Build network ``arch`` (see :func:`convnet_spec`) for images of ``input_shape`` (C, H, W)."""
    if input_mode not in INPUT_MODES:
        raise ValueError(f"input must be one of {', '.join(INPUT_MODES)}; got {input_mode!r}.")
    return ConvNet(convnet_spec(arch, input_shape, input_mode))


__all__ = ["CONVNETS", "INPUT_MODES", "ConvNet", "InputFrontEnd", "alexnet_small", "build_convnet",
           "convnet_spec", "list_convnets", "vgg_small"]
