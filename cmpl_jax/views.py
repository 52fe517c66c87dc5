"""The views of a clip, computed on the device inside the jitted step (no TensorFlow).

The host ships each clip's window of decoded frames once, on a fixed-size canvas (see
cmpl_jax/data/clips.py); everything random and spatial happens here, keyed by the step's rng:

  weak / labeled: scale-jitter crop (area in [min_area, 1] of the frame, aspect in [3/4, 4/3],
    drawn like tf.image.sample_distorted_bounding_box, 10 attempts then the whole frame)
    resized bilinearly to an S x S square + flip with p=0.5.
  strong: its own weak crop/flip, then RandAugment (`num_layers` ops drawn uniformly per clip at
    a fixed magnitude out of 30, random sign where it has one) and one grey Cutout square.
  eval: short side resized to S, then 1 (centre) or 3 crops along the long side.

A view uses one set of random parameters per clip, applied to every frame, and per-clip
statistics (autocontrast range, equalize histogram, contrast mean) are taken over the whole
clip, so a pixel value maps to the same output in every frame. Resizing is bilinear with
half-pixel centres and no antialiasing (tf.image.resize's `bilinear`), done as two 2-tap
gathers: cheap on every backend, unlike a dense resampling matmul.

Canvas (per clip, from the host): `frames uint8[U, H, W, 3]`, `size int32[2]` = the frame's
(height, width) in its upright orientation, `transposed bool`: portrait frames are stored with
rows and columns swapped so the long side always runs along the canvas width; pixels outside
`size` are padding and never read. Views come out as float32 holding integral values in
[0, 255] (what the model's `normalize` takes).

Randomness: clip b of stream `stream` draws from fold_in(fold_in(key, stream), position_b),
where position is the clip's place in its stream (pipeline.py); so a view depends on the seed,
the stream and the position only, never on the device or host that computes it.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from cmpl_jax import randaugment
from cmpl_jax.data import sampling

GREY = randaugment.GREY
ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)
CROP_ATTEMPTS = 10


class Taps(NamedTuple):
  """Bilinear sampling along one axis: out[i] = in[lo[i]] * (1 - frac[i]) + in[hi[i]] * frac[i]."""
  lo: jax.Array
  hi: jax.Array
  frac: jax.Array


def taps(size: int, origin: jax.Array, scale: jax.Array, first: jax.Array, last: jax.Array
         ) -> Taps:
  """Output pixel i samples input coordinate origin + (i + 0.5) * scale - 0.5, clamped to
  [first, last] (tf.image.resize's half-pixel-centre convention)."""
  first = jnp.asarray(first, jnp.float32)
  last = jnp.asarray(last, jnp.float32)
  source = origin + (jnp.arange(size, dtype=jnp.float32) + 0.5) * scale - 0.5
  source = jnp.clip(source, first, last)
  floor = jnp.floor(source)
  return Taps(floor.astype(jnp.int32), jnp.minimum(floor + 1, last).astype(jnp.int32),
              source - floor)


def sample(frames_UxHxWx3: jax.Array, rows: Taps, cols: Taps, transposed: jax.Array
           ) -> jax.Array:
  """float32[U, S, S, 3] bilinear samples at the upright frame's (rows, cols) taps.

  One gather of the 4 neighbours per output pixel from the canvas laid out as [H * W, U * 3]:
  each index fetches a contiguous row (every frame's pixel at once), and the transposition
  of portrait frames is folded into the indices, not done on pixels.
  """
  num_frames, height, width, _ = frames_UxHxWx3.shape
  size_y, size_x = rows.lo.shape[0], cols.lo.shape[0]
  table = jnp.transpose(frames_UxHxWx3, (1, 2, 0, 3)).reshape(height * width, num_frames * 3)

  def flat(y, x):  # upright (y, x) -> canvas row
    return jnp.where(transposed, x[None, :] * width + y[:, None],
                     y[:, None] * width + x[None, :]).reshape(-1)

  fy, fx = rows.frac[:, None, None], cols.frac[None, :, None]
  out = 0.0
  for y, wy in ((rows.lo, 1 - fy), (rows.hi, fy)):
    for x, wx in ((cols.lo, 1 - fx), (cols.hi, fx)):
      pixels = jnp.take(table, flat(y, x), axis=0).astype(jnp.float32)
      out = out + pixels.reshape(size_y, size_x, num_frames * 3) * (wy * wx)
  return jnp.transpose(out.reshape(size_y, size_x, num_frames, 3), (2, 0, 1, 3))


def resample(frames_UxHxWx3: jax.Array, rows: Taps, cols: Taps, transposed: jax.Array
             ) -> jax.Array:
  """`sample`, rounded to integral values in [0, 255] (what a uint8 image would hold)."""
  return jnp.clip(jnp.round(sample(frames_UxHxWx3, rows, cols, transposed)), 0.0, 255.0)


# --------------------------------------------------------------------------- weak view


def crop_box(key: jax.Array, height: jax.Array, width: jax.Array, min_area: float
             ) -> jax.Array:
  """int32[4] (y, x, h, w) of a scale-jitter crop, drawn as tf.image's
  sample_distorted_bounding_box draws it (area in [min_area, 1], aspect w/h in [3/4, 4/3], 10
  attempts, else the whole frame): per attempt an aspect uniform in the range, the crop height
  uniform between the heights of the smallest and the largest allowed area at that aspect
  (capped to fit), width = round(height x aspect), position uniform."""
  aspect_key, height_key, y_key, x_key = jax.random.split(key, 4)
  frame_h, frame_w = height.astype(jnp.float32), width.astype(jnp.float32)
  lo_area, hi_area = min_area * frame_h * frame_w, frame_h * frame_w
  aspect = jax.random.uniform(aspect_key, (CROP_ATTEMPTS,), minval=ASPECT_RATIO_RANGE[0],
                              maxval=ASPECT_RATIO_RANGE[1])
  rint = lambda v: jnp.round(v).astype(jnp.int32)  # lrintf: half to even, as jnp.round
  box_h = rint(jnp.sqrt(lo_area / aspect))
  max_h = rint(jnp.sqrt(hi_area / aspect))
  too_wide = rint(max_h * aspect) > width
  max_h = jnp.where(too_wide, ((frame_w + 0.5 - 1e-7) / aspect).astype(jnp.int32), max_h)
  max_h = jnp.where(too_wide & (rint(max_h * aspect) > width), max_h - 1, max_h)
  max_h = jnp.minimum(max_h, height)
  box_h = jnp.minimum(box_h, max_h)
  extra = jnp.floor(jax.random.uniform(height_key, (CROP_ATTEMPTS,)) *
                    (max_h - box_h + 1).astype(jnp.float32)).astype(jnp.int32)
  box_h = box_h + jnp.minimum(extra, max_h - box_h)
  for _ in range(2):  # rounding may leave the area just below the minimum: grow by a row
    small = (rint(box_h * aspect) * box_h).astype(jnp.float32) < lo_area
    box_h = jnp.where(small, box_h + 1, box_h)
  box_w = rint(box_h * aspect)
  area = (box_w * box_h).astype(jnp.float32)
  fits = ((area >= lo_area) & (area <= hi_area) & (box_w <= width) & (box_h <= height) &
          (box_w > 0) & (box_h > 0))
  first = jnp.argmax(fits)
  box_h = jnp.where(fits.any(), box_h[first], height)
  box_w = jnp.where(fits.any(), box_w[first], width)
  # Uniform in [0, frame - box) (tf's Uniform(n)), 0 when the box spans the frame.
  y = jnp.floor(jax.random.uniform(y_key) * (height - box_h).astype(jnp.float32))
  x = jnp.floor(jax.random.uniform(x_key) * (width - box_w).astype(jnp.float32))
  y = jnp.clip(y.astype(jnp.int32), 0, jnp.maximum(height - box_h - 1, 0))
  x = jnp.clip(x.astype(jnp.int32), 0, jnp.maximum(width - box_w - 1, 0))
  return jnp.stack([y, x, box_h, box_w])


def crop_taps(box_4: jax.Array, flip: jax.Array, crop_size: int) -> tuple[Taps, Taps]:
  """(rows, cols) taps of crop `box_4` (y, x, h, w) resized to S, columns reversed when
  flipped. The crop is an image of its own: sampling clamps at its borders."""
  y, x, h, w = (box_4[i].astype(jnp.float32) for i in range(4))
  rows = taps(crop_size, y, h / crop_size, y, y + h - 1)
  cols = taps(crop_size, x, w / crop_size, x, x + w - 1)
  return rows, Taps(*(jnp.where(flip, c[::-1], c) for c in cols))


def crop_resize_flip(frames: jax.Array, transposed: jax.Array, box_4: jax.Array,
                     flip: jax.Array, crop_size: int) -> jax.Array:
  """float32[U, S, S, 3]: crop `box_4` of every frame, resized to S, maybe flipped (rounded)."""
  return resample(frames, *crop_taps(box_4, flip, crop_size), transposed)


def weak_view(key: jax.Array, frames: jax.Array, size_2: jax.Array, transposed: jax.Array, *,
              crop_size: int, min_area: float) -> jax.Array:
  box_key, flip_key = jax.random.split(key)
  box_4 = crop_box(box_key, size_2[0], size_2[1], min_area)
  flip = jax.random.uniform(flip_key) < 0.5
  return crop_resize_flip(frames, transposed, box_4, flip, crop_size)


def cutout(image: jax.Array, centre_2: jax.Array, size: int) -> jax.Array:
  """One grey `size` square centred at pixel `centre_2` (y, x), clipped at the borders."""
  if size <= 0:
    return image
  h, w = image.shape[1], image.shape[2]
  top, left = centre_2[0] - size // 2, centre_2[1] - size // 2
  rows = (jnp.arange(h) >= top) & (jnp.arange(h) < top + size)
  cols = (jnp.arange(w) >= left) & (jnp.arange(w) < left + size)
  return jnp.where((rows[:, None] & cols[None, :])[None, :, :, None], GREY, image)


class ViewConfig(NamedTuple):
  """The static settings of the views (from config.data; see config_checks for their ranges)."""
  crop_size: int
  min_area: float
  num_layers: int
  magnitude: float
  cutout_size: int

  @classmethod
  def from_config(cls, config: Any) -> "ViewConfig":
    crop = int(config.data.crop_size)
    return cls(crop, float(config.data.min_area), int(config.data.randaugment_layers),
               float(config.data.randaugment_magnitude),
               int(round(float(config.data.cutout_fraction) * crop)))


def strong_draws(key: jax.Array, size_2: jax.Array, cfg: ViewConfig) -> dict[str, jax.Array]:
  """Every random choice of one strong view."""
  weak_key, op_key, y_key, x_key = jax.random.split(key, 4)
  box_key, flip_key = jax.random.split(weak_key)
  ops, signs = randaugment.draws(op_key, cfg.num_layers)
  centre = jnp.stack([jax.random.randint(y_key, (), 0, cfg.crop_size),
                      jax.random.randint(x_key, (), 0, cfg.crop_size)])
  return {"box": crop_box(box_key, size_2[0], size_2[1], cfg.min_area),
          "flip": jax.random.uniform(flip_key) < 0.5, "ops": ops, "signs": signs,
          "centre": centre}


# --------------------------------------------------------------------------- batches


def clip_keys(key: jax.Array, stream: int, positions_B: jax.Array) -> jax.Array:
  """One key per clip, from (key, stream, position): independent of where the clip runs."""
  stream_key = jax.random.fold_in(key, stream)
  return jax.vmap(lambda p: jax.random.fold_in(stream_key, p))(positions_B)


def model_frames(frames_BxUxHxWx3: jax.Array, positions: tuple[int, ...]) -> jax.Array:
  """A model's frames out of the window's union (static positions, see sampling.py)."""
  return frames_BxUxHxWx3[:, jnp.asarray(positions)]


def weak_views(keys_B: jax.Array, frames_BxTxHxWx3: jax.Array, size_Bx2: jax.Array,
               transposed_B: jax.Array, cfg: ViewConfig) -> jax.Array:
  fn = lambda k, f, s, t: weak_view(k, f, s, t, crop_size=cfg.crop_size, min_area=cfg.min_area)
  return jax.vmap(fn)(keys_B, frames_BxTxHxWx3, size_Bx2, transposed_B)


def strong_views(keys_B: jax.Array, frames_BxTxHxWx3: jax.Array, size_Bx2: jax.Array,
                 transposed_B: jax.Array, cfg: ViewConfig) -> jax.Array:
  """The crops are vmapped; the RandAugment ops run clip by clip (`lax.map`), so each clip
  computes only the ops it drew."""
  draws = jax.vmap(lambda k, s: strong_draws(k, s, cfg))(keys_B, size_Bx2)
  crops = jax.vmap(lambda f, t, d: crop_resize_flip(f, t, d["box"], d["flip"],
                                                    cfg.crop_size))(
      frames_BxTxHxWx3, transposed_B, draws)
  level = cfg.magnitude / randaugment.MAX_MAGNITUDE

  def augment(args):
    image, d = args
    for layer in range(cfg.num_layers):
      image = randaugment.apply_op(image, d["ops"][layer], level, d["signs"][layer])
    return image

  if cfg.num_layers:
    crops = lax.map(augment, (crops, draws))
  return jax.vmap(lambda image, c: cutout(image, c, cfg.cutout_size))(crops, draws["centre"])


# --------------------------------------------------------------------------- eval views


def eval_taps(size_2: jax.Array, crop_size: int, num_crops: int) -> list[tuple[Taps, Taps]]:
  """(rows, cols) taps of each eval crop: the short side resized to S, then crop j (crop pixel
  i is resized pixel offset + i; sampling clamps at the frame's borders)."""
  height, width = size_2[0], size_2[1]
  new_h, new_w = sampling.resized_shape(height, width, crop_size, xp=jnp)
  offsets = sampling.eval_crop_offsets(new_h, new_w, crop_size, num_crops, xp=jnp)
  scale_y = height.astype(jnp.float32) / new_h.astype(jnp.float32)
  scale_x = width.astype(jnp.float32) / new_w.astype(jnp.float32)
  out = []
  for crop in range(num_crops):
    oy, ox = offsets[crop, 0].astype(jnp.float32), offsets[crop, 1].astype(jnp.float32)
    out.append((taps(crop_size, oy * scale_y, scale_y, 0, height - 1),
                taps(crop_size, ox * scale_x, scale_x, 0, width - 1)))
  return out


def eval_views(frames_JxTxHxWx3: jax.Array, size_2: jax.Array, transposed: jax.Array, *,
               crop_size: int, num_crops: int) -> jax.Array:
  """float32[J * num_crops, T, S, S, 3] of one video, view v = window j * num_crops + crop."""
  crops = eval_taps(size_2, crop_size, num_crops)
  return jnp.stack([resample(frames_JxTxHxWx3[clip], rows, cols, transposed)
                    for clip in range(frames_JxTxHxWx3.shape[0]) for rows, cols in crops])
