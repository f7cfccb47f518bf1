"""DINOv2 and CLIP image towers through Hugging Face ``transformers`` (the optional extra ``pretrained``).

Why transformers: it ships both families as plain ``nn.Module`` classes loaded from safetensors, with no
torchvision dependency (timm needs torchvision, which does not import beside the CPU torch build), and it
loads from a hub id (downloaded once into the usual Hugging Face cache) or from any local folder written
by ``save_pretrained``, which also works fully offline (``HF_HUB_OFFLINE=1``).

Features: DINOv2 gives its CLS token after the final layer norm (``pooler_output``), the vector the
DINOv2 and TEMI papers cluster and k-NN-classify with; CLIP gives the projected image embedding
(``image_embeds``), the vector CLIP compares with text.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from torch import nn

# model_type values in config.json that each family accepts
_MODEL_TYPES = {"dinov2": ("dinov2", "dinov2_with_registers"), "clip": ("clip", "clip_vision_model")}


def _transformers():
    try:
        import transformers
    except ImportError as exc:
        raise ImportError('The DINOv2 and CLIP backbones need Hugging Face transformers: pip install '
                          '"deepclust[pretrained]" (or pip install "transformers>=4.40").') from exc
    return transformers


def hf_cache_dir() -> str:
    """The folder where Hugging Face keeps downloaded models (HF_HUB_CACHE / HF_HOME aware)."""
    try:
        from huggingface_hub import constants
        return str(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - transformers always brings huggingface_hub
        return str(Path("~/.cache/huggingface/hub").expanduser())


def resolve_folder(name: str, hub_id: str, weights: str | None) -> Path:
    """The local folder to load from: ``weights`` if given, else the hub snapshot (downloaded if needed).

    Raises FileNotFoundError (one line: the model, the cache folder, how to fill it) when the weights are
    neither cached nor downloadable.
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a model folder for backbone {name!r} (no config.json); "
                                    "pass a folder written by save_pretrained, e.g. a copy of the hub model "
                                    f"{hub_id}.")
        return path
    _transformers()
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(hub_id, allow_patterns=["*.json", "*.safetensors"]))
    except Exception as exc:  # offline, no network, missing repo: hub errors, OSError, requests errors
        raise FileNotFoundError(
            f"The weights of backbone {name!r} ({hub_id}) are not in the Hugging Face cache {hf_cache_dir()} "
            f"and could not be downloaded ({type(exc).__name__}); fill the cache once with network "
            f"(huggingface-cli download {hub_id} --include '*.json' '*.safetensors'), or pass "
            f"weights=<local folder saved with save_pretrained>."
        ) from exc


def folder_identity(folder: Path) -> str:
    """Fingerprint of a model folder: names, sizes and modification times of its config and weights."""
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.suffix in (".json", ".safetensors", ".bin"):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def _check_model_type(name: str, family: str, folder: Path, config) -> None:
    if config.model_type not in _MODEL_TYPES[family]:
        raise ValueError(f"{folder} holds a {config.model_type!r} model, not a {family} one, so it cannot be "
                         f"backbone {name!r}; pass a folder of a {family} model.")


class _DinoCLS(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(pixel_values=x).pooler_output  # (B, hidden): layer-normed CLS token


class _ClipImageEmbeds(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(pixel_values=x).image_embeds  # (B, projection_dim)


def build_dinov2(spec, weights: str | None):
    tf = _transformers()
    folder = resolve_folder(spec.name, spec.weights, weights)
    config = tf.AutoConfig.from_pretrained(folder)
    _check_model_type(spec.name, "dinov2", folder, config)
    cls = tf.Dinov2WithRegistersModel if config.model_type == "dinov2_with_registers" else tf.Dinov2Model
    model = cls.from_pretrained(folder, use_safetensors=True).eval()
    return _DinoCLS(model), config.hidden_size, f"{spec.weights}@{folder_identity(folder)}"


def build_clip(spec, weights: str | None):
    tf = _transformers()
    folder = resolve_folder(spec.name, spec.weights, weights)
    config = tf.AutoConfig.from_pretrained(folder)
    _check_model_type(spec.name, "clip", folder, config)
    model = tf.CLIPVisionModelWithProjection.from_pretrained(folder, use_safetensors=True).eval()
    return _ClipImageEmbeds(model), model.config.projection_dim, f"{spec.weights}@{folder_identity(folder)}"
