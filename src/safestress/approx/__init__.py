"""Activation approximations as perturbations: what cheap or private inference does to a model.

Polynomial activations (private inference), TEAL/CATS sparsification and activation
quantization (plain, SmoothQuant, OmniQuant-style clipping) are registered perturbations, so
they sweep, store, judge and report like noise. Those that calibrate on the model's own
activations do it once per model, data and settings (:mod:`safestress.approx.calibrate`).
"""
