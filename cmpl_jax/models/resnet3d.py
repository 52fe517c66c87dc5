"""The Flax 3D-ResNet family: torchvision's `r3d_18` and pytorchvideo's SlowOnly `slow_r50`.

One configurable `ResNet3D`; `ARCHITECTURES` holds the named presets. Topologies (and therefore
parameter counts) match the PyTorch originals exactly, so public Kinetics checkpoints convert
one-to-one (cmpl_jax/tools/import_torch.py):

* `r3d_18`: stem conv 3x7x7 stride 1x2x2 (no pool); basic blocks [2, 2, 2, 2] of 3x3x3 convs;
  stride 2 in T, H and W at the first block of stages 3-5.
* `slowonly_r50`: stem conv 1x7x7 stride 1x2x2 + max-pool 1x3x3 stride 1x2x2; bottleneck blocks
  [3, 4, 6, 3] whose first 1x1 conv has temporal kernel 1 in res2/res3 and 3 in res4/res5;
  spatial stride 2 (on the 1x3x3 conv) at res3-res5; no temporal down-sampling.

Both end in global average pooling, dropout and a linear head. Inputs are `[N, T, H, W, 3]`
floats, already normalised (see `normalize`). Padding is explicit and symmetric (k // 2), as in
PyTorch, rather than XLA's 'SAME', which pads strided convolutions asymmetrically.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# Kinetics RGB statistics used by pytorchvideo/SlowFast; frames arrive as uint8 in [0, 255].
MEAN_RGB = (0.45, 0.45, 0.45)
STD_RGB = (0.225, 0.225, 0.225)


@dataclasses.dataclass(frozen=True)
class Architecture:
  block: str                          # 'basic' (two 3x3x3 convs) | 'bottleneck' (1x1, 3x3, 1x1)
  stage_depths: tuple[int, ...]       # blocks per stage (res2..res5)
  stem_kernel: tuple[int, int, int]   # T, H, W
  stem_pool: bool                     # 1x3x3 max-pool stride 1x2x2 after the stem
  temporal_kernels: tuple[int, ...]   # bottleneck: T kernel of conv_a per stage; basic: of both
  temporal_strides: tuple[int, ...]   # T stride of each stage's first block
  base_width: int = 64                # stem channels at width 1


ARCHITECTURES = {
    "r3d_18": Architecture(block="basic", stage_depths=(2, 2, 2, 2), stem_kernel=(3, 7, 7),
                           stem_pool=False, temporal_kernels=(3, 3, 3, 3),
                           temporal_strides=(1, 2, 2, 2)),
    # r3d_18 with one block per stage: for tests and CPU demos, where XLA compile time scales
    # with the number of layers.
    "r3d_10": Architecture(block="basic", stage_depths=(1, 1, 1, 1), stem_kernel=(3, 7, 7),
                           stem_pool=False, temporal_kernels=(3, 3, 3, 3),
                           temporal_strides=(1, 2, 2, 2)),
    "slowonly_r50": Architecture(block="bottleneck", stage_depths=(3, 4, 6, 3),
                                 stem_kernel=(1, 7, 7), stem_pool=True,
                                 temporal_kernels=(1, 1, 3, 3), temporal_strides=(1, 1, 1, 1)),
}

# He-normal with fan_out, as pytorchvideo/torchvision initialise video ResNets.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _same_padding(kernel: Sequence[int]) -> list[tuple[int, int]]:
  return [(k // 2, k // 2) for k in kernel]


CONV_IMPLS = ("native", "sum_of_2d", "matmul", "hybrid")


def default_conv_impl() -> str:
  """'hybrid' on CPU: XLA:CPU runs matrix products near the cores' peak and 2D convolutions
  well, its 3D convolutions poorly (BENCHMARKS.md has the measurements); 'native' on GPU/TPU,
  whose 3D convolutions are fast."""
  return "hybrid" if jax.default_backend() == "cpu" else "native"


def conv3d_as_sum_of_2d(x_BxTxHxWxC: jax.Array, kernel: jax.Array, strides: Sequence[int],
                        padding: Sequence[tuple[int, int]]) -> jax.Array:
  """The 3D convolution written as kt 2D convolutions over frames, summed.

  out[:, t] = sum_dt conv2d(x_padded[:, t * st + dt], kernel[dt]): the same function (and the
  same parameters) as `lax.conv_general_dilated` in 3D, only laid out for XLA's 2D path.
  """
  kt = kernel.shape[0]
  (st, sh, sw), (pt, _) = strides, padding[0]
  x = jnp.pad(x_BxTxHxWxC, ((0, 0), (pt, pt), (0, 0), (0, 0), (0, 0))) if pt else x_BxTxHxWxC
  n, t_padded = x.shape[:2]
  t_out = (t_padded - kt) // st + 1
  out = None
  for dt in range(kt):
    frames = x[:, dt:dt + st * (t_out - 1) + 1:st]
    y = lax.conv_general_dilated(frames.reshape(n * t_out, *frames.shape[2:]), kernel[dt],
                                 (sh, sw), padding[1:], dimension_numbers=("NHWC", "HWIO", "NHWC"))
    out = y if out is None else out + y
  return out.reshape(n, t_out, *out.shape[1:])


def conv3d_as_matmul(x_BxTxHxWxC: jax.Array, kernel: jax.Array, strides: Sequence[int],
                     padding: Sequence[tuple[int, int]]) -> jax.Array:
  """The 3D convolution as one matrix product over its patches (im2col).

  The kt*kh*kw shifted, strided views of the padded input are stacked on the channel axis,
  in the kernel's (t, h, w, in) order, so out = patches @ kernel.reshape(-1, out): the same
  function and parameters as `lax.conv_general_dilated`. Its forward and both gradients are
  then matrix products, which XLA:CPU runs near the cores' peak, unlike its convolutions.
  """
  kernel_shape = kernel.shape[:3]
  x = jnp.pad(x_BxTxHxWxC, ((0, 0), *padding, (0, 0))) if any(map(any, padding)) \
      else x_BxTxHxWxC
  out_shape = [(x.shape[1 + a] - kernel_shape[a]) // strides[a] + 1 for a in range(3)]
  patches = []
  for start in itertools.product(*(range(k) for k in kernel_shape)):
    window = tuple(slice(start[a], start[a] + strides[a] * (out_shape[a] - 1) + 1, strides[a])
                   for a in range(3))
    patches.append(x[(slice(None), *window)])
  cols = patches[0] if len(patches) == 1 else jnp.concatenate(patches, axis=-1)
  # As a 2D product: its weight gradient is then cols^T @ dy on [M, K] x [M, F] matrices,
  # which XLA:CPU runs without first transposing either (rank-5 operands got transposed).
  out = jnp.dot(cols.reshape(-1, cols.shape[-1]), kernel.reshape(-1, kernel.shape[-1]))
  return out.reshape(*cols.shape[:-1], kernel.shape[-1])


class Conv3D(nn.Module):
  """Bias-free 3D convolution, PyTorch-style symmetric padding; `impl` picks XLA's route."""
  features: int
  kernel_size: tuple[int, int, int]
  strides: tuple[int, int, int] = (1, 1, 1)
  impl: str = "native"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", _conv_init, (*self.kernel_size, x.shape[-1], self.features),
                        jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    padding = _same_padding(self.kernel_size)
    if self.impl == "sum_of_2d":
      return conv3d_as_sum_of_2d(x, kernel, self.strides, padding)
    if self.impl == "hybrid":
      if self.kernel_size[1:] == (1, 1):
        return conv3d_as_matmul(x, kernel, self.strides, padding)
      return conv3d_as_sum_of_2d(x, kernel, self.strides, padding)
    if self.impl == "matmul":
      return conv3d_as_matmul(x, kernel, self.strides, padding)
    return lax.conv_general_dilated(x, kernel, self.strides, padding,
                                    dimension_numbers=("NTHWC", "THWIO", "NTHWC"))


