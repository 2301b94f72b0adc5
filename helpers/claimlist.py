"""Every comparison the notebooks' conclusions and the report state, declared once (see helpers.claims).

A claim names its runs without the notebook prefix; `says` is what the prose would state. The report
uses the generated wording (\\Claim<Id> macros from report/generated/<nb>_claims_macros.tex) instead of
typing the comparison. Single-seed studies (notebooks 01, 02, 05 today) state no comparison until
their reference is repeated over >= 3 seeds to give a noise band.
"""
from __future__ import annotations

from .claims import Claim


def trials(config: str, n: int = 3) -> tuple:
    """The result names of a configuration's repeated trials (seeds 2023, 2024, ...)."""
    return tuple(f"{config}_trial{k}" for k in range(n))


def _vs_baseline(notebook, config, label, metric, what, says, baseline="baseline", baseline_label="baseline",
                 **extra) -> Claim:
    return Claim(id=f"{notebook}-{config.replace('_', '-')}-{extra.pop('tag', 'test')}", notebook=notebook,
                 says=says, metric=metric, subject=trials(config), reference=trials(baseline), what=what,
                 subject_label=label, reference_label=baseline_label, **extra)


# The AdamW runs differ from Adam's in more than the optimiser (lr 2e-3, weight decay 0.05, cosine decay):
# their labels name the whole recipe, so no sentence puts the effect on the optimiser alone.
GTSRB_LABELS = {"bn": "BN + Adam", "adamw": "the AdamW recipe (lr 2e-3, weight decay 0.05, cosine; no BN)",
                "bn_adamw": "BN + the AdamW recipe"}
GTSRB_BASELINE = "the Adam baseline without BN"
UNET_LABELS = {"nearest": "nearest up-sampling", "elu": "ELU", "nearest_elu": "nearest up-sampling + ELU"}
UNET_BASELINE = "the baseline with transposed convolutions and ReLU"

CLAIMS = [
    # 03: the 2x2 comparison's final test accuracy, and how fast validation accuracy rises (epoch 1).
    *[_vs_baseline("03", c, GTSRB_LABELS[c], "test.acc", "test accuracy", says,
                   baseline_label=GTSRB_BASELINE)
      for c, says in (("bn", "no difference"), ("adamw", "no difference"), ("bn_adamw", "no difference"))],
    *[_vs_baseline("03", c, GTSRB_LABELS[c], "history.epochs[0].val_acc", "validation accuracy after epoch 1",
                   says, baseline_label=GTSRB_BASELINE, tag="epoch-one")
      for c, says in (("bn", "no difference"), ("adamw", "higher"), ("bn_adamw", "higher"))],
    # 03: does batch norm speed up early training once the optimiser is AdamW?
    _vs_baseline("03", "bn_adamw", GTSRB_LABELS["bn_adamw"], "history.epochs[0].val_acc",
                 "validation accuracy after epoch 1", "no difference", baseline="adamw",
                 baseline_label=GTSRB_LABELS["adamw"], tag="vs-adamw-epoch-one"),
    # 04: the U-Net's up-sampling x activation design, test Dice (values are Dice, not percentages).
    *[_vs_baseline("04", c, UNET_LABELS[c], "test.dice", "test Dice", says, baseline_label=UNET_BASELINE,
                   percent=False)
      for c, says in (("nearest", "no difference"), ("elu", "lower"), ("nearest_elu", "lower"))],
]
