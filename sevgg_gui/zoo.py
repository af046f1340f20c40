"""Pick the model a user asked for: one entry point, :func:`load_model`, in front of one small resolver
per origin (``sevgg_gui/origins/``), so the CLI and the app agree on defaults and warnings.

Specs: ``None`` (the default VGG16-SE: ImageNet transfer when cached, else random), a checkpoint file,
a Hugging Face model folder (``config.json`` + ``model.safetensors``), ``pretrained:<torchvision name>``
(e.g. ``pretrained:mobilenet_v3_small``), ``vgg16:<attention>`` (e.g. ``vgg16:cbam``, random init),
``timm:<name>[.<tag>][:random]`` (e.g. ``timm:seresnet50.a1_in1k``), ``timm:hf-hub:<org>/<name>[@<revision>]``
(a timm model on the Hugging Face hub); and with ``model_code``
(``FILE.py:FUNCTION``) the user's own architecture, the spec then naming its weights file.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .model_specs import MODEL_CHOICES  # noqa: F401  (re-exported: the public name lives here too)
from .origins.checkpoint import imagenet_vgg16_cached
from .origins.loaded import RANDOM_WARNING, LoadedModel, ModelSpecError

__all__ = [
    "MODEL_CHOICES",
    "RANDOM_WARNING",
    "LoadedModel",
    "ModelSpecError",
    "gates_untrained",
    "imagenet_vgg16_cached",
    "load_model",
]


def load_model(
    checkpoint: str | Path | None = None, *, allow_download: bool = False, model_code: str | None = None
) -> LoadedModel:
    """The model a spec names (see the module docstring); every failure is one line (ModelSpecError,
    CheckpointError or RuntimeError)."""
    from .origins import attention, hf_folder, timm_hub, timm_models, torchvision_models, user_code
    from .origins import checkpoint as ckpt

    spec = str(checkpoint) if checkpoint is not None else None
    if model_code:
        if spec is not None and spec.startswith(("pretrained:", "vgg16:", timm_models.PREFIX)):
            raise ModelSpecError(
                f"--model-code builds the model; -c/--checkpoint must name its weights file, not {spec}"
            )
        return user_code.load(model_code, checkpoint)
    if spec is None:
        return ckpt.load_default(allow_download)
    if spec.startswith("pretrained:"):
        return torchvision_models.load(spec.split(":", 1)[1])
    if spec.startswith("vgg16:"):
        return attention.load(spec.split(":", 1)[1])
    if spec.startswith(timm_hub.PREFIX):
        return timm_hub.load(spec)
    if spec.startswith(timm_models.PREFIX):
        return timm_models.load(spec)
    if Path(spec).is_dir():
        return hf_folder.load(spec)
    if spec.endswith(".py") or ".py:" in spec:
        raise ModelSpecError(f"{spec} is Python code: open it with --model-code FILE.py:FUNCTION")
    return ckpt.load_file(spec)


def gates_untrained(model: nn.Module) -> bool:
    """True when every SE block's second FC is all zeros (gates exactly 0.5 after the transfer)."""
    from .recorder import find_gate_blocks

    blocks = find_gate_blocks(model)
    found = False
    for _, b in blocks:
        fc = getattr(b, "fc", None)
        if not isinstance(fc, nn.Sequential) or len(fc) < 3:  # timm ESE: fc is one conv
            return False
        found = True
        if fc[2].weight.abs().max().item() != 0.0:
            return False
    return found
