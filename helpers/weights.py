"""Weights that describe themselves: each manifest entry holds the constructor (architecture + config), the
preprocessing its inputs need and its metric, so `load_model(name)` gives a ready model and its transform without
the notebook that trained it.

    from helpers import load_model
    model, preprocess = load_model("03_challenge_final0")
    logits = model(preprocess(images))          # images: uint8 (N, C, H, W) on the model's device
"""
from __future__ import annotations

import ast
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from . import augment as A
from .repro import PROJECT_ROOT
from .data import area_resize, decode_images
from .results import load_weights, read_manifest

# Transforms a stored evaluation step may name: deterministic ones only (augmentations never run at evaluation).
EVALUATION_TRANSFORMS = {"CenterCrop": A.CenterCrop, "PerImageStandardize": A.PerImageStandardize,
                         "Compose": A.Compose}


class ManifestError(ValueError):
    """A manifest entry cannot rebuild its model; the message names the entry and the fix."""


@dataclass
class Preprocess:
    """What a model's inputs go through at evaluation, as the training notebook's loaders did it: uint8 images
    (N, C, H, W), area-resized to `input_size` if they are not already that size, scaled to [0, 1], the
    evaluation transform, then (x - mean) / std. Text models carry their `vocabulary` instead. `resize`: how
    image files were framed when decoded to `input_size` (helpers.data's "short_side" centre crop or "square");
    `decode(paths)` does it."""

    mean: list | None = None
    std: list | None = None
    evaluate: str | None = None
    input_size: int | None = None
    classes: list | None = None
    vocabulary: str | None = None
    resize: str | None = None

    def __post_init__(self):
        self._transform = transform_from_repr(self.evaluate)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"expected uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if self.input_size and tuple(images.shape[-2:]) != (self.input_size, self.input_size):
            images = area_resize(images, self.input_size)
        x = images.float() / 255
        if self._transform is not None:
            x, _ = self._transform(x, None, None)
        if self.mean is not None:
            mean, std = (torch.as_tensor(v, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
                         for v in (self.mean, self.std))
            x = (x - mean) / std
        return x

    def decode(self, paths: list) -> torch.Tensor:
        """Image files as the uint8 (N, 3, input_size, input_size) batch this model's images were: framed by
        `resize` (a model that records none saw the whole image squashed)."""
        if not self.input_size:
            raise ValueError("this preprocessing records no input_size: decode the images at the model's own size")
        return decode_images(paths, self.input_size, self.resize or "square")

    def encode(self, text: str) -> torch.Tensor:
        """Symbol ids of a text for a character model (unknown symbols -> 0, as in training)."""
        from .text import Vocab

        if self.vocabulary is None:
            raise ValueError("this model takes images, not text")
        return Vocab(self.vocabulary).encode(text)

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def transform_from_repr(text: str | None):
    """Rebuild an evaluation transform from its repr, e.g. 'CenterCrop(size=28)', allowing only literal
    arguments and the deterministic transforms above."""
    if not text:
        return None
    return _build(ast.parse(text, mode="eval").body, text)


def _build(node, text: str):
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in EVALUATION_TRANSFORMS):
        raise ManifestError(f"evaluation transform {text!r}: only {', '.join(EVALUATION_TRANSFORMS)} can be rebuilt")
    args = [_build(a, text) for a in node.args]
    kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    return EVALUATION_TRANSFORMS[node.func.id](*args, **kwargs)


def preprocessing_of(loader, **extra) -> dict:
    """The evaluation preprocessing of a data.TensorLoader (its mean/std, evaluation transform, input size and
    class names), as a manifest stores it; `extra` adds or overrides fields (e.g. a text model's vocabulary)."""
    fields = {}
    if loader is not None and hasattr(loader, "mean"):
        if loader.normalise:
            fields["mean"], fields["std"] = (t.flatten().tolist() for t in (loader.mean.cpu(), loader.std.cpu()))
        fields["evaluate"] = repr(loader.augment) if loader.augment is not None else None
        fields["input_size"] = loader.meta.get("input_size")
        fields["classes"] = getattr(loader, "classes", None)
    return Preprocess(**(fields | extra)).as_dict()


def architectures() -> dict:
    """Every class a manifest may name, by class name."""
    from . import models, text, transfer, vgg

    return {cls.__name__: cls for cls in (models.TrafficSignCNN, models.SignNet, models.UNet, vgg.CifarNet,
                                          vgg.ResNet9, vgg.AirNet, text.CharRNN, transfer.TransferNet,
                                          transfer.FromBlock)}


def build_model(entry: dict, name: str = "") -> nn.Module:
    """A model with random weights, built from a manifest entry's architecture and config."""
    classes = architectures()
    architecture, config = entry.get("architecture"), entry.get("config")
    if architecture not in classes or config is None:
        raise ManifestError(f"weights {name!r} record architecture={architecture!r} and config={config!r}: they were "
                            f"saved before weights described themselves; re-create them by re-running notebook "
                            f"{entry.get('notebook', '??')} (TRAIN=True, or RETRAIN naming the run)")
    if architecture == "FromBlock":
        if not config.get("model"):
            raise ManifestError(f"weights {name!r}: a FromBlock saved without its network's config; keep the whole "
                                f"TransferNet built by TransferNet.pretrained instead")
        # a FromBlock trained on cached activations from block k holds the whole network: run it from the image
        config = config | {"start": 0}
    cls = classes[architecture]
    return cls.from_config(config) if hasattr(cls, "from_config") else cls(**config)


def load_model(name: str, weights_dir=None, device="cpu") -> tuple:
    """(model in eval mode on `device`, its Preprocess), from `weights_dir/manifest.json` (default: the
    project's weights/) and the checked weights file."""
    weights_dir = Path(weights_dir) if weights_dir is not None else PROJECT_ROOT / "weights"
    entry = read_manifest(weights_dir).get(name)
    if entry is None:
        known = ", ".join(sorted(read_manifest(weights_dir))) or "none"
        raise ManifestError(f"no weights named {name!r} in {weights_dir / 'manifest.json'} (known: {known})")
    model = build_model(entry, name)
    if not entry.get("preprocessing"):
        raise ManifestError(f"weights {name!r} record no preprocessing (what their inputs need); pass "
                            f"`preprocessing=` where notebook {entry.get('notebook', '??')} keeps them and re-run it")
    load_weights(model, name, weights_dir)
    return model.to(device).eval(), Preprocess(**entry["preprocessing"])
