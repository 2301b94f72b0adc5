"""Receptive fields: the theoretical one by walking a network's layers, the effective one by gradients.

Theory (one spatial axis): a layer with kernel k, stride s and dilation d grows the receptive field r by
(k - 1) * d * j, where j is the distance in input pixels between neighbouring units, and multiplies j by s.
An up-sampling layer (transposed convolution, interpolation) divides j by its factor; each of its
output units sees ceil(k / s) input units, which grows r by (ceil(k / s) - 1) * j.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Layer:
    name: str
    kernel: int
    stride: int = 1
    dilation: int = 1
    upsampling: bool = False


def _pair_first(value) -> int:
    return value[0] if isinstance(value, (tuple, list)) else int(value)


def layer_of(module: nn.Module) -> Layer | None:
    """The receptive-field description of one leaf module; None for point-wise layers (BN, activations)."""
    name = type(module).__name__
    if isinstance(module, nn.ConvTranspose2d):
        return Layer(name, _pair_first(module.kernel_size), _pair_first(module.stride), upsampling=True)
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        stride = module.stride if module.stride is not None else module.kernel_size
        return Layer(name, _pair_first(module.kernel_size), _pair_first(stride), _pair_first(module.dilation)
                     if hasattr(module, "dilation") else 1)
    if isinstance(module, nn.Upsample):
        factor = int(_pair_first(module.scale_factor))
        # nearest copies one input unit; (bi)linear mixes two neighbours
        return Layer(f"{name}({module.mode})", factor if module.mode == "nearest" else factor + 1, factor,
                     upsampling=True)
    return None


def layers_of(model: nn.Module) -> list:
    """The spatial layers of a model in registration order. For a U-Net this is its deepest path
    (encoder, bottleneck, decoder), the one that decides the output units' receptive field."""
    return [layer for layer in map(layer_of, model.modules()) if layer is not None]


def receptive_field(layers) -> list:
    """Per layer: its name, receptive field size and jump (input pixels between neighbouring units)."""
    size, jump, rows = 1.0, 1.0, []
    for layer in layers:
        if layer.upsampling:
            size += (math.ceil(layer.kernel / layer.stride) - 1) * jump
            jump /= layer.stride
        else:
            size += (layer.kernel - 1) * layer.dilation * jump
            jump *= layer.stride
        rows.append({"layer": layer.name, "size": size, "jump": jump})
    return rows


def theoretical_receptive_field(model: nn.Module) -> int:
    rows = receptive_field(layers_of(model))
    return int(rows[-1]["size"]) if rows else 1


def effective_receptive_field(model: nn.Module, images: torch.Tensor, channel: int = 0) -> torch.Tensor:
    """|d output[centre] / d input| summed over images and input channels (Luo et al., 2016), scaled to
    a maximum of 1: which input pixels actually move the centre unit's output."""
    model.eval()
    inputs = images.detach().clone().requires_grad_(True)
    outputs = model(inputs)
    h, w = outputs.shape[-2:]
    outputs[:, channel, h // 2, w // 2].sum().backward()
    grad = inputs.grad.abs().sum(dim=(0, 1))
    return grad / grad.max().clamp(min=torch.finfo(grad.dtype).tiny)


def mass_profile(field: torch.Tensor) -> torch.Tensor:
    """Fraction of the field's total inside the centred square of side 1, 3, 5, ... (index k: side 2k+1)."""
    h, w = field.shape
    cy, cx, total = h // 2, w // 2, field.sum()
    sides = range(max(h, w) // 2 + 1)
    return torch.stack([field[max(0, cy - k):cy + k + 1, max(0, cx - k):cx + k + 1].sum() / total for k in sides])


def extent(field: torch.Tensor, mass: float = 0.95) -> int:
    """Side of the smallest square about the centre that holds `mass` of the field's total."""
    profile = mass_profile(field)
    inside = torch.nonzero(profile >= mass - 1e-6)
    return 2 * int(inside[0]) + 1 if len(inside) else max(field.shape)


def support(field: torch.Tensor) -> tuple:
    """Height and width of the bounding box of the field's non-zero entries."""
    rows, cols = torch.nonzero(field.sum(1)), torch.nonzero(field.sum(0))
    return (int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)) if len(rows) else (0, 0)
