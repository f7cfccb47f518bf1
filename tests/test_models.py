"""Tests of deepclust.models: every shipped architecture and default shape, the spec parser, the layers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from deepclust.models import (
    ARCHITECTURES,
    Autoencoder,
    Crop2d,
    Pad2d,
    Unpool2d,
    build_autoencoder,
    default_architecture,
    images_to_tensor,
    list_architectures,
    load_spec,
    resolve_spec,
)

# Shapes default_architecture must handle: bundled digits, USPS, MNIST, CIFAR, COIL, STL, ImageNet-size, odd.
DEFAULT_SHAPES = [(1, 8, 8), (1, 16, 16), (1, 28, 28), (3, 32, 32), (1, 128, 128), (3, 96, 96),
                  (3, 224, 224), (1, 50, 37)]
ANY_SHAPE = (1, 28, 28)  # for architectures whose input has null dims


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run on one thread: these tiny batches gain nothing from more, and on a busy 2-core box they fight."""
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n_threads)


def input_shape_of(name: str) -> tuple[int, int, int]:
    declared = load_spec(name).get("input")
    return ANY_SHAPE if declared is None or None in declared else tuple(declared)


def small_spec(**overrides) -> dict:
    """A tiny conv spec on 1x8x8: conv-bn-relu-pool, conv-bn-relu, flatten, dense 3."""
    spec = {
        "name": "tiny",
        "input": [1, 8, 8],
        "encoder": [
            {"type": "conv", "filters": 4, "kernel": 3},
            {"type": "batchnorm"},
            {"type": "activation", "fn": "relu"},
            {"type": "maxpool", "size": 2},
            {"type": "conv", "filters": 8, "kernel": 3, "activation": "relu"},
            {"type": "flatten"},
            {"type": "dense", "units": 3},
        ],
        "decoder": "mirror",
        "output_activation": "sigmoid",
    }
    spec.update(overrides)
    return spec


def with_layer(index: int, layer: dict, **overrides) -> dict:
    """small_spec with encoder layer ``index`` replaced by ``layer``."""
    spec = small_spec(**overrides)
    spec["encoder"][index] = layer
    return spec


