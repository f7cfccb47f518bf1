"""Self-labelling (deep/self_label.py) and N2D's last stage that uses it: repeatable, corrects a clustering's
doubtful labels on separable images, survives save and load, and N2D's small-grey recipe turns it on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TINY_DENSE_ARCH
from deepclust.config import RunConfig
from deepclust.deep.checkpoint import load_model, save_model
from deepclust.deep.n2d import N2D
from deepclust.deep.self_label import SelfLabel, agreement_scores, augment_views, neighbours, select_confident
from deepclust.metrics import clustering_accuracy
from deepclust.recipes import apply_recipe


def _toy(n_per: int = 30, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Three classes of 12 x 12 images: a horizontal bar, a vertical bar, a square, at random places."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in range(3):
        for _ in range(n_per):
            img = rng.uniform(0, 0.15, (12, 12)).astype(np.float32)
            r, q = rng.integers(3, 9, 2)
            if c == 0:
                img[r - 1:r + 1, 1:11] = 1
            elif c == 1:
                img[1:11, q - 1:q + 1] = 1
            else:
                img[r - 2:r + 2, q - 2:q + 2] = 1
            images.append(img)
            labels.append(c)
    return torch.from_numpy(np.stack(images))[:, None], np.asarray(labels)


def _noisy_proba(labels: np.ndarray, wrong: float, seed: int = 0) -> np.ndarray:
    """Confident right labels, except a ``wrong`` share given another cluster with probability 0.6."""
    rng = np.random.default_rng(seed)
    proba = np.full((len(labels), 3), 0.0025, np.float32)
    proba[np.arange(len(labels)), labels] = 0.995
    flip = rng.random(len(labels)) < wrong
    other = (labels[flip] + 1) % 3
    proba[flip] = 0.2
    proba[np.flatnonzero(flip), other] = 0.6
    return proba / proba.sum(1, keepdims=True)


def _embedding(labels: np.ndarray, seed: int = 0) -> torch.Tensor:
    """A good embedding of the toy images: each class a tight blob (what the clustering was made in)."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.eye(3)[labels] * 4 + rng.normal(0, 0.5, (len(labels), 3))).float()


SMALL = {"rounds": 2, "epochs": 12, "min_steps": 0, "width": 8, "batch_size": 16, "lr": 3e-3,
         "verbose": False}


@pytest.fixture(scope="module")
def toy():
    return _toy()


def test_selection_keeps_each_clusters_points_whose_neighbours_agree():
    # two groups on a line; point 2 sits in the left group but carries the right group's label
    features = torch.tensor([[0.0], [0.1], [0.2], [0.3], [5.0], [5.1], [5.2], [5.3]])
    labels = torch.tensor([0, 0, 1, 0, 1, 1, 1, 1])
    proba = torch.nn.functional.one_hot(labels, 2).float()
    idx = neighbours(features, 3)
    assert idx[0].tolist() == [1, 2, 3]
    scores = agreement_scores(labels, idx, proba)
    assert scores[2] < 0.01 and scores[4] > 0.99  # none of point 2's neighbours share its label
    keep = select_confident(labels, scores, 0.5, 2)
    assert not keep[2] and int(keep[:4].sum()) == 2 and int(keep[4:].sum()) == 3  # ceil(0.5 * 5)
    assert select_confident(labels, scores, 0.0, 3).sum() == 2  # at least one per non-empty cluster


