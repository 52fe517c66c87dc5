"""Video augmentations in TF: one set of random parameters per clip, applied to every frame.

A clip is `uint8[T, H, W, 3]`. All randomness comes from stateless ops seeded by an explicit
`seed` (int32/int64 `[2]`), so a view is a pure function of (clip, seed): the pipeline derives
seeds from (config.seed, stream, element), which makes batches reproducible and resumable.

Views (FixMatch-style; the paper's exact augmentations are not public, see configs/default.py):
  weak / labeled: scale-jitter crop (area in [min_area, 1], aspect in [3/4, 4/3]) resized to a
    `crop_size` square + horizontal flip with p=0.5.
  strong: its own weak crop/flip, then RandAugment (`num_layers` ops drawn per clip at a fixed
    magnitude out of 30, random sign where it has one) and one grey Cutout square.
  eval: short side resized to `crop_size`, then 1 (centre) or 3 crops along the long side.
Per-clip statistics (autocontrast range, equalize histogram, contrast mean) are taken over the
whole clip, so the same pixel value maps to the same output in every frame.

A weak/strong view accepts either decoded frames or, with `encoded=True`, the JPEG strings of its
frames, which it decodes only inside the crop window (`tf.io.decode_and_crop_jpeg`).
"""
from __future__ import annotations

import math

import tensorflow as tf

try:  # TF must never take accelerator memory from JAX (as in the flax examples).
  tf.config.set_visible_devices([], "GPU")
except (RuntimeError, ValueError):  # Devices already initialised, or no GPU support.
  pass

GREY = 128
ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)
MAX_MAGNITUDE = 30.0
# Bilinear without antialiasing: crops are mostly upscaled or mildly downscaled to crop_size.
ANTIALIAS = False

_UINT8_FRAME = tf.TensorSpec([None, None, 3], tf.uint8)


def split_seed(seed: tf.Tensor, num: int) -> list[tf.Tensor]:
  """`num` independent stateless seeds from one."""
  return tf.unstack(tf.random.experimental.stateless_split(seed, num))


def to_uint8(x: tf.Tensor) -> tf.Tensor:
  return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


# --------------------------------------------------------------------------- decoding


def decode_frames(encoded_T: tf.Tensor, jpeg: bool = True) -> tf.Tensor:
  """uint8[T, H, W, 3] from encoded frames (JPEG, or anything `decode_image` reads)."""
  def decode(data):
    if jpeg:
      return tf.io.decode_jpeg(data, channels=3)
    return tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
  return tf.map_fn(decode, encoded_T, fn_output_signature=_UINT8_FRAME)


def frame_size(clip: tf.Tensor, encoded: bool) -> tuple[tf.Tensor, tf.Tensor]:
  """(height, width) of decoded frames, or of the first JPEG of an encoded clip."""
  if encoded:
    shape = tf.io.extract_jpeg_shape(clip[0])
  else:
    shape = tf.shape(clip)[1:]
  return shape[0], shape[1]


# --------------------------------------------------------------------------- weak view


def weak_params(seed: tf.Tensor, height: tf.Tensor, width: tf.Tensor, min_area: float
                ) -> tuple[tf.Tensor, tf.Tensor]:
  """(crop window int32[4] = (y, x, h, w), flip bool) of a scale-jitter crop + flip."""
  crop_seed, flip_seed = split_seed(seed, 2)
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      image_size=tf.stack([height, width, 3]),
      bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
      seed=crop_seed, min_object_covered=0.0, aspect_ratio_range=ASPECT_RATIO_RANGE,
      area_range=(float(min_area), 1.0), max_attempts=10, use_image_if_no_bounding_boxes=True)
  window_4 = tf.cast(tf.concat([begin[:2], size[:2]], axis=0), tf.int32)
  flip = tf.random.stateless_uniform([], flip_seed) < 0.5
  return window_4, flip