def check_model(ae: Autoencoder, input_shape, embedding_dim: int) -> None:
    """Output shape = input shape, z (N, d), no NaN, and the reconstruction loss reaches the first layer."""
    torch.manual_seed(1)
    x = torch.rand(2, *input_shape)
    z, x_hat = ae(x)
    assert ae.input_shape == tuple(input_shape)
    assert ae.embedding_dim == embedding_dim
    assert z.shape == (2, embedding_dim)
    assert x_hat.shape == x.shape
    assert torch.isfinite(z).all() and torch.isfinite(x_hat).all()
    nn.functional.mse_loss(x_hat, x).backward()
    with torch.no_grad():
        indices: list[torch.Tensor] = []  # max-pool indices, for decoders that unpool with them
        assert ae.decode(ae.encode(x, indices), indices).shape == x.shape
    first = next(ae.encoder.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0


def same_structure(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(sa[k].shape == sb[k].shape for k in sa)


# ----------------------------------------------------------------------- every shipped architecture
def test_registry_lists_the_shipped_files():
    shipped = {"dec-dense", "dec-dense-sgd", "conv-mnist", "conv-cifar", "conv-coil20", "conv-coil20-64"}
    assert shipped <= set(list_architectures())
    assert list_architectures() == sorted(ARCHITECTURES)


@pytest.mark.parametrize("name", list_architectures())
def test_shipped_architecture(name):
    spec = load_spec(name)
    assert spec["name"] == name and spec.get("description")
    torch.manual_seed(0)
    ae = build_autoencoder(name, input_shape=input_shape_of(name))
    check_model(ae, input_shape_of(name), embedding_dim=spec["encoder"][-1]["units"])


@pytest.mark.parametrize("name", list_architectures())
def test_saved_spec_rebuilds_the_same_model(name, tmp_path):
    torch.manual_seed(0)
    ae = build_autoencoder(name, input_shape=input_shape_of(name))
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(ae.spec))
    torch.manual_seed(0)
    again = build_autoencoder(path)  # input shape comes from the saved spec
    same_structure(ae, again)
    again.load_state_dict(ae.state_dict(), strict=True)
    for p, q in zip(ae.parameters(), again.parameters(), strict=True):  # same seed, same weights
        assert torch.equal(p, q)
    # and the written-out spec (explicit decoder) builds the same model too
    torch.manual_seed(0)
    explicit = build_autoencoder(resolve_spec(ae.spec))
    same_structure(ae, explicit)
    x = torch.rand(2, *ae.input_shape)
    ae.eval(), explicit.eval()
    with torch.no_grad():
        assert torch.equal(ae(x)[1], explicit(x)[1])


@pytest.mark.parametrize("name", list_architectures())
def test_mirror_reverses_the_encoder(name):
    """Weight and shape layers of the decoder are the encoder's in reverse, each mapped to its inverse."""
    spec = resolve_spec(name, input_shape_of(name))
    inverse = {"conv": "conv", "dense": "dense", "maxpool": ("upsample", "unpool"), "flatten": "reshape",
               "pad": "crop"}
    skeleton = [layer for layer in spec["encoder"] if layer["type"] in inverse]
    mirrored = [layer for layer in spec["decoder"] if layer["type"] not in ("batchnorm", "activation")]
    assert len(skeleton) == len(mirrored)
    for enc, dec in zip(reversed(skeleton), mirrored, strict=True):
        assert dec["type"] in inverse[enc["type"]]


def test_determinism():
    outputs = []
    for _ in range(2):
        torch.manual_seed(0)
        ae = build_autoencoder("conv-mnist")
        outputs.append(ae(torch.ones(2, 1, 28, 28))[1])
    assert torch.equal(*outputs)


# ------------------------------------------------------------------------------- default shapes
@pytest.mark.parametrize("shape", DEFAULT_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_default_architecture(shape):
    spec = default_architecture(shape, n_clusters=7)
    grey_small = shape[0] == 1 and shape[1] * shape[2] <= 32 * 32
    dim = 10 if shape[0] == 1 else 128
    assert spec["name"] == f"auto-{'dense' if grey_small else 'conv'}-{'x'.join(map(str, shape))}-d{dim}"
    torch.manual_seed(0)
    check_model(build_autoencoder(spec), shape, embedding_dim=dim)


def test_default_architecture_choices():
    assert default_architecture((1, 28, 28), 20)["encoder"][-1]["units"] == 20  # k when k > 10
    conv = default_architecture((1, 50, 37), 10)["encoder"]
    assert conv[0] == {"type": "pad", "height": 6, "width": 3}  # 50x37 -> 56x40 for 3 pools
    assert sum(layer["type"] == "maxpool" for layer in conv) == 3
    with pytest.raises(ValueError, match="input_shape must be"):
        default_architecture((28, 28), 10)
    with pytest.raises(ValueError, match="n_clusters"):
        default_architecture((1, 28, 28), 0)


# -------------------------------------------------------------------------------------- the parser
def test_yaml_and_json_files_round_trip(tmp_path):
    spec = small_spec()
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "b.json").write_text(json.dumps(spec))
    assert load_spec(tmp_path / "a.yaml") == spec
    assert load_spec(str(tmp_path / "b.json")) == spec
    models = []
    for path in (tmp_path / "a.yaml", tmp_path / "b.json"):
        torch.manual_seed(0)
        models.append(build_autoencoder(path))
    same_structure(*models)
    for p, q in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(p, q)
    assert models[0].spec == {**spec, "input": [1, 8, 8]}


def test_a_file_without_name_is_named_after_it(tmp_path):
    spec = small_spec()
    del spec["name"]
    (tmp_path / "mine.yml").write_text(yaml.safe_dump(spec))
    assert load_spec(tmp_path / "mine.yml")["name"] == "mine"


def test_mirror_of_a_small_spec():
    spec = resolve_spec(small_spec())
    assert [layer["type"] for layer in spec["encoder"]] == [
        "conv", "batchnorm", "activation", "maxpool", "conv", "activation", "flatten", "dense"]
    # dense back to 8*4*4 with the last conv's ReLU, reshape, conv back to 4 channels with the first
    # block's batchnorm + ReLU, upsample, conv back to the 1 input channel (+ sigmoid, output_activation)
    assert spec["decoder"] == [
        {"type": "dense", "units": 128},
        {"type": "activation", "fn": "relu"},
        {"type": "reshape", "shape": [8, 4, 4]},
        {"type": "conv", "filters": 4, "kernel": 3, "stride": 1},
        {"type": "batchnorm"},
        {"type": "activation", "fn": "relu"},
        {"type": "upsample", "size": 2},
        {"type": "conv", "filters": 1, "kernel": 3, "stride": 1},
    ]
    assert spec["output_activation"] == "sigmoid"
    types = [type(m).__name__ for m in build_autoencoder(small_spec()).decoder]
    assert types[-2:] == ["Conv2d", "Sigmoid"]


def test_strided_conv_mirrors_to_a_transposed_conv():
    spec = small_spec(input=[1, 7, 9], encoder=[{"type": "conv", "filters": 4, "kernel": 3, "stride": 2},
                                                {"type": "flatten"}, {"type": "dense", "units": 3}])
    decoder = resolve_spec(spec)["decoder"]
    assert decoder[-1] == {"type": "deconv", "filters": 1, "kernel": 3, "stride": 2, "output_padding": [0, 0]}
    check_model(build_autoencoder(spec), (1, 7, 9), 3)  # 7x9 -> 4x5 -> 7x9


def test_explicit_decoder():
    spec = small_spec(decoder=[{"type": "dense", "units": 64}, {"type": "reshape", "shape": [1, 8, 8]}])
    check_model(build_autoencoder(spec), (1, 8, 8), 3)


def test_unpool_with_indices_puts_the_maxima_back():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 4)
    pooled, idx = nn.MaxPool2d(2, return_indices=True)(x)
    out = Unpool2d(2, "indices")(pooled, idx)
    is_max = x == nn.functional.max_pool2d(x, 2).repeat_interleave(2, 2).repeat_interleave(2, 3)
    assert torch.equal(out, torch.where(is_max, x, torch.zeros_like(x)))
    assert int((out != 0).sum()) == pooled.numel()
    # replicate mode is nearest-neighbour up-sampling
    assert torch.equal(Unpool2d(2, "replicate")(pooled), nn.Upsample(scale_factor=2)(pooled))


