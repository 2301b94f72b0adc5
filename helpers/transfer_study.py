"""Notebook 02's drivers, built from explicit inputs: the Pet images and the backbone, the study's loaders,
fine-tuning one named configuration (on cached activations or on augmented images), the depth search,
pseudo-labels, the unbalanced set, compression, and the target model's choice among candidate models and
their ensembles by cross-validation on trainval."""
from __future__ import annotations

import copy
import itertools
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from . import data, names, transfer
from .results import sample_sd
from .data import ImageSet, TensorLoader, loader_triple
from .runner import RESULT_COLUMNS, Outcome, Run, require_trained, result_row, run_experiment
from .training import Classification, TrainConfig, accuracy, fit, per_class_accuracy, predict
from .transfer import FeatureSet, TransferNet
from .weights import preprocessing_of

BREEDS = 37
CAT_BREEDS = 12  # the synthetic stand-in calls its first 12 classes cats, as the Pet data has 12 cat breeds
FRAMING_RESIZE = {"crop": "short_side", "whole": "square"}  # centre square crop, or the whole image squashed


# ----------------------------------------------------------------------------------------------
# Images, models and loaders


@dataclass(frozen=True)
class PetImages:
    """Oxford-IIIT Pet trainval/test at any input size, or synthetic stand-ins (`synthetic`, of the given sizes)."""

    data_root: Path
    synthetic: bool = False
    train_limit: int | None = None
    test_limit: int | None = None
    seed: int = 2023

    def load(self, size: int, resize: str = "short_side") -> tuple:
        """(trainval, test) at one input size; resize="square" squashes the whole image instead of cropping it."""
        if self.synthetic:
            trainval = data.synthetic_images(self.train_limit, BREEDS, size=size, seed=self.seed)
            return trainval, data.synthetic_images(self.test_limit, BREEDS, size=size, seed=self.seed + 1)
        return (data.load_pets(self.data_root, "trainval", size=size, resize=resize, download=True),
                data.load_pets(self.data_root, "test", size=size, resize=resize, download=True))

    def splits(self, size: int, holdout: dict, test: bool = False, flipped: tuple = ()) -> dict:
        """{name: images} at one input size: the trainval subsets of `holdout` ({"train": index, "val": index}),
        the test set if asked, and a mirror-image copy "<name>_flip" of each split named in `flipped`."""
        trainval, test_set = self.load(size)
        splits = {name: trainval.subset(index) for name, index in holdout.items()}
        splits |= {"test": test_set} if test else {}
        return splits | {f"{name}_flip": mirrored(splits[name]) for name in flipped}

    def is_dog(self) -> torch.Tensor:
        """Per breed, whether it is a dog breed."""
        return torch.arange(BREEDS) >= CAT_BREEDS if self.synthetic else data.pets_is_dog(self.data_root, download=True)


@dataclass(frozen=True)
class Backbone:
    """Makes the study's models: the pretrained backbone and a new head, seeded so that every experiment
    starts from the same head."""

    name: str
    data_root: Path
    weights_path: str | None = None
    seed: int = 2023

    def __call__(self, num_classes: int = BREEDS, seed: int | None = None) -> TransferNet:
        """The pretrained network with a new head, drawn on `seed` (default: the study's); the backbone never
        depends on `seed` (the tiny stand-in's random "pretrained" weights are drawn on the study's)."""
        torch.manual_seed(self.seed)
        model = TransferNet.pretrained(self.name, num_classes, weights_path=self.weights_path, data_root=self.data_root)
        if seed is not None and seed != self.seed:
            torch.manual_seed(seed)
            model.head[1].reset_parameters()
        return model


def unfold_statistics(loaders: Loaders):
    """A FineTuner `prepare`: give the folded batch norms of the blocks a run trains the statistics of their
    input over its training set (transfer.unfold_batch_norm), from the cached activations it trains on."""
    def prepare(model: TransferNet, train):
        start = getattr(train, "start", 0)  # cached activations enter at their block, images at block 0
        transfer.unfold_batch_norm(transfer.FromBlock(model, start), loaders.make(train), loaders.device)
    return prepare


