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
    # Comparisons: `epochs` x `steps_per_epoch` batches of `batch_size` x `seq_len` characters; evaluation
    # windows give every scored character `context` characters before it. `best`: the long run.
    "05": {
        "smoke": dict(synthetic=True, synthetic_chars=20_000, seq_len=32, batch_size=8, steps_per_epoch=4, epochs=2,
                      hidden=32, embed=16, context=16, eval_batch_size=64, sweep=(16, 32), dropout=0.2, lr=3e-3,
                      weight_decay=0.01, amp=False,
                      best=dict(epochs=2, steps_per_epoch=4, hidden=32, embed=16, dropout=0.2, lr=3e-3),
                      sample_length=80, beam_length=40, beam_widths=(1, 3), temperatures=(0.5, 1.0),
                      top_ps=(0.9, 1.0), visual_chars=200, word_vocab=200),
        "fast": dict(synthetic=False, synthetic_chars=None, seq_len=128, batch_size=64, steps_per_epoch=60, epochs=10,
                     hidden=256, embed=64, context=128, eval_batch_size=128, sweep=(64, 128, 256, 512), dropout=0.2,
                     lr=3e-3, weight_decay=0.01, amp=True,
                     best=dict(epochs=19, steps_per_epoch=200, hidden=512, embed=64, dropout=0.2, lr=2e-3),
                     sample_length=500, beam_length=200, beam_widths=(1, 5, 10), temperatures=(0.5, 0.8, 1.0, 1.2),
                     top_ps=(0.8, 0.9, 1.0), visual_chars=600, word_vocab=8000),
        "full": dict(synthetic=False, synthetic_chars=None, seq_len=128, batch_size=64, steps_per_epoch=200, epochs=20,
                     hidden=512, embed=64, context=128, eval_batch_size=128, sweep=(128, 256, 512, 1024), dropout=0.2,
                     lr=2e-3, weight_decay=0.01, amp="auto",
                     best=dict(epochs=50, steps_per_epoch=400, hidden=1024, embed=128, dropout=0.3, lr=1e-3),
                     sample_length=1000, beam_length=300, beam_widths=(1, 5, 10), temperatures=(0.5, 0.8, 1.0, 1.2),
                     top_ps=(0.8, 0.9, 1.0), visual_chars=1000, word_vocab=10000),
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