def stem_max_pool(x_BxTxHxWxC: jax.Array, impl: str) -> jax.Array:
  """Max-pool 1x3x3, stride 1x2x2, padding 1 (-inf) in H and W: pytorchvideo's stem pool.

  Outside `impl='native'`, as two 3-way maxima of strided views (over W, then H). XLA:CPU
  lowers the reduce-window's gradient (select-and-scatter) to index tensors and a scatter that
  cost ~7% of the paper pair's CPU step (BENCHMARKS.md). Same forward; same gradient except
  between exactly tied maxima, which split it instead of one taking all (here the pool follows a
  ReLU, whose gradient is 0 at the zeros that tie).
  """
  if impl == "native":
    return nn.max_pool(x_BxTxHxWxC, (1, 3, 3), (1, 2, 2), padding=((0, 0), (1, 1), (1, 1)))
  x = x_BxTxHxWxC
  for axis in (3, 2):  # W, then H
    size = x.shape[axis]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (1, 1)
    x = jnp.pad(x, pad, constant_values=-jnp.inf)
    out = (size - 1) // 2 + 1
    views = [lax.slice_in_dim(x, d, d + 2 * (out - 1) + 1, 2, axis) for d in range(3)]
    x = jnp.maximum(jnp.maximum(views[0], views[1]), views[2])
  return x


