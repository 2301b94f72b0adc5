"""Compute budgets: the only thing a profile changes. The code path is the same in all three.

- smoke: synthetic stand-in data, a few optimisation steps, CPU; every notebook in about a minute (tests).
- fast:  the real data, budgets sized for a 2-core CPU (the README's profile table gives each notebook's
         measured training time): the committed numbers.
- full:  the settings of the course hand-outs, meant for a GPU.
"""
from __future__ import annotations

PROFILES = ("smoke", "fast", "full")

# `synthetic` selects the stand-in data; `train_limit`/`test_limit` cap set sizes (None = all);
# `steps_per_epoch` caps optimisation steps (None = one pass over the data).
_BUDGETS = {
    # epochs: the tutorial's single-change runs; combined_epochs: all regularisers together; explore_epochs: the
    # explorations and extensions; strong_*: the ResNet-9 with bells and whistles on strong_train_limit images
    # (CIFAR-10, then CIFAR-100; its offline synthetic stand-in only runs the code path, for standin_epochs).
    # fast is provisional until its first committed run. amp=False: on the 2-core CPU here (AVX-512 without
    # BF16) bfloat16 autocast trained 3x slower than float32 (`python -m helpers.bench cifar --amp`). The
    # first fast run of the notebook (18 epochs at batch 256, lr 0.2) reached val 89.34 %, test 88.58 % in
    # 48.3 min, about 280 images/s, probably because glibc's adaptive memory thresholds drift in a long kernel
    # (raising only its trim threshold reproduces 280). With keep_freed_memory (notebook 01 asks runner.start for it) the bench
    # trains ResNet-9 at about 390 images/s, so 24 epochs should take about 48 min.
    "01": {
        "smoke": dict(synthetic=True, train_limit=256, val_size=64, test_limit=128, batch_size=64, eval_batch_size=256,
                      epochs=1, combined_epochs=2, explore_epochs=1, steps_per_epoch=2, amp=False,
                      strong_widths=(8, 16, 32, 64), strong_train_limit=256, strong_batch=64, strong_epochs=2,
                      strong_lr=0.05, standin_epochs=1),
        "fast": dict(synthetic=False, train_limit=10_000, val_size=5_000, test_limit=None, batch_size=64,
                     eval_batch_size=1000, epochs=10, combined_epochs=20, explore_epochs=6, steps_per_epoch=None,
                     amp=False, strong_widths=(32, 64, 128, 256), strong_train_limit=None, strong_batch=256, strong_epochs=24,
                     strong_lr=0.2, standin_epochs=2),
        "full": dict(synthetic=False, train_limit=None, val_size=5_000, test_limit=None, batch_size=64,
                     eval_batch_size=1000, epochs=100, combined_epochs=400, explore_epochs=100, steps_per_epoch=None,
                     amp="auto", strong_widths=(64, 128, 256, 512), strong_train_limit=None, strong_batch=512, strong_epochs=30,
                     strong_lr=0.4, standin_epochs=2),
    },
    # sizes: input sides tried by the frozen-feature probe (fast: above 160 px upsampled); the target model
    # uses the smallest within size_tolerance of the best on validation, the study runs at study_size.
    # depths: numbers of last blocks fine-tuned (strategy 1); gradual: (blocks, epochs) stages (strategy 2).
    # Fine-tuning runs train on cached activations of the frozen prefix unless augmented. target_*: the
    # target model, trained target_epochs on target_views cached views (one plain, the rest augmented) of the
    # centre crop, plus a head on target_whole_views views of the whole image squashed to the square; its
    # candidates are compared by target_folds-fold cross-validation on trainval.
    "02": {
        "smoke": dict(synthetic=True, train_limit=160, test_limit=96, backbone="tiny", sizes=(32, 48, 64),
                      study_size=48, size_tolerance=0.01, batch_size=32, eval_batch_size=64, probe_epochs=2, lr=1e-3,
                      depths=(0, 1, 2), depth_epochs=2, min_gain=0.003, gradual=((0, 1), (1, 1), (2, 1)),
                      aug_epochs=2, bn_only_epochs=1, steps_per_epoch=None, imbalance_keep=0.2, ssl_fractions=(1.0, 0.5, 0.1),
                      ssl_threshold=0.9, lora_ranks=(1, 2), lora_blocks=2, mask_fraction=0.05,
                      sparsities=(0.5, 0.9), forget_images=64, forget_epochs=1, forget_lr=1e-2, amp=False,
                      latency_batch=8, target_views=2, target_epochs=2, target_lr=1e-3, target_whole_views=1,
                      target_folds=2),
        "fast": dict(synthetic=False, train_limit=None, test_limit=None, backbone="mobilenet_v2",
                     sizes=(96, 128, 160, 224, 288, 320), study_size=160, size_tolerance=0.005, batch_size=64,
                     eval_batch_size=256, probe_epochs=30, lr=1e-3, depths=(0, 1, 2, 3, 4, 6, 8), depth_epochs=8, min_gain=0.003,
                     gradual=((0, 2), (2, 2), (4, 2), (8, 2)), aug_epochs=4, bn_only_epochs=3, steps_per_epoch=None,
                     imbalance_keep=0.2, ssl_fractions=(1.0, 0.5, 0.1, 0.01), ssl_threshold=0.9,
                     lora_ranks=(1, 2, 4, 8), lora_blocks=8, mask_fraction=0.01, sparsities=(0.3, 0.5, 0.7, 0.9),
                     forget_images=2000, forget_epochs=1, forget_lr=3e-4, amp=False, latency_batch=64,
                     target_views=6, target_epochs=4, target_lr=1e-3, target_whole_views=2,
                     target_folds=5),
        "full": dict(synthetic=False, train_limit=None, test_limit=None, backbone="resnet50",
                     sizes=(160, 224, 288), study_size=224, size_tolerance=0.005, batch_size=64,
                     eval_batch_size=256, probe_epochs=50, lr=1e-3, depths=(0, 1, 2, 3, 4, 6, 8, 12, 16), depth_epochs=30, min_gain=0.002,
                     gradual=((0, 5), (3, 5), (6, 5), (12, 5), (17, 10)), aug_epochs=30, bn_only_epochs=10,
                     steps_per_epoch=None,
                     imbalance_keep=0.2, ssl_fractions=(1.0, 0.5, 0.1, 0.01), ssl_threshold=0.9,
                     lora_ranks=(1, 2, 4, 8, 16), lora_blocks=8, mask_fraction=0.01,
                     sparsities=(0.3, 0.5, 0.7, 0.9), forget_images=None, forget_epochs=5, forget_lr=3e-3,
                     amp="auto", latency_batch=64, target_views=8, target_epochs=6, target_lr=1e-3, target_whole_views=4,
                     target_folds=5),
    },
    # challenge_*: the recipe's selection run(s) on the train split; final_*: the same recipe retrained on
    # train + validation, each run tested once (fast: 40 epochs is what fits in 30 min on a 2-core CPU).
    "03": {
        "smoke": dict(synthetic=True, train_limit=512, test_limit=256, epochs=2, steps_per_epoch=4, trials=2,
                      batch_size=64, eval_batch_size=256, challenge_epochs=2, challenge_trials=1, final_epochs=2, final_trials=2,
                      challenge_model=dict(widths=(8, 16, 32), convs=1, spatial_transformer=True)),
        "fast": dict(synthetic=False, train_limit=None, test_limit=None, epochs=5, steps_per_epoch=None, trials=3,
                     batch_size=128, eval_batch_size=1024, challenge_epochs=20, challenge_trials=1, final_epochs=40, final_trials=3,
                     challenge_model=dict(widths=(32, 64, 128), convs=2, spatial_transformer=True)),
        "full": dict(synthetic=False, train_limit=None, test_limit=None, epochs=400, steps_per_epoch=None, trials=3,
                     batch_size=128, eval_batch_size=1024, challenge_epochs=100, challenge_trials=1, final_epochs=100, final_trials=3,
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
