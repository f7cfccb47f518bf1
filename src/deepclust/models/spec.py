"""Build an autoencoder from a layer list written in JSON or YAML.

An architecture ("spec") is a mapping::

    name: conv-mnist                    # optional; defaults to the file name
    description: one line               # optional, free text
    input: [1, 28, 28]                  # optional (C, H, W); null dims accept any size
    encoder:                            # required; runs top to bottom on (N, C, H, W)
      - {type: conv, filters: 32, kernel: 3}
      - {type: batchnorm}
      - {type: activation, fn: relu}
      - {type: maxpool, size: 2}
      - {type: flatten}
      - {type: dense, units: 10}        # the encoder's output is the embedding z (N, d): end flat
    decoder: mirror                     # default; or an explicit layer list ending at (C, H, W)
    output_activation: sigmoid          # default identity; appended after the decoder
    init: glorot                        # default torch; weights of conv/dense layers (see INITS)

Layer types and their fields (``*`` = required):

============  ==========================================================================================
conv          filters*, kernel* (odd), stride=1, activation. Same padding (kernel // 2 on each side):
              stride 1 keeps H x W, stride s gives ceil(H / s) x ceil(W / s).
deconv        filters*, kernel* (odd), stride=1, output_padding=stride-1 (int or [h, w]): the
              transposed conv, H -> (H - 1) * stride + 1 + output_padding. Mirror of a strided conv.
dense         units*, activation. Needs a flat input: put a ``flatten`` before it.
batchnorm     (none). BatchNorm2d on (C, H, W), BatchNorm1d on flat features.
activation    fn*: relu, leaky_relu, elu, gelu, sigmoid, tanh or identity.
dropout       rate* in [0, 1).
maxpool       size*, unpool. ``size`` must divide H and W. ``unpool`` says how ``decoder: mirror``
              inverts it: absent/false -> upsample (nearest); "replicate" -> unpool replicate;
              "indices" (or true) -> unpool indices.
upsample      size*. Nearest-neighbour, (H, W) -> (H * size, W * size).
unpool        size*, mode* ("indices" | "replicate"). "replicate" copies each pixel size x size times
              (same values as upsample). "indices" puts values back where the encoder's maxes were: it
              takes the indices of an encoder maxpool marked ``unpool: indices``, last pool first, and
              that pool must have the same size and output shape as this layer's input.
flatten       (none). (C, H, W) -> C * H * W.
reshape       shape*: list of ints, e.g. [128, 7, 7].
pad / crop    height=0, width=0: add / remove that many rows and columns (half before, half after,
              the odd one after); crop undoes pad. For images whose size the pools do not divide.
============  ==========================================================================================

``activation: fn`` on conv, deconv or dense is shorthand for a following activation layer.

``decoder: mirror`` walks the encoder backwards. Each conv/dense layer starts a *block* that
owns the batchnorm/activation/dropout layers after it. The decoder takes the blocks in reverse:
a conv maps back to the channel count of its input (a strided conv becomes a deconv), a dense
layer back to its input size, and each mirrored layer is followed by the batchnorm/activation/
dropout of the block *before* it, so the decoder repeats the encoder's pattern. Shape layers are
inverted in reverse order: maxpool -> upsample/unpool (see ``unpool`` above), flatten and reshape
-> reshape to the shape before them, pad -> crop. Layers after the last conv/dense (the
bottleneck's own activation) and before the first (e.g. input dropout) are not mirrored; the last
decoder layer gets only ``output_activation``. ``resolve_spec`` shows the decoder it makes.

Shapes are found by running a dummy batch through the layers as they are built, so dense layers
after a flatten know their input size; this needs the input shape (``input`` or ``input_shape=``).
Every error names the part, the layer index and type, and the field, e.g.
``conv-mnist: encoder layer 3 (maxpool): size 3 does not divide the spatial size 28 x 28``.
"""

from __future__ import annotations

import copy
import json
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from .autoencoder import Autoencoder
from .layers import ACTIVATIONS, Crop2d, Pad2d, Reshape, Stack, Unpool2d, make_activation

