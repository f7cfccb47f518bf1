"""The registry of named backbones (timm-style): a name maps to a :class:`BackboneSpec`."""

from __future__ import annotations

import os

import torch

from ._base import Backbone, BackboneSpec

BACKBONES: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    if spec.name in BACKBONES:
        raise ValueError(f"Backbone {spec.name!r} is already registered.")
    BACKBONES[spec.name] = spec
    return spec


def list_backbones() -> list[str]:
    """Names of the registered backbones, in registry order (the offline default first)."""
    return list(BACKBONES)


def get_spec(name: str) -> BackboneSpec:
    """The registry entry for ``name`` (case-insensitive; "_" and "-" are the same); ValueError if unknown."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; known backbones: {', '.join(BACKBONES)}.")
    return BACKBONES[key]


def get_backbone(name: str | os.PathLike, *, weights: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu",
                 input_size: int | tuple[int, int] | None = None) -> Backbone:
    """Build the frozen, pretrained backbone ``name`` on ``device``.

    Parameters
    ----------
    name : str or path
        One of :func:`list_backbones`, or the path of your own exported (``.pt2``) or TorchScript
        (``.pt``) feature extractor with a JSON file beside it (see :mod:`deepclust.backbones.torchscript`).
    weights : path, optional
        Load these weights instead of the default source (a ``.pth`` state dict for efficientnet-lite0,
        a folder written by ``save_pretrained`` for the Hugging Face families).
    device : str or torch.device, default="cpu"
    input_size : int or (height, width), optional
        Feed the network this size instead of its declared one (convolutional backbones only). The
        features then differ, and so does the feature-cache key.
    """
    import dataclasses

    from ..data.transforms import check_size
    from .torchscript import is_model_path, torchscript_spec

    if str(name).strip().lower().replace("_", "-") not in BACKBONES and is_model_path(str(name)):
        spec, file = torchscript_spec(os.fspath(name))  # a user's own exported feature extractor
        weights = file if weights is None else weights
    else:
        spec = get_spec(name)
    preprocessing = spec.preprocessing
    if input_size is not None:
        if not spec.flexible_size:
            raise ValueError(f"Backbone {spec.name!r} only takes {spec.preprocessing.input_size} inputs; "
                             "leave input_size=None.")
        size = check_size(input_size)
        resize_size = None if preprocessing.resize == "squash" else max(size)
        preprocessing = dataclasses.replace(preprocessing, input_size=size, resize_size=resize_size)
    device = check_device(device)
    weights = None if weights is None else os.fspath(weights)
    net, feature_dim, identity = spec.builder(spec, weights)
    backbone = Backbone(spec, net, feature_dim=feature_dim, weights_source=weights or spec.weights,
                        weights_identity=identity, preprocessing=preprocessing)
    return backbone.to(device)


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device; ValueError (one line) for a CUDA device on a machine without one."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:<n>'; got {device!r}.") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} but no CUDA device is available here "
                         "(torch.cuda.is_available() is False); use device='cpu'.")
    return device