class _ConvBN(nn.Module):
  """Conv3D (no bias) -> BatchNorm (-> ReLU)."""
  features: int
  kernel: tuple[int, int, int]
  strides: tuple[int, int, int] = (1, 1, 1)
  relu: bool = True
  zero_init_scale: bool = False  # last BN of a residual branch starts at 0: block = identity
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None
  conv_impl: str = "native"

  @nn.compact
  def __call__(self, x, train: bool):
    x = Conv3D(self.features, self.kernel, self.strides, self.conv_impl, self.dtype,
               name="conv")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     dtype=self.dtype, axis_name=self.bn_axis_name if train else None,
                     scale_init=(nn.initializers.zeros if self.zero_init_scale
                                 else nn.initializers.ones), name="bn")(x)
    return nn.relu(x) if self.relu else x


class _Block(nn.Module):
  """Residual block; `block='basic'` (r3d) or `'bottleneck'` (SlowOnly)."""
  block: str
  inner: int
  out: int
  temporal_kernel: int
  strides: tuple[int, int, int]
  conv_bn: Any  # functools.partial(_ConvBN, dtype=..., bn_axis_name=...)

  @nn.compact
  def __call__(self, x, train: bool):
    tk = self.temporal_kernel
    if self.block == "basic":
      y = self.conv_bn(self.out, (3, 3, 3), self.strides, name="conv_a")(x, train)
      y = self.conv_bn(self.out, (3, 3, 3), relu=False, zero_init_scale=True,
                       name="conv_b")(y, train)
    else:  # bottleneck; the stride sits on the 1x3x3 conv as in pytorchvideo
      y = self.conv_bn(self.inner, (tk, 1, 1), name="conv_a")(x, train)
      y = self.conv_bn(self.inner, (1, 3, 3), self.strides, name="conv_b")(y, train)
      y = self.conv_bn(self.out, (1, 1, 1), relu=False, zero_init_scale=True,
                       name="conv_c")(y, train)
    if x.shape[-1] != self.out or self.strides != (1, 1, 1):
      x = self.conv_bn(self.out, (1, 1, 1), self.strides, relu=False, name="shortcut")(x, train)
    return nn.relu(x + y)


class ResNet3D(nn.Module):
  """A 3D-ResNet from `ARCHITECTURES`, scaled in width by `width_multiplier`."""
  architecture: Architecture
  num_classes: int
  width_multiplier: float = 1.0
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32           # compute dtype; parameters stay float32
  bn_axis_name: str | None = None    # e.g. 'batch': BatchNorm statistics averaged over devices
  conv_impl: str = "native"          # one of CONV_IMPLS (same maths; see Conv3D)

  def _width(self, channels: int) -> int:
    return max(1, int(round(channels * self.width_multiplier)))

  @nn.compact
  def __call__(self, x_BxTxHxWx3: jax.Array, train: bool = False,
               dropout_keys_B: jax.Array | None = None,
               dropout_B: jax.Array | None = None) -> jax.Array:
    """Logits [B, K]. In training, dropout before the head draws from the 'dropout' rng
    collection, or, given `dropout_keys_B`, one mask per clip from its own key (so a clip's
    mask does not depend on the device it runs on or its neighbours); `dropout_B` (bool) turns
    it off for the clips where it is False."""
    arch = self.architecture
    conv_bn = functools.partial(_ConvBN, dtype=self.dtype, bn_axis_name=self.bn_axis_name,
                                conv_impl=self.conv_impl)
    x = x_BxTxHxWx3.astype(self.dtype)
    x = conv_bn(self._width(arch.base_width), arch.stem_kernel, (1, 2, 2), name="stem")(x, train)
    if arch.stem_pool:
      x = stem_max_pool(x, self.conv_impl)
    expansion = 4 if arch.block == "bottleneck" else 1
    for stage, depth in enumerate(arch.stage_depths):
      inner = self._width(arch.base_width * 2 ** stage)
      for i in range(depth):
        spatial = 2 if (i == 0 and stage > 0) else 1
        temporal = arch.temporal_strides[stage] if i == 0 else 1
        x = _Block(arch.block, inner, inner * expansion, arch.temporal_kernels[stage],
                   (temporal, spatial, spatial), conv_bn, name=f"res{stage + 2}_{i}")(x, train)
    x_BxC = jnp.mean(x, axis=(1, 2, 3))
    if dropout_keys_B is None:
      if dropout_B is not None:
        raise ValueError("dropout_B needs dropout_keys_B (one key per clip)")
      x_BxC = nn.Dropout(self.dropout_rate, deterministic=not train)(x_BxC)
    elif train and self.dropout_rate > 0:
      x_BxC = _keyed_dropout(x_BxC, self.dropout_rate, dropout_keys_B, dropout_B)
    logits_BxK = nn.Dense(self.num_classes, dtype=self.dtype, name="head",
                          kernel_init=nn.initializers.normal(0.01))(x_BxC)
    return logits_BxK.astype(jnp.float32)


