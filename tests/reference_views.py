"""The views' previous host implementation in TensorFlow, kept as the tests' reference.

The views moved to the device (cmpl_jax/views.py); their definitions did not. These are the
TF ops the pipeline ran before the move (tf.image.resize, ImageProjectiveTransformV3, TF's
histogram and grey-level maths): tests feed both the same parameters and compare pixels.
"""
import math

import numpy as np
import tensorflow as tf

GREY = 128
MAX_MAGNITUDE = 30.0


def crop_resize_flip(frames_TxHxWx3, box, flip, crop_size):
  """Slice the box, tf.image.resize (bilinear, no antialias) to S, maybe flip (unrounded)."""
  y, x, h, w = (int(v) for v in box)
  crop = tf.constant(np.asarray(frames_TxHxWx3)[:, y:y + h, x:x + w], tf.float32)
  out = tf.image.resize(crop, [crop_size, crop_size]).numpy()
  return out[:, :, ::-1] if flip else out


def eval_view(frames_TxHxWx3, new_hw, offset, crop_size):
  """Resize the whole frame to `new_hw`, slice the crop at `offset` (unrounded)."""
  resized = tf.image.resize(tf.constant(np.asarray(frames_TxHxWx3), tf.float32), list(new_hw))
  y, x = offset
  return resized.numpy()[:, y:y + crop_size, x:x + crop_size]


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


def apply_op(frames, name, level, sign):
  """One op on float32 [T, H, W, 3] integral values, rounded like the old pipeline."""
  image = tf.constant(np.asarray(frames, np.float32))
  return np.round(RANDAUGMENT_OPS[name](image, tf.constant(float(level)),
                                        tf.constant(float(sign))).numpy())


def crop_boxes(count, height, width, min_area):
  """int[count, 4] (y, x, h, w) drawn by tf.image.stateless_sample_distorted_bounding_box with
  the settings the host pipeline used (aspect [3/4, 4/3], 10 attempts, whole image fallback)."""
  boxes = []
  for i in range(count):
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_size=[height, width, 3], bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=[i, 17], min_object_covered=0.0, aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(min_area, 1.0), max_attempts=10, use_image_if_no_bounding_boxes=True)
    boxes.append([int(begin[0]), int(begin[1]), int(size[0]), int(size[1])])
  return np.asarray(boxes)
