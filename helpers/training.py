"""One training loop for every notebook: history, best-on-validation selection, schedules, AMP, resume.

A *task* supplies the loss and the per-sample metrics (classification here; segmentation and
sequence notebooks pass their own object with the same two methods), so the loop itself is never
written twice.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw")
SCHEDULERS = (None, "cosine", "warmup_cosine", "step", "cosine_restarts", "onecycle", "triangle")
TRIANGLE = (0.2, 0.07)  # "triangle" (airbench's): the factor rises from 0.2 to 1 over the warm-up, then falls to 0.07


@dataclass
class TrainConfig:
    """Everything that decides how a model trains; also what a checkpoint must match to be resumed."""

    epochs: int
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    scheduler: str | None = None
    warmup_epochs: float = 0.0
    step_every: int = 30           # "step": decay every this many epochs ...
    step_gamma: float = 0.1        # ... by this factor
    restart_every: int = 10        # "cosine_restarts": first cycle length in epochs (doubling)
    steps_per_epoch: int | None = None   # cap on optimisation steps per epoch (smoke budgets)
    grad_clip: float | None = None
    amp: bool | str = "auto"       # "auto": float16 autocast on CUDA only
    patience: int | None = None    # plateau rule: stop once the monitored value has not improved by more than
    min_delta: float = 0.0         # min_delta for `patience` epochs in a row (None: train all epochs)
    lookahead_every: int | None = None  # Lookahead: every k steps the slow weights move by lookahead_alpha
    lookahead_alpha: float = 0.5        # towards the fast ones, which restart from them (None: off)
    lookahead_ramp: float | None = None  # airbench's EMA ramp: alpha falls from 1 to lookahead_alpha as (t/T)^ramp
    stop_at: float | None = None   # target rule: stop once the monitored value has reached this (e.g. 0.85 val acc)

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={self.optimizer!r} is unknown; choose one of {', '.join(OPTIMIZERS)}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler={self.scheduler!r} is unknown; choose one of {SCHEDULERS}")
        if self.epochs < 1 or self.lr <= 0:
            raise ValueError(f"epochs={self.epochs} and lr={self.lr} must be positive")
        if self.amp not in (True, False, "auto"):
            raise ValueError(f"amp={self.amp!r}: use True, False or 'auto'")
        if self.patience is not None and (self.patience < 1 or self.min_delta < 0):
            raise ValueError(f"patience={self.patience} must be >= 1 and min_delta={self.min_delta} >= 0")
        if self.lookahead_every is not None and (self.lookahead_every < 1 or not 0 < self.lookahead_alpha <= 1):
            raise ValueError(f"lookahead_every={self.lookahead_every} must be >= 1 and lookahead_alpha="
                             f"{self.lookahead_alpha} in (0, 1]")
        if self.lookahead_ramp is not None and (self.lookahead_every is None or self.lookahead_ramp <= 0):
            raise ValueError(f"lookahead_ramp={self.lookahead_ramp} needs lookahead_every and must be positive")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class Classification:
    """Cross-entropy (optionally label-smoothed; soft targets from MixUp/CutMix allowed) and accuracy."""

    monitor, mode = "val_acc", "max"

    def __init__(self, label_smoothing: float = 0.0, class_weights=None):
        self.label_smoothing = label_smoothing
        # Weighted cross-entropy for unbalanced classes (weight of class c ~ 1 / its frequency).
        self.class_weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float)

    def loss(self, outputs, targets):
        weight = None if self.class_weights is None else self.class_weights.to(outputs.device)
        return F.cross_entropy(outputs, targets, weight=weight, label_smoothing=self.label_smoothing)

    def metrics(self, outputs, targets) -> dict:
        """Per-sample values; the loop averages them over the epoch."""
        hard = targets.argmax(1) if targets.ndim == 2 else targets
        return {"loss": F.cross_entropy(outputs, targets, reduction="none"),
                "acc": (outputs.argmax(1) == hard).float()}

    def __repr__(self):
        weights = "" if self.class_weights is None else \
            f", class_weights={[round(w, 6) for w in self.class_weights.tolist()]}"
        return f"Classification(label_smoothing={self.label_smoothing}{weights})"


class Segmentation:
    """Binary segmentation from one logit channel: BCE-with-logits + soft Dice loss; Dice, IoU and pixel
    accuracy per image (each image counts once, however large its foreground).

    BCE gives every pixel a well-behaved gradient; the Dice term optimises the overlap the task is judged
    by and is insensitive to the background's size. Logits smaller than the masks (a net trained at lower
    resolution) are up-sampled bilinearly first, so metrics are always taken at the masks' resolution.
    """

    monitor, mode = "val_dice", "max"

    def __init__(self, dice_weight: float = 1.0, smooth: float = 1.0):
        self.dice_weight, self.smooth = dice_weight, smooth

    @staticmethod
    def _match(outputs, targets):
        if outputs.shape[-2:] != targets.shape[-2:]:
            outputs = F.interpolate(outputs, size=targets.shape[-2:], mode="bilinear", align_corners=False)
        return outputs, targets.float()

    def loss(self, outputs, targets):
        outputs, targets = self._match(outputs, targets)
        bce = F.binary_cross_entropy_with_logits(outputs, targets)
        return bce + self.dice_weight * (1 - soft_dice(torch.sigmoid(outputs), targets, self.smooth)).mean()

    def metrics(self, outputs, targets) -> dict:
        outputs, targets = self._match(outputs, targets)
        predicted = (outputs > 0).float()
        bce = F.binary_cross_entropy_with_logits(outputs, targets, reduction="none").flatten(1).mean(1)
        soft = soft_dice(torch.sigmoid(outputs), targets, self.smooth)
        return {"loss": bce + self.dice_weight * (1 - soft), **overlap_scores(predicted, targets)}

    def __repr__(self):
        return f"Segmentation(dice_weight={self.dice_weight}, smooth={self.smooth})"


def soft_dice(probabilities, targets, smooth: float = 1.0):
    """Per-image soft Dice (2|P.T| + s) / (|P| + |T| + s) on probabilities."""
    p, t = probabilities.flatten(1), targets.flatten(1)
    return (2 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)


def overlap_scores(predicted, targets) -> dict:
    """Per-image Dice, IoU and pixel accuracy of binary masks; an empty prediction of an empty mask scores 1."""
    p, t = predicted.flatten(1).float(), targets.flatten(1).float()
    intersection, total = (p * t).sum(1), p.sum(1) + t.sum(1)
    union = total - intersection
    empty = total == 0
    dice = torch.where(empty, torch.ones_like(total), 2 * intersection / total.clamp(min=1))
    iou = torch.where(empty, torch.ones_like(total), intersection / union.clamp(min=1))
    return {"dice": dice, "iou": iou, "pixel_acc": (p == t).float().mean(1)}


@dataclass
class History:
    """Per-epoch records (train/val loss and metrics, lr, time) and per-iteration training loss."""

    epochs: list = field(default_factory=list)
    iterations: list = field(default_factory=list)
    best_epoch: int | None = None
    best_value: float | None = None
    monitor: str = "val_acc"
    train_seconds: float = 0.0

    def column(self, key: str) -> list:
        return [record[key] for record in self.epochs]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "History":
        return cls(**data)


class Lookahead:
    """Lookahead (Zhang et al., 2019) over every floating tensor of the model's state, batch-norm statistics
    included (as airbench does): every `every` steps the slow copy moves `alpha` of the way to the trained
    weights, and training continues from the slow copy. It damps the noise of large learning rates. With `ramp`
    (airbench's schedule), alpha starts at 1 (plain training, fast moves early) and falls to `alpha` at step
    `total_steps` as (step / total_steps) ** ramp (strong averaging at the end)."""

    def __init__(self, model: nn.Module, every: int, alpha: float, ramp: float | None = None,
                 total_steps: int | None = None):
        if ramp is not None and not total_steps:
            raise ValueError("a ramped Lookahead needs total_steps")
        self.model, self.every, self.alpha, self.steps = model, every, alpha, 0
        self.ramp, self.total_steps = ramp, total_steps
        self.slow = {k: v.detach().clone() for k, v in self._fast().items()}

    def current_alpha(self) -> float:
        if self.ramp is None:
            return self.alpha
        return 1 - (1 - self.alpha) * min(1.0, self.steps / self.total_steps) ** self.ramp

    def _fast(self) -> dict:
        return {k: v for k, v in self.model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        if self.steps % self.every == 0:
            alpha = self.current_alpha()
            for key, fast in self._fast().items():
                fast.copy_(self.slow[key].lerp_(fast, alpha))

    def state_dict(self) -> dict:
        return {"slow": self.slow, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.slow, self.steps = {k: v.clone() for k, v in state["slow"].items()}, state["steps"]


def make_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer in ("sgd", "nesterov"):
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                               nesterov=config.optimizer == "nesterov")
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(optimizer, config: TrainConfig, steps_per_epoch: int):
    """A per-iteration schedule (stepped after every batch), so warm-up is smooth on short runs."""
    total = config.epochs * steps_per_epoch
    warmup = round(config.warmup_epochs * steps_per_epoch)
    if config.scheduler is None:
        return None
    if config.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                                                   total_steps=total)

    def factor(step: int) -> float:
        if config.scheduler == "triangle":
            start, end = TRIANGLE
            if step < warmup:
                return start + (1 - start) * step / warmup
            return 1 + (end - 1) * (step - warmup) / max(1, total - warmup)
        if step < warmup:
            return (step + 1) / warmup
        if config.scheduler in ("cosine", "warmup_cosine"):
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
        if config.scheduler == "step":
            return config.step_gamma ** ((step // steps_per_epoch) // config.step_every)
        cycle = config.restart_every * steps_per_epoch  # cosine with warm restarts, doubling cycles
        step -= warmup
        while step >= cycle:
            step, cycle = step - cycle, cycle * 2
        return 0.5 * (1 + math.cos(math.pi * step / cycle))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def autocast_settings(device: torch.device, amp) -> tuple:
    """(enabled, dtype, use_grad_scaler). float16 + scaler on CUDA; bfloat16 only when asked for on CPU."""
    if amp == "auto":
        amp = device.type == "cuda"
    if not amp:
        return False, torch.float32, False
    if device.type == "cuda":
        return True, torch.float16, True
    return True, torch.bfloat16, False


def headless() -> bool:
    """True under the suite's runner, CI, or a non-terminal: progress then goes out as short lines."""
    if os.environ.get("HELPERS_HEADLESS") or os.environ.get("CI"):
        return True
    return "ipykernel" not in sys.modules and not sys.stdout.isatty()


def progress(iterable, **kwargs):
    if headless():
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, leave=False, **kwargs)