ARCH_DIR = Path(__file__).resolve().parent / "archs"
SPEC_SUFFIXES = (".json", ".yaml", ".yml")
MAX_SPEC_BYTES = 2**20  # an architecture is a few kB of JSON or YAML
TOP_LEVEL_KEYS = ("name", "description", "input", "encoder", "decoder", "output_activation", "init")
# Weight initialisations of conv/dense layers: torch's own default, or Glorot/Xavier uniform with zero
# biases (Keras' default, which the public DEC/IDEC/DCN code was tuned with), or He/Kaiming uniform.
INITS = ("torch", "glorot", "kaiming")

REQUIRED = object()  # marks a field without a default

# type -> {field: (kind, default)}; kinds are checked by _check_field.
LAYER_FIELDS: dict[str, dict[str, tuple[str, Any]]] = {
    "conv": {"filters": ("int>=1", REQUIRED), "kernel": ("int>=1", REQUIRED), "stride": ("int>=1", 1),
             "activation": ("fn", None)},
    "deconv": {"filters": ("int>=1", REQUIRED), "kernel": ("int>=1", REQUIRED), "stride": ("int>=1", 1),
               "output_padding": ("pair>=0", None), "activation": ("fn", None)},
    "dense": {"units": ("int>=1", REQUIRED), "activation": ("fn", None)},
    "batchnorm": {},
    "activation": {"fn": ("fn", REQUIRED)},
    "dropout": {"rate": ("rate", REQUIRED)},
    "maxpool": {"size": ("int>=1", REQUIRED), "unpool": ("unpool", None)},
    "upsample": {"size": ("int>=1", REQUIRED)},
    "unpool": {"size": ("int>=1", REQUIRED), "mode": ("mode", REQUIRED)},
    "flatten": {},
    "reshape": {"shape": ("shape", REQUIRED)},
    "pad": {"height": ("int>=0", 0), "width": ("int>=0", 0)},
    "crop": {"height": ("int>=0", 0), "width": ("int>=0", 0)},
}
WEIGHT_TYPES = ("conv", "deconv", "dense")
POST_TYPES = ("batchnorm", "activation", "dropout")

Shape = tuple[int, ...]


# ---------------------------------------------------------------------------------------- loading
def _discover_architectures() -> dict[str, Path]:
    if not ARCH_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(ARCH_DIR.iterdir()) if p.suffix in SPEC_SUFFIXES}


# Shipped architectures: name -> file in models/archs/. Adding a file there registers it.
ARCHITECTURES: dict[str, Path] = _discover_architectures()


def list_architectures() -> list[str]:
    """Names of the shipped architectures, sorted."""
    return sorted(ARCHITECTURES)


def _read_spec_file(path: Path) -> dict[str, Any]:
    if not path.is_file():  # a folder, FIFO or device: never read (a FIFO would block)
        raise ValueError(f"{path}: an architecture file must be a regular file.")
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size} bytes is too large for an architecture file "
                         f"(at most {MAX_SPEC_BYTES}); pass a JSON or YAML spec.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file (not UTF-8); pass a JSON or YAML architecture.") from None
    if path.suffix == ".json":
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: "
                             f"{exc.msg}.") from None
    else:
        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError as exc:  # one line: what is wrong and where, not PyYAML's drawing of it
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ValueError(f"{path}: invalid YAML{where}: {problem}.") from None
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: an architecture file must hold a mapping with at least an 'encoder' "
                         f"list; got {type(spec).__name__}.")
    spec.setdefault("name", path.stem)
    return spec


def load_spec(spec: Mapping[str, Any] | str | os.PathLike) -> dict[str, Any]:
    """Return an architecture as a plain dict: from a dict (copied), a shipped name, or a file.

    Files are ``.json``, ``.yaml`` or ``.yml``; syntax errors name the file and the line.
    """
    if isinstance(spec, Mapping):
        return copy.deepcopy(dict(spec))
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"An architecture is a dict, a shipped name or a path; got {type(spec).__name__}.")
    if isinstance(spec, str) and spec in ARCHITECTURES:
        return _read_spec_file(ARCHITECTURES[spec])
    path = Path(spec)
    if path.suffix in SPEC_SUFFIXES:
        if not path.is_file():
            raise FileNotFoundError(f"Architecture file {str(path)!r} does not exist.")
        return _read_spec_file(path)
    raise ValueError(f"Unknown architecture {str(spec)!r}. Shipped: {', '.join(list_architectures())}; "
                     f"or pass a path to a {'/'.join(SPEC_SUFFIXES)} file, or a dict.")


