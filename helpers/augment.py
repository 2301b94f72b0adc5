"""Batched augmentation on float image tensors (N, C, H, W), on whatever device they live on.

Each augmentation is a callable `(images, labels, generator) -> (images, labels)`, so label-aware
ones (class-conditional flips, MixUp/CutMix) compose with the rest. Random numbers come from the
given CPU generator and are moved to the images' device: results do not depend on the device.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _uniform(n: int, low: float, high: float, generator: torch.Generator, device) -> torch.Tensor:
    return (torch.rand(n, generator=generator) * (high - low) + low).to(device)


class Compose:
    def __init__(self, *augmentations):
        self.augmentations = augmentations

    def __call__(self, images, labels, generator):
        for augmentation in self.augmentations:
            images, labels = augmentation(images, labels, generator)
        return images, labels

    def __repr__(self):
        return f"Compose({', '.join(map(repr, self.augmentations))})"


class Flip:
    """Horizontal flip with probability p. With `classes`, only samples of those classes may flip; with
    `swaps` ({label: label after the flip}), mirror-image pairs such as 'keep left'/'keep right' also
    flip and change label."""

    def __init__(self, p: float = 0.5, classes=None, swaps: dict | None = None):
        self.p, self.swaps = p, dict(swaps or {})
        self.classes = None if classes is None and not swaps else sorted(set(classes or ()) | set(self.swaps))

    def __call__(self, images, labels, generator):
        flip = _uniform(len(images), 0, 1, generator, images.device) < self.p
        if self.classes is not None:
            flip &= torch.isin(labels, torch.tensor(self.classes, device=labels.device))
        if self.swaps:
            table = torch.arange(int(max(labels.max().item(), *self.swaps)) + 1, device=labels.device)
            table[list(self.swaps)] = torch.tensor(list(self.swaps.values()), device=labels.device)
            labels = torch.where(flip, table[labels], labels)
        return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images), labels

    def __repr__(self):
        swaps = f", swaps={self.swaps}" if self.swaps else ""
        return f"Flip(p={self.p}, classes={self.classes}{swaps})"


def shift_crop(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Per-sample crop of size (out_h, out_w) whose top-left corner is (dy, dx): one gather, no loop."""
    n, c = images.shape[:2]
    rows = (dy.view(-1, 1) + torch.arange(out_h, device=images.device)).view(n, 1, out_h, 1)
    cols = (dx.view(-1, 1) + torch.arange(out_w, device=images.device)).view(n, 1, 1, out_w)
    batch = torch.arange(n, device=images.device).view(n, 1, 1, 1)
    channel = torch.arange(c, device=images.device).view(1, c, 1, 1)
    return images[batch, channel, rows, cols]


class Translate:
    """Shift by up to `fraction` of the height/width in x and y; the uncovered border is filled per `fill`."""

    def __init__(self, fraction: float = 0.1, fill: str = "constant"):
        if fill not in ("constant", "reflect", "replicate"):
            raise ValueError(f"fill={fill!r}: choose 'constant', 'reflect' or 'replicate'")
        self.fraction, self.fill = fraction, fill

    def __call__(self, images, labels, generator):
        h, w = images.shape[-2:]
        pad_h, pad_w = round(self.fraction * h), round(self.fraction * w)
        if pad_h == pad_w == 0:
            return images, labels
        padded = F.pad(images, (pad_w, pad_w, pad_h, pad_h), mode=self.fill)
        dy = torch.randint(0, 2 * pad_h + 1, (len(images),), generator=generator).to(images.device)
        dx = torch.randint(0, 2 * pad_w + 1, (len(images),), generator=generator).to(images.device)
        return shift_crop(padded, dy, dx, h, w), labels

    def __repr__(self):
        return f"Translate(fraction={self.fraction}, fill={self.fill!r})"


class RandomCrop:
    """A random size x size window (after optional zero padding), as torchvision's RandomCrop."""

    def __init__(self, size: int, padding: int = 0):
        self.size, self.padding = size, padding

    def __call__(self, images, labels, generator):
        if self.padding:
            images = F.pad(images, (self.padding,) * 4)
        h, w = images.shape[-2:]
        if self.size > min(h, w):
            raise ValueError(f"crop size {self.size} is larger than the images ({h}x{w})")
        dy = torch.randint(0, h - self.size + 1, (len(images),), generator=generator).to(images.device)
        dx = torch.randint(0, w - self.size + 1, (len(images),), generator=generator).to(images.device)
        return shift_crop(images, dy, dx, self.size, self.size), labels

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class CenterCrop:
    def __init__(self, size: int):
        self.size = size

    def __call__(self, images, labels, generator=None):
        return center_crop(images, self.size), labels

    def __repr__(self):
        return f"CenterCrop(size={self.size})"


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    h, w = images.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top:top + size, left:left + size]