def batch_norm_folded(model: TransferNet) -> tuple:
    """(number of batch-norm layers, whether all hold running mean 0 and variance 1): weights whose statistics
    were folded into the convolutions, for which re-estimating them changes an identity."""
    bns = [m for m in model.blocks.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    return len(bns), all(bool((m.running_var == 1).all() and (m.running_mean == 0).all()) for m in bns)


def normalisation(dataset) -> dict:
    """ImageNet's mean and std for images; cached activations go in as they are."""
    return {"mean": transfer.IMAGENET_MEAN, "std": transfer.IMAGENET_STD} if isinstance(dataset, ImageSet) else {}


@dataclass(frozen=True)
class Loaders:
    """The study's loader factories, for images and cached activations alike."""

    device: torch.device | str
    batch_size: int
    eval_batch_size: int
    seed: int = 2023

    def make(self, dataset, batch_size: int | None = None, **options) -> TensorLoader:
        """One loader, in order and in evaluation batches unless `options` (TensorLoader's) say otherwise."""
        options = {"device": self.device, **normalisation(dataset), **options}
        return TensorLoader(dataset, batch_size or self.eval_batch_size, **options)

    def cache(self, model: TransferNet, splits, block: int) -> transfer.FeatureCache:
        """Every split's activations entering `block` (len(model.blocks): the pooled features), and their time.
        `splits`: {name: images}, or a function returning them, so that a replay loads no images at all."""
        def image_loaders():
            return {name: self.make(split) for name, split in (splits() if callable(splits) else splits).items()}
        return transfer.FeatureCache(model, image_loaders if callable(splits) else image_loaders(), block, self.device)

    def probabilities(self, model, dataset) -> torch.Tensor:
        """The model's softmax over a dataset (images or cached activations), in order."""
        return predict(model, self.make(dataset), self.device)[0].softmax(1)

    def triple(self, splits: dict, augment=None, sample_weights=None) -> tuple:
        """(train, val, test) loaders of {"train", "val", "test"} splits (a missing one gives None): train
        shuffled, augmented and weighted on the study's seed, no batch dropped; val and test in order."""
        return loader_triple(splits["train"], splits.get("val"), splits.get("test"), self.batch_size,
                             self.eval_batch_size, device=self.device, seed=self.seed, augment=augment,
                             drop_last=False, sample_weights=sample_weights, **normalisation(splits["train"]))


def relabel(splits: dict, mapping: torch.Tensor) -> dict:
    """The same splits (images or cached activations) with label c replaced by mapping[c], e.g. breed ->
    is a dog; their meta is kept, so records still say what the data was."""
    def relabelled(split):
        labels = mapping[split.labels].long()
        if isinstance(split, FeatureSet):
            return FeatureSet(split.images, labels, split.start, split.meta)
        return replace(split, labels=labels)
    return {name: relabelled(split) for name, split in splits.items()}


def mirrored(images: ImageSet) -> ImageSet:
    return replace(images, images=images.images.flip(-1))


# ----------------------------------------------------------------------------------------------
# Fine-tuning one configuration


@dataclass(frozen=True)
class Optimiser:
    """AdamW settings of one run; block k from the top trains at lr * decay**k (discriminative rates)."""

    lr: float
    decay: float = 1.0
    weight_decay: float = 0.0
    scheduler: str | None = "cosine"
    amp: bool | str = False

    def config(self, epochs: int, steps_per_epoch: int | None = None) -> TrainConfig:
        return TrainConfig(epochs=epochs, optimizer="adamw", lr=self.lr, weight_decay=self.weight_decay,
                           scheduler=self.scheduler, amp=self.amp, steps_per_epoch=steps_per_epoch)


class FineTuner:
    """Trains one named configuration of a TransferNet's trainable part through `run_experiment` (a replay
    reads it back): on cached activations at its frozen boundary, or end to end on augmented images."""

    def __init__(self, run: Run, loaders: Loaders, splits: dict, cache: transfer.FeatureCache, optimiser: Optimiser,
                 steps_per_epoch: int | None = None):
        self.run, self.loaders, self.splits, self.cache = run, loaders, splits, cache
        self.optimiser, self.steps_per_epoch = optimiser, steps_per_epoch

    def __call__(self, name: str, model: TransferNet, epochs: int, sets: dict | None = None, *, augment=None,
                 task=None, sample_weights=None, seed: int | None = None, prepare=None, **changes) -> Outcome:
        """`sets`: the splits to train on, or a function returning them (default: the study's activations cached
        at the model's frozen boundary, or its images when `augment` is given); `seed`: the data order's and
        dropout's (default: the study's); `prepare(model, train_set)`: what to do to the model once its training
        inputs exist (e.g. unfold_statistics); `changes`: the Optimiser fields that differ. A replay reads the
        stored record: it computes no activations, builds no loaders and prepares nothing."""
        optimiser = replace(self.optimiser, **changes)
        start, loaders = model.frozen_prefix, (None, None, None)
        if self.run.trains(name):
            start, sets = self.inputs(model, sets() if callable(sets) else sets, augment)
            if prepare is not None:
                prepare(model, sets["train"])
            seeded = self.loaders if seed is None else replace(self.loaders, seed=seed)
            loaders = seeded.triple(sets, augment, sample_weights)
        outcome = run_experiment(self.run, name, lambda: transfer.FromBlock(model, start),
                                 optimiser.config(epochs, self.steps_per_epoch), *loaders,
                                 task=task or Classification(), seed=seed,
                                 param_groups=lambda _: model.block_groups(optimiser.lr, optimiser.decay))
        print(summary_line(outcome, epochs, transfer.trainable_parameters(model)))
        return outcome

    def inputs(self, model: TransferNet, sets: dict | None, augment) -> tuple:
        """(first block the training runs, splits): images enter at block 0, activations where they were cached."""
        if augment is None:
            sets = self.cache.at(model) if sets is None else sets
            return sets["train"].start, sets
        sets = self.splits if sets is None else sets
        if not isinstance(sets["train"], ImageSet):
            raise ValueError("augmentation changes images: pass image splits (or none) together with `augment`")
        return 0, sets

    def trials(self, name: str, make_model, epochs: int, seeds: int, first: Outcome | None = None,
               **options) -> list:
        """`seeds` runs of one configuration for its seed noise: `name` on the study's seed s, then
        `<name>_trial<k>` on seed s + k (the new head's initial weights, the data order and dropout);
        make_model(seed) builds each run's model. `first`: the configuration's run on seed s, when an
        earlier section trained it under `name` already."""
        seed = self.run.seed
        runs = [first] if first is not None else []
        return runs + [self(name if k == 0 else f"{name}_trial{k}", make_model(seed + k), epochs, seed=seed + k,
                            **options) for k in range(len(runs), seeds)]

    def variants(self, prefix: str, make_model, epochs: int, settings: dict) -> dict:
        """{key: outcome}: one run `<prefix>_<key>` per entry of `settings` (keyword arguments of a call),
        each on a fresh make_model()."""
        return {key: self(f"{prefix}_{key}", make_model(), epochs, **options) for key, options in settings.items()}


def measured_from(run: Run, name: str, outcomes: list, compute):
    """run.measured(name, compute) for a value computed from the models of `outcomes`, whose weights are not
    kept: a replayed outcome holds an untrained model, so computing needs them trained in this run (with
    RETRAIN, runner.require_trained names what to add). A stored value whose models re-trained in this run no
    longer describes them: that raises too, naming the record to add."""
    def checked():
        require_trained(run, outcomes, name)
        return compute()
    retrained = [o.name for o in outcomes if run.trains(o.name)]
    if retrained and not run.trains(name):
        raise ValueError(f"{name} was computed from {', '.join(retrained)}, which re-trained in this run: name {name} "
                         "in RETRAIN too, or its stored value describes the old weights")
    return run.measured(name, checked)


@torch.no_grad()
def flip_tta(model, sets: dict, loaders: Loaders) -> dict:
    """Accuracy with and without averaging the prediction of each image and its mirror image, on "val" and
    "test" (with their mirrored "val_flip" and "test_flip"); flip TTA is chosen on validation (a tie keeps the
    plain prediction) and the test accuracy reported is the chosen one's."""
    scores = {}
    for split in ("val", "test"):
        plain, mirrored_view = (loaders.probabilities(model, sets[k]) for k in (split, f"{split}_flip"))
        labels = sets[split].labels
        scores[f"{split}_plain"] = (plain.argmax(1) == labels).float().mean().item()
        scores[f"{split}_flip"] = ((plain + mirrored_view).argmax(1) == labels).float().mean().item()
    flip = scores["val_flip"] > scores["val_plain"]
    return scores | {"flip": flip, "test_acc": scores["test_flip" if flip else "test_plain"]}


class SizeProbe:
    """The input-size probe: at each size, a linear head on the frozen network's pooled features for the 37
    breeds and one for cat vs dog, on the same features, which are computed only when one of them trains (a
    replay loads no image and runs no backbone; the feature pass's stored time is read back)."""

    def __init__(self, run: Run, pets: PetImages, loaders: Loaders, new_model, holdout: dict, is_dog: torch.Tensor,
                 epochs: int, lr: float, steps_per_epoch: int | None = None):
        self.run, self.pets, self.loaders, self.new_model = run, pets, loaders, new_model
        self.holdout, self.is_dog, self.epochs = holdout, is_dog, epochs
        self.probe = FineTuner(run, loaders, {}, None, Optimiser(lr), steps_per_epoch)

    def __call__(self, size: int) -> dict:
        model = self.new_model()
        features = self.loaders.cache(model, lambda: self.pets.splits(size, self.holdout), len(model.blocks))
        breeds = self.probe(f"probe_{size}px", model.configure(0), self.epochs, lambda: features.sets)
        cat_dog = self.probe(f"probe_{size}px_binary", self.new_model(2).configure(0), self.epochs,
                             lambda: relabel(features.sets, self.is_dog))
        cost = self.run.measured(f"probe_{size}px_features", lambda: {"seconds": features.seconds})
        return {"size": size, "val": breeds.history.best_value, "binary": cat_dog.history.best_value,
                "cache_s": cost["seconds"], "train_s": breeds.record["train_seconds"], "runs": [breeds, cat_dog]}


def smallest_within(rows: list, key: str, tolerance: float) -> int:
    """The smallest input size whose validation accuracy (rows' `key`) lies within `tolerance` of the best."""
    best = max(r[key] for r in rows)
    return min(r["size"] for r in rows if r[key] >= best - tolerance)


def summary_line(outcome: Outcome, epochs: int, trainable: int) -> str:
    test = f", test acc {outcome.test['acc']:.4f}" if outcome.test else ""
    return (f"{outcome.name}: best val acc {outcome.history.best_value:.4f} (epoch {outcome.history.best_epoch}/"
            f"{epochs}){test}, {trainable:,} parameters with gradients, {outcome.record['train_seconds']:.1f}s")


def depth_search(depths, train, min_gain: float) -> dict:
    """{l: train(l)} for l in `depths`, in order, until validation accuracy has gained less than `min_gain`
    over the best so far twice in a row (strategy 1: fine-tune the last l blocks)."""
    runs, best, stalls = {}, None, 0
    for depth in depths:
        runs[depth] = train(depth)
        value = runs[depth].history.best_value
        stalls = stalls + 1 if best is not None and value < best + min_gain else 0
        best = max(value, best or 0)
        if stalls == 2:
            print(f"gains vanished at l = {depth}: stop")
            break
    return runs


# The columns of the study's comparison tables; seconds rather than runner's minutes: most runs take seconds.
STUDY_COLUMNS = {"val": RESULT_COLUMNS["val"], "test": RESULT_COLUMNS["test"], "seconds": ("time (s)", "{:.0f}")}
# a table that mixes single runs and a configuration's seeds: the seeds' row gives means and the test spread
SEEDS_COLUMNS = {"val": RESULT_COLUMNS["val"], "test": RESULT_COLUMNS["test"],
                 "test_sd": ("sd (pp)", lambda v: "--" if v in (None, "") else f"{100 * v:.2f}"),
                 "seconds": ("time (s)", "{:.0f}")}


def study_row(label: str, outcome: Outcome, seconds: float | None = None, **extra) -> dict:
    """runner.result_row plus the training time in seconds (default: the run's own)."""
    seconds = outcome.record["train_seconds"] if seconds is None else seconds
    return result_row(label, outcome, seconds=seconds, **extra)


def study_rows(runs: dict) -> list:
    """One row per {label: outcome}, or per {label: [outcomes of one configuration's seeds]} (seeds_row)."""
    return [seeds_row(label, o) if isinstance(o, list) else study_row(label, o) for label, o in runs.items()]


def histories(runs: dict) -> dict:
    """{label: [histories]} for plots.plot_histories from {label: outcome or [outcomes of its seeds]}."""
    return {label: [o.history for o in (v if isinstance(v, list) else [v])] for label, v in runs.items()}


def test_accuracies(outcomes: list) -> torch.Tensor:
    """The test accuracy of each of a configuration's seeds (FineTuner.trials), e.g. for its mean and spread."""
    return torch.tensor([o.test["acc"] for o in outcomes])


def seeds_row(label: str, outcomes: list) -> dict:
    """One configuration over its seeds (FineTuner.trials): mean validation and test accuracy, the test
    accuracy's sample standard deviation (SEEDS_COLUMNS) and the mean training time."""
    def mean(values):
        return sum(values) / len(values)
    tests = test_accuracies(outcomes).tolist()
    return {"name": f"{label} ({len(outcomes)} seeds)", "val": mean([o.history.best_value for o in outcomes]),
            "test": mean(tests), "test_sd": sample_sd(tests),
            "seconds": mean([o.record["train_seconds"] for o in outcomes])}


# ----------------------------------------------------------------------------------------------
# Unbalanced classes and semi-supervised learning


def cut_index(labels: torch.Tensor, rare: torch.Tensor, keep: float, seed: int) -> torch.Tensor:
    """The indices left when only `keep` of each rare class's samples stay (rare[c]: class c is cut; at least
    one sample per class stays), in the original order."""
    cut = torch.nonzero(rare[labels]).flatten()
    kept = cut[transfer.labelled_subset(labels[cut], keep, seed)]
    others = torch.nonzero(~rare[labels]).flatten()
    return torch.cat([others, kept]).sort().values


def with_train(sets_of, change):
    """A function giving the splits of `sets_of()` with the training split replaced by change(train): what a
    fine-tune trains on, derived only when it trains."""
    def sets() -> dict:
        splits = sets_of()
        return dict(splits, train=change(splits["train"]))
    return sets


def masked_fine_tune(fine_tune: FineTuner, model: TransferNet, fraction: float, criterion: str, epochs: int,
                     seed: int) -> tuple:
    """(outcome, backbone weights that may change): fine-tune only `fraction` of the trainable blocks' weights,
    chosen by `criterion` (transfer.select_weights), on the study's cached activations. The selection is stored
    as masked_<criterion>_selection, so a replay computes neither activations nor gradients."""
    run, loaders, name = fine_tune.run, fine_tune.loaders, f"masked_{criterion}"

    def select():
        sets = fine_tune.cache.at(model)
        masks = transfer.select_weights(model, fraction, criterion, loaders.triple(sets)[0], Classification(),
                                        run.device, seed=seed, forward=transfer.FromBlock(model, sets["train"].start))
        transfer.restrict_updates(model, masks)  # training `name` implies this ran: its family includes it
        return {"backbone_weights": sum(int(m.sum()) for m in masks.values())}
    selected = run.measured(f"{name}_selection", select)
    return fine_tune(name, model, epochs, lambda: fine_tune.cache.at(model)), selected["backbone_weights"]


def accuracy_with_head(model: TransferNet, head: torch.nn.Sequential, features: FeatureSet, loaders: Loaders) -> float:
    """Accuracy of `model`'s blocks from features.start on, read by another network's `head` (e.g. the head
    trained before the blocks changed); `model` keeps its own head."""
    linear = head[-1]
    reader = TransferNet(list(model.blocks), linear.in_features, linear.out_features)
    reader.head.load_state_dict(head.state_dict())
    return accuracy(transfer.FromBlock(reader, features.start).eval(), loaders.make(features), loaders.device)[0]


def per_class_test_accuracy(model, test: FeatureSet, loaders: Loaders, num_classes: int) -> torch.Tensor:
    _, predicted, targets = accuracy(model, loaders.make(test), loaders.device)
    return per_class_accuracy(predicted, targets, num_classes)


def group_accuracy_row(name: str, outcomes: list, test: FeatureSet, loaders: Loaders, is_dog: torch.Tensor) -> dict:
    """Mean per-class test accuracy of the cat and of the dog breeds, and the overall test accuracy, averaged over
    a configuration's seeds (FineTuner.trials); `<key>_seeds` keeps each seed's value, in order, for claims."""
    per_seed = []
    for outcome in outcomes:
        per_class = per_class_test_accuracy(outcome.model, test, loaders, len(is_dog))
        per_seed.append({"cats": per_class[~is_dog].nanmean().item(), "dogs": per_class[is_dog].nanmean().item(),
                         "test": outcome.test["acc"]})
    row = {"loss": name}
    for key in ("cats", "dogs", "test"):
        values = [s[key] for s in per_seed]
        row |= {key: sum(values) / len(values), f"{key}_seeds": values}
    return row


def complement(index: torch.Tensor, n: int) -> torch.Tensor:
    """The positions 0..n-1 not in `index`, in order."""
    return torch.tensor(sorted(set(range(n)) - set(index.tolist())), dtype=torch.long)


def pseudo_label(model, unlabelled: FeatureSet, threshold: float, loaders: Loaders, per_class: int = 0) -> dict:
    """The unlabelled samples the model gives at least `threshold` probability, plus its `per_class` most confident
    ones per predicted class (transfer.pseudo_labels): their positions in `unlabelled`, their pseudo-labels, and
    the share of those that is right (None when there are none)."""
    logits, truth = predict(model, loaders.make(unlabelled), loaders.device)
    keep, labels = transfer.pseudo_labels(logits, threshold, per_class)
    correct = (labels == truth[keep]).float().mean().item() if len(keep) else None
    return {"keep": keep.tolist(), "labels": labels.tolist(), "correct": correct}


def with_pseudo_labels(train: FeatureSet, labelled: torch.Tensor, unlabelled: torch.Tensor, chosen: dict) -> FeatureSet:
    """The labelled samples followed by the pseudo-labelled ones `chosen` (what pseudo_label returned)."""
    keep = torch.tensor(chosen["keep"], dtype=torch.long)
    features = torch.cat([train.images[labelled], train.images[unlabelled[keep]]])
    labels = torch.cat([train.labels[labelled], torch.tensor(chosen["labels"], dtype=torch.long)])
    return FeatureSet(features, labels, train.start, train.meta)


# ----------------------------------------------------------------------------------------------
# Catastrophic forgetting: another task to fine-tune on


def other_task(data_root, task: str, size: int, synthetic: bool, images: int | None, seed: int) -> tuple:
    """(name, training set) of the task that overwrites the backbone: the profile's `task`, Flowers-102
    (downloaded when absent) or `images` real CIFAR-10 images upsampled to `size`; a synthetic stand-in in smoke."""
    if synthetic:
        return "synthetic stand-in", data.synthetic_images(images, 10, size=size, seed=seed + 2)
    if task == "flowers102":
        return "Flowers-102", data.load_flowers102(data_root, "train", size=size, download=True)
    if task == "cifar10":
        cifar = data.load_cifar(data_root, "train", download=True)
        return "CIFAR-10 (upsampled)", upsampled(cifar.limit(images, seed), size)
    raise ValueError(f"forget_task {task!r} is unknown: choose 'flowers102' or 'cifar10' (helpers/profiles.py)")


def upsampled(images: ImageSet, size: int, chunk: int = 500) -> ImageSet:
    """Bilinear upsampling without antialiasing (it only matters when shrinking), back to uint8; `chunk` images
    at a time, so the float copy never holds the whole set (10,000 images at 160 px would take 3 GB)."""
    def up(part):
        bigger = torch.nn.functional.interpolate(part.float(), size=size, mode="bilinear", antialias=False)
        return bigger.round().clamp(0, 255).to(torch.uint8)
    return ImageSet(torch.cat([up(part) for part in images.images.split(chunk)]), images.labels, images.classes)


# ----------------------------------------------------------------------------------------------
# Compression of a trained model


def compression_rows(model, test_loader, calibration, example: torch.Tensor, sparsities) -> list:
    """Test accuracy, size and CPU latency of the float model, of magnitude-pruned copies at each
    sparsity, and of its static int8 quantisation (calibrated on `calibration`)."""
    rows = [compressed_row("float32", model, test_loader, example)]
    for sparsity in sparsities:
        pruned = copy.deepcopy(model)
        achieved = transfer.prune_magnitude(pruned, sparsity)
        rows.append(compressed_row(f"pruned {100 * achieved:.0f}%", pruned, test_loader, example,
                                   transfer.sparse_size_bytes(pruned)) | {"sparsity": achieved})
    quantized = transfer.quantize_int8(model, calibration, example[:1])
    return rows + [compressed_row("int8 (static PTQ)", quantized, test_loader, example)]


# Re-training recipes after each pruning step, chosen on validation: (learning rate as a fraction of the study's,
# whether the batch norms are unfolded, re-estimated after every pruning step and trained, label).
PRUNING_RECIPES = {"held": (0.1, False, names.PRUNING_RECIPES["held"]),
                   "recalibrated": (0.1, True, names.PRUNING_RECIPES["recalibrated"]),
                   "recalibrated_lr": (1.0, True, names.PRUNING_RECIPES["recalibrated_lr"])}


def pruning_curve(model: TransferNet, train_loader, eval_loaders: dict, sparsities, config: TrainConfig, device,
                  calibrate=None) -> list:
    """Gradual magnitude pruning with re-training (transfer.prune_gradually) of a copy of `model`: one row per
    sparsity, in increasing order, with the accuracy on each of `eval_loaders` (name -> loader) right after
    pruning (`pruned_<name>`) and after `config` re-trained every weight with the pruned ones held at zero
    (`<name>`), the re-training time and the sparse size. `calibrate`: a loader of un-augmented training images;
    given, the batch norms are unfolded with its statistics, re-estimated on it after every pruning step and
    updated while re-training; without, they stay fixed."""
    pruned = copy.deepcopy(model).to(device)
    if calibrate is not None:
        transfer.unfold_batch_norm(pruned, calibrate, device)
    pruned.configure(len(pruned.blocks), bn="frozen" if calibrate is None else "train")

    def evaluate(m, prefix=""):
        return {f"{prefix}{name}": accuracy(m, loader, device)[0] for name, loader in eval_loaders.items()}

    def retrain(m, sparsity):
        if calibrate is not None:
            transfer.recalibrate_batch_norm(m, calibrate, device)
        row = {"sparsity": sparsity} | evaluate(m, "pruned_")
        seconds = fit(m, train_loader, None, config, device=device).train_seconds
        return row | evaluate(m) | {"seconds": seconds, "size": transfer.sparse_size_bytes(m)}
    return [row | {"achieved": achieved} for achieved, row in transfer.prune_gradually(pruned, sparsities, retrain)]


def chosen_on_validation(curves: dict) -> str:
    """The re-training recipe whose pruning_curve rows have the highest mean validation accuracy over the
    sparsities (the first on a tie)."""
    return max(curves, key=lambda name: sum(row["val"] for row in curves[name]) / len(curves[name]))


def pruning_rows(curves: dict) -> list:
    """One table row per re-training recipe (PRUNING_RECIPES) and sparsity, from {recipe: pruning_curve rows}."""
    return [{"recipe": PRUNING_RECIPES[name][2]} | row for name, rows in curves.items() for row in rows]


def compressed_row(label: str, model, test_loader, example: torch.Tensor, size: int | None = None) -> dict:
    """size: bytes as stored (default: the serialised state_dict)."""
    return {"model": label, "test": accuracy(model, test_loader, "cpu")[0],
            "size": transfer.serialized_size_bytes(model) if size is None else size,
            "latency_ms": transfer.latency_ms(model, example)}


# ----------------------------------------------------------------------------------------------
# The target model: candidates, their cached views, cross-validation and the final model


@dataclass(frozen=True)
class TargetPlan:
    """The target model's candidates. kinds: kind -> (framing, trainable blocks), framing "crop" or "whole"
    (FRAMING_RESIZE); views: framing -> cached views per trainval image (view 0 plain, the others
    augmented); configs: framing -> TrainConfig; blocks: the backbone's number of blocks."""

    kinds: dict
    views: dict
    configs: dict
    blocks: int

    def cached_at(self, framing: str) -> int:
        """Each framing is cached once, at the input of the deepest block one of its models trains."""
        return self.blocks - max(b for f, b in self.kinds.values() if f == framing)

    def kinds_of(self, framing: str) -> dict:
        return {kind: blocks for kind, (f, blocks) in self.kinds.items() if f == framing}


@dataclass
class TargetSets:
    """Each kind's activations at its own frozen boundary: "trainval" holds the views (view v of image i at
    position v * trainval_images + i), "trainval_flipped", "test" and "test_flipped" the plain and mirrored images.
    view_seconds: the augmented feature passes (and what the models train on), counted as training time.
    preprocessing: framing -> what a model of that framing needs from an image (helpers.weights.Preprocess)."""

    sets: dict
    trainval_images: int
    view_seconds: float
    preprocessing: dict = field(default_factory=dict)

    def relabelled(self, mapping: torch.Tensor) -> TargetSets:
        """The same activations with label c replaced by mapping[c] (e.g. breed -> is a dog); the preprocessing
        is dropped, as its class names no longer apply."""
        return TargetSets({kind: relabel(sets, mapping) for kind, sets in self.sets.items()}, self.trainval_images,
                          self.view_seconds)

    def in_views(self, index: torch.Tensor, views: int) -> torch.Tensor:
        """The positions of these trainval images in every one of `views` cached views."""
        return torch.cat([index + view * self.trainval_images for view in range(views)])


def cache_target_sets(plan: TargetPlan, pets: PetImages, new_model, loaders: Loaders, augment, size: int) -> TargetSets:
    """Cache every framing's views and plain/mirrored images at `size` px (loaded and freed one framing at a
    time: at 288 px the images and activations take GBs)."""
    sets, seconds, seed, preprocessing = {}, 0.0, loaders.seed, {}
    for framing, count in plan.views.items():
        model = new_model().configure(plan.blocks - plan.cached_at(framing), bn="affine")
        framed, spent, images, preprocessing[framing] = cache_framing(plan, framing, model, pets, loaders, augment,
                                                                      size, seed)
        sets, seconds, seed = sets | framed, seconds + spent, seed + count  # no two views share an augmentation
    print(f"augmented feature passes: {seconds / 60:.1f} min")
    return TargetSets(sets, images, seconds, preprocessing)


def cache_framing(plan: TargetPlan, framing: str, model: TransferNet, pets: PetImages, loaders: Loaders, augment,
                  size: int, seed: int) -> tuple:
    """({kind: its activations}, seconds of the timed part, trainval images, the images' preprocessing) for one
    framing's kinds."""
    trainval, test = pets.load(size, resize=FRAMING_RESIZE[framing])
    started = time.perf_counter()
    views = transfer.cache_views(model, lambda view: loaders.make(trainval, augment=augment if view else None,
                                                                  seed=seed + view), plan.views[framing],
                                 device=loaders.device)
    kinds = plan.kinds_of(framing)
    train = {kind: at_block(model, {"trainval": views}, plan.blocks - b, loaders.device) for kind, b in kinds.items()}
    seconds = time.perf_counter() - started
    plain = {"trainval_flipped": mirrored(trainval), "test": test, "test_flipped": mirrored(test)}
    rest = {k: transfer.cache_features(model, loaders.make(v), device=loaders.device) for k, v in plain.items()}
    print(f"{framing}: {plan.views[framing]} views of {len(trainval)} trainval images at {size} px through blocks "
          f"0-{plan.cached_at(framing) - 1}; activations {tuple(views.images.shape[1:])} per image")
    sets = {kind: train[kind] | at_block(model, rest, plan.blocks - b, loaders.device) for kind, b in kinds.items()}
    return sets, seconds, len(trainval), preprocessing_of(loaders.make(test), resize=FRAMING_RESIZE[framing])


def at_block(model: TransferNet, sets: dict, block: int, device) -> dict:
    """Every set's activations carried on to `block` through the frozen blocks between."""
    return {name: transfer.carry_on(model, features, block, device) for name, features in sets.items()}


def candidates(kinds) -> dict:
    """Every ensemble of the kinds, smallest first and in the kinds' order: {"head": ["head"], ...,
    "head + whole": ["head", "whole"], ...}."""
    return {" + ".join(chosen): list(chosen) for size in range(1, len(kinds) + 1)
            for chosen in itertools.combinations(kinds, size)}


def search_runs(prefix: str, choice: str, folds: int, kinds) -> list:
    """The names of a TargetSearch's runs: the chosen candidate's final models, then every fold's models."""
    return [f"{prefix}_final_{kind}" for kind in choice.split(" + ")] + \
        [f"{prefix}_fold{fold}_{kind}" for fold in range(folds) for kind in kinds]


def choose(scores: dict):
    """The key with the highest score; the first one listed wins a tie (candidates() lists the simpler first)."""
    return max(scores, key=scores.get)


class TargetSearch:
    """Chooses the target model by k-fold cross-validation on trainval: every kind trains once per fold
    without that fold's images (all their views), and predicts them; every candidate ensemble, with and
    without flip TTA, is scored on these out-of-fold predictions; the best is retrained on all trainval
    images and tested once."""

    def __init__(self, run: Run, plan: TargetPlan, features: TargetSets, loaders: Loaders, new_model, folds: list,
                 lr: float, prefix: str = "target", keep_weights: bool = True):
        """`prefix` names the runs (<prefix>_fold<k>_<kind>, <prefix>_final_<kind>), so two searches can coexist;
        `keep_weights`: whether the final models' weights are saved, whole networks with their preprocessing and
        test accuracy (`helpers.load_model` then runs them from the image)."""
        self.run, self.plan, self.features, self.loaders = run, plan, features, loaders
        self.new_model, self.folds, self.lr, self.prefix = new_model, folds, lr, prefix
        self.keep_weights = keep_weights
        self.candidates = candidates(plan.kinds)

    def fit(self, name: str, kind: str, fold: int | None = None) -> Outcome:
        """`<name>_<kind>`: trained on all trainval views, or without the images of cross-validation `fold`
        (validated on their plain view); `keep_final` saves the final models' weights once they are tested."""
        framing, blocks = self.plan.kinds[kind]
        model = self.new_model().configure(blocks, bn="affine")
        views = self.features.sets[kind]["trainval"]
        splits = {"train": views}
        if fold is not None:
            kept, held = self.folds[fold]
            splits = {"train": views.subset(self.features.in_views(kept, self.plan.views[framing])),
                      "val": views.subset(held)}
        train, val, _ = self.loaders.triple(splits)
        return run_experiment(self.run, f"{name}_{kind}", lambda: transfer.FromBlock(model, self.plan.blocks - blocks),
                              self.plan.configs[framing], train, val, None,
                              param_groups=lambda _: model.block_groups(self.lr))

    def probabilities(self, outcomes: dict, split: str, flip: bool, index=None) -> torch.Tensor:
        """Softmax over a cached split (only its images `index`, when given), averaged over the models
        {kind: outcome} and, when `flip`, the mirror images."""
        def cached(kind, name):
            features = self.features.sets[kind][name]
            return features if index is None else features.subset(index)
        views = [split] + [f"{split}_flipped"] * flip
        total = sum(self.loaders.probabilities(o.model, cached(kind, v)) for kind, o in outcomes.items() for v in views)
        return total / (len(views) * len(outcomes))

    def out_of_fold(self) -> tuple:
        """({(kind, flip): probabilities of every trainval image from the fold model that did not train on
        it}, seconds)."""
        oof, started = {}, time.perf_counter()
        for fold, (_, held) in enumerate(self.folds):
            for kind in self.plan.kinds:
                outcome = {kind: self.fit(f"{self.prefix}_fold{fold}", kind, fold)}
                for flip in (False, True):
                    p = self.probabilities(outcome, "trainval", flip, held)
                    oof.setdefault((kind, flip), p.new_zeros(self.features.trainval_images, p.shape[1]))[held] = p
        return oof, time.perf_counter() - started

    def truth(self, split: str) -> torch.Tensor:
        """The labels of a split (of trainval: its plain view; every kind holds the same)."""
        labels = next(iter(self.features.sets.values()))[split].labels
        return labels[:self.features.trainval_images] if split == "trainval" else labels

    def correct(self, probabilities: torch.Tensor, split: str) -> torch.Tensor:
        return (probabilities.argmax(1) == self.truth(split)).float()

    def results(self, is_dog: torch.Tensor) -> dict:
        """The cross-validation scores of every candidate with and without flip TTA, the choice, and the
        chosen candidate retrained on all trainval images and tested once (breeds, and cat vs dog read
        from the breed probabilities: is_dog[c] says whether breed c is a dog)."""
        oof, cv_seconds = self.out_of_fold()
        correct = {(name, flip): self.correct(sum(oof[k, flip] for k in kinds) / len(kinds), "trainval")
                   for name, kinds in self.candidates.items() for flip in (False, True)}
        cv_acc = {key: c.mean().item() for key, c in correct.items()}
        choice, flip = choose(cv_acc)
        final = {kind: self.fit(f"{self.prefix}_final", kind) for kind in self.candidates[choice]}
        if self.keep_weights:
            self.keep_final(final)
        return {"candidates": {name: {"plain": cv_acc[name, False], "flip": cv_acc[name, True]}
                               for name in self.candidates},
                "choice": choice, "flip_tta": flip, "cv_acc": cv_acc[choice, flip], "cv_seconds": cv_seconds,
                "fold_acc": [correct[choice, flip][held].mean().item() for _, held in self.folds],
                "train_seconds": sum(o.record["train_seconds"] for o in final.values()),
                "train_images": self.features.trainval_images, "view_seconds": self.features.view_seconds,
                **self.tested(final, flip, is_dog)}

    def keep_final(self, final: dict) -> None:
        """Each final model's weights (a FromBlock holds its whole TransferNet) with its own test accuracy (plain
        view) and how its images were framed, so `helpers.load_model` runs it from the image, alone."""
        for kind, outcome in final.items():
            acc = self.correct(self.probabilities({kind: outcome}, "test", False), "test").mean().item()
            self.run.save_weights(outcome.model, f"{self.prefix}_final_{kind}", metric={"test_acc": acc},
                                  preprocessing=self.features.preprocessing[self.plan.kinds[kind][0]])

    def tested(self, final: dict, flip: bool, is_dog: torch.Tensor) -> dict:
        probabilities = self.probabilities(final, "test", flip)
        species = transfer.group_probabilities(probabilities, is_dog.long()).argmax(1)
        return {"test_acc": self.correct(probabilities, "test").mean().item(),
                "test_acc_plain": self.correct(self.probabilities(final, "test", False), "test").mean().item(),
                "cat_dog_test_acc": (species == is_dog[self.truth("test")].long()).float().mean().item(),
                "predicted": probabilities.argmax(1).tolist()}