# ------------------------------------------------------------------------------------- validation
@dataclass
class Layer:
    """One validated layer: its type, its fields with defaults filled, and where it came from."""

    type: str
    fields: dict[str, Any]
    where: str  # "conv-mnist: encoder layer 3 (maxpool)", used to prefix every error about it

    def error(self, message: str) -> ValueError:
        return ValueError(f"{self.where}: {message}")

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, **{k: v for k, v in self.fields.items() if v is not None}}


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_field(layer: Layer, key: str, kind: str, value: Any) -> Any:
    """Validate one field value of ``kind``; return it normalised (ints as int, pairs as lists)."""
    def bad(rule: str) -> ValueError:
        return layer.error(f"field {key!r} must be {rule}; got {value!r}.")

    if kind in ("int>=1", "int>=0"):
        low = int(kind[-1])
        if not _is_int(value) or value < low:
            raise bad(f"an integer >= {low}")
        return int(value)
    if kind == "fn":
        if value not in ACTIVATIONS:
            raise bad(f"one of {', '.join(ACTIVATIONS)}")
        return value
    if kind == "rate":
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 <= value < 1:
            raise bad("a number in [0, 1)")
        return float(value)
    if kind == "unpool":
        if value is True:
            return "indices"
        if value is False:
            return None
        if value not in ("indices", "replicate"):
            raise bad("'indices', 'replicate', true or false")
        return value
    if kind == "mode":
        if value not in ("indices", "replicate"):
            raise bad("'indices' or 'replicate'")
        return value
    if kind == "shape":
        if not isinstance(value, (list, tuple)) or not value or not all(_is_int(v) and v >= 1 for v in value):
            raise bad("a non-empty list of integers >= 1, e.g. [128, 7, 7]")
        return [int(v) for v in value]
    if kind == "pair>=0":
        if _is_int(value) and value >= 0:
            return [int(value), int(value)]
        if isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_int(v) and v >= 0 for v in value):
            return [int(v) for v in value]
        raise bad("an integer >= 0 or a pair [height, width] of them")
    raise AssertionError(f"unknown field kind {kind!r}")  # internal: LAYER_FIELDS is wrong


def _parse_layers(raw: Any, part: str, name: str) -> list[Layer]:
    """Validate a layer list; expand ``activation:`` shorthands into separate activation layers."""
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{name}: {part!r} must be a non-empty list of layers like "
                         f"{{type: conv, filters: 32, kernel: 3}}; got {raw!r}.")
    layers: list[Layer] = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise ValueError(f"{name}: {part} layer {i}: must be a mapping like {{type: dense, units: 10}}; "
                             f"got {item!r}.")
        if "type" not in item:
            raise ValueError(f"{name}: {part} layer {i}: missing field 'type' (one of "
                             f"{', '.join(sorted(LAYER_FIELDS))}).")
        kind = item["type"]
        if kind not in LAYER_FIELDS:
            raise ValueError(f"{name}: {part} layer {i} ({kind}): unknown layer type {kind!r}. Known types: "
                             f"{', '.join(sorted(LAYER_FIELDS))}.")
        layer = Layer(kind, {}, f"{name}: {part} layer {i} ({kind})")
        schema = LAYER_FIELDS[kind]
        for key in item:
            if key != "type" and key not in schema:
                allowed = ", ".join(schema) or "none"
                raise layer.error(f"unknown field {key!r}. Fields of {kind}: {allowed}.")
        for key, (field_kind, default) in schema.items():
            if key not in item or (item[key] is None and default is not REQUIRED):
                if default is REQUIRED:
                    raise layer.error(f"missing field {key!r}.")
                layer.fields[key] = default
            else:
                layer.fields[key] = _check_field(layer, key, field_kind, item[key])
        fn = layer.fields.pop("activation", None)
        layers.append(layer)
        if fn is not None:  # {type: dense, units: 500, activation: relu} == dense + activation layer
            layers.append(Layer("activation", {"fn": fn}, f"{layer.where} (its activation)"))
    return layers