ADDED_FIELDS = ("stop_at",)


def fingerprint(model: nn.Module, config: TrainConfig, train_loader, task, groups: list | None = None) -> str:
    """What must be equal for a checkpoint to continue this run rather than some other one. `groups`: the
    optimiser's parameter groups when the caller chose them (the config describes only the default one)."""
    # fields added to TrainConfig later enter only when set, so checkpoints written before them still resume
    settings = {k: v for k, v in config.as_dict().items() if not (k in ADDED_FIELDS and v is None)}
    described = {"model": repr(model), "config": settings, "task": repr(task), "batches": len(train_loader),
                 "batch_size": getattr(train_loader, "batch_size", None),
                 "augment": repr(getattr(train_loader, "augment", None))}
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    if frozen:  # repr(model) does not say which weights train; entered only then, so older keys stay valid
        described["frozen"] = frozen
    if groups is not None:  # e.g. a rate per block; loading other groups' state would fail half-way
        described["groups"] = [(len(g["params"]), {k: v for k, v in g.items() if k != "params"}) for g in groups]
    description = json.dumps(described, sort_keys=True)
    return hashlib.sha256(description.encode()).hexdigest()[:16]


def _rng_state(train_loader) -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if hasattr(train_loader, "state_dict"):
        state["loader"] = train_loader.state_dict()
    return state


