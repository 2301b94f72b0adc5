"""Budgets and recipes. A profile changes only the budget: data size, epochs, seeds, steps. What a
student would change to get a different model (learning rates, widths, batch sizes, backbones,
augmentation strengths, precision) is the notebook's recipe; each profile names the recipe it runs,
and a recipe that differs from the hand-out's is a named one that every table caption states.

- smoke: synthetic stand-in data, a few optimisation steps, CPU, the `tiny` recipes (tests).
- fast:  the real data, budgets sized for a 2-core CPU (the README's table gives each notebook's cost),
         the `cpu` recipes where the hand-out's does not fit a CPU: the committed numbers.
- full:  the settings of the course hand-outs (`handout` recipes), meant for a GPU.
"""
from __future__ import annotations

PROFILES = ("smoke", "fast", "full")

# Budget keys: `synthetic` selects the stand-in data; `train_limit`/`test_limit` cap set sizes (None = all;
# notebook 01's `tutorial_limit` caps the tutorial's table, `train_limit` its explorations; `tutorial_seeds`
# is how many seeds its baseline trains, for the seed noise its rows are judged against, `explore_seeds` the same
# for the explorations' reference; `strong_select_epochs` are
# the strong model's candidate budgets, compared on validation, and `strong_trials` its final runs per model);
# `steps_per_epoch` caps optimisation steps (None = one pass over the data); `*_epochs` are epochs per
# study; notebook 02's `sizes` are the input sides its probe tries, `depths` the numbers of last blocks
# fine-tuned, `gradual` the (blocks, epochs) stages of gradual unfreezing, `seeds` the runs of each study reference,
# `l2_strengths` the decoupled weight decays the L2 sweep tries, `bn_blocks` the blocks the batch-norm study trains,
# `prune_epochs` the re-training after each pruning step, `forget_*` the other task (Flowers-102 needs the
# download; the fast profile's CIFAR-10 gives the committed numbers on every machine), its images and epoch cap,
# `target_*` the target model's cached views, epochs and cross-validation folds; notebook 05's `best` is the long
# run's budget, `seeds` the runs of its reference model, `prompts` the samples per generation setting, `depth_*`
# the depth study's cap and plateau patience, `gap_chunk`/`shuffle_chunk` the stretches of text of the
# validation-test gap analysis.
_BUDGETS = {
    "01": {
        "smoke": dict(recipe="tiny", synthetic=True, tutorial_limit=256, tutorial_seeds=3, train_limit=256,
                      val_size=64, test_limit=128, eval_batch_size=256, epochs=1, combined_epochs=2,
                      explore_epochs=1, explore_seeds=3, steps_per_epoch=2, strong_train_limit=256,
                      strong_select_epochs=(1, 2), strong_trials=3),
        "fast": dict(recipe="cpu", synthetic=False, tutorial_limit=None, tutorial_seeds=3, train_limit=None,
                     val_size=5000, test_limit=None, eval_batch_size=1000, epochs=30, combined_epochs=30,
                     explore_epochs=8, explore_seeds=3, steps_per_epoch=None, strong_train_limit=None,
                     strong_select_epochs=(10, 16, 24), strong_trials=3),
        "full": dict(recipe="handout", synthetic=False, tutorial_limit=None, tutorial_seeds=3, train_limit=None,
                     val_size=5000, test_limit=None, eval_batch_size=1000, epochs=100, combined_epochs=400,
                     explore_epochs=100, explore_seeds=3, steps_per_epoch=None, strong_train_limit=None,
                     strong_select_epochs=(10, 16, 24), strong_trials=3),
    },
    "02": {
        "smoke": dict(recipe="tiny", synthetic=True, train_limit=160, test_limit=96, sizes=(32, 48, 64),
                      study_size=48, eval_batch_size=64, probe_epochs=2, depths=(0, 1, 2), depth_epochs=2,
                      gradual=((0, 1), (1, 1), (2, 1)), seeds=3, l2_strengths=(0.5, 8.0), bn_blocks=2,
                      aug_epochs=2, bn_only_epochs=1, steps_per_epoch=None, ssl_fractions=(1.0, 0.5, 0.1),
                      lora_ranks=(1, 2), sparsities=(0.5, 0.9), prune_epochs=1, forget_task="cifar10",
                      forget_images=64, forget_epochs=1,
                      latency_batch=8, target_views=2, target_epochs=2, target_whole_views=1, target_folds=2),
        "fast": dict(recipe="cpu", synthetic=False, train_limit=None, test_limit=None,
                     sizes=(96, 128, 160, 224, 288, 320), study_size=160, eval_batch_size=256, probe_epochs=30,
                     depths=(0, 1, 2, 3, 4, 6, 8), depth_epochs=8, gradual=((0, 2), (2, 2), (4, 2), (8, 2)),
                     seeds=3, l2_strengths=(0.5, 2.0, 8.0), bn_blocks=4, aug_epochs=4, bn_only_epochs=3,
                     steps_per_epoch=None, ssl_fractions=(1.0, 0.5, 0.1, 0.01), lora_ranks=(1, 2, 4, 8),
                     sparsities=(0.3, 0.5, 0.7, 0.9), prune_epochs=1, forget_task="cifar10",
                     forget_images=10000, forget_epochs=4,
                     latency_batch=64, target_views=6, target_epochs=4, target_whole_views=2, target_folds=5),
        "full": dict(recipe="handout", synthetic=False, train_limit=None, test_limit=None,
                     sizes=(160, 224, 288), study_size=224, eval_batch_size=256, probe_epochs=50,
                     depths=(0, 1, 2, 3, 4, 6, 8, 12, 16), depth_epochs=30,
                     gradual=((0, 5), (3, 5), (6, 5), (12, 5), (17, 10)), seeds=3,
                     l2_strengths=(0.5, 2.0, 8.0), bn_blocks=8, aug_epochs=30, bn_only_epochs=10,
                     steps_per_epoch=None, ssl_fractions=(1.0, 0.5, 0.1, 0.01), lora_ranks=(1, 2, 4, 8, 16),
                     sparsities=(0.3, 0.5, 0.7, 0.9), prune_epochs=2, forget_task="flowers102",
                     forget_images=None, forget_epochs=5,
                     latency_batch=64, target_views=8, target_epochs=6, target_whole_views=4, target_folds=5),
    },
    "03": {
        "smoke": dict(recipe="tiny", synthetic=True, train_limit=512, test_limit=256, epochs=2,
                      steps_per_epoch=4, trials=2, eval_batch_size=256, sweep_lrs=(1e-3, 4e-3), sweep_epochs=1,
                      challenge_epochs=(1, 2), final_trials=2),
        "fast": dict(recipe="cpu", synthetic=False, train_limit=None, test_limit=None, epochs=30,
                     steps_per_epoch=None, trials=3, eval_batch_size=1024, sweep_lrs=(5e-4, 1e-3, 2e-3, 4e-3, 8e-3),
                     sweep_epochs=5, challenge_epochs=(20, 30), final_trials=3),
        "full": dict(recipe="handout", synthetic=False, train_limit=None, test_limit=None, epochs=400,
                     steps_per_epoch=None, trials=3, eval_batch_size=1024, sweep_lrs=(2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3),
                     sweep_epochs=50, challenge_epochs=(50, 100), final_trials=3),
    },
    "04": {
        "smoke": dict(recipe="tiny", synthetic=True, epochs=2, steps_per_epoch=2, trials=2, eval_batch_size=8,
                      erf_images=2),
        "fast": dict(recipe="cpu", synthetic=False, epochs=50, steps_per_epoch=None, trials=3,
                     eval_batch_size=16, erf_images=16),
        "full": dict(recipe="handout", synthetic=False, epochs=100, steps_per_epoch=None, trials=3,
                     eval_batch_size=16, erf_images=16),
    },
    "05": {
        "smoke": dict(recipe="tiny", synthetic=True, synthetic_chars=20_000, steps_per_epoch=4, epochs=2,
                      context=16, eval_batch_size=64, sweep=(16, 32), sample_length=80,
                      beam_widths=(1, 3), temperatures=(0.5, 1.0), top_ps=(0.9, 1.0), visual_chars=200,
                      word_vocab=200, best=dict(epochs=2, steps_per_epoch=4), seeds=3, prompts=3, depth_epochs=3,
                      depth_patience=1, gap_chunk=200, shuffle_chunk=500),
        "fast": dict(recipe="cpu", synthetic=False, synthetic_chars=None, steps_per_epoch=60, epochs=10,
                     context=128, eval_batch_size=128, sweep=(64, 128, 256, 512), sample_length=500,
                     beam_widths=(1, 5, 10), temperatures=(0.5, 0.8, 1.0, 1.2),
                     top_ps=(0.8, 0.9, 1.0), visual_chars=600, word_vocab=8000,
                     best=dict(epochs=19, steps_per_epoch=200), seeds=3, prompts=20, depth_epochs=30,
                     depth_patience=3, gap_chunk=5000, shuffle_chunk=10_000),
        "full": dict(recipe="handout", synthetic=False, synthetic_chars=None, steps_per_epoch=200, epochs=20,
                     context=128, eval_batch_size=128, sweep=(128, 256, 512, 1024), sample_length=1000,
                     beam_widths=(1, 5, 10), temperatures=(0.5, 0.8, 1.0, 1.2),
                     top_ps=(0.8, 0.9, 1.0), visual_chars=1000, word_vocab=10_000,
                     best=dict(epochs=50, steps_per_epoch=400), seeds=3, prompts=20, depth_epochs=60,
                     depth_patience=3, gap_chunk=5000, shuffle_chunk=10_000),
    },
}

