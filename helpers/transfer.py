"""Transfer learning: ImageNet backbones (torchvision download or an offline weights file) seen as one
sequence of blocks, partial fine-tuning with batch-norm control, frozen-prefix feature caching, LoRA
adapters, masked fine-tuning, magnitude pruning and post-training int8 quantisation."""
from __future__ import annotations

import io
import os
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import resolve_data_root
from .profiles import DRY_RUN_ENV
from .repro import make_generator

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BACKBONES = ("resnet18", "resnet34", "resnet50", "mobilenet_v2", "tiny")
WEIGHTS_ENV = "WEIGHTS_PATH"
BN_MODES = ("train", "affine", "frozen")


class WeightsMissingError(FileNotFoundError):
    """No pretrained weights could be found or downloaded; the message says where they were looked for."""


def weights_file(name: str) -> str:
    return f"{name}_imagenet1k.pth"


def build_backbone(name: str) -> nn.Module:
    """The torchvision architecture with random weights; 'tiny' is a small random stand-in for smoke tests."""
    import torchvision.models as tvm

    if name not in BACKBONES:
        raise ValueError(f"backbone {name!r} is unknown; choose one of {', '.join(BACKBONES)}")
    if name == "tiny":
        return TinyBackbone()
    return getattr(tvm, name)(weights=None)


def load_pretrained(name: str, weights_path=None, data_root=None, download: bool = True) -> tuple:
    """(backbone with ImageNet weights, where they came from). Looks at `weights_path`, then $WEIGHTS_PATH,
    then DATA_ROOT/weights/<name>_imagenet1k.pth, then torchvision's download. Never falls back to
    random weights silently: 'tiny' is the only backbone without pretrained weights, and says so."""
    model = build_backbone(name)
    if name == "tiny":
        return model, "random initialisation (tiny stand-in backbone, smoke tests only)"
    if os.environ.get(DRY_RUN_ENV):  # a dry run checks shapes and settings; it must not need the download
        return model, f"random initialisation of {name} (dry run: shapes only)"
    candidates = [Path(p).expanduser() for p in (weights_path, os.environ.get(WEIGHTS_ENV)) if p]
    candidates.append(resolve_data_root(data_root) / "weights" / weights_file(name))
    for path in candidates:
        if path.is_file():
            _load_matching(model, torch.load(path, map_location="cpu", weights_only=True), name, path)
            return model, str(path)
    if download:
        import torchvision.models as tvm

        try:
            downloaded = getattr(tvm, name)(weights="DEFAULT")
            return downloaded, f"torchvision {name} weights=DEFAULT (download)"
        except Exception as error:  # no internet, hub unavailable, ...
            reason = f"; the download failed: {type(error).__name__}: {str(error)[:120]}"
    else:
        reason = "; downloading was not allowed"
    raise WeightsMissingError(
        f"no ImageNet weights for {name}: looked at {', '.join(map(str, candidates))}{reason}.\n  fix: put "
        f"torchvision's {name} state_dict at DATA_ROOT/weights/{weights_file(name)} or point {WEIGHTS_ENV} / the "
        f"notebook's WEIGHTS_PATH at it (offline: `bash ../shared/data/prepare.sh data` gives mobilenet_v2)")


def _load_matching(model: nn.Module, state: dict, name: str, path) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(f"{path} does not hold {name} weights: {len(missing)} missing keys (e.g. {missing[:2]}), "
                         f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}), {len(wrong)} of another shape "
                         f"(e.g. {wrong[:2]}); pass the file saved from torchvision.models.{name}")
    model.load_state_dict({k: v.float() for k, v in state.items()})


class TinyBackbone(nn.Module):
    """Four stride-2 conv-BN-ReLU blocks (8..64 channels): a random stand-in with the structure of a real
    backbone (`features`, BN, global pooling) so every code path runs in seconds in tests."""

    def __init__(self, widths=(8, 16, 32, 64)):
        super().__init__()
        layers, c_in = [], 3
        for c_out in widths:
            layers.append(nn.Sequential(nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out),
                                        nn.ReLU(inplace=True)))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.num_features = c_in


def backbone_blocks(name: str, backbone: nn.Module) -> tuple:
    """(list of blocks in input-to-output order, width of the pooled features)."""
    if name.startswith("resnet"):
        stem = nn.Sequential(backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool)
        blocks = [stem] + [b for stage in (backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4)
                           for b in stage]
        return blocks, backbone.fc.in_features
    if name == "mobilenet_v2":
        return list(backbone.features), backbone.last_channel
    return list(backbone.features), backbone.num_features