def crop_resize_flip(clip: tf.Tensor, window_4: tf.Tensor, flip: tf.Tensor, crop_size: int,
                     encoded: bool = False) -> tf.Tensor:
  """uint8[T, S, S, 3]: the same crop window, resize and flip on every frame."""
  if encoded:
    frames = tf.map_fn(lambda data: tf.io.decode_and_crop_jpeg(data, window_4, channels=3),
                       clip, fn_output_signature=_UINT8_FRAME)
  else:
    frames = tf.slice(clip, [0, window_4[0], window_4[1], 0], [-1, window_4[2], window_4[3], -1])
  frames = to_uint8(tf.image.resize(frames, [crop_size, crop_size], antialias=ANTIALIAS))
  frames = tf.ensure_shape(frames, [None, crop_size, crop_size, 3])
  return tf.cond(flip, lambda: tf.reverse(frames, axis=[2]), lambda: frames)


def weak_view(clip: tf.Tensor, seed: tf.Tensor, *, crop_size: int, min_area: float,
              encoded: bool = False) -> tf.Tensor:
  """uint8[T, S, S, 3] weak (= labeled) view of a clip (decoded, or JPEGs with encoded=True)."""
  height, width = frame_size(clip, encoded)
  window_4, flip = weak_params(seed, height, width, min_area)
  return crop_resize_flip(clip, window_4, flip, crop_size, encoded)


def strong_view(clip: tf.Tensor, seed: tf.Tensor, *, crop_size: int, min_area: float,
                num_layers: int, magnitude: float, cutout_fraction: float,
                encoded: bool = False) -> tf.Tensor:
  """uint8[T, S, S, 3]: own weak crop/flip, RandAugment, Cutout (one draw per clip)."""
  weak_seed, randaugment_seed, cutout_seed = split_seed(seed, 3)
  frames = weak_view(clip, weak_seed, crop_size=crop_size, min_area=min_area, encoded=encoded)
  frames = randaugment(frames, randaugment_seed, num_layers, magnitude)
  return cutout(frames, cutout_seed, int(round(cutout_fraction * crop_size)))


# --------------------------------------------------------------------------- RandAugment ops
# Ops take and return float32[T, H, W, 3] holding integral values in [0, 255].


def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  return tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 255.0)


def _affine(image: tf.Tensor, transform_8: tf.Tensor) -> tf.Tensor:
  """Projective transform (output pixel -> input pixel), grey fill, same on every frame.

  Nearest-neighbour, as torchvision's RandAugment default (and ~35% cheaper than bilinear).
  """
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=image, transforms=tf.reshape(tf.cast(transform_8, tf.float32), [1, 8]),
      output_shape=tf.shape(image)[1:3], fill_value=float(GREY), interpolation="NEAREST",
      fill_mode="CONSTANT")


def _rotate(image, level, sign):
  angle = sign * level * math.radians(30.0)
  height, width = tf.cast(tf.shape(image)[1], tf.float32), tf.cast(tf.shape(image)[2], tf.float32)
  cos, sin = tf.cos(angle), tf.sin(angle)
  x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2
  y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2
  return _affine(image, tf.stack([cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0]))


def _shear(image, level, sign, axis: int):
  """Shear about the image centre by up to 0.3 (axis 0: along x, 1: along y)."""
  shear = sign * level * 0.3
  centre = (tf.cast(tf.shape(image)[1 + axis], tf.float32) - 1) / 2
  if axis == 0:
    transform = [1.0, shear, -shear * centre, 0.0, 1.0, 0.0, 0.0, 0.0]
  else:
    transform = [1.0, 0.0, 0.0, shear, 1.0, -shear * centre, 0.0, 0.0]
  return _affine(image, tf.stack(transform))


def _translate(image, level, sign, axis: int):
  """Translate by up to 0.45 of the size (axis 0: along x, 1: along y)."""
  shift = sign * level * 0.45 * tf.cast(tf.shape(image)[2 - axis], tf.float32)
  transform = ([1.0, 0.0, shift, 0.0, 1.0, 0.0, 0.0, 0.0] if axis == 0 else
               [1.0, 0.0, 0.0, 0.0, 1.0, shift, 0.0, 0.0])
  return _affine(image, tf.stack(transform))


def _autocontrast(image, level, sign):
  low = tf.reduce_min(image, axis=[0, 1, 2], keepdims=True)
  high = tf.reduce_max(image, axis=[0, 1, 2], keepdims=True)
  scale = tf.where(high > low, 255.0 / tf.maximum(high - low, 1.0), 1.0)
  offset = tf.where(high > low, low, 0.0)
  return tf.clip_by_value(tf.round((image - offset) * scale), 0.0, 255.0)


