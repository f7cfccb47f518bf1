"""Running under torchrun: process-group set-up, rank helpers, sharding and deterministic collectives.

Every helper talks through ``torch.distributed`` only (no sockets or process pools of our own). Outside
torchrun, or before :func:`init_distributed`, each one gives the one-process answer: rank 0 of 1,
barriers and reductions do nothing, ``shard_indices`` returns every index. Code written with them runs
unchanged in a plain ``python`` process.

Typical use (what ``deepclust run`` does under ``torchrun --nproc_per_node N``)::

    with distributed_session("auto") as device:        # gloo on CPU, NCCL on GPU
        X_shard = X[shard_slice(len(X))]               # this rank's contiguous block
        km = KMeans(10, random_state=0).fit(X_shard)   # collective: every rank calls it
        labels = concat_shards(km.labels_)             # all labels, in the original order
        main_process_only(write_npy)(path, labels)     # rank 0 alone writes

Training wraps its network in :func:`data_parallel` (DistributedDataParallel) and gives each rank its
share of every global batch (``deep/shares.py``), with batch norm and dropout of the whole batch
(``deep/global_batch.py``).

A rank that dies makes torchrun stop the others; a rank that stalls (or skips a collective) makes the
others fail after ``DEEPCLUST_DIST_TIMEOUT`` seconds (default 300) instead of waiting forever.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from ._validation import resolve_device

TIMEOUT_ENV = "DEEPCLUST_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0
_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")

T = TypeVar("T")


# ----------------------------------------------------------------------------------------- set-up
def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher) set RANK, WORLD_SIZE and LOCAL_RANK for this process."""
    return all(name in os.environ for name in _TORCHRUN_ENV)


def timeout_seconds() -> float:
    """Seconds a collective may wait for the other ranks: ``DEEPCLUST_DIST_TIMEOUT`` or 300."""
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None or raw == "":
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{TIMEOUT_ENV} must be a number of seconds > 0; got {raw!r}.")
    return value


def init_distributed(device: str | torch.device | None = "auto", *,
                     timeout: float | None = None) -> torch.device:
    """Join the process group torchrun prepared and return this rank's device.

    The backend follows the device: NCCL for CUDA (each rank pinned to GPU ``LOCAL_RANK``), gloo for
    the CPU. ``timeout`` (seconds, default :func:`timeout_seconds`) bounds every collective, so a rank
    that stops answering turns into an error on the others. Outside torchrun nothing is initialised
    and the resolved ``device`` is returned. Calling it again once initialised is harmless.
    """
    if not launched_by_torchrun():
        return resolve_device(device)
    local = int(os.environ["LOCAL_RANK"])
    want = resolve_device(device)
    if want.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK={local} but this machine has {torch.cuda.device_count()} CUDA "
                             "device(s); start at most that many processes per node (--nproc_per_node).")
        want = torch.device("cuda", local)
        torch.cuda.set_device(want)
    if not dist.is_initialized():
        seconds = timeout_seconds() if timeout is None else float(timeout)
        dist.init_process_group("nccl" if want.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=seconds),
                                device_id=want if want.type == "cuda" else None)
        global _FINISH_GROUP
        if dist.get_world_size() > 1:  # created now: new_group is itself a collective
            _FINISH_GROUP = dist.new_group(backend="gloo", timeout=FINISH_TIMEOUT)
    return want


#: How long the ranks that are done wait for rank 0 to finish writing (a report of a large run takes
#: minutes). A rank that dies instead is stopped by torchrun, which then ends the waiting ones.
FINISH_TIMEOUT = datetime.timedelta(days=1)
_FINISH_GROUP = None


def wait_for_all() -> None:
    """Block until every rank gets here (a no-op in one process). Used before leaving the process
    group: a rank that tears down its connections while rank 0 still writes can make gloo abort rank 0
    (seen once in ~20 launches of a two-rank ``--resume``)."""
    if is_distributed() and _FINISH_GROUP is not None:
        dist.barrier(group=_FINISH_GROUP)


def cleanup() -> None:
    """Leave the process group (a no-op when none was joined)."""
    global _FINISH_GROUP
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _FINISH_GROUP = None