class TransferNet(nn.Module):
    """blocks -> global average pooling -> dropout -> linear head.

    `configure(trainable_blocks, bn)` freezes all but the last blocks; batch-norm layers of trainable blocks
    either learn everything ("train": affine + running statistics), keep their statistics ("affine"), or
    stay fixed ("frozen"). Frozen blocks always run in eval mode, so a frozen prefix is a fixed function
    whose output can be cached (`cache_features`).
    """

    def __init__(self, blocks, num_features: int, num_classes: int, dropout: float = 0.2):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(num_features, num_classes))
        self.trainable_blocks, self.bn_mode, self.bn_only = len(self.blocks), "train", False

    @classmethod
    def pretrained(cls, name: str, num_classes: int, dropout: float = 0.2, **weights) -> "TransferNet":
        backbone, source = load_pretrained(name, **weights)
        model = cls._assemble(name, backbone, num_classes, dropout)
        model.weights_source = source
        return model

    @classmethod
    def from_config(cls, config: dict) -> "TransferNet":
        """The architecture of `pretrained(**config)` with random weights (a weights file fills them in)."""
        return cls._assemble(config["backbone"], build_backbone(config["backbone"]), config["num_classes"],
                             config["dropout"])

    @classmethod
    def _assemble(cls, name: str, backbone: nn.Module, num_classes: int, dropout: float) -> "TransferNet":
        model = cls(*backbone_blocks(name, backbone), num_classes, dropout)
        model.backbone_name, model.config = name, dict(backbone=name, num_classes=num_classes, dropout=dropout)
        # channels-last runs MobileNetV2's depthwise convolutions about twice as fast on the CPU (oneDNN)
        return model.to(memory_format=torch.channels_last)

    def forward(self, x):
        return self.forward_from(x, 0)

    def forward_from(self, x, start: int):
        """x is the output of the first `start` blocks (cached features when start > 0)."""
        x = x.contiguous(memory_format=torch.channels_last)
        for block in self.blocks[start:]:
            x = block(x)
        return self.head(self.pool(x).flatten(1))

    @torch.no_grad()
    def prefix(self, x, blocks: int, start: int = 0):
        """The output of block `blocks` - 1, from the input of block `start` (0: images)."""
        x = x.contiguous(memory_format=torch.channels_last)
        for block in self.blocks[start:blocks]:
            x = block(x)
        return x

    @property
    def frozen_prefix(self) -> int:
        return len(self.blocks) - self.trainable_blocks

    def configure(self, trainable_blocks: int, bn: str = "train", bn_only: bool = False) -> "TransferNet":
        """Trainable: the head and the last `trainable_blocks` blocks (with `bn_only`, only their BN affine)."""
        if not 0 <= trainable_blocks <= len(self.blocks):
            raise ValueError(f"trainable_blocks={trainable_blocks}: this network has {len(self.blocks)} blocks")
        if bn not in BN_MODES:
            raise ValueError(f"bn={bn!r}: choose one of {', '.join(BN_MODES)}")
        self.trainable_blocks, self.bn_mode, self.bn_only = trainable_blocks, bn, bn_only
        for i, block in enumerate(self.blocks):
            trainable = i >= self.frozen_prefix
            for module in block.modules():
                is_bn = isinstance(module, nn.modules.batchnorm._BatchNorm)
                learn = trainable and (bn != "frozen" if is_bn else not bn_only)
                for p in module.parameters(recurse=False):
                    p.requires_grad_(learn)
        for p in self.head.parameters():
            p.requires_grad_(True)
        return self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            for i, block in enumerate(self.blocks):
                if i < self.frozen_prefix:
                    block.eval()
                elif self.bn_mode != "train":
                    for module in block.modules():
                        if isinstance(module, nn.modules.batchnorm._BatchNorm):
                            module.eval()
        return self

    def block_groups(self, lr: float, decay: float = 1.0) -> list:
        """Optimizer parameter groups: the head at `lr`, trainable block k (counted from the top, k = 1..)
        at lr * decay**k: discriminative learning rates (decay = 1: one rate for all)."""
        groups = [{"params": [p for p in self.head.parameters() if p.requires_grad], "lr": lr}]
        for depth, block in enumerate(reversed(self.blocks), start=1):
            params = [p for p in block.parameters() if p.requires_grad]
            if params:
                groups.append({"params": params, "lr": lr * decay ** depth})
        return groups


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------------------------
# Frozen-prefix feature caching


