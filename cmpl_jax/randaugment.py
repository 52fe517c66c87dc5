"""RandAugment for clips, on the device: 14 ops, one draw per clip, the same on every frame.

Ops take and return float32[T, S, S, 3] holding integral values in [0, 255]; statistics
(autocontrast range, equalize histogram, contrast mean) are taken over the whole clip. The
definitions are those of the previous TF host pipeline (tests/reference_views.py): PIL-style
enhance factors 1 +- 0.9 level, rotate up to 30 degrees, shear up to 0.3, translate up to 0.45
of the size, nearest-neighbour geometry with grey fill. Used by views.strong_views.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

GREY = 128.0
MAX_MAGNITUDE = 30.0


def _blend(degenerate, image, factor):
  return jnp.clip(degenerate + factor * (image - degenerate), 0.0, 255.0)


def _grey(image):
  """tf.image.rgb_to_grayscale's weights, rounded to integral values."""
  # A weighted sum, not a matmul: accelerators may run float32 matmuls at reduced precision.
  grey = image[..., 0] * 0.2989 + image[..., 1] * 0.5870 + image[..., 2] * 0.1140
  return jnp.round(grey)[..., None]


def affine(image: jax.Array, matrix_2x3: jax.Array) -> jax.Array:
  """Output pixel (x, y) reads input (a x + b y + c, d x + e y + f), nearest neighbour (rounded
  half away from zero), grey outside: tf's ImageProjectiveTransformV3, NEAREST, CONSTANT."""
  t, h, w, _ = image.shape
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                        indexing="ij")
  src_x = matrix_2x3[0, 0] * xs + matrix_2x3[0, 1] * ys + matrix_2x3[0, 2]
  src_y = matrix_2x3[1, 0] * xs + matrix_2x3[1, 1] * ys + matrix_2x3[1, 2]
  round_half_away = lambda v: (jnp.sign(v) * jnp.floor(jnp.abs(v) + 0.5)).astype(jnp.int32)
  src_x, src_y = round_half_away(src_x), round_half_away(src_y)
  inside = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
  flat = (jnp.clip(src_y, 0, h - 1) * w + jnp.clip(src_x, 0, w - 1)).reshape(-1)
  table = jnp.transpose(image, (1, 2, 0, 3)).reshape(h * w, t * 3)  # contiguous rows
  moved = jnp.transpose(jnp.take(table, flat, axis=0).reshape(h, w, t, 3), (2, 0, 1, 3))
  return jnp.where(inside[None, :, :, None], moved, GREY)


def _rotate(image, level, sign):
  angle = sign * level * math.radians(30.0)
  h, w = image.shape[1] - 1.0, image.shape[2] - 1.0
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  x_offset = (w - (cos * w - sin * h)) / 2
  y_offset = (h - (sin * w + cos * h)) / 2
  return affine(image, jnp.array([[cos, -sin, x_offset], [sin, cos, y_offset]]))


def _shear(image, level, sign, axis: int):
  """Shear about the centre by up to 0.3 (axis 0: along x, 1: along y)."""
  shear = sign * level * 0.3
  centre = (image.shape[1 + axis] - 1) / 2
  if axis == 0:
    return affine(image, jnp.array([[1.0, shear, -shear * centre], [0.0, 1.0, 0.0]]))
  return affine(image, jnp.array([[1.0, 0.0, 0.0], [shear, 1.0, -shear * centre]]))


def _translate(image, level, sign, axis: int):
  """Translate by up to 0.45 of the size (axis 0: along x, 1: along y)."""
  shift = sign * level * 0.45 * image.shape[2 - axis]
  if axis == 0:
    return affine(image, jnp.array([[1.0, 0.0, shift], [0.0, 1.0, 0.0]]))
  return affine(image, jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, shift]]))


def _autocontrast(image, level, sign):
  """Each channel's range over the whole clip stretched to [0, 255]."""
  low = image.min(axis=(0, 1, 2), keepdims=True)
  high = image.max(axis=(0, 1, 2), keepdims=True)
  scale = jnp.where(high > low, 255.0 / jnp.maximum(high - low, 1.0), 1.0)
  offset = jnp.where(high > low, low, 0.0)
  return jnp.clip(jnp.round((image - offset) * scale), 0.0, 255.0)