@contextlib.contextmanager
def distributed_session(device: str | torch.device | None = "auto", *,
                        timeout: float | None = None) -> Iterator[torch.device]:
    """``init_distributed`` on entry, ``cleanup`` on exit; yields this rank's device.

    When the block raises, one line on stderr names the failing rank (and, for a timeout, the likely
    cause) before the exception propagates; torchrun then stops the other ranks.
    """
    dev = init_distributed(device, timeout=timeout)
    try:
        yield dev
        wait_for_all()  # a clean finish: leave together
    except BaseException as exc:
        if is_distributed():
            hint = ""
            if "timed out" in str(exc).lower() or "timeout" in type(exc).__name__.lower():
                hint = (f" A collective timed out: another rank died, stalled or skipped a collective "
                        f"call; if a step legitimately takes longer, raise {TIMEOUT_ENV} (seconds).")
            print(f"deepclust: rank {rank()} of {world_size()} failed with {type(exc).__name__}.{hint}",
                  file=sys.stderr, flush=True)
        raise
    finally:
        cleanup()


# ----------------------------------------------------------------------------------------- ranks
def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_distributed() -> bool:
    """True when a process group with more than one rank is initialised."""
    return is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    """Index of this process on its node (torchrun's LOCAL_RANK), 0 outside torchrun."""
    return int(os.environ.get("LOCAL_RANK", 0)) if is_initialized() else 0


def is_main_process() -> bool:
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (bounded by the group's timeout); a no-op in one process."""
    if is_distributed():
        dist.barrier()


def main_process_only(fn: Callable[..., T]) -> Callable[..., T | None]:
    """Wrap ``fn`` so that only rank 0 runs it; other ranks return None at once (no barrier).

    Use it for every file a run writes: ``main_process_only(write_json)(path, obj)``.
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs) if is_main_process() else None
    return wrapper


# -------------------------------------------------------------------------------------- sharding
def shard_bounds(n: int, rank_: int | None = None, world: int | None = None) -> tuple[int, int]:
    """[start, stop) of rank ``rank_``'s contiguous block of ``n`` rows; sizes differ by at most one."""
    r = rank() if rank_ is None else int(rank_)
    w = world_size() if world is None else int(world)
    if n < 0 or w < 1 or not 0 <= r < w:
        raise ValueError(f"shard of n={n} rows needs 0 <= rank < world; got rank={r}, world={w}.")
    return n * r // w, n * (r + 1) // w


def shard_slice(n: int, rank_: int | None = None, world: int | None = None) -> slice:
    """This rank's contiguous block as a slice (a view, not a copy, of arrays and memmaps)."""
    return slice(*shard_bounds(n, rank_, world))


def shard_indices(n: int, rank_: int | None = None, world: int | None = None, *,
                  strided: bool = False) -> np.ndarray:
    """Indices of the rows of ``n`` that rank ``rank_`` of ``world`` holds (default: this process).

    Contiguous blocks in rank order (default) keep the global order: concatenating the shards in rank
    order gives back ``0..n-1``, which is what distributed ``KMeans`` needs to reproduce one process's
    result. ``strided=True`` gives ``rank, rank + world, ...`` (balanced when rows are sorted by class
    or by size); its concatenation is a permutation, so a fit on it equals one process on the permuted
    rows, not on the original order.
    """
    start, stop = shard_bounds(n, rank_, world)
    if strided:
        r = rank() if rank_ is None else int(rank_)
        return np.arange(r, n, world_size() if world is None else int(world), dtype=np.int64)
    return np.arange(start, stop, dtype=np.int64)


def data_parallel(module: torch.nn.Module, *, find_unused_parameters: bool = False) -> torch.nn.Module:
    """``module`` wrapped in ``DistributedDataParallel`` under torchrun (gradients averaged over ranks
    after every backward, rank 0's weights broadcast at the start); ``module`` itself in one process.

    Wrap for training only and keep using ``module`` for ``state_dict``, checkpoints and inference.
    ``find_unused_parameters``: some parameters get no gradient (DEC's decoder), which DDP must be told.
    """
    if not is_distributed():
        return module
    from torch.nn.parallel import DistributedDataParallel

    device = next(module.parameters()).device
    return DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None,
                                   find_unused_parameters=find_unused_parameters)


# ----------------------------------------------------------------------------------- collectives
def _comm_device() -> torch.device:
    """Where collective tensors must live: the current GPU for NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over ranks, returned on its device (the input itself in one process).

    The backend's reduction order is its own: use :func:`sum_in_rank_order` when bitwise reproducible
    sums are needed.
    """
    if not is_distributed():
        return tensor
    out = tensor.detach().to(_comm_device(), copy=True)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(tensor.device)


