"""Saving and loading: safe formats only, atomic writes.

- A fitted model is ``model.safetensors`` (weights and cluster centres) plus ``model.json`` (the
  estimator's class and parameters and the architecture spec): nothing is unpickled on load.
- Training state for resuming (``<stage>.pt``: weights, optimizer state, random stream, epoch,
  history) is written with ``torch.save`` after every epoch and read back with
  ``torch.load(weights_only=True)``, which refuses arbitrary Python objects.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save

from .._io import atomic_open, jsonable_params, write_json
from .._validation import resolve_device
from ..traits import estimator_class

MODEL_WEIGHTS = "model.safetensors"
MODEL_CONFIG = "model.json"


class TrainingState:
    """Per-stage resumable state in one folder: ``save(stage, **state)`` / ``load(stage)``."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def path(self, stage: str) -> Path:
        return self.folder / f"{stage}.pt"

    def save(self, stage: str, **state) -> None:
        with atomic_open(self.path(stage), "wb") as f:
            torch.save(state, f)

    def load(self, stage: str) -> dict | None:
        path = self.path(stage)
        if not path.is_file():
            return None
        return torch.load(path, map_location="cpu", weights_only=True)


def save_model(estimator, folder: str | os.PathLike) -> Path:
    """Write a fitted estimator to ``folder`` (``model.safetensors`` + ``model.json``): its network's
    weights (``_network_attr``; None for an estimator with no network) and its ``_extra_tensors()``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    attr = getattr(estimator, "_network_attr", "autoencoder_")  # DeepCluster saves its "network_"
    tensors, model = {}, None
    if attr is not None:
        model, prefix = getattr(estimator, attr), attr.rstrip("_") + "."
        tensors = {f"{prefix}{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for name, value in estimator._extra_tensors().items():
        tensors[name] = torch.as_tensor(np.asarray(value)).contiguous()
    params = {k: v for k, v in estimator.get_params(deep=False).items() if k != "autoencoder"}
    config = {
        "class": type(estimator).__name__,
        "params": jsonable_params(params),
        "spec": None if model is None else model.spec,
        "input_shape": [int(estimator.n_features_in_)] if model is None else list(model.input_shape),
    }
    with atomic_open(folder / MODEL_WEIGHTS, "wb") as f:
        f.write(save(tensors))
    write_json(folder / MODEL_CONFIG, config)
    return folder


def load_model(folder: str | os.PathLike):
    """Rebuild a fitted estimator saved by :func:`save_model`."""
    from ..models import build_autoencoder

    folder = Path(folder)
    if not (folder / MODEL_CONFIG).is_file():
        raise FileNotFoundError(f"No saved model in {folder}: expected {MODEL_CONFIG} and {MODEL_WEIGHTS}.")
    config = json.loads((folder / MODEL_CONFIG).read_text())
    cls = estimator_class(config["class"])
    if cls is None:
        raise ValueError(f"{folder / MODEL_CONFIG} names an unknown class {config['class']!r}.")
    tensors = load_file(str(folder / MODEL_WEIGHTS))
    estimator = cls(**config["params"])
    attr = getattr(cls, "_network_attr", "autoencoder_")
    prefix = "\0"  # no tensor name starts with it
    if attr is not None:
        rebuild = getattr(cls, "_rebuild_network", build_autoencoder)
        model = rebuild(config["spec"], input_shape=tuple(config["input_shape"]))
        prefix = attr.rstrip("_") + "."
        model.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        setattr(estimator, attr, model.eval())
    estimator._restore_extra_tensors({k: v for k, v in tensors.items() if not k.startswith(prefix)})
    estimator._device = resolve_device("cpu")
    estimator.n_features_in_ = int(np.prod(config["input_shape"]))
    return estimator


__all__ = ["TrainingState", "save_model", "load_model"]