def test_unpool_indices_in_a_model():
    encoder = small_spec()["encoder"]
    encoder[3] = {"type": "maxpool", "size": 2, "unpool": "indices"}
    ae = build_autoencoder(small_spec(encoder=encoder))
    assert any(isinstance(m, Unpool2d) and m.mode == "indices" for m in ae.decoder)
    check_model(ae, (1, 8, 8), 3)
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="indices"):
        ae.decode(ae.encode(x))
    indices: list[torch.Tensor] = []
    z = ae.encode(x, indices)
    assert len(indices) == 1 and ae.decode(z, indices).shape == x.shape


def test_pad_and_crop_invert_each_other():
    x = torch.rand(2, 3, 5, 6)
    padded = Pad2d(3, 2)(x)
    assert padded.shape == (2, 3, 8, 8) and padded[..., 0, :].abs().sum() == 0
    assert torch.equal(Crop2d(3, 2)(padded), x)


# ----------------------------------------------------------------------------------- bad specs
@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({"type": "convolution", "filters": 4}, r"encoder layer 0 \(convolution\): unknown layer type"),
        ({"filters": 4, "kernel": 3}, r"encoder layer 0: missing field 'type'"),
        ({"type": "conv", "kernel": 3}, r"encoder layer 0 \(conv\): missing field 'filters'"),
        ({"type": "conv", "filters": 0, "kernel": 3},
         r"encoder layer 0 \(conv\): field 'filters' must be an integer >= 1; got 0"),
        ({"type": "conv", "filters": "4", "kernel": 3},
         r"encoder layer 0 \(conv\): field 'filters' must be an integer >= 1; got '4'"),
        ({"type": "conv", "filters": 4.0, "kernel": 3}, r"encoder layer 0 \(conv\): field 'filters'"),
        ({"type": "conv", "filters": 4, "kernel": 3, "filter": 2},
         r"encoder layer 0 \(conv\): unknown field 'filter'"),
        ({"type": "conv", "filters": 4, "kernel": 4},
         r"encoder layer 0 \(conv\): field 'kernel' must be odd"),
        ({"type": "conv", "filters": 4, "kernel": 3, "activation": "relu6"},
         r"encoder layer 0 \(conv\): field 'activation' must be one of"),
        ({"type": "dropout", "rate": 1.5}, r"encoder layer 0 \(dropout\): field 'rate' must be a number"),
        ({"type": "dense", "units": 5}, r"encoder layer 0 \(dense\): needs flat features"),
        ({"type": "maxpool", "size": 3}, r"encoder layer 0 \(maxpool\): size 3 does not divide the spatial "
                                         r"size 8 x 8"),
        ({"type": "maxpool", "size": 2, "unpool": "yes"}, r"encoder layer 0 \(maxpool\): field 'unpool'"),
        ({"type": "unpool", "size": 2}, r"encoder layer 0 \(unpool\): missing field 'mode'"),
        ({"type": "reshape", "shape": [3, 3]},
         r"encoder layer 0 \(reshape\): field 'shape' \[3, 3\] holds 9"),
        ("conv", r"encoder layer 0: must be a mapping"),
    ],
)
def test_bad_layer_names_the_layer_and_the_field(layer, message):
    with pytest.raises(ValueError, match=message):
        build_autoencoder(with_layer(0, layer))


