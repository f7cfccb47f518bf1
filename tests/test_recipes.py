"""Recipes: each method's best measured options by data shape, filled in only where the user set nothing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepclust.config import OPTION_GROUPS, RunConfig
from deepclust.methods import METHODS
from deepclust.models import list_architectures
from deepclust.pipeline.validate import validate
from deepclust.recipes import (
    COLOUR,
    LARGE_GREY,
    SHAPES,
    SMALL_GREY,
    PerCluster,
    Recipe,
    UpTo,
    apply_recipe,
    data_shape,
    recipe_for,
)

FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
RECIPES = [(name, shape, recipe) for name, cls in sorted(METHODS.items())
           for shape, recipe in sorted(cls.recipes.items())]


def test_some_methods_have_recipes():
    assert {name for name, _, _ in RECIPES} >= {"n2d", "idec", "dec", "dcn", "ae-kmeans", "deepcluster"}


@pytest.mark.parametrize(("method", "shape", "recipe"), RECIPES,
                         ids=[f"{m}-{s}" for m, s, _ in RECIPES])
def test_every_recipe_is_one_the_method_can_run(method, shape, recipe):
    """A recipe names real options of the groups its method reads, with values the checks accept,
    says what it was measured on, and is for a known data shape."""
    cls = METHODS[method]
    assert shape in SHAPES
    assert isinstance(recipe, Recipe) and len(recipe.evidence) > 20
    for name, value in recipe.options.items():
        assert name in FIELDS, f"{method}: unknown option {name}"
        assert set(FIELDS[name].metadata["groups"]) & set(cls.option_groups), \
            f"{method} does not read {name}"
        assert set(FIELDS[name].metadata["groups"]) <= set(OPTION_GROUPS)
        if name == "arch":
            assert value in list_architectures()
    image_shape = {SMALL_GREY: (28, 28, 1), LARGE_GREY: (128, 128, 1), COLOUR: (32, 32, 3)}[shape]
    params = cls(n_clusters=10).get_params()
    for n_samples in (max(recipe.min_samples, 1), 100_000):  # the smallest set it is for, and a large one
        config, record = apply_recipe(RunConfig(method=method), cls, image_shape, n_samples, 10)
        validate(config)
        assert record["shape"] == shape and record["evidence"] == recipe.evidence
        for name, value in record["options"].items():
            if name != "size":
                assert (FIELDS[name].metadata["param"] or name) in params
            assert getattr(config, name) == value


@pytest.mark.parametrize(("image_shape", "shape"), [
    ((8, 8), SMALL_GREY), ((28, 28, 1), SMALL_GREY), ((32, 32, 1), SMALL_GREY), ((16, 40, 1), LARGE_GREY),
    ((128, 128, 1), LARGE_GREY), ((32, 32, 3), COLOUR), ((224, 224, 3), COLOUR), ((64, 64, 4), COLOUR),
])
def test_data_shape(image_shape, shape):
    assert data_shape(image_shape) == shape


class _Method:
    recipes = {SMALL_GREY: Recipe({"pretrain_epochs": 100, "optimizer": "sgd",
                                   "train_clusters": PerCluster(2), "self_label_students": UpTo(8000, 1)},
                                  "measured somewhere, three seeds",
                                  min_samples=1000),
               LARGE_GREY: Recipe({"batch_size": 32}, "measured elsewhere, three seeds", resize_to=64)}


def test_a_recipe_fills_only_what_the_user_left_unset():
    config, record = apply_recipe(RunConfig(optimizer="adam"), _Method, (28, 28, 1), 5000, 10)
    assert config.optimizer == "adam"  # the user's choice wins
    assert config.pretrain_epochs == 100 and config.train_clusters == 20  # 2 k
    assert record == {"shape": SMALL_GREY, "options": {"pretrain_epochs": 100, "train_clusters": 20,
                                                       "self_label_students": 1},
                      "evidence": "measured somewhere, three seeds"}


def test_a_recipe_skips_what_it_cannot_know_and_small_sets():
    config, record = apply_recipe(RunConfig(), _Method, (28, 28, 1), 5000, "auto")
    assert config.train_clusters is None
    assert record["options"] == {"pretrain_epochs": 100, "optimizer": "sgd", "self_label_students": 1}
    assert apply_recipe(RunConfig(), _Method, (28, 28, 1), 999, 10) == (RunConfig(), None)
    assert recipe_for(_Method, (28, 28, 3), 5000) == (COLOUR, None)


def test_a_value_up_to_a_size_is_set_only_on_sets_that_small():
    assert apply_recipe(RunConfig(), _Method, (28, 28, 1), 8000, 10)[0].self_label_students == 1
    config, record = apply_recipe(RunConfig(), _Method, (28, 28, 1), 8001, 10)
    assert config.self_label_students is None and "self_label_students" not in record["options"]
    config, record = apply_recipe(RunConfig(self_label_students=3), _Method, (28, 28, 1), 5000, 10)
    assert config.self_label_students == 3 and "self_label_students" not in record["options"]


def test_a_recipe_resizes_only_images_of_another_size_and_never_over_the_user():
    assert apply_recipe(RunConfig(), _Method, (128, 128, 1), 10, 10)[0].size == 64
    assert apply_recipe(RunConfig(), _Method, (48, 40, 1), 10, 10)[0].size == 64
    config, record = apply_recipe(RunConfig(), _Method, (64, 64, 1), 10, 10)
    assert config.size is None and "size" not in record["options"]
    assert apply_recipe(RunConfig(size=100), _Method, (128, 128, 1), 10, 10)[0].size == 100


def _grey_folder(root: Path, side: int) -> Path:
    rng = np.random.default_rng(0)
    for c in range(2):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(6):
            image = rng.integers(0, 60, (side, side), dtype=np.uint8) + np.uint8(150 * c)
            Image.fromarray(image).save(root / f"c{c}" / f"{i}.png")
    return root


def test_a_run_on_larger_grey_images_takes_the_recipe_and_says_so(tmp_path, one_torch_thread):
    """COIL-20's recipe on a folder of 80 x 80 grey images: resized to 64, conv-coil20-64 in batches of
    32 (the user's --n-init wins), recorded in config.json."""
    from deepclust.pipeline.run import run

    folder = _grey_folder(tmp_path / "objects", 80)
    result = run(RunConfig(dataset=str(folder), method="ae-kmeans", pretrain_epochs=1, n_init=2,
                           out=str(tmp_path / "runs"), progress=False))
    saved = json.loads((result.paths.root / "config.json").read_text())
    recipe = saved["resolved"]["recipe"]
    assert recipe["shape"] == LARGE_GREY
    assert recipe["options"] == {"arch": "conv-coil20-64", "batch_size": 32, "size": 64}
    assert saved["data"]["size"] == 64 and saved["resolved"]["image_shape"] == [64, 64, 1]
    assert saved["resolved"]["method_params"]["batch_size"] == 32
    assert saved["resolved"]["method_params"]["n_init"] == 2
    report = (result.paths.root / "report.html").read_text()
    assert "recipe for large-grey images" in report and "conv-coil20-64" in report
    # the same images already at 64 x 64 and every recipe option given: nothing left to fill
    small = _grey_folder(tmp_path / "small", 64)
    result = run(RunConfig(dataset=str(small), method="ae-kmeans", pretrain_epochs=1, n_init=2, batch_size=4,
                           arch="conv-coil20-64", out=str(tmp_path / "runs"), progress=False))
    recipe = json.loads((result.paths.root / "config.json").read_text())["resolved"]["recipe"]
    assert recipe["options"] == {}


def test_a_run_on_digits_records_its_recipe_and_the_flags_still_win(tmp_path, one_torch_thread):
    from deepclust.pipeline.run import run

    result = run(RunConfig(method="deepcluster", dc_epochs=1, n_clusters=3, out=str(tmp_path), progress=False,
                           batch_size=64))
    saved = json.loads((result.paths.root / "config.json").read_text())
    assert saved["resolved"]["recipe"]["options"] == {"train_clusters": 6}
    assert saved["resolved"]["method_params"]["train_clusters"] == 6
    result = run(RunConfig(method="deepcluster", dc_epochs=1, n_clusters=3, train_clusters=3,
                           out=str(tmp_path), progress=False, batch_size=64))
    saved = json.loads((result.paths.root / "config.json").read_text())
    assert saved["resolved"]["recipe"]["options"] == {}
    assert saved["resolved"]["method_params"]["train_clusters"] == 3