def _check_input_field(value: Any, name: str) -> list[int | None] | None:
    if value is None:
        return None
    if (not isinstance(value, (list, tuple)) or len(value) != 3
            or not all(v is None or (_is_int(v) and v >= 1) for v in value)):
        raise ValueError(f"{name}: 'input' must be [C, H, W] with integers >= 1 (or null for any size); "
                         f"got {value!r}.")
    return [None if v is None else int(v) for v in value]


def _resolve_input_shape(declared: list[int | None] | None, input_shape: Sequence[int] | None,
                         name: str) -> Shape:
    if input_shape is None:
        if declared is None or None in declared:
            raise ValueError(f"{name}: the input shape is not fixed by the spec (input: {declared}); pass "
                             "input_shape=(C, H, W), e.g. build_autoencoder(spec, input_shape=(1, 28, 28)).")
        return tuple(declared)  # type: ignore[arg-type]
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1 or any(isinstance(s, bool) for s in input_shape):
        raise ValueError(f"input_shape must be (C, H, W) with positive integers; got {input_shape!r}.")
    if declared is not None:
        for axis, want, got in zip("CHW", declared, shape, strict=True):
            if want is not None and want != got:
                raise ValueError(
                    f"{name}: input_shape {shape} does not match the spec's input {declared} ({axis} is "
                    f"{got}, the architecture needs {want}). Resize the images (e.g. --resize, "
                    "--grayscale) or use an architecture made for this size (default_architecture)."
                )
    return shape


# --------------------------------------------------------------------------------------- building
@dataclass
class Built:
    """A layer as built: the module and the shapes (without batch) it maps between."""

    layer: Layer
    module: nn.Module
    in_shape: Shape
    out_shape: Shape


@dataclass
class _PoolRecord:
    layer: Layer
    size: int
    out_shape: Shape
    indices: Tensor


