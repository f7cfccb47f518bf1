"""Deep methods on tiny data: the maths against hand-computed numbers, then each estimator's contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone

from deepclust.deep import DCN, DEC, IDEC, N2D, AEKMeans, load_model, save_model
from deepclust.deep.base import as_image_tensor
from deepclust.deep.dcn import kmeans_loss, update_centers
from deepclust.deep.dec import kl_clustering_loss, soft_assign, target_distribution
from deepclust.deep.training import TrainSettings, reconstruction_loss, train_autoencoder
from deepclust.metrics import clustering_accuracy
from deepclust.models import build_autoencoder

TINY_ARCH = {
    "name": "tiny-dense",
    "encoder": [{"type": "flatten"}, {"type": "dense", "units": 32, "activation": "relu"},
                {"type": "dense", "units": 3}],
    "decoder": "mirror",
    "output_activation": "sigmoid",
}


@pytest.fixture(scope="module")
def tiny_images():
    """90 grey 8x8 images in 3 obvious groups (a bright bar in one of three rows) and their labels."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 30)
    images = rng.integers(0, 40, size=(90, 8, 8, 1)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, 1 + 3 * c: 3 + 3 * c, :, 0] = 230
    return images, labels


def _params(**extra):
    return dict(n_clusters=3, arch=TINY_ARCH, pretrain_epochs=15, batch_size=16, lr=3e-3, n_init=5,
                random_state=0, verbose=False, **extra)


# ---------------------------------------------------------------- maths against hand-computed numbers
def test_soft_assign_matches_hand_computed_values():
    z = torch.tensor([[0.0, 0.0]])
    centers = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    # alpha = 1: q ~ (1 + d^2)^-1 -> 1/2 and 1/5; normalised: (1/2) / (7/10) = 5/7, (1/5) / (7/10) = 2/7
    q = soft_assign(z, centers, alpha=1.0)
    assert torch.allclose(q, torch.tensor([[5 / 7, 2 / 7]]))
    # alpha = 2: (1 + d^2 / 2)^(-1.5) -> 1.5^-1.5 and 3^-1.5
    a, b = 1.5 ** -1.5, 3.0 ** -1.5
    assert torch.allclose(soft_assign(z, centers, alpha=2.0), torch.tensor([[a / (a + b), b / (a + b)]]))


def test_target_distribution_matches_hand_computed_values():
    q = torch.tensor([[0.5, 0.5], [0.9, 0.1]])
    # f = column sums = (1.4, 0.6); q^2 / f: row 1 (0.25/1.4, 0.25/0.6) = (0.17857, 0.41667)
    # row 2 (0.81/1.4, 0.01/0.6) = (0.57857, 0.01667); normalise each row.
    r1 = np.array([0.25 / 1.4, 0.25 / 0.6])
    r2 = np.array([0.81 / 1.4, 0.01 / 0.6])
    expected = np.stack([r1 / r1.sum(), r2 / r2.sum()])
    assert np.allclose(target_distribution(q).numpy(), expected, atol=1e-6)
    # Sharpening: the confident row gets more confident.
    assert target_distribution(q)[1, 0] > q[1, 0]


def test_kl_loss_is_zero_for_equal_distributions_and_matches_formula():
    q = torch.tensor([[0.7, 0.3], [0.2, 0.8]])
    assert float(kl_clustering_loss(q, q)) == pytest.approx(0.0, abs=1e-7)
    p = torch.tensor([[0.9, 0.1], [0.5, 0.5]])
    expected = (p * (p / q).log()).sum() / 2
    assert float(kl_clustering_loss(q, p)) == pytest.approx(float(expected), rel=1e-6)


