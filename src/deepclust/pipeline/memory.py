"""Will a run's network fit? Built on torch's meta device and sized before the run folder exists.

A network that cannot be built (shapes that do not fit the data) or that cannot fit in memory (a
10^8-unit layer) should fail with one line before anything is written, not hours later or as a kill
by the kernel's OOM killer, which no handler sees. :func:`check_network` builds the network the
method would train on the ``meta`` device (shapes only, no storage), then compares a lower bound of
what training needs with the memory available: the weights, their gradients and the optimizer's state
(4 bytes each), plus the activations of one batch. Only an estimate that already exceeds what is free
is refused, so a run that might fit is never stopped.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._errors import OutOfMemory

_FLOAT_BYTES = 4
#: Optimizer state per parameter (copies of the weights): Adam keeps two moments, SGD one momentum.
_OPTIMIZER_STATES = {"adam": 2, "sgd": 1}


@dataclass(frozen=True)
class Footprint:
    """What training a network needs, at least, in bytes, and the layer that weighs most."""

    n_parameters: int
    parameter_bytes: int  # weights + gradients + optimizer state
    activation_bytes: int  # one batch's activations, kept for the backward pass, and their gradients
    largest_layer: str
    largest_parameters: int

    @property
    def total(self) -> int:
        return self.parameter_bytes + self.activation_bytes


def check_network(method, X: np.ndarray, n_clusters: int, *, device: str | None = None) -> Footprint | None:
    """Build the network ``method`` would train on data ``X`` on the meta device and check it fits.

    Returns the footprint (None for methods that train no network, or that reuse a given one). Raises
    the building error (a shape that does not fit, naming the layer) or :class:`OutOfMemory` whose one
    line names the size, the largest layer and the fix. Nothing is allocated.
    """
    cls = type(method)
    if not getattr(cls, "trains_network", False):
        return None
    from ..deep.base import as_image_tensor
    from ..models import build_autoencoder

    shape = tuple(as_image_tensor(X[:1]).shape[1:])  # (C, H, W) as the method will see it
    given = getattr(method, "autoencoder", None)
    if given is not None:  # reused (--from): already in memory; it must take this data's images
        if tuple(given.input_shape) != shape:
            raise ValueError(f"The autoencoder given (--from) takes images of shape "
                             f"{tuple(given.input_shape)} (C, H, W); this data's are {shape}. Use the same "
                             "--resize and --grayscale as that run, or train a new one.")
        return None
    spec = method.architecture(shape, n_clusters)
    rebuild = getattr(cls, "_rebuild_network", build_autoencoder)  # as checkpoint.py rebuilds it
    with torch.device("meta"):
        network = rebuild(spec, shape)
        batch = min(int(getattr(method, "batch_size", 1) or 1), len(X))
        footprint = measure(network, shape, batch, getattr(method, "optimizer", "sgd"))
    available = available_memory(device or getattr(method, "device", "cpu"))
    if available is not None and footprint.total > available:
        raise OutOfMemory(_too_big(method, spec, footprint, available, batch))
    return footprint


def measure(network: nn.Module, shape: tuple[int, ...], batch: int, optimizer: str = "sgd") -> Footprint:
    """The :class:`Footprint` of training ``network`` (on the meta device) on batches of ``batch``."""
    n_parameters = sum(p.numel() for p in network.parameters())
    copies = 2 + _OPTIMIZER_STATES.get(optimizer, 1)  # weights, gradients, optimizer state
    per_sample = _activations_per_sample(network, shape)
    largest, size = _largest_layer(network)
    return Footprint(n_parameters=n_parameters, parameter_bytes=n_parameters * copies * _FLOAT_BYTES,
                     activation_bytes=2 * batch * per_sample * _FLOAT_BYTES, largest_layer=largest,
                     largest_parameters=size)


def _activations_per_sample(network: nn.Module, shape: tuple[int, ...]) -> int:
    """Values every leaf module outputs for one sample (a meta forward pass: no storage)."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        total += sum(o[0].numel() for o in outputs if isinstance(o, torch.Tensor) and o.dim() > 0)

    leaves = [m for m in network.modules() if not any(True for _ in m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    was_training = network.training
    try:
        network.eval()  # batch-norm's batch-of-one check does not apply in eval mode
        with torch.no_grad():
            network(torch.zeros((1, *shape), device="meta"))
    except Exception:  # noqa: BLE001 - a network whose forward needs more than a tensor: size the weights
        total = 0
    finally:
        for hook in hooks:
            hook.remove()
        network.train(was_training)
    return total


def _largest_layer(network: nn.Module) -> tuple[str, int]:
    best, size = "", 0
    for name, module in network.named_modules():
        n = sum(p.numel() for p in module.parameters(recurse=False))
        if n > size:
            best, size = f"{name} ({_describe(module)})", n
    return best, size


def _describe(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return f"dense, {module.in_features} -> {module.out_features} units"
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        kind = "conv" if isinstance(module, nn.Conv2d) else "deconv"
        size = module.kernel_size[0]
        return f"{kind}, {module.in_channels} -> {module.out_channels} filters, kernel {size}"
    return type(module).__name__


def _too_big(method, spec, footprint: Footprint, available: int, batch: int) -> str:
    arch = Path(spec).name if isinstance(spec, (str, os.PathLike)) else (
        spec.get("name", "the default") if isinstance(spec, dict) else "the default")
    return (f"the network of {type(method).__name__} ({arch}) needs at least {_gb(footprint.total)} to "
            f"train ({footprint.n_parameters:,} parameters: {_gb(footprint.parameter_bytes)} for weights, "
            f"gradients and optimizer state; {_gb(footprint.activation_bytes)} for a batch of {batch}) but "
            f"{_gb(available)} is free; its largest layer is {footprint.largest_layer} with "
            f"{footprint.largest_parameters:,} parameters. Use a smaller architecture (-a), fewer units or "
            "filters, a lower --batch-size or --resize; nothing was written.")


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def available_memory(device) -> int | None:
    """Bytes free for a new allocation on ``device``: CUDA's free memory, or for the CPU the kernel's
    MemAvailable capped by the cgroup (container) limit. None when it cannot be told."""
    kind = str(device or "cpu")
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind.startswith("cuda"):
        if not torch.cuda.is_available():
            return None
        with contextlib.suppress(RuntimeError):
            index = torch.device(kind).index
            return int(torch.cuda.mem_get_info(torch.cuda.current_device() if index is None else index)[0])
        return None
    free = _meminfo_available()
    limit = _cgroup_free()
    candidates = [v for v in (free, limit) if v is not None]
    return min(candidates) if candidates else None


def _meminfo_available() -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return None


def _cgroup_free() -> int | None:
    """Room left under a cgroup memory limit (v2, then v1); None without a limit."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        with contextlib.suppress(OSError, ValueError):
            limit = Path(limit_file).read_text().strip()
            if limit == "max" or int(limit) >= 2**60:  # no limit (v1 says so with a huge number)
                return None
            return max(0, int(limit) - int(Path(usage_file).read_text().strip()))
    return None


__all__ = ["Footprint", "available_memory", "check_network", "measure"]
