"""Shared package of the deep-learning course-project notebooks.

Modules: profiles (budgets), repro (seeding, device, environment), data (registry, loaders,
splits, stand-ins, TensorLoader), augment (batched tensor augmentation), models, training (the one
loop), results (JSON, LaTeX, weights), plots (figure style), runner (notebook start-up) and
reproduce (the papermill runner).
"""
__version__ = "0.1.0"


def load_model(name: str, weights_dir=None, device="cpu"):
    """(ready model, its Preprocess) from weights/manifest.json alone: see helpers.weights."""
    from .weights import load_model as load

    return load(name, weights_dir, device)