def test_idec_weighs_the_clustering_term_by_gamma_and_dec_drops_the_reconstruction():
    q = torch.tensor([[0.7, 0.3], [0.2, 0.8]])
    p = torch.tensor([[0.9, 0.1], [0.5, 0.5]])
    x = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    x_hat = torch.tensor([[0.5, 1.0], [1.0, 0.0]])  # squared errors 0.25 and 1 over 4 entries: MSE 0.3125
    kl = float((p * (p / q).log()).sum() / 2)
    # IDEC (Guo et al. 2017, eq. 9): L = L_r + gamma * L_c
    assert float(IDEC(gamma=0.1)._loss(q, p, x, x_hat)) == pytest.approx(0.3125 + 0.1 * kl, rel=1e-6)
    assert float(DEC()._loss(q, p, x, x_hat)) == pytest.approx(kl, rel=1e-6)


def test_dcn_loss_and_batched_centre_update_match_per_sample_rule():
    z = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    centers = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0, 1])
    # ||z - mu||^2: 1, 9, 4 -> mean 14 / 3
    assert float(kmeans_loss(z, centers, labels)) == pytest.approx(14 / 3)
    seq_c, seq_n = centers.clone(), torch.tensor([2.0, 1.0])
    for i in range(3):  # DCN eq. 8, one sample at a time
        k = labels[i]
        seq_n[k] += 1
        seq_c[k] -= (seq_c[k] - z[i]) / seq_n[k]
    batch_c, batch_n = centers.clone(), torch.tensor([2.0, 1.0])
    update_centers(batch_c, batch_n, z, labels)
    assert torch.allclose(batch_c, seq_c) and torch.equal(batch_n, seq_n)
    # By hand: centre 0 = (2 * (0, 0) + (1, 0) + (3, 0)) / 4 = (1, 0); centre 1 = ((0, 2) + (0, 4)) / 2
    assert torch.allclose(batch_c, torch.tensor([[1.0, 0.0], [0.0, 3.0]]))


@pytest.mark.parametrize("kind", ["mse", "mse-cosine", "bce"])
def test_reconstruction_losses(kind):
    x = torch.rand(4, 1, 8, 8)
    perfect = float(reconstruction_loss(x, x, kind))
    worse = float(reconstruction_loss(1 - x, x, kind))
    assert worse > perfect
    if kind == "mse-cosine":
        assert perfect == pytest.approx(-1.0, abs=1e-5)  # MSE 0 minus cosine 1


def test_pretraining_loss_decreases(tiny_images):
    images, _ = tiny_images
    X = as_image_tensor(images)
    torch.manual_seed(0)
    model = build_autoencoder(TINY_ARCH, input_shape=(1, 8, 8))
    history = train_autoencoder(model, X, TrainSettings(epochs=10, batch_size=16, lr=3e-3),
                                device=torch.device("cpu"), generator=torch.Generator().manual_seed(0),
                                show_progress=False)
    assert len(history) == 10
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]


def test_as_image_tensor_layouts():
    imgs = np.zeros((2, 5, 6, 3), np.uint8)
    imgs[..., 2] = 255
    t = as_image_tensor(imgs)
    assert t.shape == (2, 3, 5, 6) and t.dtype == torch.float32 and float(t[:, 2].min()) == 1.0
    assert as_image_tensor(np.zeros((2, 5, 6))).shape == (2, 1, 5, 6)
    assert as_image_tensor(np.zeros((2, 7))).shape == (2, 1, 1, 7)
    assert as_image_tensor(torch.zeros(2, 3, 5, 6)).shape == (2, 3, 5, 6)
    with pytest.raises(ValueError, match="NaN"):
        as_image_tensor(np.full((2, 4, 4), np.nan))
    with pytest.raises(ValueError, match="empty"):
        as_image_tensor(np.zeros((0, 4, 4)))