def _keyed_dropout(x_BxC: jax.Array, rate: float, keys_B: jax.Array,
                   apply_B: jax.Array | None) -> jax.Array:
  """Inverted dropout with one mask per row from `keys_B`, skipped where `apply_B` is False."""
  keep_BxC = jax.vmap(lambda k: jax.random.bernoulli(k, 1.0 - rate, x_BxC.shape[1:]))(keys_B)
  dropped_BxC = jnp.where(keep_BxC, x_BxC / (1.0 - rate), 0).astype(x_BxC.dtype)
  return dropped_BxC if apply_B is None else jnp.where(apply_B[:, None], dropped_BxC, x_BxC)


def create_model(name: str, num_classes: int, *, width_multiplier: float = 1.0,
                 dropout_rate: float = 0.5, dtype: Any = jnp.float32,
                 bn_axis_name: str | None = None, conv_impl: str = "auto") -> ResNet3D:
  """A preset; `conv_impl='auto'` picks `default_conv_impl()` for the current backend."""
  if name not in ARCHITECTURES:
    raise ValueError(f"unknown model name {name!r}; allowed: {sorted(ARCHITECTURES)}")
  if not width_multiplier > 0:
    raise ValueError(f"width_multiplier must be > 0, got {width_multiplier}")
  conv_impl = default_conv_impl() if conv_impl == "auto" else conv_impl
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f"conv_impl={conv_impl!r}; allowed: ['auto', {', '.join(map(repr, CONV_IMPLS))}]")
  return ResNet3D(ARCHITECTURES[name], num_classes, width_multiplier=width_multiplier,
                  dropout_rate=dropout_rate, dtype=dtype, bn_axis_name=bn_axis_name,
                  conv_impl=conv_impl)


def normalize(frames_uint8: jax.Array, dtype: Any = jnp.float32) -> jax.Array:
  """uint8 RGB frames -> normalised floats (done on device: hosts ship uint8, 4x less data)."""
  mean = jnp.asarray(MEAN_RGB, dtype) * 255
  std = jnp.asarray(STD_RGB, dtype) * 255
  return (frames_uint8.astype(dtype) - mean) / std


def init_variables(model: ResNet3D, rng: jax.Array, num_frames: int, size: int):
  """Variables {'params', 'batch_stats'} for clips of `num_frames` x `size` x `size`."""
  dummy = jnp.zeros((1, num_frames, size, size, 3), jnp.float32)
  return model.init({"params": rng}, dummy, train=False)


def count_params(params) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))


def flops_per_clip(model: ResNet3D, num_frames: int, size: int) -> float:
  """Forward FLOPs of one clip from XLA's cost analysis (a multiply-add counts as 2)."""
  variables = jax.eval_shape(functools.partial(init_variables, model, num_frames=num_frames,
                                               size=size), jax.random.key(0))
  clip = jax.ShapeDtypeStruct((1, num_frames, size, size, 3), jnp.float32)
  lowered = jax.jit(functools.partial(model.apply, train=False)).lower(variables, clip)
  cost = lowered.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax returns one dict per computation
    cost = cost[0]
  return float(cost["flops"])


def summary(model: ResNet3D, num_frames: int, size: int, name: str = "") -> str:
  """One line: parameters and forward GFLOPs per clip of the given shape."""
  variables = jax.eval_shape(functools.partial(init_variables, model, num_frames=num_frames,
                                               size=size), jax.random.key(0))
  params = count_params(variables["params"])
  flops = flops_per_clip(model, num_frames, size)
  amount = f"{flops / 1e9:.2f} GFLOPs" if flops >= 1e8 else f"{flops / 1e6:.2f} MFLOPs"
  label = name or type(model).__name__
  return (f"{label}: {params:,} params, {amount} per {num_frames}x{size}x{size} clip "
          f"(XLA cost analysis, multiply-add = 2 FLOPs), width x{model.width_multiplier:g}, "
          f"{model.num_classes} classes")


def _print_model_table(num_classes: int = 400, num_frames: int = 8, size: int = 224) -> None:
  for name, width in [("r3d_18", 1.0), ("r3d_18", 0.25), ("slowonly_r50", 1.0),
                      ("slowonly_r50", 0.25)]:
    model = create_model(name, num_classes, width_multiplier=width)
    print(summary(model, num_frames, size, name))


if __name__ == "__main__":
  import sys
  _print_model_table(*(int(a) for a in sys.argv[1:4]))