def _set_rng_state(state: dict, train_loader) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "loader" in state:
        train_loader.load_state_dict(state["loader"])


def _save_atomic(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # a kill during the write leaves the previous checkpoint intact


@torch.no_grad()
def evaluate(model: nn.Module, loader, task=None, device="cpu", amp="auto") -> dict:
    """Mean of the task's per-sample metrics over a loader."""
    task = task or Classification()
    device = torch.device(device)
    enabled, dtype, _ = autocast_settings(device, amp)
    model.eval()
    sums, count = {}, 0
    for inputs, targets in loader:
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=enabled):
            outputs = model(inputs)
        for key, values in task.metrics(outputs.float(), targets).items():
            sums[key] = sums.get(key, 0.0) + values.sum().item()
        count += len(targets)
    return {key: value / max(count, 1) for key, value in sums.items()}


@torch.no_grad()
def predict(model: nn.Module, loader, device="cpu", tta=None) -> tuple:
    """(logits, targets) over a loader; `tta` maps an input batch to extra views whose logits are averaged."""
    device = torch.device(device)
    model.eval()
    outputs, targets = [], []
    for inputs, target in loader:
        inputs = inputs.to(device)
        views = [inputs] + (list(tta(inputs)) if tta else [])
        outputs.append(torch.stack([model(v).float() for v in views]).mean(0).cpu())
        targets.append(target.cpu())
    return torch.cat(outputs), torch.cat(targets)


