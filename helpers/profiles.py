"""Compute budgets: the only thing a profile changes. The code path is the same in all three.

- smoke: synthetic stand-in data, a few optimisation steps, CPU; every notebook in about a minute (tests).
- fast:  the real data, budgets sized for a 2-core CPU (10-30 min a notebook): the committed numbers.
- full:  the settings of the course hand-outs, meant for a GPU.
"""
from __future__ import annotations

PROFILES = ("smoke", "fast", "full")

# `synthetic` selects the stand-in data; `train_limit`/`test_limit` cap set sizes (None = all);
# `steps_per_epoch` caps optimisation steps (None = one pass over the data).
_BUDGETS = {
    "03": {
        "smoke": dict(synthetic=True, train_limit=512, test_limit=256, epochs=2, steps_per_epoch=4, trials=2,
                      batch_size=64, eval_batch_size=256, challenge_epochs=2, challenge_trials=2,
                      challenge_model=dict(widths=(8, 16, 32), convs=1, spatial_transformer=True)),
        "fast": dict(synthetic=False, train_limit=None, test_limit=None, epochs=5, steps_per_epoch=None, trials=3,
                     batch_size=128, eval_batch_size=1024, challenge_epochs=20, challenge_trials=3,
                     challenge_model=dict(widths=(32, 64, 128), convs=2, spatial_transformer=True)),
        "full": dict(synthetic=False, train_limit=None, test_limit=None, epochs=400, steps_per_epoch=None, trials=3,
                     batch_size=128, eval_batch_size=1024, challenge_epochs=100, challenge_trials=3,
                     challenge_model=dict(widths=(32, 64, 128), convs=2, spatial_transformer=True)),
    },
    # size: network input side (evaluation masks stay at the data's 256 px); features_start: U-Net width.
    "04": {
        "smoke": dict(synthetic=True, size=32, features_start=4, epochs=2, steps_per_epoch=2, trials=2,
                      batch_size=4, eval_batch_size=8, lr=2e-3, amp=False, erf_images=2),
        "fast": dict(synthetic=False, size=128, features_start=16, epochs=50, steps_per_epoch=None, trials=3,
                     batch_size=8, eval_batch_size=16, lr=2e-3, amp=True, erf_images=16),
        "full": dict(synthetic=False, size=256, features_start=64, epochs=100, steps_per_epoch=None, trials=3,
                     batch_size=8, eval_batch_size=16, lr=1e-3, amp="auto", erf_images=16),
    },
}


class Budget(dict):
    """A read-only mapping whose keys also read as attributes (`budget.epochs`)."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"budget has no {key!r}; it has {sorted(self)}") from None

    def _read_only(self, *args, **kwargs):
        raise TypeError("budgets are fixed by the profile; change helpers/profiles.py instead")

    __setitem__ = __delitem__ = update = pop = setdefault = clear = _read_only


def budget(notebook: str, profile: str) -> Budget:
    """The budget of one notebook under one profile, with a clear error for unknown names."""
    if profile not in PROFILES:
        raise ValueError(f"PROFILE={profile!r} is unknown; choose one of {', '.join(PROFILES)}")
    if notebook not in _BUDGETS:
        raise ValueError(f"notebook {notebook!r} has no budgets in helpers/profiles.py; known: {sorted(_BUDGETS)}")
    return Budget(dict(_BUDGETS[notebook][profile], profile=profile))
