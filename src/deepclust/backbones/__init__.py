"""Pretrained backbones: frozen networks that turn photos into feature vectors worth clustering.

>>> from deepclust.backbones import get_backbone, extract_features
>>> backbone = get_backbone("efficientnet-lite0")          # doctest: +SKIP
>>> X = extract_features("photos/", backbone)              # doctest: +SKIP  (N, 1280) memmap, cached

The registry (:data:`BACKBONES`) maps a name to a :class:`BackboneSpec` stating the input size, resize
rule, normalisation, feature dimension, weights source and licence; :func:`get_backbone` builds it.
"""

from __future__ import annotations

from . import catalog  # noqa: F401  (registers the backbones)
from ._base import Backbone, BackboneSpec
from ._registry import BACKBONES, get_backbone, get_spec, list_backbones
from ._transform import Preprocessing
from .extract import extract_features
from .feature_cache import FeatureCache, default_cache_dir

__all__ = [
    "BACKBONES",
    "Backbone",
    "BackboneSpec",
    "FeatureCache",
    "Preprocessing",
    "default_cache_dir",
    "extract_features",
    "get_backbone",
    "get_spec",
    "list_backbones",
]
