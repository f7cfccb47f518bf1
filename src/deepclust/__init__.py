"""deepclust: cluster unlabeled images with k-means and deep models.

>>> from deepclust import KMeans, load_dataset, evaluate_clustering
"""

__version__ = "0.1.0"

from .cluster import KMeans  # noqa: E402
from .data import ImageDataset, load_dataset  # noqa: E402
from .deep import DeepCluster  # noqa: E402
from .metrics import evaluate_clustering  # noqa: E402

__all__ = ["KMeans", "DeepCluster", "ImageDataset", "load_dataset", "evaluate_clustering", "__version__"]
