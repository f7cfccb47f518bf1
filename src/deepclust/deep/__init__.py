"""Deep clustering methods built on an autoencoder: AE + k-means, DEC, IDEC, DCN, N2D."""

from .ae_kmeans import AEKMeans
from .base import DeepClusterer, Initialization, as_image_tensor
from .checkpoint import load_model, save_model
from .dcn import DCN
from .dec import DEC, IDEC
from .n2d import N2D

METHODS_BY_CLASS = {cls.__name__: cls for cls in (AEKMeans, DEC, IDEC, DCN, N2D)}

__all__ = ["AEKMeans", "DEC", "IDEC", "DCN", "N2D", "DeepClusterer", "Initialization", "as_image_tensor",
           "save_model", "load_model", "METHODS_BY_CLASS"]
