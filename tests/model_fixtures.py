"""Model variables for tests, drawn with numpy: no jitted init, no jax.random.

`resnet3d.init_variables` under jit, or jax.random per leaf, spends ~20 s per model compiling
threefry on 2 CPU cores; numpy draws the same laws in milliseconds from the shapes alone.
"""
from __future__ import annotations

import functools

import jax
import numpy as np

from cmpl_jax.models import resnet3d


def variables_of_a_net_in_training(model: resnet3d.ResNet3D, clip_shape, seed: int,
                                   random_stats: bool = False):
  """{'params', 'batch_stats'} for clips of `clip_shape` [N, T, S, S, 3], every parameter random
  at the scales of a net in training: conv kernels He-normal (fan_out, the init's law);
  BatchNorm scales in [0.5, 1.5], those of the last BN of each residual branch (init 0, which
  cuts the branch and zeroes its gradients) in [0.2, 0.5]; BatchNorm biases N(0, 0.1); the head
  (init N(0, 0.01), near-uniform softmax) N(0, 0.3). Running statistics are the init's (mean 0,
  var 1), or with `random_stats` mean N(0, 0.1) and var in [0.5, 1.5]."""
  shapes = jax.eval_shape(functools.partial(resnet3d.init_variables, model,
                                            num_frames=clip_shape[1], size=clip_shape[2]),
                          jax.random.key(0))
  rng = np.random.default_rng(seed)
  last_bn = "['conv_b']" if model.architecture.block == "basic" else "['conv_c']"

  def param(path, leaf):
    name, shape = jax.tree_util.keystr(path), leaf.shape
    if "['head']" in name:
      return rng.normal(0, 0.3, shape)
    if name.endswith("['scale']"):
      return rng.uniform(*((0.2, 0.5) if last_bn in name else (0.5, 1.5)), shape)
    if name.endswith("['bias']"):
      return rng.normal(0, 0.1, shape)
    return rng.normal(0, np.sqrt(2 / (np.prod(shape[:3]) * shape[-1])), shape)  # conv kernel

  def stat(path, leaf):
    is_var = jax.tree_util.keystr(path).endswith("['var']")
    if not random_stats:
      return np.full(leaf.shape, float(is_var))
    return rng.uniform(0.5, 1.5, leaf.shape) if is_var else rng.normal(0, 0.1, leaf.shape)

  as_float32 = lambda fn: lambda p, x: fn(p, x).astype(np.float32)  # noqa: E731
  return {"params": jax.tree_util.tree_map_with_path(as_float32(param), shapes["params"]),
          "batch_stats": jax.tree_util.tree_map_with_path(as_float32(stat),
                                                          shapes["batch_stats"])}
