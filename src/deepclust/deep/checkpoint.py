"""Saving and loading: safe formats only, atomic writes.

- A fitted model is ``model.safetensors`` (weights and cluster centres) plus ``model.json`` (the
  estimator's class and parameters and the architecture spec): nothing is unpickled on load.
- Training state for resuming (``<stage>.pt``: weights, optimizer state, random stream, epoch,
  history) is written with ``torch.save`` after every epoch and read back with
  ``torch.load(weights_only=True)``, which refuses arbitrary Python objects.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
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
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated or damaged: torch raises OSError, RuntimeError, pickle errors
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"Checkpoint {path} is damaged ({first}); delete it to redo the stage "
                             f"{stage!r} from its start, then resume again.") from None


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
    """Rebuild a fitted estimator saved by :func:`save_model`.

    The folder is untrusted input: ``model.json`` is schema-checked (a known class, only its own
    parameters, a bounded input shape), the network is first built on the meta device so the weights'
    names and shapes are compared with ``model.safetensors`` before anything is allocated, and every
    damaged file raises :class:`~deepclust.run_folder.RunFolderError` naming it.
    """
    from ..run_folder import RunFolderError, read_json

    folder = Path(folder)
    config_path, weights_path = folder / MODEL_CONFIG, folder / MODEL_WEIGHTS
    if not os.path.lexists(config_path):
        raise FileNotFoundError(f"No saved model in {folder}: {config_path} is missing (expected "
                                f"{MODEL_CONFIG} and {MODEL_WEIGHTS}); rerun 'deepclust run'.")
    config = read_json(config_path)
    cls, params, spec, input_shape = _checked_model_config(config, config_path)
    if not weights_path.is_file():
        raise RunFolderError(weights_path, "is missing or not a regular file")
    try:
        with safe_open(str(weights_path), framework="pt") as f:
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except Exception as err:  # safetensors raises its own error types for a damaged header
        raise RunFolderError(weights_path, f"is not a readable safetensors file ({err})") from None
    attr = getattr(cls, "_network_attr", "autoencoder_")
    prefix = "\0"  # no tensor name starts with it
    model = None
    try:
        if attr is not None:
            prefix = attr.rstrip("_") + "."
            model = _build_network(cls, spec, input_shape, shapes, prefix, config_path, weights_path)
        tensors = load_file(str(weights_path))
        if model is not None:
            model.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        estimator = cls(**params)
        estimator._restore_extra_tensors({k: v for k, v in tensors.items() if not k.startswith(prefix)})
    except RunFolderError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, OSError) as err:
        raise RunFolderError(weights_path, f"does not fit {MODEL_CONFIG} ({type(err).__name__}: "
                                           f"{str(err).splitlines()[0] if str(err) else err!r})") from None
    except Exception as err:  # safetensors' own errors on a truncated or damaged body
        raise RunFolderError(weights_path, f"is not a readable safetensors file ({err})") from None
    if model is not None:
        setattr(estimator, attr, model.eval())
    centers = np.asarray(getattr(estimator, "cluster_centers_", np.zeros((1, 1))))
    if centers.ndim != 2 or centers.size == 0 or not np.isfinite(centers).all():
        raise RunFolderError(weights_path, f"holds cluster centres of shape {centers.shape} that are "
                                           "empty or not finite (NaN or infinite)")
    estimator._device = resolve_device("cpu")
    estimator.n_features_in_ = int(np.prod(input_shape))
    return estimator


#: Most input values (height x width x channels, or features) a saved model may declare.
MAX_MODEL_INPUT = 4096 * 4096 * 3


def _checked_model_config(config: dict, path: Path):
    """(class, params, spec, input_shape) of a model.json, each checked."""
    from ..run_folder import RunFolderError

    cls = estimator_class(config.get("class")) if isinstance(config.get("class"), str) else None
    if cls is None:
        raise RunFolderError(path, f"names an unknown estimator class {config.get('class')!r}")
    params = config.get("params")
    if not isinstance(params, dict):
        raise RunFolderError(path, "has no \"params\" object")
    known = set(cls().get_params(deep=False))
    unknown = sorted(set(params) - known)
    if unknown:
        raise RunFolderError(path, f"sets {', '.join(map(repr, unknown))}, not parameters of {cls.__name__}")
    shape = config.get("input_shape")
    if not (isinstance(shape, list) and shape
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape)):
        raise RunFolderError(path, f"has input_shape {shape!r}; expected a list of positive integers")
    if int(np.prod(shape, dtype=np.float64)) > MAX_MODEL_INPUT:
        raise RunFolderError(path, f"has input_shape {shape}, larger than any image deepclust trains on")
    spec = config.get("spec")
    if getattr(cls, "_network_attr", "autoencoder_") is not None and not isinstance(spec, dict):
        raise RunFolderError(path, "has no network \"spec\" object")
    return cls, params, spec, shape


def _build_network(cls, spec: dict, input_shape: list[int], shapes: dict, prefix: str, config_path: Path,
                   weights_path: Path):
    """The network of ``spec``, after checking on the meta device (no memory) that its weights' names and
    shapes are exactly those in the safetensors file."""
    from ..models import build_autoencoder
    from ..run_folder import RunFolderError

    rebuild = getattr(cls, "_rebuild_network", build_autoencoder)
    try:
        with torch.device("meta"):
            meta = rebuild(spec, input_shape=tuple(input_shape))
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
        raise RunFolderError(config_path, f"has a network spec that cannot be built ({err})") from None
    expected = {prefix + k: tuple(v.shape) for k, v in meta.state_dict().items()}
    saved = {k: v for k, v in shapes.items() if k.startswith(prefix)}
    if expected != saved:
        missing = sorted(set(expected) - set(saved))
        unexpected = sorted(set(saved) - set(expected))
        wrong = sorted(k for k in set(expected) & set(saved) if expected[k] != saved[k])
        what = "; ".join(f"{label}: {', '.join(names[:3])}" for label, names in
                         (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if names)
        raise RunFolderError(weights_path, f"does not hold the weights of the network in {MODEL_CONFIG} "
                                           f"({what})")
    return rebuild(spec, input_shape=tuple(input_shape))


__all__ = ["TrainingState", "save_model", "load_model"]
