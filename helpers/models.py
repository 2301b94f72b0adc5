"""Models shared by the notebooks, and the size figures reported for every model trained."""
from __future__ import annotations

import torch
from torch import nn


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def model_memory_bytes(model: nn.Module) -> int:
    """Bytes held by parameters and buffers (e.g. batch-norm statistics): the weight file's payload."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def model_summary(model: nn.Module) -> dict:
    return {"architecture": type(model).__name__, "parameters": count_parameters(model),
            "trainable_parameters": count_parameters(model, trainable_only=True),
            "memory_bytes": model_memory_bytes(model)}


def _describe(layer: nn.Module) -> str:
    """'Conv2d 3→64, 5×5', 'BatchNorm2d 64', 'Linear 512→43', 'MaxPool2d 2×2', 'ELU'."""
    if isinstance(layer, nn.Conv2d):
        return f"Conv2d {layer.in_channels}→{layer.out_channels}, {'×'.join(map(str, layer.kernel_size))}" + \
            ("" if layer.bias is not None else ", no bias")
    if isinstance(layer, nn.Linear):
        return f"Linear {layer.in_features}→{layer.out_features}"
    if isinstance(layer, nn.modules.batchnorm._BatchNorm):
        return f"{type(layer).__name__} {layer.num_features}"
    if isinstance(layer, nn.MaxPool2d):
        return f"MaxPool2d {layer.kernel_size}×{layer.kernel_size}"
    return type(layer).__name__


@torch.no_grad()
def layer_table(model: nn.Module, input_shape: tuple) -> list:
    """One row per leaf layer in execution order: its description, output shape (without the batch) and
    parameters, read from a forward pass of one zero input, so the table cannot disagree with the model."""
    rows, hooks = [], []
    for layer in (m for m in model.modules() if not list(m.children())):
        hooks.append(layer.register_forward_hook(lambda mod, _, out: rows.append(
            {"layer": _describe(mod), "output": "×".join(map(str, out.shape[1:])), "params": count_parameters(mod)})))
    try:
        model.eval()(torch.zeros(1, *input_shape))
    finally:
        for hook in hooks:
            hook.remove()
    return rows


def conv_bn_act(c_in: int, c_out: int, kernel: int, batch_norm: bool, activation=nn.ELU, padding: int = 0):
    """conv -> [BN] -> activation, with BN between the convolution and the non-linearity (Ioffe & Szegedy);
    the convolution then needs no bias, since BN's shift replaces it."""
    layers = [nn.Conv2d(c_in, c_out, kernel, padding=padding, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(activation())
    return layers


class TrafficSignCNN(nn.Module):
    """The course's GTSRB network: conv(3->64, 5x5) - ELU - pool - conv(64->32, 5x5) - ELU - pool - linear(512->43).

    On 28x28 crops: 28 -conv5-> 24 -pool-> 12 -conv5-> 8 -pool-> 4, so the linear layer sees 32*4*4 = 512.
    """

    def __init__(self, num_classes: int = 43, batch_norm: bool = False, input_size: int = 28):
        super().__init__()
        self.config = dict(num_classes=num_classes, batch_norm=batch_norm, input_size=input_size)
        self.features = nn.Sequential(*conv_bn_act(3, 64, 5, batch_norm), nn.MaxPool2d(2),
                                      *conv_bn_act(64, 32, 5, batch_norm), nn.MaxPool2d(2), nn.Flatten())
        side = ((input_size - 4) // 2 - 4) // 2
        self.classifier = nn.Linear(32 * side * side, num_classes)
        self.to(memory_format=torch.channels_last)  # with bfloat16 autocast: 2x faster training on a 2-core CPU

    def forward(self, x):
        return self.classifier(self.features(x.contiguous(memory_format=torch.channels_last)))


def batch_norm_placement(model: nn.Module) -> list:
    """(layer before, BN layer, layer after) for every BN in a module's flat execution order."""
    leaves = [m for m in model.modules() if not list(m.children())]
    return [(type(leaves[i - 1]).__name__ if i else None, type(m).__name__,
             type(leaves[i + 1]).__name__ if i + 1 < len(leaves) else None)
            for i, m in enumerate(leaves) if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class SpatialTransformer(nn.Module):
    """A learnt affine warp of the input (Jaderberg et al., 2015): a small localisation network predicts
    the 2x3 matrix, initialised to the identity so training starts from the plain image."""

    def __init__(self, channels: int = 3, hidden: int = 64):
        super().__init__()
        self.localise = nn.Sequential(nn.Conv2d(channels, 16, 5), nn.MaxPool2d(2), nn.ReLU(),
                                      nn.Conv2d(16, 32, 5), nn.MaxPool2d(2), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(32 * 16, hidden), nn.ReLU(),
                                      nn.Linear(hidden, 6))
        nn.init.zeros_(self.localise[-1].weight)
        with torch.no_grad():
            self.localise[-1].bias.copy_(torch.tensor([1.0, 0, 0, 0, 1.0, 0]))

    def forward(self, x):
        theta = self.localise(x).float().view(-1, 2, 3)
        grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
        return nn.functional.grid_sample(x.float(), grid, align_corners=False, padding_mode="border").to(x.dtype)


class SignNet(nn.Module):
    """The challenge CNN for GTSRB: VGG-style stages of `convs` conv3x3-BN-ReLU layers, each stage
    ending in 2x2 max-pooling and dropout, then global average pooling and one linear layer."""

    def __init__(self, num_classes: int = 43, widths=(32, 64, 128), convs: int = 2, dropout: float = 0.2,
                 spatial_transformer: bool = False):
        super().__init__()
        self.config = dict(num_classes=num_classes, widths=list(widths), convs=convs, dropout=dropout,
                           spatial_transformer=spatial_transformer)
        layers, c_in = [SpatialTransformer(3)] if spatial_transformer else [], 3
        for width in widths:
            for _ in range(convs):
                layers += conv_bn_act(c_in, width, 3, batch_norm=True, activation=nn.ReLU, padding=1)
                c_in = width
            layers += [nn.MaxPool2d(2), nn.Dropout(dropout)]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


# ----------------------------------------------------------------------------------------------
# U-Net (the structure of PyTorch Lightning Bolts' UNet, with the notebook-04 switches)

UPSAMPLING = ("transpose", "bilinear", "nearest")
ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU}


class DoubleConv(nn.Sequential):
    """(conv3x3 pad 1 -> BN -> activation) twice; the convolutions keep their bias, as in Bolts."""

    def __init__(self, c_in: int, c_out: int, activation=nn.ReLU):
        super().__init__(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), activation(),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), activation())


class Down(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, activation=nn.ReLU):
        super().__init__(nn.MaxPool2d(2, 2), DoubleConv(c_in, c_out, activation))


class Up(nn.Module):
    """Up-sample by 2 while halving channels, pad to the skip's size, concatenate, double conv.

    'transpose' is a learnt 2x2 transposed convolution with stride 2; 'bilinear' and 'nearest' are fixed
    interpolations followed by a 1x1 convolution that halves the channels (as Bolts does for bilinear).
    """

    def __init__(self, c_in: int, c_out: int, upsampling: str = "transpose", activation=nn.ReLU):
        super().__init__()
        if upsampling == "transpose":
            self.upsample = nn.ConvTranspose2d(c_in, c_in // 2, kernel_size=2, stride=2)
        else:
            align = dict(align_corners=True) if upsampling == "bilinear" else {}
            self.upsample = nn.Sequential(nn.Upsample(scale_factor=2, mode=upsampling, **align),
                                          nn.Conv2d(c_in, c_in // 2, kernel_size=1))
        self.conv = DoubleConv(c_in, c_out, activation)

    def forward(self, x, skip):
        x = self.upsample(x)
        dh, dw = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        x = nn.functional.pad(x, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """U-Net (Ronneberger et al., 2015) as in Lightning Bolts: `num_layers` levels, `features_start`
    channels doubling on the way down; logits of `num_classes` channels at the input's resolution.

    Switches for notebook 04: `upsampling` ('transpose' default; `bilinear=True` is Bolts' spelling of
    'bilinear'; 'nearest' = nearest-neighbour up-sampling + 1x1 conv) and `activation` ('relu' | 'elu').
    """

    def __init__(self, num_classes: int, input_channels: int = 3, num_layers: int = 5, features_start: int = 64,
                 bilinear: bool = False, upsampling: str | None = None, activation: str = "relu"):
        super().__init__()
        upsampling = upsampling or ("bilinear" if bilinear else "transpose")
        if upsampling not in UPSAMPLING:
            raise ValueError(f"upsampling={upsampling!r} is unknown; choose one of {', '.join(UPSAMPLING)}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is unknown; choose one of {', '.join(ACTIVATIONS)}")
        if num_layers < 1:
            raise ValueError(f"num_layers={num_layers} must be at least 1")
        self.config = dict(num_classes=num_classes, input_channels=input_channels, num_layers=num_layers,
                           features_start=features_start, upsampling=upsampling, activation=activation)
        act = ACTIVATIONS[activation]
        self.num_layers = num_layers
        layers, width = [DoubleConv(input_channels, features_start, act)], features_start
        for _ in range(num_layers - 1):
            layers.append(Down(width, width * 2, act))
            width *= 2
        for _ in range(num_layers - 1):
            layers.append(Up(width, width // 2, upsampling, act))
            width //= 2
        layers.append(nn.Conv2d(width, num_classes, kernel_size=1))
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        skips = [self.layers[0](x)]
        for down in self.layers[1:self.num_layers]:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in self.layers[self.num_layers:-1]:
            x = up(x, skips.pop())
        return self.layers[-1](x)