class FeatureSet:
    """Cached activations (N, ...) and labels; what TensorLoader batches like images."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, start: int, meta: dict | None = None):
        self.images, self.labels, self.start = features, labels, start
        self.meta = dict(meta or {})  # input_size and synthetic of the images the activations came from

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index) -> "FeatureSet":
        index = torch.as_tensor(index, dtype=torch.long)
        return FeatureSet(self.images[index], self.labels[index], self.start, self.meta)


# Measured on a 2-core AMD EPYC (AVX2), MobileNetV2 at 96-320 px: chunks of about 600k input values (8 images
# at 160 px, 2 at 288 px) ran the prefix 1.4-2.4x faster than batches of 256, with bit-identical features.
CPU_CHUNK_VALUES = 600_000


def is_folded(bn: nn.modules.batchnorm._BatchNorm) -> bool:
    """A batch norm folded into its convolution: identity statistics and scale, only a bias left (the offline
    MobileNetV2's; a freshly built BN also looks like this). Its "frozen vs train statistics" modes compare
    nothing."""
    return bool(bn.affine and bn.track_running_stats and (bn.running_mean == 0).all()
                and (bn.running_var == 1).all() and (bn.weight == 1).all())


@torch.no_grad()
def unfold_batch_norm(model: nn.Module, loader, device="cpu") -> int:
    """Give every folded batch norm of `model` the statistics of its input on `loader`'s images, and the scale and
    shift that undo them: in eval mode the network computes what it did (to float precision), but in train mode
    each BN now normalises with batch statistics around the data's own, as an unfolded pretrained BN would.
    Returns how many layers it changed; a BN that is not folded, or that `model` never runs (e.g. in the prefix a
    transfer.FromBlock skips), is left alone."""
    folded = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and is_folded(m)]
    sums = {bn: [0, 0.0, 0.0] for bn in folded}

    def accumulate(bn, inputs):
        x = inputs[0].double().transpose(0, 1).flatten(1)  # channels x (batch * positions)
        sums[bn][0] += x.shape[1]
        sums[bn][1] = sums[bn][1] + x.sum(1)
        sums[bn][2] = sums[bn][2] + (x * x).sum(1)

    hooks = [bn.register_forward_pre_hook(accumulate) for bn in folded]
    was_training = model.training
    try:
        model.eval()
        for images, _ in loader:
            model(images.to(device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    seen = {bn: totals for bn, totals in sums.items() if totals[0]}  # BNs the forward pass reached
    if folded and not seen:
        raise ValueError("unfold_batch_norm needs inputs: the loader gave none, or the model runs none of its "
                         "batch norms")
    for bn, (n, total, squares) in seen.items():
        mean = total / n
        var = (squares / n - mean * mean).clamp_min(0)
        folded_scale = (1 + bn.eps) ** -0.5  # what the identity BN multiplied by: x / sqrt(1 + eps)
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.weight.copy_((var + bn.eps).sqrt() * folded_scale)
        bn.bias.add_(mean * folded_scale)
    return len(seen)


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, loader, device="cpu") -> int:
    """Re-estimate every batch norm's running statistics on `loader`'s images, weights unchanged: a cumulative
    average over train-mode batches (AdaBN, Li et al., 2016). After pruning, the pruned layers' outputs have moved
    and the stored statistics no longer normalise them. Returns how many layers it re-estimated."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    folded = sum(is_folded(bn) for bn in bns)
    if not bns or folded:
        raise ValueError(f"recalibrate_batch_norm: {folded} of {len(bns)} batch norms are folded into their "
                         "convolutions (or there are none); unfold them first with unfold_batch_norm, or new "
                         "statistics change what the network computes")
    saved = [(bn.momentum, bn.training) for bn in bns]
    was_training = model.training
    model.eval()  # dropout off; only the batch norms see batch statistics
    try:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        for images, _ in loader:
            model(images.to(device))
    finally:
        for bn, (momentum, training) in zip(bns, saved):
            bn.momentum = momentum
            bn.train(training)
        model.train(was_training)
    return len(bns)


@torch.no_grad()
def cache_features(model: TransferNet, loader, blocks: int | None = None, device="cpu", start: int = 0,
                   amp: bool = False) -> FeatureSet:
    """The output of the first `blocks` blocks (default: the whole frozen prefix) for every batch of an
    un-augmented loader of images (start=0) or of features cached at block `start`. Training the rest on
    these is exactly training the whole network with that prefix frozen, minus the prefix's forward pass
    in every epoch."""
    blocks = model.frozen_prefix if blocks is None else blocks
    device = torch.device(device)
    model.eval().to(device)
    outputs, labels = [], []
    for inputs, targets in loader:
        inputs = inputs.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            for chunk in inputs.split(chunk_size(inputs, device)):
                features = model.prefix(chunk, blocks, start)
                if blocks == len(model.blocks):  # only the head is left: keep the pooled vector, not the whole map
                    features = model.pool(features)  # exact: forward_from's pooling of a 1x1 map is the identity
                outputs.append(features.float().cpu())
        labels.append(targets.cpu())
    source = getattr(loader, "meta", {})
    return FeatureSet(torch.cat(outputs), torch.cat(labels), blocks,
                      {k: source[k] for k in ("input_size", "synthetic") if k in source})


def chunk_size(inputs: torch.Tensor, device) -> int:
    """Samples per forward pass of the frozen prefix: the whole batch on an accelerator; on the CPU about
    CPU_CHUNK_VALUES input values, so that a chunk's activations stay in the processor's caches."""
    if torch.device(device).type != "cpu" or len(inputs) == 0:
        return max(1, len(inputs))
    return max(1, min(len(inputs), round(CPU_CHUNK_VALUES / inputs[0].numel())))


def cache_views(model: TransferNet, make_loader, views: int, blocks: int | None = None, device="cpu",
                amp: bool = False) -> FeatureSet:
    """The frozen prefix's output for `views` augmented passes over a set, stacked into one set.

    make_loader(view) returns the set's loader with augmentation seeded by `view` (view 0 may be the
    plain images). One epoch over the result is `views` augmented epochs of the whole network with that
    prefix frozen; what is lost is that the augmentations repeat every `views` epochs instead of being
    fresh, and what is gained is that the prefix, the expensive part, runs `views` times in all."""
    if views < 1:
        raise ValueError(f"views={views} must be at least 1")
    stacked, labels = None, []
    for view in range(views):  # each view is copied into place and freed: no second copy of all views at once
        part = cache_features(model, make_loader(view), blocks, device, amp=amp)
        if stacked is None:
            stacked = torch.empty((views * len(part), *part.images.shape[1:]), dtype=part.images.dtype)
            if part.images.dim() == 4 and part.images.is_contiguous(memory_format=torch.channels_last):
                stacked = stacked.contiguous(memory_format=torch.channels_last)
        stacked[view * len(part):(view + 1) * len(part)] = part.images
        labels.append(part.labels)
    return FeatureSet(stacked, torch.cat(labels), part.start, part.meta)


def group_probabilities(probabilities: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """(N, G) probabilities of coarse groups from (N, C) fine-class probabilities, summed over each group's
    classes (groups[c] = group id of class c), e.g. cat vs dog from the 37 breeds."""
    if probabilities.shape[1] != len(groups):
        raise ValueError(f"{probabilities.shape[1]} classes but {len(groups)} group ids: one id per class")
    probabilities = probabilities.float()
    index = groups.to(probabilities.device).long().expand_as(probabilities)
    return torch.zeros(len(probabilities), int(groups.max()) + 1,
                       device=probabilities.device).scatter_add_(1, index, probabilities)


class FeatureCache:
    """Every split's activations entering one block, computed on first use (the slow part: the frozen backbone's
    forward pass over all images), so a replay that trains nothing never pays for it. Activations at deeper blocks
    are derived on demand; the pooled features and the last other block derived are kept, because experiments
    come in runs at one boundary. A cache serves models whose frozen blocks hold its backbone's weights."""

    def __init__(self, model: TransferNet, loaders, block: int, device="cpu"):
        """`loaders`: {split: loader of images}, or a function returning them (built only when needed)."""
        self.block, self.device = block, device
        self._model, self._loaders = model, loaders
        self._sets, self._derived, self._seconds = None, {}, None

    @property
    def sets(self) -> dict:
        if self._sets is None:
            started = time.perf_counter()
            loaders = self._loaders() if callable(self._loaders) else self._loaders
            self._sets = {name: cache_features(self._model, loader, self.block, self.device)
                          for name, loader in loaders.items()}
            self._seconds = time.perf_counter() - started
            self._check = frozen_weights_sum(self._model, self.block)
            self._model = self._loaders = None  # the images' loaders can be freed
        return self._sets

    @property
    def seconds(self) -> float:
        """How long the forward pass over every split took (computing it if it has not run)."""
        self.sets  # noqa: B018 (computes on first use)
        return self._seconds

    @property
    def computed(self) -> bool:
        return self._sets is not None

    def at(self, model: TransferNet, block: int | None = None) -> dict:
        """{split: FeatureSet at `block`} (default: the model's frozen prefix)."""
        block = model.frozen_prefix if block is None else block
        if block < self.block:
            raise ValueError(f"features are cached from block {self.block}; block {block} lies before it: "
                             f"cache from an earlier block to fine-tune {len(model.blocks) - block} blocks")
        sets = self.sets
        if frozen_weights_sum(model, self.block) != self._check:
            raise ValueError("this model's blocks before the cached one differ from the cached backbone's: its "
                             "activations would be another network's; cache them from this model")
        if block == self.block:
            return sets
        key = (block, frozen_weights_sum(model, block))  # derived through this model's own blocks
        if key not in self._derived:
            pooled = len(model.blocks)  # one pooled set and one other block are kept: each replaces its own kind
            self._derived = {k: v for k, v in self._derived.items() if (k[0] == pooled) != (block == pooled)}
            self._derived[key] = {name: carry_on(model, fs, block, self.device) for name, fs in sets.items()}
        return self._derived[key]


def frozen_weights_sum(model: TransferNet, block: int) -> float:
    """A fingerprint of the first `block` blocks' parameters and buffers (sum and sum of squares, in float64)."""
    values = [t.detach().double() for b in model.blocks[:block] for t in (*b.parameters(), *b.buffers())
              if t.is_floating_point()]
    return round(sum(float(v.sum() + (v * v).sum()) for v in values), 6)


def carry_on(model: TransferNet, features: FeatureSet, block: int, device="cpu") -> FeatureSet:
    """Activations at `block` from activations cached at an earlier one, through the frozen blocks between
    (the same set when it is cached at `block` already)."""
    from .data import TensorLoader

    if block == features.start:
        return features
    return cache_features(model, TensorLoader(features, 512, device=device), block, device, start=features.start)


class FromBlock(nn.Module):
    """The network from block `start` on: what trains on cached features (shares the model's weights)."""

    def __init__(self, model: TransferNet, start: int):
        super().__init__()
        self.model, self.start = model, start
        self.config = dict(model=getattr(model, "config", None), start=start)

    @classmethod
    def from_config(cls, config: dict) -> "FromBlock":
        return cls(TransferNet.from_config(config["model"]), config["start"])

    def forward(self, x):
        return self.model.forward_from(x, self.start)

    def extra_repr(self) -> str:
        return f"start={self.start}"  # in the repr, so a checkpoint fingerprint tells runs from other blocks apart

    def train(self, mode: bool = True):
        self.training = mode
        self.model.train(mode)
        return self


# ----------------------------------------------------------------------------------------------
# LoRA adapters (Hu et al., 2022), written out: W x + (alpha / r) B A x, with B = 0 at the start


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None):
        super().__init__()
        self.base, self.rank, self.scale = base, rank, (alpha or rank) / rank
        self.A = nn.Parameter(torch.randn(rank, base.in_features) / base.in_features ** 0.5)
        self.B = nn.Parameter(torch.zeros(base.out_features, rank))
        base.requires_grad_(False)

    def forward(self, x):
        return self.base(x) + self.scale * F.linear(F.linear(x, self.A), self.B)

    def merged(self) -> nn.Linear:
        layer = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        with torch.no_grad():
            layer.weight.copy_(self.base.weight + self.scale * self.B @ self.A)
            if self.base.bias is not None:
                layer.bias.copy_(self.base.bias)
        return layer


class LoRAConv2d(nn.Module):
    """A: a rank-r convolution with the base's kernel, stride and padding; B: a 1x1 convolution back to
    the output channels. Their product is a kernel of the base's shape, so the update merges exactly."""

    def __init__(self, base: nn.Conv2d, rank: int, alpha: float | None = None):
        super().__init__()
        if base.groups != 1:
            raise ValueError("LoRA on grouped/depthwise convolutions is not supported (their kernels are tiny)")
        self.base, self.rank, self.scale = base, rank, (alpha or rank) / rank
        fan_in = base.in_channels * base.kernel_size[0] * base.kernel_size[1]
        self.A = nn.Parameter(torch.randn(rank, base.in_channels, *base.kernel_size) / fan_in ** 0.5)
        self.B = nn.Parameter(torch.zeros(base.out_channels, rank, 1, 1))
        base.requires_grad_(False)

    def forward(self, x):
        b = self.base
        low = F.conv2d(x, self.A, None, b.stride, b.padding, b.dilation)
        return b(x) + self.scale * F.conv2d(low, self.B)

    def delta(self) -> torch.Tensor:
        return self.scale * (self.B.flatten(1) @ self.A.flatten(1)).view_as(self.base.weight)

    def merged(self) -> nn.Conv2d:
        b = self.base
        layer = nn.Conv2d(b.in_channels, b.out_channels, b.kernel_size, b.stride, b.padding, b.dilation,
                          bias=b.bias is not None)
        with torch.no_grad():
            layer.weight.copy_(b.weight + self.delta())
            if b.bias is not None:
                layer.bias.copy_(b.bias)
        return layer


def add_lora(model: TransferNet, rank: int, alpha: float | None = None, last_blocks: int | None = None) -> int:
    """Freeze the backbone and wrap every linear and non-grouped convolution of its (last `last_blocks`)
    blocks in a LoRA adapter; the head stays fully trainable. Returns the number of adapted layers."""
    for p in model.blocks.parameters():
        p.requires_grad_(False)
    last_blocks = len(model.blocks) if last_blocks is None else last_blocks
    # The earlier blocks are a frozen, cacheable prefix; batch-norm statistics stay as pretrained.
    model.trainable_blocks, model.bn_mode, adapted = last_blocks, "frozen", 0
    for parent in [m for block in model.blocks[len(model.blocks) - last_blocks:] for m in block.modules()]:
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, child_name, LoRALinear(child, rank, alpha))
            elif isinstance(child, nn.Conv2d) and child.groups == 1:
                setattr(parent, child_name, LoRAConv2d(child, rank, alpha))
            else:
                continue
            adapted += 1
    return adapted


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace each adapter by one plain layer holding W + (alpha / r) B A: no extra cost at inference."""
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, (LoRALinear, LoRAConv2d)):
                setattr(parent, child_name, child.merged().to(child.B.device))
    return model


# ----------------------------------------------------------------------------------------------
# Masked fine-tuning: only a chosen small subset of the backbone's weights may change


def select_weights(model: TransferNet, fraction: float, criterion: str, loader=None, task=None, device="cpu",
                   batches: int = 4, seed: int = 2023, forward=None) -> dict:
    """{parameter name in model.blocks: bool mask} over the weights of the trainable blocks, `fraction` of
    them selected globally by 'gradient' (largest accumulated |gradient| on a few training batches: the
    weights the task pulls on hardest), 'magnitude' (largest |w|) or 'random'. `forward` runs a batch of
    the loader (default: the model; a FromBlock for cached activations)."""
    if criterion not in ("gradient", "magnitude", "random"):
        raise ValueError(f"criterion={criterion!r}: choose gradient, magnitude or random")
    named = [(f"{i}.{n}", p) for i in range(model.frozen_prefix, len(model.blocks))
             for n, p in model.blocks[i].named_parameters()]
    if criterion == "gradient":
        if loader is None or task is None:
            raise ValueError("criterion='gradient' needs a training loader and a task")
        forward = forward or model
        scores = {n: torch.zeros_like(p) for n, p in named}
        flags = {n: p.requires_grad for n, p in named}
        for _, p in named:
            p.requires_grad_(True)
        forward.to(device).eval()
        for step, (x, y) in enumerate(loader):
            if step == batches:
                break
            model.zero_grad(set_to_none=True)
            task.loss(forward(x.to(device)), y.to(device)).backward()
            for n, p in named:
                scores[n] += p.grad.abs()
        model.zero_grad(set_to_none=True)
        for n, p in named:
            p.requires_grad_(flags[n])
    elif criterion == "magnitude":
        scores = {n: p.detach().abs() for n, p in named}
    else:
        generator = make_generator(seed)
        scores = {n: torch.rand(p.shape, generator=generator).to(p.device) for n, p in named}
    flat = torch.cat([s.flatten() for s in scores.values()])
    k = max(1, round(fraction * flat.numel()))
    threshold = torch.topk(flat, k).values.min()
    return {n: s >= threshold for n, s in scores.items()}


def restrict_updates(model: TransferNet, masks: dict) -> list:
    """Zero the gradient of every unselected backbone weight (hooks; remove with `h.remove()`); blocks
    without a mask are frozen. With an optimiser without weight decay (Adam/SGD/AdamW with
    weight_decay=0) the unselected weights then never move."""
    handles = []
    for name, p in model.blocks.named_parameters():
        mask = masks.get(name)
        p.requires_grad_(mask is not None and bool(mask.any()))
        if p.requires_grad:
            handles.append(mask_gradient(p, mask))
    return handles


def mask_gradient(parameter: torch.Tensor, mask: torch.Tensor):
    """A hook that zeroes `parameter`'s gradient where `mask` is False (its handle: `.remove()` undoes it)."""
    return parameter.register_hook(lambda grad: grad * mask.to(grad.dtype))


