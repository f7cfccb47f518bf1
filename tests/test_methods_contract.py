"""Contract tests generated over every registered method (timm-style): a method added to the registry is
tested here with no other change. Each test gives the method a tiny budget, chosen from the parameters
the class has, so the whole file stays within seconds per method."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.base import clone

from conftest import TINY_DENSE_ARCH
from deepclust.config import OPTION_GROUPS, RunConfig, method_params
from deepclust.deep import checkpoint
from deepclust.methods import METHODS
from deepclust.metrics import clustering_accuracy
from deepclust.pipeline.predict import assign, load_run
from deepclust.pipeline.run import run
from deepclust.traits import IMAGES, VECTORS

NAMES = sorted(METHODS)
# The smallest sensible value of every budget parameter any method has; each method takes those it has.
TINY_BUDGET = {"pretrain_epochs": 8, "clustering_epochs": 3, "update_interval": 3, "epochs": 2, "n_init": 2,
               "batch_size": 16, "pca_dim": 4, "max_iter": 50, "gmm_n_init": 2, "n_neighbors": 10}
TINY_CONVNET = {"name": "tiny", "layers": [
    {"type": "conv", "filters": 8, "kernel": 3}, {"type": "activation", "fn": "relu"},
    {"type": "maxpool", "size": 2}, {"type": "flatten"}, {"type": "dense", "units": 16}]}
# The tiny network of each option group that takes an architecture.
TINY_ARCHS = {"autoencoder": TINY_DENSE_ARCH, "convnet": TINY_CONVNET}


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n grey 12x12 images in 3 obvious groups (a bright bar in one of three row bands) and labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    images = rng.integers(0, 40, size=(n, 12, 12, 1)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, 1 + 4 * c: 4 + 4 * c, :, 0] = 230
    return images, labels


@pytest.fixture(scope="module")
def data():
    return _images(90, 0)


def _inputs(cls, images: np.ndarray) -> np.ndarray:
    """What the method takes: images as they are, or flat vectors in [0, 1]."""
    if cls.input_kind == VECTORS:
        return images.reshape(len(images), -1).astype(np.float32) / 255.0
    return images


def _make(cls, **extra):
    names = cls().get_params()
    params = {k: v for k, v in TINY_BUDGET.items() if k in names}
    for group, arch in TINY_ARCHS.items():
        if group in cls.option_groups:
            params["arch"] = arch
    return cls(n_clusters=3, random_state=0, verbose=False, **{**params, **extra})


@pytest.fixture(scope="module")
def fitted(data):
    """Every method fitted once on the tiny images (shared by the tests that only read the fit)."""
    images, labels = data
    out = {}
    for name in NAMES:
        cls = METHODS[name]
        est = _make(cls)
        out[name] = (est, est.fit(_inputs(cls, images), *([labels] if cls.trains_network else [])))
    return out


@pytest.mark.parametrize("name", NAMES)
def test_traits_are_declared_and_name_real_options(name):
    cls = METHODS[name]
    assert cls.method_name == name and cls.summary
    assert cls.input_kind in (VECTORS, IMAGES)
    assert set(cls.option_groups) <= set(OPTION_GROUPS)
    assert not (cls.pretrains_autoencoder and not cls.trains_network)
    # every option the class reads sets a parameter it has
    params = set(cls().get_params())
    wanted = set(method_params(RunConfig(n_init=3, train_clusters=4, cluster_lr=0.1, cluster_optimizer="sgd",
                                         dc_lr=0.01, arch="x"), cls.option_groups))
    assert wanted <= params, f"{name} reads options it has no parameter for: {wanted - params}"


@pytest.mark.parametrize("name", NAMES)
def test_scikit_learn_conventions(name):
    est = _make(METHODS[name])
    assert not [a for a in vars(est) if a.endswith("_") and not a.startswith("_")], "__init__ only stores"
    again = clone(est)
    assert again.get_params() == est.get_params()
    assert est.set_params(n_clusters=4) is est and est.get_params()["n_clusters"] == 4


@pytest.mark.parametrize("name", NAMES)
def test_fit_returns_self_with_labels_centres_and_predict(name, fitted, data):
    images, labels = data
    est, returned = fitted[name]
    cls = METHODS[name]
    assert returned is est
    assert est.labels_.shape == (90,) and est.labels_.dtype == np.int64
    assert set(np.unique(est.labels_)) <= {0, 1, 2}
    assert np.asarray(est.cluster_centers_).shape[0] == 3
    assert est.n_features_in_ == 12 * 12
    assert np.array_equal(est.predict(_inputs(cls, images)), est.labels_)
    new_images, new_labels = _images(30, 1)
    predicted = est.predict(_inputs(cls, new_images))
    assert predicted.shape == (30,) and set(np.unique(predicted)) <= {0, 1, 2}
    if name != "deepcluster":  # two epochs of a random convnet need not find the bars
        assert clustering_accuracy(labels, est.labels_) >= 0.9
        assert clustering_accuracy(new_labels, predicted) >= 0.9


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_gives_the_same_clusters(name, fitted, data):
    images, _ = data
    est, _ = fitted[name]
    again = clone(est).fit(_inputs(METHODS[name], images))
    assert np.array_equal(again.labels_, est.labels_)
    assert np.allclose(np.asarray(again.cluster_centers_), np.asarray(est.cluster_centers_), atol=1e-6)


def _tiny_dataset(images, labels):
    from deepclust.data import ImageDataset

    return ImageDataset(name="tiny", images=images, labels=labels, class_names=["a", "b", "c"],
                        description="three bars")


@pytest.mark.parametrize("name", NAMES)
def test_run_folder_round_trip_through_predict(name, data, tmp_path, monkeypatch):
    """``run`` writes a run folder; ``load_run`` rebuilds the model from it and assigns the same clusters."""
    images, labels = data
    monkeypatch.setattr("deepclust.pipeline.inputs.load_dataset",
                        lambda *a, **k: _tiny_dataset(images, labels))
    cls = METHODS[name]
    arch = next((a for g, a in TINY_ARCHS.items() if g in cls.option_groups), None)
    arch_file = tmp_path / "arch.json"
    arch_file.write_text(json.dumps(arch))
    config = RunConfig(dataset="tiny", method=name, out=str(tmp_path / "runs"), progress=False,
                       arch=str(arch_file) if arch else None, pretrain_epochs=8, cluster_epochs=3,
                       dc_epochs=2, batch_size=16, n_init=2, pca_dim=4)
    result = run(config)
    saved = json.loads(result.paths.config.read_text())
    assert saved["method"]["name"] == name
    assert set(saved["method"]["options"]) == set(config.part(*cls.option_groups))  # only its own options
    fitted_run = load_run(result.paths.root)
    clusters, confidence = assign(fitted_run, fitted_run.preprocessing.apply(images))
    assert np.array_equal(clusters, result.labels)
    assert np.all((confidence > 0) & (confidence <= 1 + 1e-9))


@pytest.mark.parametrize("name", [n for n in NAMES if METHODS[n].trains_network])
def test_interrupted_fit_resumes_to_the_same_result(name, fitted, data, tmp_path, monkeypatch):
    """Killed right after its second checkpoint, a fit started again on the same folder continues from
    there and ends where an uninterrupted fit ends."""
    images, labels = data
    full, _ = fitted[name]
    real_save = checkpoint.TrainingState.save
    saves = []

    class Stop(Exception):
        pass

    def save_then_die(self, stage, **state):
        real_save(self, stage, **state)
        saves.append(stage)
        if len(saves) == 2:
            raise Stop

    monkeypatch.setattr(checkpoint.TrainingState, "save", save_then_die)
    ckpt = str(tmp_path / "ckpt")
    with pytest.raises(Stop):
        _make(METHODS[name], checkpoint_dir=ckpt).fit(images, labels)
    monkeypatch.setattr(checkpoint.TrainingState, "save", real_save)
    resumed = _make(METHODS[name], checkpoint_dir=ckpt).fit(images, labels)
    assert np.array_equal(resumed.labels_, full.labels_)
    assert np.allclose(resumed.embedding_, full.embedding_, atol=1e-5)
