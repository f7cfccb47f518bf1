"""A user's own feature extractor: an exported network file plus a JSON file saying how to feed it.

``get_backbone("path/to/model.pt2")`` loads a ``torch.export`` program (``torch.export.save``; export
it with a dynamic batch dimension), ``get_backbone("path/to/model.pt")`` a TorchScript file
(``torch.jit.save``; deprecated by PyTorch 2.13 but widespread). Neither runs pickled Python code.
Either way ``model.json`` beside it says how to feed it::

    {"input_size": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
     "resize": "squash", "interpolation": "bilinear", "licence": "CC-BY-4.0", "description": "..."}

``input_size``, ``mean`` and ``std`` are required; the network must map a normalised (B, 3, H, W)
batch to (B, D) features, and D is read by running it once on zeros.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from ._base import BackboneSpec
from ._transform import Preprocessing

_REQUIRED = ("input_size", "mean", "std")
_EXAMPLE = '{"input_size": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}'


def is_model_path(name: str) -> bool:
    return str(name).endswith((".pt", ".pt2", ".ts")) or "/" in str(name) or "\\" in str(name)


def _sidecar(path: Path) -> dict:
    side = path.with_suffix(".json")
    if not side.is_file():
        raise FileNotFoundError(f"Backbone file {path} needs {side} saying how to feed it, e.g. {_EXAMPLE}.")
    try:
        facts = json.loads(side.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{side} is not valid JSON ({exc}); write e.g. {_EXAMPLE}.") from exc
    missing = [k for k in _REQUIRED if k not in facts]
    if missing:
        raise ValueError(f"{side} lacks {', '.join(missing)}; write e.g. {_EXAMPLE}.")
    return facts


def torchscript_spec(path: str) -> tuple[BackboneSpec, Path]:
    """A one-off spec for the TorchScript file at ``path`` (from its JSON sidecar)."""
    from ..data.transforms import check_size

    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"Backbone file {file} does not exist; pass a registered backbone name or "
                                "the path of an exported (.pt2) or TorchScript (.pt) feature extractor.")
    facts = _sidecar(file)
    try:
        pre = Preprocessing(input_size=check_size(facts["input_size"]), mean=tuple(map(float, facts["mean"])),
                            std=tuple(map(float, facts["std"])), resize=facts.get("resize", "squash"),
                            resize_size=facts.get("resize_size"),
                            interpolation=facts.get("interpolation", "bilinear"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{file.with_suffix('.json')}: {exc}") from exc
    if len(pre.mean) != 3 or len(pre.std) != 3:
        raise ValueError(f"{file.with_suffix('.json')}: mean and std need 3 values (R, G, B).")
    spec = BackboneSpec(name=file.stem, family="user",
                        description=facts.get("description", f"User's feature extractor {file.name}"),
                        preprocessing=pre, feature_dim=0, weights=str(file),
                        licence=facts.get("licence", "not stated"), builder=build_torchscript)
    return spec, file


class _Exported(nn.Module):
    """Holds an exported program's module out of sight of ``train()``/``eval()``, which it refuses
    (it is always in inference form); device moves and ``parameters()`` still reach it."""

    def __init__(self, net):
        super().__init__()
        self.__dict__["_net"] = net  # not registered as a child

    def forward(self, x):
        return self._net(x)

    def parameters(self, recurse: bool = True):
        return self._net.parameters(recurse)

    def _apply(self, fn, *args, **kwargs):
        self._net._apply(fn, *args, **kwargs)
        return self


def build_torchscript(spec: BackboneSpec, weights: str | None):
    file = Path(weights or spec.weights)
    try:
        if file.suffix == ".pt2":
            net = _Exported(torch.export.load(str(file)).module())
        else:
            net = torch.jit.load(str(file), map_location="cpu").eval()
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        raise ValueError(f"{file} is not an exported (.pt2) or TorchScript (.pt) network "
                         f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); save one with "
                         "torch.export.save(torch.export.export(model, ...), path).") from exc
    h, w = spec.preprocessing.input_size
    with torch.inference_mode():
        out = net(torch.zeros(1, 3, h, w))
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise ValueError(f"{file} must map (B, 3, {h}, {w}) images to (B, D) features; it returned "
                         f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}.")
    digest = hashlib.sha256(file.read_bytes() + file.with_suffix(".json").read_bytes()).hexdigest()[:16]
    return net, int(out.shape[1]), f"{file.name}@sha256:{digest}"
