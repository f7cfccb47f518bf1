"""Deep clustering methods: on an autoencoder (AE + k-means, DEC, IDEC, DCN, N2D) and DeepCluster."""

from .ae_kmeans import AEKMeans
from .base import DeepClusterer, Initialization, as_image_tensor
from .checkpoint import load_model, save_model
from .dcn import DCN
from .dec import DEC, IDEC
from .deepcluster import DeepCluster
from .n2d import N2D

__all__ = ["AEKMeans", "DEC", "IDEC", "DCN", "N2D", "DeepCluster", "DeepClusterer", "Initialization",
           "as_image_tensor", "save_model", "load_model"]