def accuracy(model: nn.Module, loader, device="cpu", tta=None) -> tuple:
    """(accuracy, predicted classes, targets) over a loader, with optional test-time views (see predict)."""
    logits, targets = predict(model, loader, device, tta)
    predicted = logits.argmax(1)
    return (predicted == targets).float().mean().item(), predicted, targets


def per_class_accuracy(predicted: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Accuracy of each class (index = class); NaN for a class absent from `targets`."""
    correct = torch.bincount(targets[predicted == targets], minlength=num_classes).float()
    total = torch.bincount(targets, minlength=num_classes).float()
    return torch.where(total > 0, correct / total.clamp(min=1), torch.tensor(float("nan")))


def fit(model: nn.Module, train_loader, val_loader, config: TrainConfig, *, task=None, device="cpu",
        checkpoint: str | os.PathLike | None = None, param_groups=None, name: str = "") -> History:
    """Train `model`; keep the weights of the best validation epoch; checkpoint after every epoch.

    With `checkpoint`, a run that was killed and is started again with the same model, config and
    data continues after its last finished epoch, with the same random streams, so it ends exactly
    where an uninterrupted run would have. A finished run is simply loaded back.
    """
    task = task or Classification()
    device = torch.device(device)
    model.to(device)
    steps = min(len(train_loader), config.steps_per_epoch or len(train_loader))
    if steps == 0:
        raise ValueError("the training loader yields no batches; lower batch_size or use more data")
    optimizer = make_optimizer(param_groups if param_groups is not None else model.parameters(), config)
    scheduler = make_scheduler(optimizer, config, steps)
    enabled, dtype, use_scaler = autocast_settings(device, config.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    history, best_state = History(monitor=task.monitor), None
    key = fingerprint(model, config, train_loader, task, optimizer.param_groups if param_groups is not None else None)
    path = Path(checkpoint) if checkpoint else None

    lookahead = Lookahead(model, config.lookahead_every, config.lookahead_alpha, config.lookahead_ramp,
                          config.epochs * steps) if config.lookahead_every else None
    parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler, "lookahead": lookahead}
    if path and path.exists():
        history, best_state = _resume(path, key, parts, train_loader, device, name, config.epochs) or \
            (history, best_state)

    better = (lambda a, b: a > b) if task.mode == "max" else (lambda a, b: a < b)
    report_every = max(1, config.epochs // 20)
    if (config.patience or config.stop_at is not None) and val_loader is None:
        raise ValueError("patience (the plateau rule) and stop_at (the target rule) watch the validation metric: "
                         "give fit a val_loader")
    for epoch in range(len(history.epochs), config.epochs):
        if config.patience and epochs_without_gain(history.column(history.monitor), task.mode,
                                                   config.min_delta) >= config.patience:
            break  # checked before the epoch, so a resumed run that had plateaued does not train on
        if config.stop_at is not None and history.best_value is not None and \
                not better(config.stop_at, history.best_value):
            break  # the target is reached (also checked before the epoch)
        started = time.perf_counter()
        train_stats = _train_epoch(model, train_loader, task, (optimizer, scheduler, scaler, lookahead), config,
                                   device, enabled, dtype, steps, history, epoch)
        val_stats = evaluate(model, val_loader, task, device, config.amp) if val_loader is not None else {}
        seconds = time.perf_counter() - started
        history.train_seconds += seconds
        record = {"epoch": epoch + 1, **{f"train_{k}": v for k, v in train_stats.items()},
                  **{f"val_{k}": v for k, v in val_stats.items()}, "lr": optimizer.param_groups[0]["lr"],
                  "seconds": seconds}
        history.epochs.append(record)
        value = record.get(history.monitor)
        if value is not None and (history.best_value is None or better(value, history.best_value)):
            history.best_epoch, history.best_value = epoch + 1, value
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if headless() and ((epoch + 1) % report_every == 0 or epoch + 1 == config.epochs):
            print(_epoch_line(name, record, config.epochs), flush=True)
        if path:
            state = {k: part.state_dict() if part is not None else None for k, part in parts.items()}
            _save_atomic(dict(state, fingerprint=key, rng=_rng_state(train_loader), history=history.as_dict(),
                              best_state=best_state), path)
    if best_state is not None:
        model.load_state_dict(best_state)
    return history


def epochs_without_gain(values: list, mode: str, min_delta: float) -> int:
    """Epochs since the monitored value last beat its running reference by more than `min_delta`
    (the reference moves only on such a gain, so slow creeping counts as a plateau)."""
    reference, since = None, 0
    for value in values:
        gained = reference is None or (value < reference - min_delta if mode == "min"
                                       else value > reference + min_delta)
        reference, since = (value, 0) if gained else (reference, since + 1)
    return since


def _resume(path: Path, key: str, parts: dict, train_loader, device, name: str, epochs: int):
    """Restore model, optimiser, schedule, scaler and random streams from a checkpoint of this very run;
    a checkpoint of other settings is set aside (never deleted) and None returned."""
    state = torch.load(path, map_location=device, weights_only=False)
    if state.get("fingerprint") != key:
        named = (f"{path.stem}.stale-{state.get('fingerprint', 'old')}{f'-{n}' if n > 1 else ''}{path.suffix}"
                 for n in itertools.count(1))
        stale = next(p for p in map(path.with_name, named) if not p.exists())  # the same run set aside twice
        os.replace(path, stale)
        print(f"{name or 'run'}: {path} belongs to other settings; kept it as {stale.name} and start afresh")
        return None
    for k, part in parts.items():
        if part is not None:
            part.load_state_dict(state[k])
    _set_rng_state(state["rng"], train_loader)
    history = History.from_dict(state["history"])
    print(f"{name or 'run'}: resumed from {path} after epoch {len(history.epochs)}/{epochs}")
    return history, state["best_state"]


def _train_epoch(model, loader, task, stepping, config, device, enabled, dtype, steps, history, epoch) -> dict:
    optimizer, scheduler, scaler, lookahead = stepping
    model.train()
    sums, count, losses = {}, 0, []  # kept on the device: no host sync per step
    batches = progress(loader, total=steps, desc=f"epoch {epoch + 1}/{config.epochs}")
    for step, (inputs, targets) in enumerate(batches):
        if step == steps:
            break
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=enabled):
            outputs = model(inputs)
            loss = task.loss(outputs.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if config.grad_clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        if lookahead is not None:
            lookahead.step()
        with torch.no_grad():
            for key, values in task.metrics(outputs.detach().float(), targets).items():
                sums[key] = sums.get(key, 0.0) + values.sum()
        count += len(targets)
        losses.append(loss.detach())
    losses = torch.stack(losses).float().cpu()
    if not torch.isfinite(losses).all():
        bad = int(torch.nonzero(~torch.isfinite(losses))[0]) + 1
        raise FloatingPointError(f"training loss became {losses[bad - 1].item()} at epoch {epoch + 1}, step {bad}; "
                                 f"lower the learning rate (lr={config.lr}) or set grad_clip")
    first = epoch * steps
    history.iterations.extend({"step": first + i + 1, "loss": v} for i, v in enumerate(losses.tolist()))
    return {key: float(value) / max(count, 1) for key, value in sums.items()}


def _epoch_line(name: str, record: dict, epochs: int) -> str:
    shown = [f"{k}={v:.4f}" for k, v in record.items() if k.startswith(("train_", "val_"))]
    return f"{name + ': ' if name else ''}epoch {record['epoch']}/{epochs} " + " ".join(shown) + \
        f" ({record['seconds']:.1f}s)"
