"""Flax video backbones."""