class RandomAffine:
    """Rotation (degrees), isotropic scale and shear (degrees) about the centre, one matrix per sample.
    With `masks=True` the labels are segmentation masks and get the very same warp (nearest-neighbour,
    so they stay binary)."""

    def __init__(self, degrees: float = 0.0, scale=(1.0, 1.0), shear: float = 0.0, translate: float = 0.0,
                 masks: bool = False):
        self.degrees, self.scale, self.shear, self.translate = degrees, tuple(scale), shear, translate
        self.masks = masks

    def __call__(self, images, labels, generator):
        n, device = len(images), images.device
        angle = _uniform(n, -self.degrees, self.degrees, generator, device) * math.pi / 180
        scale = _uniform(n, *self.scale, generator, device)
        shear = _uniform(n, -self.shear, self.shear, generator, device) * math.pi / 180
        shift = _uniform(2 * n, -self.translate, self.translate, generator, device).view(n, 2) * 2
        cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
        # Inverse map for grid_sample: output pixel -> input location.
        theta = torch.stack([torch.stack([cos, -sin + tan * cos, shift[:, 0]], 1),
                             torch.stack([sin, cos + tan * sin, shift[:, 1]], 1)], 1) / scale.view(n, 1, 1)
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
        if self.masks:
            warped = F.grid_sample(labels.to(images.dtype), grid, mode="nearest", align_corners=False)
            labels = warped.to(labels.dtype)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False), labels

    def __repr__(self):
        masks = ", masks=True" if self.masks else ""
        return (f"RandomAffine(degrees={self.degrees}, scale={self.scale}, shear={self.shear}, "
                f"translate={self.translate}{masks})")


class BrightnessContrast:
    """Multiply brightness by 1±b and stretch contrast about each image's mean by 1±c."""

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0):
        self.brightness, self.contrast = brightness, contrast

    def __call__(self, images, labels, generator):
        n, device = len(images), images.device
        b = _uniform(n, 1 - self.brightness, 1 + self.brightness, generator, device).view(n, 1, 1, 1)
        c = _uniform(n, 1 - self.contrast, 1 + self.contrast, generator, device).view(n, 1, 1, 1)
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        return (images - mean) * c + mean * b, labels

    def __repr__(self):
        return f"BrightnessContrast(brightness={self.brightness}, contrast={self.contrast})"


class PerImageStandardize:
    """Each image to zero mean and unit variance over its own pixels (contrast normalisation):
    GTSRB photos range from night-dark to washed-out, and this removes most of that before the net."""

    def __init__(self, eps: float = 1e-3):
        self.eps = eps

    def __call__(self, images, labels, generator=None):
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        std = images.std(dim=(1, 2, 3), keepdim=True)
        return (images - mean) / (std + self.eps), labels

    def __repr__(self):
        return f"PerImageStandardize(eps={self.eps})"


RESIZE_FILTERS = ("nearest", "bilinear", "bilinear-antialias", "bicubic-antialias", "area")


def _resize(images: torch.Tensor, size: int, method: str) -> torch.Tensor:
    mode, _, antialias = method.partition("-")
    corners = None if mode in ("nearest", "area") else False
    return F.interpolate(images, size=(size, size), mode=mode, align_corners=corners, antialias=bool(antialias))


def resample(images: torch.Tensor, size: int, down: str, up: str = "bilinear") -> torch.Tensor:
    """The images shrunk to `size` with the filter `down` and brought back to their size with `up`: what a
    different resize pipeline in front of the data set would have produced."""
    return _resize(_resize(images, size, down), images.shape[-1], up)


class RandomResample:
    """With probability p, each image is shrunk to a random size (fraction `scale` of its side) with a filter
    drawn from `filters` and brought back bilinearly. The offline GTSRB copy was resized without
    antialiasing, torchvision's download is resized by PIL with it: training on both kinds of aliasing and
    blur keeps the model indifferent to which pipeline made its 32x32 inputs."""

    def __init__(self, p: float = 0.5, scale=(0.6, 1.0), filters=RESIZE_FILTERS):
        unknown = set(filters) - set(RESIZE_FILTERS)
        if unknown:
            raise ValueError(f"unknown resize filters {sorted(unknown)}; choose from {RESIZE_FILTERS}")
        self.p, self.scale, self.filters = p, tuple(scale), tuple(filters)

    def __call__(self, images, labels, generator):
        n, side = len(images), images.shape[-1]
        size = max(2, round(side * float(_uniform(1, *self.scale, generator, "cpu"))))
        which = (_uniform(n, 0, 1, generator, images.device) * len(self.filters)).long()
        keep = _uniform(n, 0, 1, generator, images.device) >= self.p
        out = images.clone()
        for i, method in enumerate(self.filters):
            chosen = torch.nonzero((which == i) & ~keep).flatten()
            if len(chosen):
                out[chosen] = resample(images[chosen], size, method)
        return out, labels

    def __repr__(self):
        return f"RandomResample(p={self.p}, scale={self.scale}, filters={self.filters})"