# ----------------------------------------------------------------------------------------------
# Compression: magnitude pruning and post-training int8 quantisation


def prunable(model: nn.Module) -> list:
    """The conv/linear layers pruning touches: not the first convolution (3 input channels) and not depthwise
    convolutions (9 weights per channel): both hold a tiny share of the weights, and removing any of them
    wipes out a whole input or feature channel. The usual exclusions (Zhu & Gupta, 2018)."""
    def eligible(m):
        if isinstance(m, nn.Linear):
            return True
        return isinstance(m, nn.Conv2d) and m.in_channels > 3 and m.groups == 1
    return [(n, m) for n, m in model.named_modules() if eligible(m)]


@torch.no_grad()
def prune_magnitude(model: nn.Module, sparsity: float, scope: str = "layer") -> float:
    """Zero the smallest-|w| weights of every conv/linear layer: `sparsity` of each layer ("layer"), or of
    all of them together ("global"). Returns the achieved fraction of zero weights."""
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity={sparsity} must be in [0, 1)")
    layers = [m for _, m in prunable(model)]
    if scope == "global":
        flat = torch.cat([m.weight.abs().flatten() for m in layers])
        k = round(sparsity * flat.numel())
        cut = torch.kthvalue(flat.cpu(), k).values if k else None
        for m in layers:
            if cut is not None:
                m.weight.mul_(m.weight.abs() > cut.to(m.weight.device))
    elif scope == "layer":
        for m in layers:
            k = round(sparsity * m.weight.numel())
            if k:
                keep = torch.ones(m.weight.numel(), dtype=torch.bool, device=m.weight.device)
                keep[m.weight.abs().flatten().argsort()[:k]] = False
                m.weight.mul_(keep.view(m.weight.shape))
    else:
        raise ValueError(f"scope={scope!r}: choose layer or global")
    return weight_sparsity(model)


