"""Batch norm and dropout that see the global batch when DDP splits it among ranks.

Under torchrun a rank holds only its share of every batch (``shares.batch_share``). A plain
``BatchNorm`` layer in training mode would then normalise with the statistics of that share, and
``Dropout`` would draw masks for the share's rows from a random stream that every rank holds alike, so
the training would differ from one process's by more than float rounding. :func:`use_global_batch`
swaps those layers, in place and keeping their parameters and buffers (so ``state_dict`` keys,
optimisers and checkpoints are unchanged), for versions that

* normalise with the mean and (biased) variance of the whole batch, summed across ranks with a
  differentiable all-reduce, so the gradients also flow through the other ranks' rows as in one
  process (torch's ``SyncBatchNorm`` does this on GPUs only), and update the running statistics as
  one process does;
* draw the dropout mask of the whole batch from the global random stream, as ``F.dropout`` does on
  the CPU, and keep the share's rows: the same mask bits as one process.

In evaluation mode, or outside a group of several ranks, they are the plain layers.

Two ways in: :func:`use_global_batch` swaps the layers for good (DeepCluster's network keeps them);
:func:`global_batch_layers` swaps them for one training stage and puts torch's layers back after it
(the autoencoders, which are saved, copied and reused between stages and methods), and swaps nothing in
one process. Either gives the :class:`BatchShare` that splits each batch (``take``) and tells the layers
which rows this rank holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .. import distributed as D
from .shares import Share, batch_share


class BatchShare:
    """The share of the current global batch this rank holds; set before every forward pass (``take``)."""

    share: Share | None = None

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, Share]:
        """This rank's rows of the global batch ``idx`` and their :class:`Share` (:func:`batch_share`),
        kept for the layers of the next forward pass."""
        rows, self.share = batch_share(idx)
        return rows, self.share


class _SumOverRanks(torch.autograd.Function):
    """Sum over ranks whose backward sums the incoming gradients over ranks too: the gradient of every
    rank's loss with respect to this rank's contribution."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        return D.all_reduce_sum(tensor.contiguous())

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return D.all_reduce_sum(grad.contiguous())


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    return _SumOverRanks.apply(tensor)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """``BatchNorm1d/2d`` whose training statistics are those of the global batch (module docstring)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input; got {input.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and D.is_distributed()):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        count = float(D.all_reduce_sum(torch.tensor([x.numel() / max(x.shape[1], 1)], dtype=torch.float64)))
        # statistics in float64, as torch's CPU batch norm accumulates them
        mean = _all_reduce_sum(x.sum(dim=dims, dtype=torch.float64)) / count  # (C,)
        centred = x - mean.to(x.dtype).view(shape)
        var = _all_reduce_sum(centred.pow(2).sum(dim=dims, dtype=torch.float64)) / count  # biased
        y = centred * torch.rsqrt(var + self.eps).to(x.dtype).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                            else self.momentum)
                self.running_mean.mul_(1 - momentum).add_(mean.detach().to(x.dtype) * momentum)
                unbiased = var.detach() * (count / max(count - 1, 1))
                self.running_var.mul_(1 - momentum).add_(unbiased.to(x.dtype) * momentum)
        return y


class GlobalDropout(nn.Dropout):
    """``Dropout`` whose mask is the whole batch's, sliced to this rank's share (module docstring)."""

    def __init__(self, p: float, context: BatchShare):
        super().__init__(p)
        self.context = context

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        share = self.context.share
        if not (self.training and D.is_distributed() and share is not None) or self.p == 0:
            return super().forward(x)
        # F.dropout on the CPU: a Bernoulli(1 - p) mask of the input's shape, divided by 1 - p
        noise = torch.empty((share.size, *x.shape[1:]), dtype=x.dtype).bernoulli_(1 - self.p)
        noise = noise[share.rows].div_(1 - self.p).to(x.device)
        return x * noise


def use_global_batch(module: nn.Module) -> BatchShare:
    """Swap ``module``'s batch-norm and dropout layers (in place) for their global-batch versions;
    return the :class:`BatchShare` to set before each forward pass. Parameters and buffers are the
    same objects as before."""
    context = BatchShare()
    _swap(module, context)
    return context


@contextmanager
def global_batch_layers(module: nn.Module) -> Iterator[BatchShare]:
    """Within the block, ``module``'s batch-norm and dropout layers are their global-batch versions under
    torchrun; on leaving it (an error included) torch's layers are back in their places, holding the
    parameters and buffers as trained. Outside a group of several ranks nothing is swapped. Yields the
    :class:`BatchShare` whose ``take`` splits each global batch.

    Swap before wrapping ``module`` in DDP (``distributed.data_parallel``), which must see the layers it
    will run.
    """
    context = BatchShare()
    swapped = _swap(module, context) if D.is_distributed() else []
    try:
        yield context
    finally:
        for parent, name, original in reversed(swapped):
            original.train(getattr(parent, name).training)
            setattr(parent, name, original)


def _swap(module: nn.Module, context: BatchShare) -> list[tuple[nn.Module, str, nn.Module]]:
    """Swap the layers in place; return (parent, name, original layer) for each swapped one."""
    swapped = []
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, GlobalBatchNorm):
            new = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats)
            # the same dicts, not copies: what the new layer learns (or a checkpoint loads) is the old one's
            new._parameters, new._buffers = child._parameters, child._buffers
        elif type(child) is nn.Dropout:
            new = GlobalDropout(child.p, context)
        else:
            swapped += _swap(child, context)
            continue
        new.train(child.training)
        setattr(module, name, new)
        swapped.append((module, name, child))
    return swapped


__all__ = ["BatchShare", "GlobalBatchNorm", "GlobalDropout", "global_batch_layers", "use_global_batch"]
