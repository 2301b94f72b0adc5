"""Shared package of the deep-learning course-project notebooks.

Modules: profiles (budgets), repro (seeding, device, environment), data (registry, loaders,
splits, stand-ins, TensorLoader), augment (batched tensor augmentation), models, training (the one
loop), results (JSON, LaTeX, weights), plots (figure style), runner (notebook start-up) and
reproduce (the papermill runner).
"""
__version__ = "0.1.0"
