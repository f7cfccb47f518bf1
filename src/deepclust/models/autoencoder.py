"""The autoencoder every deep method shares: ``encode`` (N, C, H, W) -> (N, d), ``decode`` back.

Models are usually built from an architecture file (see ``deepclust.models.spec``), but any
encoder/decoder pair of modules works::

    ae = build_autoencoder("conv-mnist")
    x = images_to_tensor(dataset.images)   # (N, 28, 28, 1) uint8 -> (N, 1, 28, 28) float in [0, 1]
    z, x_hat = ae(x)                        # (N, 10), (N, 1, 28, 28)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .layers import ACTIVATIONS, Reshape, Stack

# Modules allowed in a "pure dense stack" (the layer-wise pretraining of stacked denoising autoencoders).
_SHAPE_MODULES = (nn.Flatten, Reshape)
_POINTWISE_MODULES = tuple(ACTIVATIONS.values()) + (nn.Dropout,)


def images_to_tensor(x: np.ndarray) -> Tensor:
    """Turn images (N, H, W, C) into the float32 tensor (N, C, H, W) the models take.

    uint8 images are divided by 255 (values in [0, 1]); other dtypes are cast to float32 unchanged.
    Grey images may come without a channel axis, as (N, H, W).
    """
    from ..data.transforms import check_images  # the data package's own check, same messages

    x = check_images(x)  # (N, H, W, C)
    t = torch.from_numpy(np.ascontiguousarray(x))
    t = t.float().div_(255.0) if x.dtype == np.uint8 else t.float()
    return t.permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)


@dataclass
class DenseBlock:
    """One mirrored pair of a dense stack, for layer-wise pretraining.

    ``encoder`` maps features d_{i} -> d_{i+1} and is followed by ``encoder_activation``;
    ``decoder`` maps d_{i+1} -> d_{i} and is followed by ``decoder_activation`` (``nn.Identity``
    where the model has none: the bottleneck, and the linear reconstruction of DEC's network).
    """

    encoder: nn.Linear
    encoder_activation: nn.Module
    decoder: nn.Linear
    decoder_activation: nn.Module


class Autoencoder(nn.Module):
    """An encoder to a flat embedding and a decoder back to the image.

    Parameters
    ----------
    encoder : nn.Module
        (N, C, H, W) -> (N, embedding_dim). A ``Stack`` may record max-pool indices.
    decoder : nn.Module
        (N, embedding_dim) -> (N, C, H, W).
    input_shape : tuple of int
        (C, H, W) of one image.
    spec : dict or None
        The architecture it was built from, with ``input`` set to ``input_shape``;
        ``build_autoencoder(ae.spec)`` rebuilds the same model (same parameter names and shapes).
    embedding_dim : int or None
        Size of z; found by passing a dummy batch through ``encoder`` when None.

    Attributes
    ----------
    input_shape : tuple of int
    embedding_dim : int
    spec : dict or None
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, input_shape: Sequence[int],
                 spec: dict[str, Any] | None = None, embedding_dim: int | None = None):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.input_shape = tuple(int(s) for s in input_shape)
        self.spec = spec
        if embedding_dim is None:
            embedding_dim = self._infer_embedding_dim()
        self.embedding_dim = int(embedding_dim)

    @torch.no_grad()
    def _infer_embedding_dim(self) -> int:
        was_training = self.encoder.training
        self.encoder.eval()
        try:
            z = self.encoder(torch.zeros(2, *self.input_shape))
        finally:
            self.encoder.train(was_training)
        if z.ndim != 2:
            raise ValueError(f"The encoder must return a flat embedding (N, d); it returns shape "
                             f"{tuple(z.shape)}. End it with nn.Flatten() (and a nn.Linear).")
        return int(z.shape[1])

    # ------------------------------------------------------------------------------------ shape checks
    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"Autoencoder input must be a torch.Tensor (N, C, H, W); got {type(x).__name__}. "
                            "Convert numpy images (N, H, W, C) with deepclust.models.images_to_tensor.")
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            hint = ""
            if x.ndim == 4 and tuple(x.shape[1:]) == (*self.input_shape[1:], self.input_shape[0]):
                hint = " The images look channels-last (N, H, W, C): convert them with images_to_tensor."
            expected = ", ".join(map(str, self.input_shape))
            raise ValueError(f"Autoencoder expects input of shape (N, {expected}); "
                             f"got {tuple(x.shape)}.{hint}")

    def _check_embedding(self, z: Tensor) -> None:
        if z.ndim != 2 or z.shape[1] != self.embedding_dim:
            raise ValueError(f"decode expects z of shape (N, {self.embedding_dim}); got {tuple(z.shape)}.")

    # --------------------------------------------------------------------------------------- the model
    def encode(self, x: Tensor, indices: list[Tensor] | None = None) -> Tensor:
        """(N, C, H, W) -> z (N, embedding_dim). Max-pool indices are appended to ``indices`` if given."""
        self._check_input(x)
        if isinstance(self.encoder, Stack):
            return self.encoder(x, indices)
        return self.encoder(x)

    def decode(self, z: Tensor, indices: list[Tensor] | None = None) -> Tensor:
        """z (N, embedding_dim) -> x_hat (N, C, H, W).

        ``indices`` (from ``encode(x, indices=[])``) is needed only by decoders with
        ``unpool`` layers in ``indices`` mode; it is consumed.
        """
        self._check_embedding(z)
        if isinstance(self.decoder, Stack):
            return self.decoder(z, indices)
        return self.decoder(z)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (N, C, H, W) -> (z (N, embedding_dim), x_hat (N, C, H, W))."""
        indices: list[Tensor] = []
        z = self.encode(x, indices)
        return z, self.decode(z, indices)

    def extra_repr(self) -> str:
        name = f"name={self.spec.get('name')!r}, " if self.spec else ""
        return f"{name}input_shape={self.input_shape}, embedding_dim={self.embedding_dim}"

    # ----------------------------------------------------------------------- layer-wise pretraining
    def dense_blocks(self) -> list[DenseBlock]:
        """The mirrored (encoder Linear, decoder Linear) pairs with their activations, encoder order.

        Block ``i`` is what a stacked denoising autoencoder trains at step ``i`` (Vincent et al.
        2010; DEC, Xie et al. 2016): ``decoder(encoder(h_i))`` reconstructs the output ``h_i`` of
        the blocks before it. Raises ValueError when the model is not a pure dense stack (only
        flatten/reshape, dense, activation and dropout layers, mirrored).
        """
        enc = self._dense_layers(self.encoder, "encoder")
        dec = self._dense_layers(self.decoder, "decoder")
        if len(enc) != len(dec):
            raise ValueError(f"dense_pairs() needs a mirrored dense stack; the encoder has {len(enc)} dense "
                             f"layers and the decoder {len(dec)}.")
        blocks = []
        for i, ((e, e_act), (d, d_act)) in enumerate(zip(enc, reversed(dec), strict=True)):
            if (d.in_features, d.out_features) != (e.out_features, e.in_features):
                raise ValueError(
                    f"dense_pairs() needs a mirrored dense stack; encoder dense {i} maps {e.in_features} "
                    f"-> {e.out_features} but its mirror in the decoder maps {d.in_features} -> "
                    f"{d.out_features}."
                )
            blocks.append(DenseBlock(e, e_act, d, d_act))
        return blocks

    def dense_pairs(self) -> list[tuple[nn.Linear, nn.Linear]]:
        """[(encoder Linear d_i -> d_{i+1}, decoder Linear d_{i+1} -> d_i), ...] in encoder order.

        See ``dense_blocks`` for the activations that follow each Linear.
        """
        return [(b.encoder, b.decoder) for b in self.dense_blocks()]

    def _dense_layers(self, stack: nn.Module, part: str) -> list[tuple[nn.Linear, nn.Module]]:
        """[(Linear, the activation/dropout modules after it until the next Linear), ...]."""
        modules = list(stack.children()) if isinstance(stack, nn.Sequential) else [stack]
        out: list[tuple[nn.Linear, list[nn.Module]]] = []
        for i, m in enumerate(modules):
            if isinstance(m, nn.Linear):
                out.append((m, []))
            elif isinstance(m, _POINTWISE_MODULES):
                if out:
                    out[-1][1].append(m)
            elif not isinstance(m, _SHAPE_MODULES):
                name = self.spec.get("name") if self.spec else type(self).__name__
                raise ValueError(
                    f"dense_pairs() needs a pure dense stack (flatten, dense, activation, dropout), but "
                    f"{name!r} has {type(m).__name__} at {part} module {i}. Layer-wise pretraining applies "
                    "to dense autoencoders such as 'dec-dense'; train other models end to end."
                )
        if not out:
            raise ValueError(f"dense_pairs() found no dense layer in the {part}.")
        return [(lin, _as_module(post)) for lin, post in out]


def _as_module(modules: list[nn.Module]) -> nn.Module:
    if not modules:
        return nn.Identity()
    return modules[0] if len(modules) == 1 else nn.Sequential(*modules)