def shifted_views(images: torch.Tensor, pixels: int = 2) -> list:
    """Four copies shifted by `pixels` up/down/left/right (edges replicated), for test-time averaging."""
    h, w = images.shape[-2:]
    padded = F.pad(images, (pixels,) * 4, mode="replicate")
    offset = lambda d: torch.full((len(images),), d, device=images.device, dtype=torch.long)
    return [shift_crop(padded, offset(dy), offset(dx), h, w)
            for dy, dx in ((0, pixels), (2 * pixels, pixels), (pixels, 0), (pixels, 2 * pixels))]


class RandomErasing:
    """With probability p, fill one random rectangle (area fraction `scale`, aspect 0.3-3.3) of each image
    with noise (Zhong et al., 2020; Cutout with random size)."""

    def __init__(self, p: float = 0.5, scale=(0.02, 0.25)):
        self.p, self.scale = p, tuple(scale)

    def __call__(self, images, labels, generator):
        n, _, h, w = images.shape
        device = images.device
        area = _uniform(n, *self.scale, generator, device) * h * w
        aspect = torch.exp(_uniform(n, math.log(0.3), math.log(1 / 0.3), generator, device))
        eh = (area * aspect).sqrt().round().clamp(1, h)
        ew = (area / aspect).sqrt().round().clamp(1, w)
        top = (_uniform(n, 0, 1, generator, device) * (h - eh + 1)).floor()
        left = (_uniform(n, 0, 1, generator, device) * (w - ew + 1)).floor()
        rows = torch.arange(h, device=device).view(1, h, 1)
        cols = torch.arange(w, device=device).view(1, 1, w)
        box = (rows >= top.view(n, 1, 1)) & (rows < (top + eh).view(n, 1, 1)) & \
              (cols >= left.view(n, 1, 1)) & (cols < (left + ew).view(n, 1, 1))
        box &= (_uniform(n, 0, 1, generator, device) < self.p).view(n, 1, 1)
        noise = torch.rand(images.shape, generator=generator).to(device, images.dtype)
        return torch.where(box.unsqueeze(1), noise, images), labels

    def __repr__(self):
        return f"RandomErasing(p={self.p}, scale={self.scale})"


def _soft(labels, num_classes):
    return labels if labels.ndim == 2 else F.one_hot(labels, num_classes).float()


class MixUp:
    """Blend each image with another of the batch, weight lambda ~ Beta(alpha, alpha), and blend the
    one-hot labels alike (Zhang et al., 2018). Labels become (N, classes) soft targets."""

    def __init__(self, num_classes: int, alpha: float = 0.2):
        self.num_classes, self.alpha = num_classes, alpha

    def __call__(self, images, labels, generator):
        lam = _beta(self.alpha, generator)
        perm = torch.randperm(len(images), generator=generator).to(images.device)
        soft = _soft(labels, self.num_classes)
        return lam * images + (1 - lam) * images[perm], lam * soft + (1 - lam) * soft[perm]

    def __repr__(self):
        return f"MixUp(num_classes={self.num_classes}, alpha={self.alpha})"


class CutMix:
    """Paste a random box of another image of the batch (area 1 - lambda, lambda ~ Beta(alpha, alpha)) and
    mix the labels by the pasted area (Yun et al., 2019)."""

    def __init__(self, num_classes: int, alpha: float = 1.0):
        self.num_classes, self.alpha = num_classes, alpha

    def __call__(self, images, labels, generator):
        n, _, h, w = images.shape
        lam = _beta(self.alpha, generator)
        cut_h, cut_w = round(h * math.sqrt(1 - lam)), round(w * math.sqrt(1 - lam))
        cy, cx = (int(torch.randint(d, (1,), generator=generator)) for d in (h, w))
        top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, h)
        left, right = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, w)
        perm = torch.randperm(n, generator=generator).to(images.device)
        mixed = images.clone()
        mixed[:, :, top:bottom, left:right] = images[perm, :, top:bottom, left:right]
        kept = 1 - (bottom - top) * (right - left) / (h * w)  # the label weight is the area actually kept
        soft = _soft(labels, self.num_classes)
        return mixed, kept * soft + (1 - kept) * soft[perm]

    def __repr__(self):
        return f"CutMix(num_classes={self.num_classes}, alpha={self.alpha})"


def _beta(alpha: float, generator: torch.Generator) -> float:
    """Beta(alpha, alpha) from the given generator, as G1 / (G1 + G2) of two Gamma(alpha) samples."""
    g1, g2 = _gamma(alpha, generator), _gamma(alpha, generator)
    return g1 / (g1 + g2)


def _gamma(alpha: float, generator: torch.Generator) -> float:
    """Gamma(alpha, 1) by Marsaglia & Tsang (2000); torch's own sampler takes no generator."""
    boost = 1.0
    if alpha < 1:  # Gamma(a) = Gamma(a + 1) * U^(1/a)
        boost, alpha = float(torch.rand(1, generator=generator)) ** (1 / alpha), alpha + 1
    d = alpha - 1 / 3
    c = 1 / math.sqrt(9 * d)
    while True:
        x = float(torch.randn(1, generator=generator))
        v = (1 + c * x) ** 3
        if v > 0 and math.log(float(torch.rand(1, generator=generator))) < 0.5 * x * x + d - d * v + d * math.log(v):
            return d * v * boost