def test_bad_decoder_layers_are_named_as_decoder_layers():
    spec = small_spec(decoder=[{"type": "dense", "units": 64}, {"type": "upsample", "size": 2}])
    with pytest.raises(ValueError, match=r"decoder layer 1 \(upsample\): needs an image input"):
        build_autoencoder(spec)
    spec = small_spec(decoder=[{"type": "dense", "units": 16}, {"type": "reshape", "shape": [1, 4, 4]}])
    with pytest.raises(ValueError, match=r"decoder ends with shape \(1, 4, 4\) but must rebuild the input "
                                         r"shape \(1, 8, 8\)"):
        build_autoencoder(spec)
    spec = small_spec(decoder=[{"type": "dense", "units": 16}, {"type": "reshape", "shape": [1, 4, 4]},
                               {"type": "unpool", "size": 2, "mode": "indices"}])
    with pytest.raises(ValueError, match=r"decoder layer 2 \(unpool\): mode 'indices' needs an encoder"):
        build_autoencoder(spec)


def test_bad_top_level():
    with pytest.raises(ValueError, match=r"tiny: unknown key 'layers'"):
        build_autoencoder({**small_spec(), "layers": []})
    with pytest.raises(ValueError, match=r"tiny: missing key 'encoder'"):
        build_autoencoder({k: v for k, v in small_spec().items() if k != "encoder"})
    with pytest.raises(ValueError, match=r"'output_activation' must be one of"):
        build_autoencoder(small_spec(output_activation="softmax"))
    with pytest.raises(ValueError, match=r"'decoder' must be 'mirror' or a list"):
        build_autoencoder(small_spec(decoder="reverse"))
    with pytest.raises(ValueError, match=r"the encoder must end flat"):
        build_autoencoder(small_spec(encoder=small_spec()["encoder"][:4]))
    with pytest.raises(ValueError, match=r"'input' must be \[C, H, W\]"):
        build_autoencoder(small_spec(input=[8, 8]))
    with pytest.raises(ValueError, match=r"'init' must be one of torch, glorot, kaiming; got 'zeros'"):
        build_autoencoder(small_spec(init="zeros"))


