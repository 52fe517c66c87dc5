"""Video augmentations: one draw per clip, same on every frame; eval crops agree with numpy."""
import io

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from cmpl_jax.data import augment, sampling

STRONG = dict(crop_size=32, min_area=0.25, num_layers=2, magnitude=10, cutout_fraction=0.5)


def _noise_clip(num_frames=4, height=40, width=48, seed=0):
  """A clip whose frames are all the same random image (so any per-frame difference shows)."""
  frame = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
  return tf.constant(np.repeat(frame[None], num_frames, axis=0))


def _jpegs(clip):
  out = []
  for frame in clip.numpy():
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, "JPEG", quality=95)
    out.append(buffer.getvalue())
  return tf.constant(out)


@tf.function(autograph=False)
def _views(clip, seed):
  weak = augment.weak_view(clip, seed, crop_size=32, min_area=0.25)
  strong = augment.strong_view(clip, seed, **STRONG)
  return weak, strong


def test_identical_frames_stay_identical_after_weak_and_strong_views():
  clip = _noise_clip()
  for i in range(12):  # Different seeds draw different ops, crops and flips.
    weak, strong = _views(clip, tf.constant([i, 7], tf.int64))
    for view in (weak, strong):
      view = view.numpy()
      assert view.shape == (4, 32, 32, 3) and view.dtype == np.uint8
      assert all(np.array_equal(view[0], view[t]) for t in range(1, 4))


def test_views_are_deterministic_in_the_seed():
  clip = _noise_clip()
  a = _views(clip, tf.constant([1, 2], tf.int64))
  b = _views(clip, tf.constant([1, 2], tf.int64))
  c = _views(clip, tf.constant([1, 3], tf.int64))
  for x, y, z in zip(a, b, c):
    np.testing.assert_array_equal(x.numpy(), y.numpy())
    assert not np.array_equal(x.numpy(), z.numpy())


def test_every_randaugment_op_is_frame_consistent():
  clip = _noise_clip(num_frames=3, height=32, width=32, seed=1)
  for name in augment.RANDAUGMENT_OPS:
    for sign in (-1.0, 1.0):
      out = augment.apply_op(clip, name, magnitude=10, sign=sign).numpy()
      assert out.shape == (3, 32, 32, 3) and out.dtype == np.uint8, name
      assert np.array_equal(out[0], out[1]) and np.array_equal(out[0], out[2]), name
  np.testing.assert_array_equal(augment.apply_op(clip, "identity", 10).numpy(), clip.numpy())
  posterized = augment.apply_op(clip, "posterize", 30).numpy()  # 4 bits kept
  assert np.all(posterized % 16 == 0)
  solarized = augment.apply_op(clip, "solarize", 15).numpy()  # threshold 128
  pixels = clip.numpy()
  np.testing.assert_array_equal(solarized, np.where(pixels < 128, pixels, 255 - pixels))


def test_weak_crop_window_respects_area_and_aspect():
  for i in range(30):
    window, flip = augment.weak_params(tf.constant([i, 0], tf.int64), 120, 160, 0.25)
    y, x, h, w = window.numpy()
    assert 0 <= y and 0 <= x and y + h <= 120 and x + w <= 160
    assert 0.25 * 120 * 160 * 0.9 <= h * w <= 120 * 160
    if (h, w) != (120, 160):  # Not the whole-image fallback.
      assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
    assert flip.dtype == tf.bool


def test_cutout_is_one_grey_square_at_the_same_place_in_every_frame():
  clip = tf.zeros([3, 32, 32, 3], tf.uint8)
  out = augment.cutout(clip, tf.constant([5, 5], tf.int64), 8).numpy()
  grey = np.all(out == augment.GREY, axis=-1)
  assert np.array_equal(grey[0], grey[1]) and np.array_equal(grey[0], grey[2])
  rows, cols = np.nonzero(grey[0])
  assert 0 < grey[0].sum() <= 64
  assert rows.max() - rows.min() < 8 and cols.max() - cols.min() < 8


def test_decode_and_crop_matches_decode_then_crop():
  clip = tf.constant(np.repeat(np.linspace(0, 255, 40 * 48 * 3).reshape(1, 40, 48, 3),
                               3, axis=0).astype(np.uint8))
  encoded = _jpegs(clip)
  seed = tf.constant([3, 4], tf.int64)
  cropped = augment.weak_view(encoded, seed, crop_size=32, min_area=0.25, encoded=True)
  decoded = augment.weak_view(augment.decode_frames(encoded), seed, crop_size=32, min_area=0.25)
  assert np.abs(cropped.numpy().astype(int) - decoded.numpy().astype(int)).mean() < 2.0


@pytest.mark.parametrize("height,width", [(40, 48), (48, 40), (36, 36), (128, 171)])
@pytest.mark.parametrize("num_crops", [1, 3])
def test_eval_crops_agree_with_sampling(height, width, num_crops):
  new_h, new_w = augment.resized_shape(tf.constant(height), tf.constant(width), 32)
  assert (int(new_h), int(new_w)) == sampling.resized_shape(height, width, 32)
  offsets = augment.eval_crop_offsets(new_h, new_w, 32, num_crops).numpy()
  assert [tuple(o) for o in offsets] == sampling.eval_crop_offsets(int(new_h), int(new_w), 32,
                                                                   num_crops)
  # Frames where each pixel holds its x (landscape) or y (portrait) position.
  ramp = np.arange(max(height, width), dtype=np.float64) * 255 / max(height, width)
  image = (np.broadcast_to(ramp[None, :width, None], (height, width, 3)) if width >= height else
           np.broadcast_to(ramp[:height, None, None], (height, width, 3)))
  views = augment.eval_views(tf.constant(image[None].astype(np.uint8)), 32, num_crops).numpy()
  assert views.shape == (num_crops, 1, 32, 32, 3)
  if num_crops == 3 and height != width:
    means = views.reshape(3, -1).mean(axis=1)
    assert means[0] < means[1] < means[2]  # start / centre / end along the long side