def hold_pruned(model: nn.Module) -> list:
    """Keep the zeroed weights of every prunable layer at zero while the rest trains: hooks that zero their
    gradients (remove with `h.remove()`). A fresh optimiser then never moves them (AdamW's decoupled decay of 0
    is 0); layers that do not train need no hook."""
    handles = []
    for _, m in prunable(model):
        if m.weight.requires_grad:
            handles.append(mask_gradient(m.weight, (m.weight != 0).detach()))
    return handles


def prune_gradually(model: nn.Module, sparsities, fine_tune, scope: str = "layer") -> list:
    """Prune to each sparsity in increasing order, fine-tuning after every step with the pruned weights held at
    zero (gradual pruning recovers what one-shot pruning loses; Zhu & Gupta, 2018). `fine_tune(model, sparsity)`
    trains `model` in place and returns what the caller records; returns [(achieved sparsity, that result)]."""
    steps = []
    for sparsity in sorted(sparsities):
        achieved = prune_magnitude(model, sparsity, scope)  # earlier zeros are the smallest |w|: they stay pruned
        handles = hold_pruned(model)
        try:
            steps.append((achieved, fine_tune(model, sparsity)))
        finally:
            for handle in handles:
                handle.remove()
    return steps


def weight_sparsity(model: nn.Module) -> float:
    layers = [m for _, m in prunable(model)]
    zeros = sum(int((m.weight == 0).sum()) for m in layers)
    return zeros / max(1, sum(m.weight.numel() for m in layers))


