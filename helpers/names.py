"""Display names: the one mapping from a notebook's run ids to what its tables and figures show.

Run ids (`bn_adamw`, `lstm2_trial1`) stay in code, file names and records; `Run.write_table` passes a table's
first column through `label`, and `Run.save_figure` the legend entries and tick labels of a figure, so a notebook
keeps using ids and the reader sees names.
"""
from __future__ import annotations

import re

LABELS = {
    "01": {"baseline": "baseline", "dropout": "dropout", "l2": "L2", "augmentation": "augmentation",
           "combined": "combined", "vgg": "VGG (3 stages)", "gap_head": "+ global-average-pooling head",
           "strided": "+ strided convolutions", "residual": "+ residual blocks",
           "residual_4_blocks": "+ a fourth stage"},
    "02": {"mobilenet_v2": "MobileNetV2", "resnet18": "ResNet-18", "resnet34": "ResNet-34", "resnet50": "ResNet-50",
           "tiny": "a tiny stand-in backbone", "plain": "plain cross-entropy",
           "weighted_ce": "class-weighted cross-entropy", "oversampling": "over-sampling the cats",
           **{f"last{k}": f"last {k} blocks fine-tuned" for k in range(2, 9)}, "last1": "last block fine-tuned",
           "last0": "linear probe (0 blocks fine-tuned)",
           **{f"masked_{c}": f"masked fine-tuning, {c} mask" for c in ("gradient", "magnitude", "random")},
           **{f"lora_r{r}": f"LoRA, rank {r}" for r in (1, 2, 4, 8, 16)}},
    "03": {"baseline": "Adam (baseline)", "bn": "BN + Adam", "adamw": "AdamW", "bn_adamw": "BN + AdamW",
           "adam": "Adam"},
    "04": {"baseline": "transposed + ReLU", "nearest": "nearest + ReLU", "elu": "transposed + ELU",
           "nearest_elu": "nearest + ELU"},
    "05": {"rnn": "vanilla RNN", "lstm1": "LSTM, 1 layer", "lstm2": "LSTM, 2 layers", "gru2": "GRU, 2 layers",
           "depth_lstm2": "LSTM, 2 layers", "depth_lstm3": "LSTM, 3 layers",
           "depth_lstm3_dropout_ln": "LSTM, 3 layers, dropout + layer norm", "best": "LSTM, 2 layers, longer run"},
}
# Notebook 02's re-training recipes after each pruning step (helpers.transfer_study.PRUNING_RECIPES).
PRUNING_RECIPES = {"held": "BN fixed, lr / 10", "recalibrated": "BN re-estimated, lr / 10",
                   "recalibrated_lr": "BN re-estimated, lr"}
# Augmentations by their keys in the notebooks' recipes.
AUGMENTATIONS = {"affine": "affine", "colour": "colour", "erasing": "random erasing", "cutmix": "CutMix",
                 "mixup": "MixUp"}
TRIAL = re.compile(r"(?P<run>.+)_trial(?P<k>\d+)$")


def label(notebook: str, name, first_seed: int = 2023):
    """The display name of run `name` of `notebook`; a repeated trial `<run>_trial<k>` is '<its name> (seed
    <first_seed + k>)'. Anything else (a label already, a number) comes back unchanged."""
    if not isinstance(name, str):
        return name
    labels = LABELS.get(notebook, {})
    trial = TRIAL.fullmatch(name)
    if trial and trial["run"] in labels:
        return f"{labels[trial['run']]} (seed {first_seed + int(trial['k'])})"
    return labels.get(name, name)


def relabel_figure(fig, notebook: str) -> None:
    """Replace run ids in a figure's legends and tick labels by their display names (helpers.plots draws them
    with whatever keys the notebook passed)."""
    from matplotlib.category import StrCategoryFormatter
    from matplotlib.ticker import FixedFormatter, FuncFormatter

    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes)]
    for text in (t for legend in legends if legend is not None for t in legend.get_texts()):
        text.set_text(label(notebook, text.get_text()))
    for axis in (axis for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)):  # numeric ticks are left alone
        formatter = axis.get_major_formatter()
        if isinstance(formatter, StrCategoryFormatter):  # bars by name: their ticks are drawn late
            axis.set_major_formatter(FuncFormatter(lambda value, pos, f=formatter: label(notebook, f(value, pos))))
        elif isinstance(formatter, FixedFormatter):
            axis.set_major_formatter(FixedFormatter([label(notebook, text) for text in formatter.seq]))