# ------------------------------------------------------------------------- estimator contract
METHODS = {
    "ae-kmeans": lambda **p: AEKMeans(**p),
    "dec": lambda **p: DEC(clustering_epochs=5, update_interval=5, **p),
    "idec": lambda **p: IDEC(clustering_epochs=5, update_interval=5, **p),
    "dcn": lambda **p: DCN(clustering_epochs=5, **p),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_contract(name, tiny_images):
    images, labels = tiny_images
    est = METHODS[name](**_params())
    assert est.fit(images, labels) is est
    assert est.labels_.shape == (90,) and est.labels_.dtype == np.int64
    assert est.cluster_centers_.shape == (3, 3)
    assert est.embedding_.shape == (90, 3)
    assert np.array_equal(est.predict(images), est.labels_)
    assert est.transform(images).shape == (90, 3)
    assert clustering_accuracy(labels, est.labels_) >= 0.9  # three obvious groups
    assert any(row.get("stage") == "pretrain" for row in est.history_)
    again = clone(est).fit(images)
    assert np.array_equal(est.labels_, again.labels_), "same seed must give the same clusters"


def test_clone_keeps_base_and_method_parameters():
    est = IDEC(n_clusters=4, gamma=0.3, pretrain_epochs=7, arch="dec-dense", update_interval=9)
    params = clone(est).get_params()
    assert params["gamma"] == 0.3 and params["pretrain_epochs"] == 7 and params["arch"] == "dec-dense"
    assert params["update_interval"] == 9 and params["n_clusters"] == 4


def test_dec_clustering_loss_decreases_and_logs_label_changes(tiny_images):
    images, labels = tiny_images
    est = DEC(clustering_epochs=20, update_interval=3, tol=0.0, **_params()).fit(images, labels)
    rows = [r for r in est.history_ if r.get("stage") == "cluster" and "loss" in r]
    assert len(rows) >= 3
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert all(0.0 <= r["delta_label"] <= 1.0 for r in rows)
    assert est.predict_proba(images).shape == (90, 3)
    assert np.allclose(est.predict_proba(images).sum(1), 1.0, atol=1e-5)


def test_idec_reuses_a_pretrained_autoencoder_without_changing_it(tiny_images):
    images, _ = tiny_images
    base = AEKMeans(**_params()).fit(images)
    before = {k: v.clone() for k, v in base.autoencoder_.state_dict().items()}
    idec = IDEC(**{**_params(), "pretrain_epochs": 0}, clustering_epochs=3, update_interval=3,
                autoencoder=base.autoencoder_).fit(images)
    after = base.autoencoder_.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the shared autoencoder was trained"
    assert idec.labels_.shape == (90,)


@pytest.mark.parametrize("name", ["dec", "idec", "dcn"])
def test_a_reused_autoencoder_clusters_like_one_trained_in_the_fit(name, tiny_images):
    """The k-means start and the clustering stage's shuffling do not depend on whether pretraining ran
    in this fit (``--from RUN_DIR``, a benchmark's cached autoencoder): same seed, same clustering."""
    images, _ = tiny_images
    fresh = METHODS[name](**_params()).fit(images)
    pretrained = AEKMeans(**_params()).fit(images)
    reused = METHODS[name](**{**_params(), "pretrain_epochs": 0},
                           autoencoder=pretrained.autoencoder_).fit(images)
    assert np.array_equal(fresh.pretrained_embedding_, reused.pretrained_embedding_)

    def stage(est):
        return [r["loss"] for r in est.history_ if r.get("stage") == "cluster" and "loss" in r]
    assert stage(fresh) and stage(fresh) == stage(reused)
    assert np.array_equal(fresh.cluster_centers_, reused.cluster_centers_)


def test_n2d_runs_and_predicts_training_points_consistently(tiny_images):
    pytest.importorskip("umap")
    images, labels = tiny_images
    est = N2D(**_params(), n_neighbors=10).fit(images, labels)
    assert est.manifold_.shape == (90, 3)
    assert clustering_accuracy(labels, est.labels_) >= 0.9
    assert np.array_equal(est.predict(images), est.labels_)


def test_clustering_stage_optimizer_defaults_and_bad_values(tiny_images):
    dec = DEC()._cluster_settings(5)
    assert (dec.optimizer, dec.lr, dec.momentum, dec.epochs) == ("sgd", 0.01, 0.9, 5)  # the DEC paper's
    assert IDEC()._cluster_settings(5).lr == 0.1  # gamma = 0.1 scales its KL term: the IDEC paper's rate
    assert IDEC(cluster_lr=0.05)._cluster_settings(5).lr == 0.05
    adam = DEC(cluster_optimizer="adam", lr=3e-4)._cluster_settings(5)
    assert (adam.optimizer, adam.lr) == ("adam", 3e-4)  # Adam continues at the pretraining rate
    # ... but not at SGD's pretraining rate (dec-dense-sgd pretrains at lr 1): Adam's usual 1e-3.
    assert DEC(cluster_optimizer="adam", optimizer="sgd", lr=1.0)._cluster_settings(5).lr == 1e-3
    dcn = DCN()._cluster_settings(5)
    assert (dcn.optimizer, dcn.lr) == ("adam", 1e-4)
    assert DCN(cluster_optimizer="sgd")._cluster_settings(5).lr == 0.01
    images, _ = tiny_images
    with pytest.raises(ValueError, match="cluster_optimizer"):
        DEC(**_params(), cluster_optimizer="rmsprop").fit(images)
    with pytest.raises(ValueError, match="cluster_lr"):
        DCN(**_params(), cluster_lr=0.0).fit(images)


@pytest.mark.parametrize("cls", [DEC, IDEC, DCN])
def test_cluster_augment_trains_on_shifted_views_deterministically(cls, tiny_images, monkeypatch):
    """DEC-DA: with cluster_augment every clustering-stage batch goes through random_affine (and only
    then); the result is still the same for the same seed."""
    import importlib

    module = importlib.import_module(cls.__module__)
    real, seen = module.random_affine, []

    def counting(x, generator, **kwargs):  # share= under torchrun
        seen.append(x.shape)
        return real(x, generator, **kwargs)

    monkeypatch.setattr(module, "random_affine", counting)
    images, _ = tiny_images
    plain = cls(**_params(), clustering_epochs=3).fit(images)
    assert seen == []
    first = cls(**_params(), clustering_epochs=3, cluster_augment=True).fit(images)
    n_batches = len(seen)
    assert n_batches > 0 and all(shape[1:] == (1, 8, 8) for shape in seen)
    again = cls(**_params(), clustering_epochs=3, cluster_augment=True).fit(images)
    assert len(seen) == 2 * n_batches
    assert np.array_equal(first.labels_, again.labels_)
    assert np.allclose(first.cluster_centers_, again.cluster_centers_)
    assert not np.allclose(first.cluster_centers_, plain.cluster_centers_)


def test_augmentation_needs_images():
    X = np.random.default_rng(0).random((40, 6)).astype(np.float32)
    dense = {"name": "d", "decoder": "mirror",
             "encoder": [{"type": "flatten"}, {"type": "dense", "units": 8, "activation": "relu"},
                         {"type": "dense", "units": 2}]}
    for cls in (DEC, DCN):
        with pytest.raises(ValueError, match="cluster_augment shifts and rotates images"):
            cls(n_clusters=2, arch=dense, pretrain_epochs=1, clustering_epochs=1, batch_size=8,
                cluster_augment=True, random_state=0, verbose=False).fit(X)
    with pytest.raises(ValueError, match="augment shifts and rotates images.*feature vectors"):
        AEKMeans(n_clusters=2, arch=dense, pretrain_epochs=1, augment=True, verbose=False).fit(X)


def test_n2d_keeps_the_best_of_its_gaussian_mixture_restarts(tiny_images, monkeypatch):
    pytest.importorskip("umap")
    from deepclust.cluster import umap_gmm

    images, _ = tiny_images
    with pytest.raises(ValueError, match="gmm_n_init"):
        N2D(**_params(), n_neighbors=10, gmm_n_init=0).fit(images)
    restarts = []

    class Recording(umap_gmm.GaussianMixture):
        def fit_predict(self, X, y=None):
            restarts.append(self.n_init)
            return super().fit_predict(X, y)

    monkeypatch.setattr(umap_gmm, "GaussianMixture", Recording)
    N2D(**_params(), n_neighbors=10, gmm_n_init=4).fit(images)
    N2D(**_params(), n_neighbors=10).fit(images)
    assert restarts == [4, 10]


@pytest.mark.parametrize("name", ["ae-kmeans", "dec", "dcn"])
def test_save_and_load_round_trip(name, tiny_images, tmp_path):
    images, _ = tiny_images
    est = METHODS[name](**_params()).fit(images)
    save_model(est, tmp_path / "model")
    assert (tmp_path / "model" / "model.safetensors").is_file()
    loaded = load_model(tmp_path / "model")
    assert type(loaded) is type(est)
    assert np.array_equal(loaded.predict(images), est.labels_)
    assert np.allclose(loaded.transform(images), est.transform(images), atol=1e-6)


def test_interrupted_pretraining_resumes_to_the_same_result(tiny_images, tmp_path, kill_pretraining):
    images, _ = tiny_images
    full = AEKMeans(**_params()).fit(images)

    class Stop(Exception):
        pass

    ckpt = tmp_path / "ckpt"
    kill_pretraining(6, Stop)
    with pytest.raises(Stop):
        AEKMeans(**_params(), checkpoint_dir=str(ckpt)).fit(images)
    kill_pretraining(None)
    assert (ckpt / "pretrain.pt").is_file()
    resumed = AEKMeans(**_params(), checkpoint_dir=str(ckpt)).fit(images)
    epochs = [r["epoch"] for r in resumed.history_ if r.get("stage") == "pretrain"]
    assert epochs == list(range(1, 16))
    assert np.allclose(resumed.embedding_, full.embedding_, atol=1e-5)
    assert np.array_equal(resumed.labels_, full.labels_)


@pytest.mark.parametrize("cls, extra", [(IDEC, {"clustering_epochs": 6, "update_interval": 3, "tol": 0.0}),
                                        (DCN, {"clustering_epochs": 6})])
def test_interrupted_clustering_stage_resumes_to_the_same_result(cls, extra, tiny_images, tmp_path,
                                                                 kill_after_checkpoint):
    images, labels = tiny_images
    full = cls(**_params(**extra)).fit(images, labels)

    class Stop(Exception):
        pass

    ckpt = tmp_path / "ckpt"
    kill_after_checkpoint("cluster", 3, Stop)
    with pytest.raises(Stop):
        cls(**_params(**extra), checkpoint_dir=str(ckpt)).fit(images, labels)
    kill_after_checkpoint(None)
    resumed = cls(**_params(**extra), checkpoint_dir=str(ckpt)).fit(images, labels)
    assert kill_after_checkpoint.saved == [("cluster", e) for e in (4, 5, 6)]  # continued, not restarted
    cluster_rows = [r for r in resumed.history_ if r.get("stage") == "cluster"]
    assert cluster_rows == [r for r in full.history_ if r.get("stage") == "cluster"]
    assert np.array_equal(resumed.labels_, full.labels_)
    assert np.allclose(resumed.embedding_, full.embedding_, atol=1e-5)
    assert np.allclose(resumed.cluster_centers_, full.cluster_centers_, atol=1e-5)


def test_bad_input_errors(tiny_images):
    images, _ = tiny_images
    with pytest.raises(ValueError, match="larger than the number of samples"):
        AEKMeans(**{**_params(), "n_clusters": 500}).fit(images)
    with pytest.raises(RuntimeError, match="not fitted"):
        DEC().predict(images)


def test_layerwise_pretraining_lowers_each_layers_loss(tiny_images):
    images, labels = tiny_images
    est = AEKMeans(**{**_params(), "layerwise_epochs": 6, "pretrain_epochs": 3}).fit(images, labels)
    layer_rows = [r for r in est.history_ if r.get("stage") == "layerwise"]
    assert {r["layer"] for r in layer_rows} == {1, 2}
    for layer in (1, 2):
        losses = [r["loss"] for r in layer_rows if r["layer"] == layer]
        assert len(losses) == 6 and losses[-1] < losses[0]
