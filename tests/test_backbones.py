"""Pretrained backbones: the registry (tests generated over every entry), EfficientNet-Lite0 against its
reference implementation, and the Hugging Face families loaded offline from tiny saved models."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from deepclust.backbones import BACKBONES, Backbone, get_backbone, get_spec, list_backbones
from deepclust.backbones.efficientnet_lite import EfficientNetLite, load_efficientnet_lite0, same_padding

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HF_FAMILIES = sorted(name for name, spec in BACKBONES.items() if spec.requires == "pretrained")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def lite0() -> Backbone:
    return get_backbone("efficientnet-lite0")


# -- the registry, entry by entry ----------------------------------------------------------------------
@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_entry_declares_its_metadata(name):
    spec = get_spec(name)
    pre = spec.preprocessing
    assert spec.name == name and spec.family and spec.description
    assert spec.weights and spec.licence and spec.feature_dim > 0
    assert len(pre.input_size) == 2 and min(pre.input_size) > 0
    assert len(pre.mean) == 3 and len(pre.std) == 3 and min(pre.std) > 0
    facts = json.loads(json.dumps(spec.describe()))  # JSON-ready for run folders and reports
    assert facts["pretrained"] is True and facts["licence"] == spec.licence


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_entry_preprocesses_to_its_input_size(name):
    pre = get_spec(name).preprocessing
    rng = np.random.default_rng(0)
    colour = pre(rng.integers(0, 256, (2, 37, 50, 3), dtype=np.uint8))
    grey = pre(rng.integers(0, 256, (2, 300, 41), dtype=np.uint8))
    assert colour.shape == grey.shape == (2, 3, *pre.input_size) and colour.dtype == torch.float32
    # grey -> RGB with R = G = B, so the three normalised channels are the same affine map of one image
    back = grey * torch.tensor(pre.std).view(1, 3, 1, 1) + torch.tensor(pre.mean).view(1, 3, 1, 1)
    torch.testing.assert_close(back[:, 0], back[:, 1], atol=1e-5, rtol=0)


def test_unknown_backbone_lists_the_known_ones():
    expected = "Unknown backbone 'resnet-9000'; known backbones: efficientnet-lite0, dinov2-small, "
    with pytest.raises(ValueError, match=expected):
        get_backbone("resnet-9000")
    assert list_backbones()[0] == "efficientnet-lite0"
    assert get_spec("EfficientNet_Lite0").name == "efficientnet-lite0"


def test_preprocess_rejects_floats():
    with pytest.raises(ValueError, match="must be uint8"):
        get_spec("efficientnet-lite0").preprocessing(np.zeros((1, 8, 8, 3), dtype=np.float32))


# -- EfficientNet-Lite0 -----------------------------------------------------------------------------
def test_same_padding_puts_the_extra_pixel_after():
    assert same_padding(224, 3, 2) == (0, 1)
    assert same_padding(112, 5, 2) == (1, 2)
    assert same_padding(7, 3, 1) == (1, 1)
    assert same_padding(15, 3, 2) == (1, 1)


def test_lite0_features_and_shape(lite0):
    images = np.random.default_rng(1).integers(0, 256, (3, 60, 80, 3), dtype=np.uint8)
    x = lite0.preprocess(images)
    feats = lite0(x)
    assert feats.shape == (3, 1280) and lite0.feature_dim == 1280
    assert torch.isfinite(feats).all() and (feats >= 0).all()  # pooled ReLU6 activations
    torch.testing.assert_close(lite0(x), feats, rtol=0, atol=0)  # deterministic
    lite0.train()
    assert not lite0.net.training  # a backbone stays frozen in eval mode
    with pytest.raises(ValueError, match=r"\(batch, 3, height, width\)"):
        lite0(torch.zeros(1, 224, 224))


def test_lite0_matches_the_reference_implementation():
    ref = pytest.importorskip("efficientnet_lite_pytorch",
                              reason="reference package efficientnet-lite-pytorch is not installed")
    from deepclust.backbones.efficientnet_lite import packaged_weights_path

    with contextlib.redirect_stdout(io.StringIO()):  # the reference prints debug lines
        reference = ref.EfficientNet.from_pretrained("efficientnet-lite0",
                                                     weights_path=str(packaged_weights_path())).eval()
    ours = load_efficientnet_lite0()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)


def test_lite0_weights_by_path_and_missing(tmp_path):
    net = EfficientNetLite()
    torch.save({f"_fc.{k}": v for k, v in net.classifier.state_dict().items()}, tmp_path / "partial.pth")
    with pytest.raises(RuntimeError, match="Missing key"):
        get_backbone("efficientnet-lite0", weights=tmp_path / "partial.pth")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        get_backbone("efficientnet-lite0", weights=tmp_path / "nothing.pth")


def test_input_size_changes_the_preprocessing_only_where_allowed():
    small = get_backbone("efficientnet-lite0", input_size=32)
    assert small.input_size == (32, 32) and small.preprocess(np.zeros((1, 8, 8, 3), np.uint8)).shape[-1] == 32
    assert small(small.preprocess(np.zeros((2, 8, 8, 3), np.uint8))).shape == (2, 1280)
    with pytest.raises(ValueError, match="only takes"):
        get_backbone("clip-vit-b32", input_size=64)


# ImageNet-1k class of each imagenette class folder (the standard imagenette subset).
IMAGENETTE_CLASSES = {"n01440764": 0, "n02102040": 217, "n02979186": 482, "n03000684": 491,
                      "n03028079": 497, "n03394916": 566, "n03417042": 569, "n03425413": 571,
                      "n03445777": 574, "n03888257": 701}


@pytest.mark.data
def test_lite0_recognises_imagenette_photos(lite0):
    root = SHARED_DATA / "imagenette-val"
    if not root.is_dir():
        pytest.skip("../shared/data/imagenette-val not found: real-data tests need the shared data sets")
    from PIL import Image

    pre = lite0.preprocessing
    hits = 0
    for wnid, cls in IMAGENETTE_CLASSES.items():
        path = sorted((root / wnid).iterdir())[0]
        with Image.open(path) as img:
            x = pre.normalise(torch.from_numpy(pre.image_to_uint8(img)).permute(2, 0, 1)[None])
        with torch.inference_mode():
            top5 = lite0.net.net(x).topk(5).indices[0].tolist()  # the full classifier's ImageNet logits
        hits += cls in top5
    assert hits >= 9, f"only {hits} of 10 imagenette photos have their ImageNet class in the top 5"


# -- Hugging Face families, offline, from tiny saved models --------------------------------------------
def _tiny_hf_model(name: str):
    tf = pytest.importorskip("transformers", reason="transformers (the 'pretrained' extra) is not installed")
    torch.manual_seed(0)
    if BACKBONES[name].family == "clip":
        config = tf.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                     num_attention_heads=2, image_size=224, patch_size=32, projection_dim=16)
        return tf.CLIPVisionModelWithProjection(config), 16
    common = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2, image_size=28,
                  patch_size=14)
    if name.endswith("-reg"):
        return tf.Dinov2WithRegistersModel(tf.Dinov2WithRegistersConfig(num_register_tokens=4, **common)), 32
    return tf.Dinov2Model(tf.Dinov2Config(**common)), 32


@pytest.mark.parametrize("name", HF_FAMILIES)
def test_hf_backbone_loads_a_saved_model_by_path(name, tmp_path):
    model, dim = _tiny_hf_model(name)
    model.save_pretrained(tmp_path / "model")
    backbone = get_backbone(name, weights=tmp_path / "model")
    images = np.random.default_rng(2).integers(0, 256, (2, 64, 48, 3), dtype=np.uint8)
    feats = backbone.embed(images)
    assert feats.shape == (2, dim) == (2, backbone.feature_dim) and torch.isfinite(feats).all()
    torch.testing.assert_close(backbone.embed(images), feats, rtol=0, atol=0)
    assert backbone.weights_source == str(tmp_path / "model") and backbone.weights_identity
    # the saved weights are the ones used
    expected = model.eval()(pixel_values=backbone.preprocess(images))
    expected = expected.image_embeds if BACKBONES[name].family == "clip" else expected.pooler_output
    torch.testing.assert_close(feats, expected.detach(), rtol=1e-5, atol=1e-5)


def test_hf_backbone_rejects_a_folder_of_the_wrong_family(tmp_path):
    model, _ = _tiny_hf_model("clip-vit-b32")
    model.save_pretrained(tmp_path / "clip")
    with pytest.raises(ValueError, match="not a dinov2 one"):
        get_backbone("dinov2-small", weights=tmp_path / "clip")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        get_backbone("dinov2-small", weights=tmp_path)


def test_hf_backbone_offline_without_weights_says_what_to_do(tmp_path, monkeypatch):
    pytest.importorskip("transformers", reason="transformers (the 'pretrained' extra) is not installed")
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError) as info:
        get_backbone("dinov2-small")
    message = str(info.value)
    assert "\n" not in message
    for part in ("'dinov2-small'", "facebook/dinov2-small", str(tmp_path / "hub"), "huggingface-cli download",
                 "weights="):
        assert part in message


# -- a user's own TorchScript extractor -----------------------------------------------------------------
class _MeanColour(torch.nn.Module):
    def forward(self, x):
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)  # (B, 6)


@pytest.mark.filterwarnings("ignore:`torch.jit.(load|script)` is deprecated:DeprecationWarning")
def test_torchscript_backbone_by_path(tmp_path):
    path = tmp_path / "mine.pt"
    torch.jit.script(_MeanColour()).save(str(path))
    with pytest.raises(FileNotFoundError, match="mine.json"):
        get_backbone(path)
    path.with_suffix(".json").write_text(json.dumps({"input_size": 16, "mean": [0.5] * 3, "std": [0.25] * 3,
                                                     "licence": "MIT"}))
    backbone = get_backbone(str(path))
    assert backbone.name == "mine" and backbone.feature_dim == 6 and backbone.input_size == (16, 16)
    images = np.full((2, 30, 20, 3), 191, dtype=np.uint8)
    feats = backbone.embed(images)
    torch.testing.assert_close(feats, torch.full((2, 6), (191 / 255 - 0.5) / 0.25))
    assert backbone.describe()["licence"] == "MIT"
    path.with_suffix(".json").write_text('{"input_size": 16}')
    with pytest.raises(ValueError, match="lacks mean, std"):
        get_backbone(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        get_backbone(tmp_path / "other.pt")


def test_exported_program_backbone_by_path(tmp_path):
    path = tmp_path / "exported.pt2"
    example = (torch.zeros(2, 3, 16, 16),)
    batch = {"x": {0: torch.export.Dim("batch")}}
    program = torch.export.export(_MeanColour(), example, dynamic_shapes=batch)
    torch.export.save(program, str(path))
    facts = {"input_size": [16, 16], "mean": [0, 0, 0], "std": [1, 1, 1]}
    path.with_suffix(".json").write_text(json.dumps(facts))
    backbone = get_backbone(path)
    feats = backbone.embed(np.zeros((3, 8, 8, 3), dtype=np.uint8))
    assert feats.shape == (3, 6) and backbone.describe()["licence"] == "not stated"
