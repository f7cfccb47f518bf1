"""A run from end to end: data -> embedding -> (manifold) -> clustering -> scoring -> run folder.

- ``inputs``: load the data set and prepare it for the method's input; resolve k.
- ``build``: the estimator a configuration asks for (its class's traits say which options it reads).
- ``run``: one run (``deepclust run``): fit, score, write the run folder, resume.
- ``folder``: a user's image folder (fit on ``train/``, assign ``test/``, name clusters by ``reference/``).
- ``evaluate``: several methods under one protocol (``deepclust evaluate``).
- ``predict``: assign new images with a finished run (``deepclust predict``).
"""