@dataclass
class _Builder:
    """Builds layers one at a time, running a dummy batch through each to learn the next input shape."""

    pools: list[_PoolRecord] = field(default_factory=list)  # indices-marked encoder pools, in order

    def build(self, layers: list[Layer], x: Tensor) -> tuple[list[Built], Tensor]:
        built = []
        for layer in layers:
            in_shape = tuple(x.shape[1:])
            module = self._module(layer, in_shape)
            module.eval()  # dummy pass: batchnorm uses its (initial) running stats, dropout is off
            with torch.no_grad():
                if isinstance(module, nn.MaxPool2d) and module.return_indices:
                    x, idx = module(x)
                    self.pools.append(_PoolRecord(layer, layer.fields["size"], tuple(x.shape[1:]), idx))
                elif isinstance(module, Unpool2d) and module.mode == "indices":
                    x = module(x, self._pop_pool(layer, in_shape))
                else:
                    x = module(x)
            module.train()
            built.append(Built(layer, module, in_shape, tuple(x.shape[1:])))
        return built, x

    def _pop_pool(self, layer: Layer, in_shape: Shape) -> Tensor:
        if not self.pools:
            raise layer.error("mode 'indices' needs an encoder maxpool marked `unpool: indices` to take "
                              "indices from, and none is left. Mark the mirrored encoder maxpool, or use "
                              "mode 'replicate'.")
        pool = self.pools.pop()
        if pool.size != layer.fields["size"] or pool.out_shape != in_shape:
            raise layer.error(
                f"mode 'indices' pairs with {pool.layer.where} (size {pool.size}, output shape "
                f"{pool.out_shape}), but this unpool has size {layer.fields['size']} and input shape "
                f"{in_shape}. Unpools take the indices of the marked pools last-first; make them mirror."
            )
        return pool.indices

    def _module(self, layer: Layer, shape: Shape) -> nn.Module:
        f, kind = layer.fields, layer.type
        if kind in ("conv", "deconv", "maxpool", "upsample", "unpool", "pad", "crop") and len(shape) != 3:
            raise layer.error(f"needs an image input (C, H, W) but gets flat features {shape}. "
                              "Put a {type: reshape, shape: [C, H, W]} before it.")
        if kind in ("conv", "deconv") and f["kernel"] % 2 == 0:
            raise layer.error(f"field 'kernel' must be odd, so that same padding is symmetric; got "
                              f"{f['kernel']}. Use {f['kernel'] + 1}.")
        if kind == "conv":  # same padding: k // 2 on each side, H -> ceil(H / stride)
            k, s = f["kernel"], f["stride"]
            return nn.Conv2d(shape[0], f["filters"], k, stride=s, padding=k // 2)
        if kind == "deconv":  # H -> (H - 1) * stride + 1 + output_padding
            k, s = f["kernel"], f["stride"]
            pad = f["output_padding"] if f["output_padding"] is not None else [s - 1, s - 1]
            if max(pad) >= s:
                raise layer.error(f"field 'output_padding' must be smaller than the stride {s}; got {pad}.")
            return nn.ConvTranspose2d(shape[0], f["filters"], k, stride=s, padding=k // 2,
                                      output_padding=tuple(pad))
        if kind == "dense":
            if len(shape) != 1:
                raise layer.error(f"needs flat features (N, d) but gets {shape}. Put a {{type: flatten}} "
                                  "before it.")
            return nn.Linear(shape[0], f["units"])
        if kind == "batchnorm":
            return nn.BatchNorm2d(shape[0]) if len(shape) == 3 else nn.BatchNorm1d(shape[0])
        if kind == "activation":
            return make_activation(f["fn"])
        if kind == "dropout":
            return nn.Dropout(f["rate"])
        if kind == "maxpool":
            size = f["size"]
            if shape[1] % size or shape[2] % size:
                raise layer.error(
                    f"size {size} does not divide the spatial size {shape[1]} x {shape[2]}. Use a size that "
                    f"divides it, or pad first, e.g. {{type: pad, height: {-shape[1] % size}, "
                    f"width: {-shape[2] % size}}}."
                )
            return nn.MaxPool2d(size, return_indices=f["unpool"] == "indices")
        if kind == "upsample":
            return nn.Upsample(scale_factor=f["size"], mode="nearest")
        if kind == "unpool":
            return Unpool2d(f["size"], f["mode"])
        if kind == "flatten":
            return nn.Flatten()
        if kind == "reshape":
            n_in, n_out = _prod(shape), _prod(f["shape"])
            if n_in != n_out:
                raise layer.error(f"field 'shape' {f['shape']} holds {n_out} values but the input {shape} "
                                  f"holds {n_in}.")
            return Reshape(f["shape"])
        if kind == "pad":
            return Pad2d(f["height"], f["width"])
        if kind == "crop":
            if f["height"] >= shape[1] or f["width"] >= shape[2]:
                raise layer.error(f"crops {f['height']} x {f['width']} from an image of {shape[1]} x "
                                  f"{shape[2]}: nothing would be left.")
            return Crop2d(f["height"], f["width"])
        raise AssertionError(f"no builder for layer type {kind!r}")  # internal: LAYER_FIELDS is wrong


def _prod(shape: Sequence[int]) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


# ----------------------------------------------------------------------------------------- mirror
def _mirror(encoder: list[Built], name: str) -> list[dict[str, Any]]:
    """The decoder layer list that mirrors ``encoder`` (see the module docstring for the rule)."""
    weights = [i for i, b in enumerate(encoder) if b.layer.type in WEIGHT_TYPES]
    for b in encoder:
        if b.layer.type in ("deconv", "upsample", "unpool", "crop"):
            raise b.layer.error("`decoder: mirror` cannot invert this layer type in an encoder; write the "
                                "decoder as an explicit layer list.")
    if not weights:
        raise ValueError(f"{name}: `decoder: mirror` needs at least one conv or dense layer in the encoder.")
    bounds = [-1, *weights, len(encoder)]
    # segments[k]: the layers between weight layer k-1 and weight layer k (segments[0] = before the first)
    segments = [encoder[bounds[k] + 1:bounds[k + 1]] for k in range(len(bounds) - 1)]

    decoder = [_invert_shape(b) for b in reversed(segments[-1]) if b.layer.type not in POST_TYPES]
    for k in range(len(weights), 0, -1):
        decoder.append(_invert_weight(encoder[weights[k - 1]]))
        before = segments[k - 1]
        if k > 1:  # the batchnorm/activation/dropout of the block before, in their order
            decoder += [b.layer.as_dict() for b in before if b.layer.type in POST_TYPES]
        decoder += [_invert_shape(b) for b in reversed(before) if b.layer.type not in POST_TYPES]
    return decoder


def _invert_weight(b: Built) -> dict[str, Any]:
    f = b.layer.fields
    if b.layer.type == "dense":
        return {"type": "dense", "units": b.in_shape[0]}
    if f["stride"] == 1:
        return {"type": "conv", "filters": b.in_shape[0], "kernel": f["kernel"]}
    # (H_out - 1) * stride + 1 + output_padding == H_in, per axis
    pad = [b.in_shape[a] - (b.out_shape[a] - 1) * f["stride"] - 1 for a in (1, 2)]
    return {"type": "deconv", "filters": b.in_shape[0], "kernel": f["kernel"], "stride": f["stride"],
            "output_padding": pad}


def _invert_shape(b: Built) -> dict[str, Any]:
    f = b.layer.fields
    if b.layer.type == "maxpool":
        if f["unpool"] is None:
            return {"type": "upsample", "size": f["size"]}
        return {"type": "unpool", "size": f["size"], "mode": f["unpool"]}
    if b.layer.type in ("flatten", "reshape"):
        return {"type": "reshape", "shape": list(b.in_shape)}
    if b.layer.type == "pad":
        return {"type": "crop", "height": f["height"], "width": f["width"]}
    raise AssertionError(f"no inverse for {b.layer.type!r}")  # internal: _mirror filters the others


# ------------------------------------------------------------------------------------- public API
@dataclass
class _Resolved:
    spec: dict[str, Any]  # the input spec, with 'input' set to the shape built for
    explicit: dict[str, Any]  # the same with the decoder written out
    encoder: list[Built]
    decoder: list[Built]
    input_shape: Shape


def _resolve(spec: Mapping[str, Any] | str | os.PathLike, input_shape: Sequence[int] | None) -> _Resolved:
    from_file = not isinstance(spec, Mapping) and not (isinstance(spec, str) and spec in ARCHITECTURES)
    source, spec = spec, load_spec(spec)
    try:
        return _resolve_dict(spec, input_shape)
    except ValueError as exc:
        if from_file:  # say which file
            raise ValueError(f"{source}: {exc}") from None
        raise


def _resolve_dict(spec: dict[str, Any], input_shape: Sequence[int] | None) -> _Resolved:
    name = str(spec.get("name", "spec"))
    unknown = [k for k in spec if k not in TOP_LEVEL_KEYS]
    if unknown:
        raise ValueError(f"{name}: unknown key {unknown[0]!r}. Keys of an architecture: "
                         f"{', '.join(TOP_LEVEL_KEYS)}.")
    if "encoder" not in spec:
        raise ValueError(f"{name}: missing key 'encoder' (the list of encoder layers).")
    declared = _check_input_field(spec.get("input"), name)
    shape = _resolve_input_shape(declared, input_shape, name)
    out_fn = spec.get("output_activation", "identity")
    if out_fn is None:
        out_fn = "identity"
    if out_fn not in ACTIVATIONS:
        raise ValueError(f"{name}: 'output_activation' must be one of {', '.join(ACTIVATIONS)}; "
                         f"got {out_fn!r}.")

    init = spec.get("init", "torch")
    if init not in INITS:
        raise ValueError(f"{name}: 'init' must be one of {', '.join(INITS)}; got {init!r}.")

    builder = _Builder()
    dummy = torch.zeros(1, *shape)  # one dummy image: its trip through the layers gives their shapes
    encoder, z = builder.build(_parse_layers(spec["encoder"], "encoder", name), dummy)
    if z.ndim != 2:
        raise ValueError(f"{name}: the encoder must end flat, giving the embedding z (N, d); it ends with "
                         f"shape {tuple(z.shape[1:])} at {encoder[-1].layer.where}. End it with "
                         "{type: flatten} (and usually a {type: dense, units: d}).")

    decoder_raw = spec.get("decoder", "mirror")
    if decoder_raw is None or decoder_raw == "mirror":
        decoder_list = _mirror(encoder, name)
        part = "decoder (mirrored)"
    elif isinstance(decoder_raw, str):
        raise ValueError(f"{name}: 'decoder' must be 'mirror' or a list of layers; got {decoder_raw!r}.")
    else:
        decoder_list = decoder_raw
        part = "decoder"
    layers = _parse_layers(decoder_list, part, name)
    n_decoder = len(layers)  # the output activation below is not part of the written-out decoder
    if out_fn != "identity":
        layers.append(Layer("activation", {"fn": out_fn}, f"{name}: output_activation ({out_fn})"))
    decoder, x_hat = builder.build(layers, z)
    if tuple(x_hat.shape[1:]) != shape:
        raise ValueError(f"{name}: the {part} ends with shape {tuple(x_hat.shape[1:])} but must rebuild the "
                         f"input shape {shape}; check the last conv's filters and the up-sampling.")
    if builder.pools:
        raise builder.pools[0].layer.error(
            "is marked `unpool: indices` but no decoder unpool (mode 'indices') takes its indices. Add one, "
            "or drop the mark."
        )

    resolved_spec = {**spec, "input": list(shape)}
    explicit = {
        "name": name,
        **({"description": spec["description"]} if "description" in spec else {}),
        "input": list(shape),
        "encoder": [b.layer.as_dict() for b in encoder],
        "decoder": [b.layer.as_dict() for b in decoder[:n_decoder]],
        "output_activation": out_fn,
        **({"init": init} if init != "torch" else {}),
    }
    return _Resolved(resolved_spec, explicit, encoder, decoder, shape)


def _initialise(module: nn.Module, init: str) -> None:
    """Re-draw the weights of every conv/dense layer of ``module`` with ``init`` (see ``INITS``)."""
    if init == "torch":
        return
    for layer in module.modules():
        if isinstance(layer, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
            if init == "glorot":
                nn.init.xavier_uniform_(layer.weight)
            else:
                nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def resolve_spec(spec: Mapping[str, Any] | str | os.PathLike,
                 input_shape: Sequence[int] | None = None) -> dict[str, Any]:
    """The spec written out in full: shorthands expanded, defaults filled, ``decoder`` an explicit list.

    Building from it gives the same model as building from ``spec``. It builds the layers to learn
    their shapes, but leaves torch's random state as it found it.
    """
    with torch.random.fork_rng(devices=[]):
        return _resolve(spec, input_shape).explicit


def build_autoencoder(spec: Mapping[str, Any] | str | os.PathLike,
                      input_shape: Sequence[int] | None = None) -> Autoencoder:
    """Build an ``Autoencoder`` from a spec dict, a shipped name (``list_architectures()``) or a file.

    Parameters
    ----------
    spec : dict, str or path
        The architecture; see this module's docstring for the format.
    input_shape : (C, H, W) or None
        Shape of one image. Required when the spec's ``input`` is missing or has null dims;
        checked against it otherwise.

    Returns
    -------
    Autoencoder
        In training mode; ``ae.spec`` is the spec with ``input`` set, so
        ``build_autoencoder(ae.spec)`` rebuilds it (``torch.manual_seed`` makes the weights equal).
    """
    r = _resolve(spec, input_shape)
    encoder = Stack(*(b.module for b in r.encoder))
    decoder = Stack(*(b.module for b in r.decoder))
    _initialise(encoder, r.spec.get("init", "torch"))
    _initialise(decoder, r.spec.get("init", "torch"))
    try:
        saved = json.loads(json.dumps(r.spec))
    except TypeError as exc:
        raise ValueError(f"{r.spec.get('name', 'spec')}: the spec must be JSON-serialisable (plain dicts, "
                         f"lists, strings and numbers): {exc}") from None
    return Autoencoder(encoder, decoder, r.input_shape, spec=saved,
                       embedding_dim=r.encoder[-1].out_shape[0])


__all__ = ["ARCHITECTURES", "LAYER_FIELDS", "build_autoencoder", "list_architectures", "load_spec",
           "resolve_spec"]
