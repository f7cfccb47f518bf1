"""From a run's configuration to the estimator it asks for: the method's class and its parameters.

The class says which option groups it reads (``option_groups``); :func:`deepclust.config.method_params`
turns those fields into parameters, so no method is special-cased by name here.
"""

from __future__ import annotations

from pathlib import Path

from ..config import RunConfig, method_params
from ..deep import load_model
from ..methods import method_class
from ..progress import progress_enabled


def build_method(config: RunConfig, n_clusters: int, *, cls: type | None = None):
    """The estimator ``config`` asks for (or of class ``cls``, with the same options), parameters resolved.

    ``config.from_run`` (a finished deep run) gives the autoencoder of the methods that can reuse one.
    """
    cls = cls or method_class(config.method)
    params = method_params(config, cls.option_groups)
    if config.from_run and cls.reuses_autoencoder:
        params["autoencoder"] = load_model(Path(config.from_run) / "model").autoencoder_
    return cls(n_clusters=n_clusters, device=config.device, random_state=config.seed,
               verbose=progress_enabled(config.progress), **params)