def test_glorot_init_draws_within_its_bound_with_zero_biases():
    torch.manual_seed(0)
    ae = build_autoencoder({**load_spec("dec-dense"), "init": "glorot"}, input_shape=(1, 28, 28))
    linears = [m for m in ae.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 8
    for layer in linears:
        fan_out, fan_in = layer.weight.shape
        bound = (6 / (fan_in + fan_out)) ** 0.5
        assert layer.weight.abs().max() <= bound
        assert layer.weight.abs().max() > 0.9 * bound  # drawn over the whole range, not torch's narrower one
        assert torch.count_nonzero(layer.bias) == 0
    assert resolve_spec({**load_spec("dec-dense"), "init": "glorot"}, (1, 28, 28))["init"] == "glorot"


def test_dec_dense_sgd_is_dec_dense_with_torch_weights():
    """dec-dense-sgd: the same layers as dec-dense, weights from torch's +-1/sqrt(fan_in) (the
    VarianceScaling(1/3, fan_in) of the public DEC code's SGD recipe), not Glorot's wider range."""
    sgd, glorot = load_spec("dec-dense-sgd"), load_spec("dec-dense")
    assert (sgd["encoder"], sgd["decoder"], sgd["output_activation"]) == \
        (glorot["encoder"], glorot["decoder"], glorot["output_activation"])
    assert sgd.get("init", "torch") == "torch" and glorot["init"] == "glorot"
    torch.manual_seed(0)
    ae = build_autoencoder("dec-dense-sgd", input_shape=(1, 28, 28))
    for layer in (m for m in ae.modules() if isinstance(m, nn.Linear)):
        fan_in = layer.weight.shape[1]
        assert 0.9 * fan_in ** -0.5 < layer.weight.abs().max() <= fan_in ** -0.5


def test_input_shape_must_match_the_spec():
    with pytest.raises(ValueError, match=r"conv-mnist: input_shape \(3, 32, 32\) does not match the spec's "
                                         r"input \[1, 28, 28\]"):
        build_autoencoder("conv-mnist", input_shape=(3, 32, 32))
    with pytest.raises(ValueError, match=r"dec-dense: the input shape is not fixed.*pass input_shape"):
        build_autoencoder("dec-dense")
    ae = build_autoencoder("conv-mnist", input_shape=(1, 28, 28))
    with pytest.raises(ValueError, match=r"channels-last"):
        ae(torch.rand(2, 28, 28, 1))


def test_file_errors_name_the_file(tmp_path):
    bad_yaml = tmp_path / "broken.yaml"
    bad_yaml.write_text("name: x\nencoder: [{type: conv, filters: 4\n")
    with pytest.raises(ValueError, match=r"broken\.yaml: invalid YAML"):
        load_spec(bad_yaml)
    bad_json = tmp_path / "broken.json"
    bad_json.write_text('{"name": "x",\n "encoder": [}')
    with pytest.raises(ValueError, match=r"broken\.json: invalid JSON at line 2"):
        load_spec(bad_json)
    not_a_mapping = tmp_path / "list.yaml"
    not_a_mapping.write_text("- {type: flatten}\n")
    with pytest.raises(ValueError, match=r"list\.yaml: an architecture file must hold a mapping"):
        load_spec(not_a_mapping)
    bad_layer = tmp_path / "bad_layer.yaml"
    bad_layer.write_text(yaml.safe_dump(with_layer(1, {"type": "batchnorm", "eps": 1e-3})))
    with pytest.raises(ValueError, match=r"bad_layer\.yaml: tiny: encoder layer 1 \(batchnorm\): "
                                         r"unknown field 'eps'"):
        build_autoencoder(bad_layer)
    with pytest.raises(FileNotFoundError, match=r"missing\.yaml"):
        load_spec(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match=r"Unknown architecture 'conv-mnst'. Shipped: .*conv-mnist"):
        load_spec("conv-mnst")


# ---------------------------------------------------------------------- layer-wise pretraining access
def test_dense_pairs_of_dec_dense():
    ae = build_autoencoder("dec-dense", input_shape=(1, 28, 28))
    pairs = ae.dense_pairs()
    assert [(e.in_features, e.out_features) for e, _ in pairs] == [(784, 500), (500, 500), (500, 2000),
                                                                  (2000, 10)]
    for enc, dec in pairs:
        assert dec.weight.shape == enc.weight.T.shape
    blocks = ae.dense_blocks()
    assert [type(b.encoder_activation) for b in blocks] == [nn.ReLU, nn.ReLU, nn.ReLU, nn.Identity]
    assert [type(b.decoder_activation) for b in blocks] == [nn.Identity, nn.ReLU, nn.ReLU, nn.ReLU]
    # the pairs are the model's own modules: training them trains the model
    assert pairs[0][0] is ae.encoder[1] and pairs[0][1] is ae.decoder[-2]


def test_dense_pairs_rejects_a_conv_model():
    with pytest.raises(ValueError, match=r"pure dense stack.*'conv-mnist' has Conv2d"):
        build_autoencoder("conv-mnist").dense_pairs()


# --------------------------------------------------------------------------------------- helpers
def test_images_to_tensor():
    images = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    x = images_to_tensor(images)
    assert x.shape == (2, 3, 3, 4) and x.dtype == torch.float32
    assert x[1, 2, 0, 3].item() == pytest.approx(images[1, 0, 3, 2] / 255)
    grey = images_to_tensor(np.zeros((5, 8, 8), dtype=np.uint8))
    assert grey.shape == (5, 1, 8, 8)
    floats = np.random.default_rng(0).random((2, 4, 4, 1)).astype(np.float32)
    assert np.allclose(images_to_tensor(floats)[:, 0].numpy(), floats[..., 0])
    with pytest.raises(ValueError, match="channels"):
        images_to_tensor(np.zeros((2, 4, 4, 2)))


def test_autoencoder_from_python_modules():
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    decoder = nn.Sequential(nn.Linear(2, 16), nn.Unflatten(1, (1, 4, 4)))
    ae = Autoencoder(encoder, decoder, input_shape=(1, 4, 4))
    assert ae.embedding_dim == 2 and ae.spec is None
    check_model(ae, (1, 4, 4), 2)
