"""Command-line utilities that sit beside training (e.g. importing PyTorch checkpoints)."""
