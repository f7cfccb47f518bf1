"""Autoencoders for deep clustering, built from architecture files or chosen for an image shape.

>>> from deepclust.models import build_autoencoder, images_to_tensor, list_architectures
>>> ae = build_autoencoder("conv-mnist")            # shipped: see list_architectures()
>>> z, x_hat = ae(images_to_tensor(images))         # (N, 28, 28, 1) uint8 -> z (N, 10), x_hat (N, 1, 28, 28)

``build_autoencoder`` also takes a dict or a .json/.yaml file (format: ``deepclust.models.spec``),
and ``default_architecture(input_shape, n_clusters)`` makes a spec for any image shape.
"""

from .autoencoder import Autoencoder, DenseBlock, images_to_tensor
from .defaults import default_architecture
from .layers import Crop2d, Pad2d, Reshape, Stack, Unpool2d, count_parameters
from .spec import ARCHITECTURES, build_autoencoder, list_architectures, load_spec, resolve_spec

__all__ = [
    "ARCHITECTURES",
    "Autoencoder",
    "Crop2d",
    "DenseBlock",
    "Pad2d",
    "Reshape",
    "Stack",
    "Unpool2d",
    "build_autoencoder",
    "count_parameters",
    "default_architecture",
    "images_to_tensor",
    "list_architectures",
    "load_spec",
    "resolve_spec",
]