def _equalize(image, level, sign):
  """PIL's histogram equalisation per channel, with the histogram of the whole clip."""
  values = image.astype(jnp.int32)
  out = []
  for c in range(3):
    channel = values[..., c]
    histogram = jnp.bincount(channel.reshape(-1), length=256)
    last = histogram[channel.max()]  # Count of the brightest value present.
    step = (histogram.sum() - last) // 255
    lut = (jnp.cumsum(histogram) + step // 2) // jnp.maximum(step, 1)
    lut = jnp.clip(jnp.concatenate([jnp.zeros(1, lut.dtype), lut[:-1]]), 0, 255)
    lut = jnp.where(step == 0, jnp.arange(256), lut)  # Flat channel: unchanged.
    out.append(lut[channel])
  return jnp.stack(out, axis=-1).astype(jnp.float32)


def _solarize(image, level, sign):
  return jnp.where(image >= 256.0 - level * 256.0, 255.0 - image, image)


def _posterize(image, level, sign):
  shift = jnp.round(level * 4.0).astype(jnp.int32)
  return ((image.astype(jnp.int32) >> shift) << shift).astype(jnp.float32)


def _enhance_factor(level, sign):
  return 1.0 + sign * level * 0.9


def _color(image, level, sign):
  return _blend(_grey(image), image, _enhance_factor(level, sign))


def _contrast(image, level, sign):
  """Blend towards the mean grey level of the whole clip."""
  return _blend(jnp.mean(_grey(image)), image, _enhance_factor(level, sign))


def _brightness(image, level, sign):
  return _blend(jnp.zeros_like(image), image, _enhance_factor(level, sign))


def _sharpness(image, level, sign):
  """PIL's SHARPEN-style blend with a 3x3 smoothed image; border pixels stay as they are."""
  # Kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 = (3x3 box sum + 4 x centre) / 13.
  rows = image[:, :-2] + image[:, 1:-1] + image[:, 2:]
  box = rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:]
  smooth = image.at[:, 1:-1, 1:-1].set(jnp.round((box + 4 * image[:, 1:-1, 1:-1]) / 13.0))
  return _blend(smooth, image, _enhance_factor(level, sign))


RANDAUGMENT_OPS = {
    "identity": lambda image, level, sign: image,
    "autocontrast": _autocontrast,
    "equalize": _equalize,
    "rotate": _rotate,
    "solarize": _solarize,
    "color": _color,
    "posterize": _posterize,
    "contrast": _contrast,
    "brightness": _brightness,
    "sharpness": _sharpness,
    "shear_x": lambda image, level, sign: _shear(image, level, sign, 0),
    "shear_y": lambda image, level, sign: _shear(image, level, sign, 1),
    "translate_x": lambda image, level, sign: _translate(image, level, sign, 0),
    "translate_y": lambda image, level, sign: _translate(image, level, sign, 1),
}
OP_NAMES = tuple(RANDAUGMENT_OPS)


def apply_op(image: jax.Array, op_index: jax.Array, level: float, sign: jax.Array) -> jax.Array:
  """One RandAugment op (by index into OP_NAMES) on one clip, rounded. `lax.switch` runs only
  the chosen op (callers map it over clips rather than vmap it, which would run all 14)."""
  branches = [lambda x, s, op=op: jnp.round(op(x, level, s)) for op in RANDAUGMENT_OPS.values()]
  return lax.switch(op_index, branches, image, sign)


def draws(key: jax.Array, num_layers: int) -> tuple[jax.Array, jax.Array]:
  """(op indices int32[L], signs float32[L]) of one clip's RandAugment layers."""
  op_key, sign_key = jax.random.split(key)
  ops = jax.random.randint(op_key, (num_layers,), 0, len(RANDAUGMENT_OPS))
  signs = jnp.where(jax.random.uniform(sign_key, (num_layers,)) < 0.5, -1.0, 1.0)
  return ops, signs