def all_gather_tensors(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``tensor`` (same shape and dtype on all ranks), in rank order."""
    if not is_distributed():
        return [tensor]
    local = tensor.detach().to(_comm_device()).contiguous()
    parts = [torch.empty_like(local) for _ in range(world_size())]
    dist.all_gather(parts, local)
    return [p.to(tensor.device) for p in parts]


def sum_in_rank_order(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks added in rank order (0 + 1 + 2 ...): the same bits on every rank and every run.

    Costs ``world_size`` copies of ``tensor``; meant for small statistics (k-means sums and counts).
    """
    parts = all_gather_tensors(tensor)
    total = parts[0].clone()
    for part in parts[1:]:
        total += part
    return total


def broadcast_tensor(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s ``tensor`` on every rank (same shape and dtype everywhere), on its device."""
    if not is_distributed():
        return tensor
    out = tensor.detach().to(_comm_device(), copy=True).contiguous()
    dist.broadcast(out, src=src)
    return out.to(tensor.device)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank (configs, paths, small results)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_comm_device())
    return box[0]


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj`` in rank order (``[obj]`` in one process): small reports that every
    rank must see, such as each rank's error, so that all of them stop together with the same message."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def fill_from_shards(out: np.ndarray, *, chunk_rows: int = 65536) -> np.ndarray:
    """Complete ``out`` (N, ...) on every rank, where each rank has written its own contiguous block
    ``out[shard_slice(N)]``: the other ranks' rows arrive ``chunk_rows`` per rank at a time.

    Nothing but ``out`` grows with N: a rank that encodes its shard straight into ``out`` never holds
    the shard and the whole apart, as :func:`concat_shards` must. A collective: every rank calls it with
    the same shape and dtype. Returns ``out``.
    """
    if not is_distributed():
        return out
    whole = torch.from_numpy(out)
    n, world, me = out.shape[0], world_size(), rank()
    blocks = [shard_bounds(n, r, world) for r in range(world)]
    longest = max(stop - start for start, stop in blocks)
    device = _comm_device()
    for offset in range(0, longest, chunk_rows):
        m = min(chunk_rows, longest - offset)
        send = torch.zeros((m, *whole.shape[1:]), dtype=whole.dtype)
        start, stop = blocks[me]
        take = max(0, min(m, stop - start - offset))
        send[:take] = whole[start + offset:start + offset + take]
        parts = [torch.empty_like(send, device=device) for _ in range(world)]
        dist.all_gather(parts, send.to(device))
        for r, part in enumerate(parts):
            start, stop = blocks[r]
            take = max(0, min(m, stop - start - offset))
            if r != me and take:
                whole[start + offset:start + offset + take] = part[:take].cpu()
    return out


def concat_shards(array: np.ndarray, *, chunk_rows: int = 65536) -> np.ndarray:
    """Concatenate every rank's ``array`` along axis 0 in rank order; the whole on every rank.

    Shards may differ in length (not in trailing shape or dtype). With contiguous shards from
    :func:`shard_indices` this restores the original order, e.g. all labels of a sharded fit.

    The shards are gathered straight into the one array returned (then moved together in place,
    ``chunk_rows`` at a time), so gathering an (N, d) embedding costs N rows once, not three times.
    """
    array = np.ascontiguousarray(array)
    if not is_distributed():
        return array
    sizes = all_gather_tensors(torch.tensor([array.shape[0]], dtype=torch.int64))
    sizes = [int(s) for s in torch.cat(sizes)]
    longest, trailing = max(sizes), array.shape[1:]
    out = np.empty((longest * len(sizes),) + trailing, dtype=array.dtype)
    if longest == 0:
        return out
    local = array
    if array.shape[0] < longest:  # every rank sends the same shape
        local = np.zeros((longest,) + trailing, dtype=array.dtype)
        local[:array.shape[0]] = array
    slots = torch.from_numpy(out).split(longest)  # one view of ``out`` per rank
    device = _comm_device()
    if device.type == "cpu":
        dist.all_gather(list(slots), torch.from_numpy(local))
    else:  # NCCL gathers on the GPU; bring each rank's part back into its slot
        parts = [torch.empty((longest,) + trailing, dtype=slots[0].dtype, device=device) for _ in sizes]
        dist.all_gather(parts, torch.from_numpy(local).to(device))
        for slot, part in zip(slots, parts, strict=True):
            slot.copy_(part.cpu())
    at = sizes[0]
    for rank in range(1, len(sizes)):  # close the padding gaps: move rank r's rows down to ``at``
        src = rank * longest
        for i in range(0, sizes[rank], chunk_rows):
            m = min(chunk_rows, sizes[rank] - i)
            out[at + i:at + i + m] = out[src + i:src + i + m]  # an overlap goes through a chunk-sized copy
        at += sizes[rank]
    return out[:at]
