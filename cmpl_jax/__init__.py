"""Cross-Model Pseudo-Labeling (CMPL) for semi-supervised action recognition in JAX/Flax."""

__version__ = "0.1.0"