def _equalize(image, level, sign):
  """Histogram equalisation per channel, histogram over the whole clip (PIL's algorithm)."""
  luts = []
  for c in range(3):
    histogram = tf.histogram_fixed_width(image[..., c], [0.0, 256.0], nbins=256)
    last = tf.boolean_mask(histogram, histogram > 0)[-1]  # Count of the brightest value.
    step = (tf.reduce_sum(histogram) - last) // 255
    lut = (tf.cumsum(histogram) + step // 2) // tf.maximum(step, 1)
    lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
    luts.append(tf.where(step == 0, tf.range(256), lut))  # Flat channel: unchanged.
  # One gather for the three channels: value v of channel c reads entry 256 * c + v.
  values = tf.cast(image, tf.int32) + tf.constant([0, 256, 512])
  return tf.cast(tf.gather(tf.concat(luts, 0), values), tf.float32)


def _solarize(image, level, sign):
  threshold = 256.0 - level * 256.0
  inverted = tf.cast(image >= threshold, tf.float32)  # Arithmetic: tf.where is ~5x slower here.
  return image + inverted * (255.0 - 2.0 * image)


def _posterize(image, level, sign):
  shift = tf.cast(tf.round(level * 4.0), tf.uint8)
  pixels = tf.cast(image, tf.uint8)
  return tf.cast(tf.bitwise.left_shift(tf.bitwise.right_shift(pixels, shift), shift), tf.float32)


def _enhance_factor(level, sign):
  return 1.0 + sign * level * 0.9


def _color(image, level, sign):
  grey = tf.image.grayscale_to_rgb(tf.round(tf.image.rgb_to_grayscale(image)))
  return _blend(grey, image, _enhance_factor(level, sign))


def _contrast(image, level, sign):
  mean = tf.reduce_mean(tf.round(tf.image.rgb_to_grayscale(image)))
  return _blend(mean, image, _enhance_factor(level, sign))


def _brightness(image, level, sign):
  return _blend(tf.zeros_like(image), image, _enhance_factor(level, sign))


def _sharpness(image, level, sign):
  """PIL's SHARPEN-style blend with a 3x3 smoothed image; border pixels stay as they are."""
  kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  smooth = tf.round(tf.nn.depthwise_conv2d(image, kernel, [1, 1, 1, 1], "VALID"))
  # Border pixels keep their value: add the interior change to the image.
  change = smooth - image[:, 1:-1, 1:-1, :]
  smooth = image + tf.pad(change, [[0, 0], [1, 1], [1, 1], [0, 0]])
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


def apply_op(frames: tf.Tensor, name: str, magnitude: float, sign: float = 1.0) -> tf.Tensor:
  """One named RandAugment op on a uint8 clip (for tests and visual checks)."""
  image = tf.cast(frames, tf.float32)
  level = tf.constant(float(magnitude) / MAX_MAGNITUDE)
  return to_uint8(RANDAUGMENT_OPS[name](image, level, tf.constant(float(sign))))


@tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32),
                              tf.TensorSpec([2], tf.int64), tf.TensorSpec([], tf.float32)],
             autograph=False)
