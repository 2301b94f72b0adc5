"""Notebook 01's models: Brownlee's VGG-block CIFAR-10 network and each step that turns it into a ResNet.

One class, switched by arguments, so that every comparison changes exactly one thing:
normalisation (none/batch/layer/instance/group), dropout and its order relative to the norm, the head
(big dense layer or global average pooling), down-sampling (max-pooling or stride-2 convolutions),
skip connections (ResNet basic blocks with projection shortcuts), squeeze-and-excitation and a
patchify stem.
"""
from __future__ import annotations

import torch
import torch.nn as nn

NORMS = (None, "batch", "layer", "instance", "group")


def norm_layer(kind: str | None, channels: int) -> nn.Module:
    """LayerNorm over (C, H, W) is GroupNorm with one group; InstanceNorm (with affine) is one group per
    channel; GroupNorm uses groups of 8 channels (at most 32 groups)."""
    if kind not in NORMS:
        raise ValueError(f"norm={kind!r} is unknown; choose one of {NORMS}")
    if kind is None:
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    groups = {"layer": 1, "instance": channels, "group": max(1, min(32, channels // 8))}[kind]
    return nn.GroupNorm(groups, channels)


class SqueezeExcite(nn.Module):
    """Channel gates from globally pooled features (Hu et al., 2018), reduction r."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        hidden = max(4, channels // reduction)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(hidden, channels, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.gate(x)


class ConvUnit(nn.Sequential):
    """conv3x3 -> [dropout if it goes before the norm] -> norm -> ReLU."""

    def __init__(self, c_in, c_out, stride, norm, dropout_first: float):
        layers = [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=norm is None)]
        if dropout_first:
            layers.append(nn.Dropout(dropout_first))
        super().__init__(*layers, norm_layer(norm, c_out), nn.ReLU(inplace=True))


class VGGBlock(nn.Module):
    """Two 3x3 conv units, then 2x down-sampling (max-pool, or stride 2 in the first conv) and dropout.

    dropout_order "bn_dropout" puts the block's one dropout after its last norm (and the pooling); "dropout_bn"
    moves that same layer in front of the last norm, so the two orders differ only in its place."""

    def __init__(self, c_in, c_out, *, norm, dropout, dropout_order, downsample, convs=2, se=False):
        super().__init__()
        strided = downsample == "stride"
        before = dropout if dropout_order == "dropout_bn" else 0.0
        units = [ConvUnit(c_in if i == 0 else c_out, c_out, 2 if strided and i == 0 else 1, norm,
                          before if i == convs - 1 else 0.0) for i in range(convs)]
        self.body = nn.Sequential(*units, SqueezeExcite(c_out) if se else nn.Identity())
        self.pool = nn.Identity() if strided else nn.MaxPool2d(2)
        self.dropout = nn.Dropout(dropout) if dropout and dropout_order == "bn_dropout" else nn.Identity()

    def forward(self, x):
        return self.dropout(self.pool(self.body(x)))


class BasicBlock(nn.Module):
    """He et al. (2016): conv-norm-ReLU-conv-norm (+ SE) plus the shortcut, then ReLU; the shortcut is a
    1x1 stride-s convolution + norm when the shape changes (projection), else the identity."""

    def __init__(self, c_in, c_out, stride, *, norm, dropout=0.0, se=False):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = norm_layer(norm or "batch", c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = norm_layer(norm or "batch", c_out)
        self.se = SqueezeExcite(c_out) if se else nn.Identity()
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), norm_layer(norm or "batch", c_out))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.se(self.norm2(self.conv2(self.dropout(out))))
        return self.relu(out + self.shortcut(x))


class CifarNet(nn.Module):
    """Brownlee's baseline with defaults: widths 32/64/128, two convs a block, max-pooling, Dense 128,
    He-uniform initialisation, no normalisation or dropout (550,570 parameters for 10 classes).

    dropout: one rate or one per block plus one for the dense layer ((0.2, 0.3, 0.4, 0.5) = increasing).
    head: "dense" (flatten -> Dense(dense) -> ReLU -> dropout -> classes) or "gap" (global average
    pooling -> classes). downsample: "maxpool" or "stride". residual: ResNet basic blocks (`blocks_per_stage`
    each) instead of VGG blocks. stem: "none" (the first block sees the image), "conv" (3x3 conv to
    widths[0]) or "patchify" (non-overlapping `patch` x `patch` convolution: a ViT-style embedding).
    """

    def __init__(self, widths=(32, 64, 128), num_classes: int = 10, *, norm=None, dropout=0.0,
                 dropout_order: str = "bn_dropout", head: str = "dense", dense: int = 128, downsample: str = "maxpool",
                 residual: bool = False, blocks_per_stage: int = 1, se: bool = False, stem: str = "none",
                 patch: int = 2, image_size: int = 32, init: str = "he_uniform"):
        super().__init__()
        self._check(head, downsample, dropout_order, stem, init)
        self.config = dict(widths=list(widths), num_classes=num_classes, norm=norm,
                           dropout=list(dropout) if isinstance(dropout, (list, tuple)) else dropout,
                           dropout_order=dropout_order, head=head, dense=dense, downsample=downsample,
                           residual=residual, blocks_per_stage=blocks_per_stage, se=se, stem=stem, patch=patch,
                           image_size=image_size, init=init)
        rates = list(dropout) if isinstance(dropout, (list, tuple)) else [dropout] * (len(widths) + 1)
        if len(rates) != len(widths) + 1:
            raise ValueError(f"dropout needs {len(widths) + 1} rates (one per block and the dense layer), got {rates}")
        layers, c_in, size = [], 3, image_size
        if stem == "conv":
            layers.append(ConvUnit(3, widths[0], 1, norm or ("batch" if residual else None), 0.0))
            c_in = widths[0]
        elif stem == "patchify":
            layers += [nn.Conv2d(3, widths[0], patch, patch), norm_layer(norm or "batch", widths[0]),
                       nn.ReLU(inplace=True)]
            c_in, size = widths[0], size // patch
        for i, width in enumerate(widths):
            if residual:
                stride = 1 if i == 0 and stem != "none" else 2
                for j in range(blocks_per_stage):
                    layers.append(BasicBlock(c_in, width, stride if j == 0 else 1, norm=norm, dropout=0.0, se=se))
                    c_in = width
                if rates[i]:
                    layers.append(nn.Dropout(rates[i]))
            else:
                stride = 2
                layers.append(VGGBlock(c_in, width, norm=norm, dropout=rates[i], dropout_order=dropout_order,
                                       downsample=downsample, se=se))
            c_in, size = width, size // stride
        self.features = nn.Sequential(*layers)
        last_dropout = nn.Dropout(rates[-1]) if rates[-1] else nn.Identity()
        if head == "dense":
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * size * size, dense), nn.ReLU(inplace=True),
                                      last_dropout, nn.Linear(dense, num_classes))
        else:
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), last_dropout, nn.Linear(c_in, num_classes))
        if init == "he_uniform":
            self.apply(_he_uniform)

    @staticmethod
    def _check(head, downsample, dropout_order, stem, init):
        for name, value, allowed in (("head", head, ("dense", "gap")),
                                     ("downsample", downsample, ("maxpool", "stride")),
                                     ("dropout_order", dropout_order, ("bn_dropout", "dropout_bn")),
                                     ("stem", stem, ("none", "conv", "patchify")),
                                     ("init", init, ("he_uniform", "torch"))):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is unknown; choose one of {', '.join(allowed)}")

    def forward(self, x):
        return self.head(self.features(x))


class Residual(nn.Module):
    """x + body(x): a ResNet shortcut around two conv units (+ SE)."""

    def __init__(self, channels: int, se: bool = False):
        super().__init__()
        self.body = nn.Sequential(ConvUnit(channels, channels, 1, "batch", 0.0),
                                  ConvUnit(channels, channels, 1, "batch", 0.0),
                                  SqueezeExcite(channels) if se else nn.Identity())

    def forward(self, x):
        return x + self.body(x)


class ResNet9(nn.Module):
    """The DAWNBench ResNet-9 layout (Page, 2018): a stem conv, then three stages of conv-BN-ReLU +
    max-pooling, with a residual pair of conv units after the first and the last stage; global max
    pooling and a linear layer whose logits are scaled by `scale`. Most of the work happens at 16x16
    and below, which is what makes it cheap for its accuracy. widths: stem and the three stages
    (Page's: 64/128/256/512); se: squeeze-and-excitation in the residual pairs."""

    def __init__(self, widths=(64, 128, 256, 512), num_classes: int = 10, *, se: bool = False, scale: float = 0.125):
        super().__init__()
        if len(widths) != 4:
            raise ValueError(f"ResNet9 needs 4 widths (stem and three stages), got {widths}")
        self.config = dict(widths=list(widths), num_classes=num_classes, se=se, scale=scale)
        w0, w1, w2, w3 = widths
        stage = lambda c_in, c_out: [ConvUnit(c_in, c_out, 1, "batch", 0.0), nn.MaxPool2d(2)]
        self.features = nn.Sequential(ConvUnit(3, w0, 1, "batch", 0.0), *stage(w0, w1), Residual(w1, se),
                                      *stage(w1, w2), *stage(w2, w3), Residual(w3, se))
        self.head = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(w3, num_classes, bias=False))
        self.scale = scale
        self.to(memory_format=torch.channels_last)  # 1.4x faster training in float32 on a 2-core CPU

    def forward(self, x):
        return self.head(self.features(x.contiguous(memory_format=torch.channels_last))) * self.scale


def _he_uniform(module: nn.Module) -> None:
    """Keras' he_uniform: U(-b, b), b = sqrt(6 / fan_in); zero biases."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_uniform_(module.weight, nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def resnet_steps(num_classes: int = 10, norm: str = "batch", dropout=(0.2, 0.3, 0.4, 0.5)) -> dict:
    """The D/C extension, one change at a time, from the regularised VGG (BN + increasing dropout)."""
    base = dict(num_classes=num_classes, norm=norm, dropout=dropout)
    return {
        "vgg": dict(base),
        "gap_head": dict(base, head="gap"),
        "strided": dict(base, head="gap", downsample="stride"),
        "residual": dict(base, head="gap", residual=True, stem="conv"),
        "residual_4_blocks": dict(base, widths=(32, 64, 128, 256), dropout=tuple(dropout) + (dropout[-1],),
                                  head="gap", residual=True, stem="conv"),
    }


@torch.no_grad()
def output_shape(model: nn.Module, image_size: int = 32) -> tuple:
    was_training = model.training
    model.eval()
    shape = tuple(model(torch.zeros(2, 3, image_size, image_size)).shape)
    model.train(was_training)
    return shape


class PatchWhitening(nn.Conv2d):
    """A first layer that whitens the image's `patch` x `patch` patches (the idea of Page's DAWNBench ResNet and of
    airbench): its filters are the eigenvectors of the training patches' covariance divided by the square root of
    their eigenvalue, each also negated, so every direction of patch space reaches the next layer with unit variance
    through either sign. `fit(images)` sets them from training images (as the network sees them); they stay frozen
    and only the bias trains."""

    def __init__(self, in_channels: int = 3, patch: int = 2, eps: float = 5e-4):
        dim = in_channels * patch * patch
        super().__init__(in_channels, 2 * dim, patch, bias=True)
        self.eps, self.dim = eps, dim
        self.weight.requires_grad_(False)

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> "PatchWhitening":
        c, p = self.in_channels, self.kernel_size[0]
        patches = images.float().unfold(2, p, 1).unfold(3, p, 1)  # N, C, H', W', p, p
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, self.dim).double()  # rows in (C, p, p) order
        eigenvalues, eigenvectors = torch.linalg.eigh(torch.cov(patches.T))
        filters = (eigenvectors.T / (eigenvalues.clamp_min(0) + self.eps).sqrt()[:, None]).reshape(self.dim, c, p, p)
        self.weight.copy_(torch.cat([filters, -filters]).to(self.weight.dtype))
        return self


def dirac_(conv: nn.Conv2d) -> nn.Conv2d:
    """Identity initialisation of the first min(in, out) filters (the rest keep their random init): at the start
    each such channel passes its input through, which lets a deep plain stack train fast."""
    with torch.no_grad():
        n = min(conv.in_channels, conv.out_channels)
        torch.nn.init.dirac_(conv.weight[:n])
    return conv


class AirNet(nn.Module):
    """A CIFAR network after airbench's: patch whitening, then per stage conv3x3 - max-pool - BN - GELU - conv3x3 -
    BN - GELU (widths 64/256/256), max-pooling to 1x1 and a linear layer whose logits are scaled by `scale`.
    Its batch norms learn only a shift (scale frozen at 1) and follow the batch quickly (`bn_momentum`, PyTorch's
    weight of the new batch); its convolutions start from identity filters (`dirac_`). A forward pass costs about
    0.24 GFLOP per 32x32 image. `se`: a squeeze-and-excitation gate ends each stage (the candidate improvement).
    Call `fit_whitening(images)` before training."""

    def __init__(self, widths=(64, 256, 256), num_classes: int = 10, *, scale: float = 1 / 9,
                 bn_momentum: float = 0.4, patch: int = 2, se: bool = False):
        super().__init__()
        self.config = dict(widths=list(widths), num_classes=num_classes, scale=scale, bn_momentum=bn_momentum,
                           patch=patch, se=se)
        self.whiten = PatchWhitening(3, patch)
        layers, c_in = [self.whiten, nn.GELU()], self.whiten.out_channels
        for width in widths:
            layers += [dirac_(nn.Conv2d(c_in, width, 3, padding=1, bias=False)), nn.MaxPool2d(2),
                       self._norm(width, bn_momentum), nn.GELU(),
                       dirac_(nn.Conv2d(width, width, 3, padding=1, bias=False)), self._norm(width, bn_momentum),
                       nn.GELU()] + ([SqueezeExcite(width)] if se else [])
            c_in = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes, bias=False))
        self.scale = scale
        self.to(memory_format=torch.channels_last)

    @staticmethod
    def _norm(width: int, momentum: float) -> nn.BatchNorm2d:
        norm = nn.BatchNorm2d(width, momentum=momentum)
        norm.weight.requires_grad_(False)  # only the shift learns
        return norm

    def fit_whitening(self, images: torch.Tensor) -> "AirNet":
        """Set the first layer from (a sample of) the training images, normalised as the network will see them."""
        self.whiten.fit(images)
        return self

    def forward(self, x):
        return self.head(self.features(x.contiguous(memory_format=torch.channels_last))) * self.scale


def airnet_param_groups(model: AirNet, lr: float, weight_decay: float, bias_scaler: float = 64.0) -> list:
    """Optimiser groups after airbench's: the batch norms' shifts learn `bias_scaler` times faster with the same
    decay per step (their weight decay divided by as much); every other trainable tensor at `lr`, listed first."""
    biases = [m.bias for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.bias.requires_grad]
    others = [p for p in model.parameters() if p.requires_grad and all(p is not b for b in biases)]
    return [dict(params=others, lr=lr, weight_decay=weight_decay),
            dict(params=biases, lr=lr * bias_scaler, weight_decay=weight_decay / bias_scaler)]