# Recipes: notebook 01's `tutorial` is what the tutorial's five configurations share on top of SGD with momentum 0.9
# at batch_size (learning rate, schedule, precision; the hand-out's is the tutorial's constant 0.001), its `explore`
# the explorations' peak learning rate (batch norm takes a larger step than the tutorial's) and precision, its `strong`
# the airbench-style network's widths, batch, peak learning rate (mean loss) and precision; notebook 02's the transfer
# study's (the backbone, learning rates, size_tolerance for choosing the input size, min_gain for stopping the depth
# search, ssl_per_class the most confident predictions per class that pseudo-labelling keeps below its threshold,
# forget_target the other task's validation accuracy at which the forgetting fine-tune stops);
# notebook 05's `best_model` is the long run's model and learning rate. amp=False on CPUs whose bfloat16
# autocast is slower than float32 (`python -m helpers.bench cifar --amp`).
_RECIPES = {
    "01": {
        "tiny": dict(batch_size=64, amp=False, tutorial=dict(lr=0.01, scheduler="warmup_cosine", warmup_epochs=1),
                     strong=dict(widths=(16, 32, 32), batch=64, lr=1.5 * 64 / 1024, amp=False),
                     explore=dict(lr=0.05, amp=False)),
        "cpu": dict(batch_size=64, amp=False, strong=dict(widths=(64, 256, 256), batch=1024, lr=1.5, amp=True),
                    tutorial=dict(lr=0.01, scheduler="warmup_cosine", warmup_epochs=1, amp=True),
                    explore=dict(lr=0.05, amp=True)),
        "handout": dict(batch_size=64, amp="auto", strong=dict(widths=(64, 256, 256), batch=1024, lr=1.5, amp="auto"),
                        tutorial=dict(lr=0.001, scheduler=None), explore=dict(lr=0.001, amp="auto")),
    },
    "02": {
        "tiny": dict(backbone="tiny", lr=1e-3, size_tolerance=0.01, batch_size=32, min_gain=3e-3,
                     ssl_threshold=0.9, ssl_per_class=2, lora_blocks=2, mask_fraction=0.05, forget_lr=0.01,
                     forget_target=0.85, amp=False, target_lr=1e-3, imbalance_keep=0.2),
        "cpu": dict(backbone="mobilenet_v2", lr=1e-3, size_tolerance=5e-3, batch_size=64, min_gain=3e-3,
                    ssl_threshold=0.9, ssl_per_class=10, lora_blocks=8, mask_fraction=0.01, forget_lr=1e-3,
                    forget_target=0.85, amp=False, target_lr=1e-3, imbalance_keep=0.2),
        "handout": dict(backbone="resnet50", lr=1e-3, size_tolerance=5e-3, batch_size=64, min_gain=2e-3,
                        ssl_threshold=0.9, ssl_per_class=10, lora_blocks=8, mask_fraction=0.01, forget_lr=3e-3,
                        forget_target=0.85, amp="auto", target_lr=1e-3, imbalance_keep=0.2),
    },
    "03": {
        "tiny": dict(batch_size=64, amp=False, weight_decay=0.05,
                     challenge_model=dict(widths=(8, 16, 32), convs=1, spatial_transformer=True)),
        "cpu": dict(batch_size=128, amp=True, weight_decay=0.05,
                    challenge_model=dict(widths=(32, 64, 128), convs=2, spatial_transformer=True)),
        "handout": dict(batch_size=128, amp="auto", weight_decay=0.05,
                        challenge_model=dict(widths=(32, 64, 128), convs=2, spatial_transformer=True)),
    },
    "04": {
        "tiny": dict(size=32, features_start=4, batch_size=4, lr=2e-3, amp=False),
        "cpu": dict(size=128, features_start=16, batch_size=8, lr=2e-3, amp=True),
        "handout": dict(size=256, features_start=64, batch_size=8, lr=1e-3, amp="auto"),
    },
    "05": {
        "tiny": dict(seq_len=32, batch_size=8, hidden=32, embed=16, dropout=0.2, lr=3e-3, weight_decay=0.01,
                     amp=False, best_model=dict(hidden=32, embed=16, dropout=0.2, lr=3e-3)),
        "cpu": dict(seq_len=128, batch_size=64, hidden=256, embed=64, dropout=0.2, lr=3e-3, weight_decay=0.01,
                    amp=True, best_model=dict(hidden=512, embed=64, dropout=0.2, lr=2e-3)),
        "handout": dict(seq_len=128, batch_size=64, hidden=512, embed=64, dropout=0.2, lr=2e-3,
                        weight_decay=0.01, amp="auto", best_model=dict(hidden=1024, embed=128, dropout=0.3, lr=1e-3)),
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
        raise TypeError("budgets and recipes are fixed by the profile; change helpers/profiles.py instead")

    __setitem__ = __delitem__ = update = pop = setdefault = clear = _read_only


def budget(notebook: str, profile: str) -> Budget:
    """The budget of one notebook under one profile, with a clear error for unknown names."""
    if profile not in PROFILES:
        raise ValueError(f"PROFILE={profile!r} is unknown; choose one of {', '.join(PROFILES)}")
    if notebook not in _BUDGETS:
        raise ValueError(f"notebook {notebook!r} has no budgets in helpers/profiles.py; known: {sorted(_BUDGETS)}")
    return Budget(dict(_BUDGETS[notebook][profile], profile=profile))


DRY_RUN_ENV = "HELPERS_DRY_RUN"
# A dry run keeps a profile's models, recipes (widths, batch sizes, amp, schedules) and data shapes (but for the
# smaller inputs below and in _DRY_RUN_RECIPE), and cuts the rest: synthetic stand-ins in these numbers (each at
# least one full batch of the recipe), fewer cached views, folds and generated characters, one step per epoch, at
# most one epoch per loop, at most two trials. What it finds is what would crash the profile late, not a result.
_DRY_RUN_DATA = {
    "01": dict(train_limit=1024, val_size=512, test_limit=512, strong_train_limit=1024),
    # 02: small inputs (ResNet-50 at 288 px made the dry run 9.5 minutes, at 64-96 px 5.4); the code paths do not
    # depend on the size. Latency is timed on a batch of 8 (20 passes of each compressed model).
    "02": dict(train_limit=160, test_limit=96, sizes=(32, 48), study_size=32, forget_images=64, target_views=1,
               target_whole_views=1, target_folds=2, latency_batch=8),
    "03": dict(train_limit=512, test_limit=256),
    "04": {},
    "05": dict(synthetic_chars=60_000, prompts=2, sample_length=40, visual_chars=100, shuffle_chunk=2_000,
               gap_chunk=1_000),
}


# Recipe settings a dry run changes, with why (everything else, widths, batch sizes, amp, schedules, is kept):
# 04: the handout U-Net (64 base channels, batch 8) at 128 px, not 256: one training step at 256 px took 16 s on
# the 2-core CPU and the dry run 5.5 minutes; the network's five levels still halve 128 px evenly.
_DRY_RUN_RECIPE = {"04": dict(size=128)}


def dry_run_recipe(plan: Budget, notebook: str) -> Budget:
    """`plan` (a recipe) as a dry run uses it: see _DRY_RUN_RECIPE."""
    return Budget(dict(plan) | _DRY_RUN_RECIPE.get(notebook, {}))


def dry_run(plan: Budget, notebook: str) -> Budget:
    """`plan` (a budget) cut for a dry run: see _DRY_RUN_DATA."""
    if notebook not in _DRY_RUN_DATA:
        raise ValueError(f"notebook {notebook!r} has no dry-run data sizes: add it to helpers.profiles._DRY_RUN_DATA")
    def cut(key, value):
        if isinstance(value, dict):
            return {k: cut(k, v) for k, v in value.items()}
        if key == "steps_per_epoch" or (key.endswith("epochs") and isinstance(value, int)):
            return 1
        if key.endswith("epochs") and isinstance(value, tuple):  # candidate budgets: keep them distinct
            return tuple(range(1, len(value) + 1))
        if key.endswith("trials") and isinstance(value, int):
            return min(value, 2)  # repeated runs still repeat, twice (as in smoke), to keep CI short
        return value

    return Budget({k: cut(k, v) for k, v in plan.items()} | _DRY_RUN_DATA[notebook]
                  | {"synthetic": True, "dry_run": True})


def recipe(notebook: str, profile: str) -> Budget:
    """The recipe a profile runs for a notebook (read-only, with its `name`)."""
    name = budget(notebook, profile).recipe
    return Budget(dict(_RECIPES[notebook][name], name=name))