def _random_op(image: tf.Tensor, seed: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
  """One RandAugment layer: an op drawn uniformly, with a random sign (traced once, reused)."""
  op_seed, sign_seed = split_seed(seed, 2)
  ops = list(RANDAUGMENT_OPS.values())
  op_index = tf.random.stateless_uniform([], op_seed, 0, len(ops), dtype=tf.int32)
  sign = tf.where(tf.random.stateless_uniform([], sign_seed) < 0.5, -1.0, 1.0)
  branches = [lambda op=op: op(image, level, sign) for op in ops]
  return tf.round(tf.switch_case(op_index, branches))


def randaugment(frames: tf.Tensor, seed: tf.Tensor, num_layers: int, magnitude: float
                ) -> tf.Tensor:
  """uint8[T, H, W, 3]: `num_layers` ops drawn uniformly per clip (same op/sign on every frame)."""
  if not 0 <= magnitude <= MAX_MAGNITUDE:
    raise ValueError(f"config.data.randaugment_magnitude must be in [0, 30], got {magnitude}")
  image = tf.ensure_shape(tf.cast(frames, tf.float32), [None, None, None, 3])
  level = tf.constant(float(magnitude) / MAX_MAGNITUDE)
  for layer_seed in (split_seed(tf.cast(seed, tf.int64), num_layers) if num_layers > 0 else []):
    image = tf.ensure_shape(_random_op(image, layer_seed, level), image.shape)
  return to_uint8(image)


def cutout(frames: tf.Tensor, seed: tf.Tensor, size: int) -> tf.Tensor:
  """One grey `size` square centred at a random pixel (clipped at the borders), every frame."""
  if size <= 0:
    return frames
  height, width = tf.shape(frames)[1], tf.shape(frames)[2]
  y_seed, x_seed = split_seed(seed, 2)
  top = tf.random.stateless_uniform([], y_seed, 0, height, tf.int32) - size // 2
  left = tf.random.stateless_uniform([], x_seed, 0, width, tf.int32) - size // 2
  y0, y1 = tf.clip_by_value(top, 0, height), tf.clip_by_value(top + size, 0, height)
  x0, x1 = tf.clip_by_value(left, 0, width), tf.clip_by_value(left + size, 0, width)
  # Slices + concat: one copy of the clip (a broadcast tf.where costs ~15x more).
  grey = tf.fill([tf.shape(frames)[0], y1 - y0, x1 - x0, 3], tf.constant(GREY, tf.uint8))
  band = tf.concat([frames[:, y0:y1, :x0], grey, frames[:, y0:y1, x1:]], axis=2)
  return tf.ensure_shape(tf.concat([frames[:, :y0], band, frames[:, y1:]], axis=1),
                         frames.shape)


# --------------------------------------------------------------------------- eval views


def resized_shape(height: tf.Tensor, width: tf.Tensor, short_side: int
                  ) -> tuple[tf.Tensor, tf.Tensor]:
  """TF port of sampling.resized_shape (same integer maths)."""
  short, long = tf.minimum(height, width), tf.maximum(height, width)
  new_long = tf.maximum((long * short_side + short // 2) // short, short_side)
  portrait = height > width
  return (tf.where(portrait, new_long, short_side), tf.where(portrait, short_side, new_long))


def eval_crop_offsets(height: tf.Tensor, width: tf.Tensor, crop_size: int, num_crops: int
                      ) -> tf.Tensor:
  """int32[num_crops, 2] (y, x): TF port of sampling.eval_crop_offsets."""
  if num_crops not in (1, 3):
    raise ValueError(f"config.eval.num_crops must be 1 or 3, got {num_crops}")
  centre_y, centre_x = (height - crop_size) // 2, (width - crop_size) // 2
  if num_crops == 1:
    return tf.stack([[centre_y, centre_x]])
  portrait = tf.stack([[0, centre_x], [centre_y, centre_x], [height - crop_size, centre_x]])
  landscape = tf.stack([[centre_y, 0], [centre_y, centre_x], [centre_y, width - crop_size]])
  return tf.where(height > width, portrait, landscape)


def resize_short_side(frames: tf.Tensor, short_side: int) -> tf.Tensor:
  """uint8[T, H', W', 3] with min(H', W') = short_side (sampling.resized_shape)."""
  new_height, new_width = resized_shape(tf.shape(frames)[1], tf.shape(frames)[2], short_side)
  return to_uint8(tf.image.resize(frames, tf.stack([new_height, new_width]),
                                  antialias=ANTIALIAS))


def eval_crops(frames: tf.Tensor, crop_size: int, num_crops: int) -> tf.Tensor:
  """uint8[num_crops, T, S, S, 3] crops of already resized frames (sampling.eval_crop_offsets)."""
  offsets = eval_crop_offsets(tf.shape(frames)[1], tf.shape(frames)[2], crop_size, num_crops)
  return tf.stack([tf.slice(frames, [0, offsets[i, 0], offsets[i, 1], 0],
                            [-1, crop_size, crop_size, -1]) for i in range(num_crops)])


def eval_views(frames: tf.Tensor, crop_size: int, num_crops: int) -> tf.Tensor:
  """uint8[num_crops, T, S, S, 3]: short side resized to S, then the eval crops."""
  return eval_crops(resize_short_side(frames, crop_size), crop_size, num_crops)
