"""Analyses over sweeps and activations: layer sensitivity, harmful-cluster drift, ASR–perplexity
trade-off and the most vulnerable approximation (``safestress analyze …``)."""