def test_augment_views_are_seeded_and_keep_the_shape():
    x = torch.rand(4, 1, 12, 12)
    a = augment_views(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, augment_views(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, x)
    assert torch.allclose(augment_views(x, torch.Generator(), shift=0, degrees=0, scale=0), x, atol=1e-5)


def test_self_label_corrects_doubtful_labels_and_is_deterministic(toy, one_torch_thread):
    X, y = toy
    proba = _noisy_proba(y, 0.2)
    start = (proba.argmax(1) == y).mean()
    a = SelfLabel(**SMALL, random_state=3).fit(X, proba, _embedding(y))
    assert (a.labels_ == y).mean() > max(start, 0.95)  # the flipped points are put back
    assert a.selected_[0] == pytest.approx(0.5, abs=0.02) and len(a.history_) == 2 * SMALL["epochs"]
    assert a.agreement_ == pytest.approx((a.labels_ == a.initial_labels_).mean())
    b = SelfLabel(**SMALL, random_state=3).fit(X, proba, _embedding(y))
    assert np.array_equal(a.labels_, b.labels_) and np.array_equal(a.proba_, b.proba_)


def test_the_cosine_schedule_starts_each_round_at_its_rate_and_ends_near_zero(toy, one_torch_thread):
    X, y = toy
    params = {**SMALL, "lr": None}
    proba, features = _noisy_proba(y, 0.2), _embedding(y)
    cosine = SelfLabel(**params, schedule="cosine", random_state=3).fit(X, proba, features)
    rates = [[row["lr"] for row in cosine.history_ if row["round"] == r] for r in (1, 2)]
    for per_round in rates:  # 3e-3 by default, falling every epoch, to 0 after the round's last batch
        assert per_round[0] < 3e-3 and per_round == sorted(per_round, reverse=True)
        assert per_round[-1] == pytest.approx(0, abs=1e-9)
    assert (cosine.labels_ == y).mean() > 0.95
    constant = SelfLabel(**params, random_state=3).fit(X, proba, features)
    assert {row["lr"] for row in constant.history_} == {1e-3}  # the default without a schedule


_NETWORK = SelfLabel._network  # the real one, which the student test counts calls to


def test_a_student_is_a_fresh_network_that_learns_every_images_label(toy, one_torch_thread, monkeypatch):
    X, y = toy
    proba, features = _noisy_proba(y, 0.2), _embedding(y)
    params = {**SMALL, "rounds": 1}
    teacher = SelfLabel(**params, random_state=3).fit(X, proba, features)
    built = []
    monkeypatch.setattr(SelfLabel, "_network", lambda self, *a: built.append(1) or _NETWORK(self, *a))
    student = SelfLabel(**params, students=1, random_state=3).fit(X, proba, features)
    assert len(built) == 2  # the round's network, then the student's own
    assert student.selected_ == [teacher.selected_[0], 1.0]
    # the student sees as many images as the round: 12 epochs of half the images, 6 of all of them
    assert [row["round"] for row in student.history_] == [1] * SMALL["epochs"] + [2] * (SMALL["epochs"] // 2)
    # the round is the teacher's, draw for draw: the student starts where it ended
    assert student.history_[:SMALL["epochs"]] == teacher.history_
    assert (student.labels_ == y).mean() > 0.95
    assert not torch.equal(student.network_.head.weight, teacher.network_.head.weight)
    again = SelfLabel(**params, students=1, random_state=3).fit(X, proba, features)
    assert np.array_equal(again.proba_, student.proba_)



@pytest.mark.parametrize(("params", "match"), [({"rounds": 0}, "rounds"), ({"fraction": 1.5}, "fraction"),
                                               ({"students": -1}, "students"),
                                               ({"lr": 0.0}, "lr"), ({"schedule": "linear"}, "schedule"),
                                               ({"label_smoothing": -0.1}, "label_smoothing")])
def test_bad_parameters_name_themselves(toy, params, match):
    X, y = toy
    with pytest.raises(ValueError, match=match):
        SelfLabel(**{**SMALL, **params}).fit(X, _noisy_proba(y, 0))
    with pytest.raises(ValueError, match="proba"):
        SelfLabel(**SMALL).fit(X, _noisy_proba(y, 0)[:5])
    with pytest.raises(ValueError, match="features"):
        SelfLabel(**SMALL).fit(X, _noisy_proba(y, 0), X[:5].flatten(1))


def test_n2d_with_self_labelling_predicts_with_the_convnet_after_save_and_load(toy, tmp_path, monkeypatch,
                                                                              one_torch_thread):
    X, y = toy
    monkeypatch.setattr(N2D, "_SELF_LABEL_MIN_STEPS", 0)  # 2 epochs of 1 batch, not 300 batches
    model = N2D(3, arch=TINY_DENSE_ARCH, pretrain_epochs=2, n_neighbors=10, gmm_n_init=1,
                self_label_rounds=1, self_label_epochs=2, random_state=0, verbose=False).fit(X)
    assert model.self_label_network_ is not None and 0 <= model.self_label_agreement_ <= 1
    assert any(row["stage"] == "self-label" for row in model.history_)
    assert np.array_equal(model.predict(X), model.labels_)
    loaded = load_model(save_model(model, tmp_path / "model"))
    assert np.array_equal(loaded.labels_, model.labels_)
    assert np.array_equal(loaded.predict(X[:7]), model.predict(X[:7]))
    assert np.allclose(loaded.predict_proba(X[:7]), model.predict_proba(X[:7]), atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        loaded.predict(torch.rand(2, 1, 10, 10))


def test_n2d_scores_each_round_and_student_when_it_knows_the_labels(toy, monkeypatch, one_torch_thread):
    X, y = toy
    monkeypatch.setattr(N2D, "_SELF_LABEL_MIN_STEPS", 0)
    model = N2D(3, arch=TINY_DENSE_ARCH, pretrain_epochs=2, n_neighbors=10, gmm_n_init=1, self_label_rounds=1,
                self_label_students=2, self_label_epochs=2, random_state=0, verbose=False).fit(X, y)
    scored = [row for row in model.history_ if row["stage"] == "self-label" and "acc" in row]
    assert [row["round"] for row in scored] == [1, 2, 3] and "agreement" in scored[-1]
    assert scored[-1]["acc"] == clustering_accuracy(y, model.labels_)
    trained = {row["round"] for row in model.history_ if "epoch" in row and row["stage"] == "self-label"}
    assert trained == {1, 2, 3}


def test_n2d_without_self_labelling_keeps_its_vote(toy, tmp_path, one_torch_thread):
    X, _ = toy
    model = N2D(3, arch=TINY_DENSE_ARCH, pretrain_epochs=1, n_neighbors=10, gmm_n_init=1, random_state=0,
                verbose=False).fit(X)
    assert model.self_label_network_ is None and np.array_equal(model.labels_, model.mixture_labels_)
    loaded = load_model(save_model(model, tmp_path / "model"))
    assert loaded.self_label_network_ is None and np.array_equal(loaded.predict(X), model.labels_)


def test_the_small_grey_recipe_turns_it_on_from_5000_images_unless_the_user_says_otherwise():
    from deepclust.cluster.umap_gmm import UMAPGMM
    from deepclust.config import method_params

    recipe = {"self_label_rounds": 1, "self_label_epochs": 30, "self_label_schedule": "cosine",
              "self_label_smoothing": 0.1, "self_label_students": 3}
    config, record = apply_recipe(RunConfig(method="n2d"), N2D, (28, 28, 1), 10_000, 10)
    assert record["options"] == recipe
    # three students up to 20,000 images; MNIST-70k's run would take ~25 more minutes with them
    assert apply_recipe(RunConfig(method="n2d"), N2D, (28, 28, 1), 20_000, 10)[0].self_label_students == 3
    large, record = apply_recipe(RunConfig(method="n2d"), N2D, (28, 28, 1), 70_000, 10)
    assert large.self_label_students is None and "self_label_students" not in record["options"]
    assert N2D().self_label_students == 0
    params = method_params(config, N2D.option_groups)
    assert {name: params[name] for name in recipe} == recipe
    assert not set(recipe) & set(method_params(config, UMAPGMM.option_groups))
    assert apply_recipe(RunConfig(method="n2d"), N2D, (8, 8), 1797, 10) == (RunConfig(method="n2d"), None)
    config, _ = apply_recipe(RunConfig(method="n2d", self_label_rounds=0), N2D, (28, 28, 1), 10_000, 10)
    assert config.self_label_rounds == 0 and N2D().self_label_rounds == 0
    # the earlier flat training, asked for by name: the recipe fills only what the user left unset
    flat = RunConfig(method="n2d", self_label_schedule="constant", self_label_epochs=10)
    config, record = apply_recipe(flat, N2D, (28, 28, 1), 10_000, 10)
    assert (config.self_label_schedule, config.self_label_epochs) == ("constant", 10)
    assert record["options"] == {"self_label_rounds": 1, "self_label_smoothing": 0.1,
                                 "self_label_students": 3}
    n2d = N2D()
    assert (n2d.self_label_schedule, n2d.self_label_epochs, n2d.self_label_smoothing) == ("constant", 10, 0)


def test_the_run_option_is_checked():
    from deepclust.pipeline.validate import validate

    assert validate(RunConfig(method="n2d", self_label_rounds=0)).self_label_rounds == 0
    with pytest.raises(ValueError, match="--self-label-rounds"):
        validate(RunConfig(method="n2d", self_label_rounds=-1))
    with pytest.raises(ValueError, match="--self-label-epochs"):
        validate(RunConfig(method="n2d", self_label_epochs=0))
    with pytest.raises(ValueError, match="--self-label-students"):
        validate(RunConfig(method="n2d", self_label_students=-1))
    with pytest.raises(ValueError, match="--self-label-schedule"):
        validate(RunConfig(method="n2d", self_label_schedule="linear"))
    with pytest.raises(ValueError, match="--self-label-smoothing"):
        validate(RunConfig(method="n2d", self_label_smoothing=1.0))


def test_the_command_line_takes_the_training_options():
    from deepclust.cli import _run_config, build_parser

    flags = ["--self-label-epochs", "5", "--self-label-schedule", "constant", "--self-label-smoothing", "0",
             "--self-label-students", "2"]
    config = _run_config(build_parser().parse_args(["run", *flags]))
    chosen = (config.self_label_epochs, config.self_label_schedule, config.self_label_smoothing,
              config.self_label_students)
    assert chosen == (5, "constant", 0, 2)
    assert _run_config(build_parser().parse_args(["run"])).self_label_schedule is None  # the recipe's


def test_images_read_from_a_data_cache_give_the_same_labels(toy, tmp_path, one_torch_thread):
    """N2D hands the stage ImageRows when the run reads a data cache: the same batches, the same result."""
    from deepclust.data.rows import ImageRows

    X, y = toy
    images = np.clip(np.rint(X.permute(0, 2, 3, 1).numpy() * 255), 0, 255).astype(np.uint8)
    np.save(tmp_path / "images.npy", images)
    rows = ImageRows(np.load(tmp_path / "images.npy", mmap_mode="r"))
    proba = _noisy_proba(y, 0.2)
    params = {**SMALL, "rounds": 1, "epochs": 3}
    a = SelfLabel(**params, random_state=1).fit(rows, proba, _embedding(y))
    b = SelfLabel(**params, random_state=1).fit(rows[:], proba, _embedding(y))
    assert np.array_equal(a.labels_, b.labels_)