def sparse_size_bytes(model: nn.Module, value_bytes: int = 4) -> int:
    """Storage if every prunable layer kept its non-zero values plus a one-bit-per-weight mask of where they
    are (smaller than dense from about 3 % sparsity on); everything else dense."""
    pruned = {id(m.weight) for _, m in prunable(model)}
    size = 0
    for p in model.state_dict(keep_vars=True).values():
        if id(p) in pruned:
            size += int((p != 0).sum()) * value_bytes + -(-p.numel() // 8)
        else:
            size += p.numel() * p.element_size()
    return size


def quantize_symmetric(weight: torch.Tensor, bits: int = 8) -> tuple:
    """Per-output-channel symmetric quantisation: (integers in [-(2^(b-1)-1), 2^(b-1)-1], scales) with
    weight ≈ q * scale and an error of at most scale / 2 per entry."""
    levels = 2 ** (bits - 1) - 1
    flat = weight.flatten(1) if weight.ndim > 1 else weight.view(-1, 1)
    scale = (flat.abs().amax(1) / levels).clamp(min=1e-12)
    q = torch.round(flat / scale[:, None]).clamp(-levels, levels).to(torch.int8)
    return q.view_as(weight), scale


def quantize_int8(model: nn.Module, calibration, example: torch.Tensor, batches: int = 8) -> nn.Module:
    """Post-training static int8 quantisation (PyTorch FX, x86 backend): weights per channel, activations
    calibrated on a few batches. The result runs on the CPU."""
    import copy
    import warnings

    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    float_model = copy.deepcopy(model).cpu().eval()
    with warnings.catch_warnings(), _nondeterministic_allowed():
        warnings.simplefilter("ignore")  # FX quantisation is in maintenance mode and says so at every call
        prepared = prepare_fx(float_model, get_default_qconfig_mapping("x86"), (example.cpu(),))
        with torch.no_grad():
            for step, (x, _) in enumerate(calibration):
                if step == batches:
                    break
                prepared(x.cpu())
        return Int8Model(convert_fx(prepared))


class _nondeterministic_allowed:
    """Quantised kernels have no 'deterministic' flag and warn at every call under
    torch.use_deterministic_algorithms (set by seed_everything); they are deterministic on the CPU anyway."""

    def __enter__(self):
        self.previous = (torch.are_deterministic_algorithms_enabled(),
                         torch.is_deterministic_algorithms_warn_only_enabled())
        torch.use_deterministic_algorithms(False)

    def __exit__(self, *exc):
        torch.use_deterministic_algorithms(self.previous[0], warn_only=self.previous[1])


class Int8Model(nn.Module):
    """A converted int8 model (CPU): float tensors in, float logits out."""

    def __init__(self, quantized: nn.Module):
        super().__init__()
        self.quantized = quantized

    def forward(self, x):
        with _nondeterministic_allowed():
            return self.quantized(x.cpu())


def serialized_size_bytes(model: nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


@torch.no_grad()
def latency_ms(model: nn.Module, example: torch.Tensor, repeats: int = 20) -> float:
    """Median wall time of one forward pass of `example` (after two warm-up passes), in milliseconds."""
    model.eval()
    for _ in range(2):
        model(example)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(example)
        times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[len(times) // 2]


# ----------------------------------------------------------------------------------------------
# Semi-supervised learning


def pseudo_labels(logits: torch.Tensor, threshold: float, per_class: int = 0) -> tuple:
    """(indices, labels) of the unlabelled samples whose top softmax probability reaches `threshold`, plus, with
    `per_class`, the `per_class` most confident samples predicted for each class even below it: a model trained
    on few labels is rarely that confident, and a fixed threshold alone may then pseudo-label nothing (or only the
    easiest classes). Sorted by index."""
    confidence, labels = logits.softmax(1).max(1)
    keep = confidence >= threshold
    for c in labels.unique():
        members = torch.nonzero(labels == c).flatten()
        keep[members[confidence[members].argsort(descending=True)[:per_class]]] = True
    keep = torch.nonzero(keep).flatten()
    return keep, labels[keep]


def labelled_subset(labels: torch.Tensor, fraction: float, seed: int = 2023) -> torch.Tensor:
    """Indices of `fraction` of each class (at least one per class), seeded: the labelled part."""
    generator = make_generator(seed)
    keep = []
    for c in labels.unique():
        members = torch.nonzero(labels == c).flatten()
        n = max(1, round(fraction * len(members)))
        keep.append(members[torch.randperm(len(members), generator=generator)[:n]])
    return torch.cat(keep).sort().values
