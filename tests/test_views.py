"""Device views (cmpl_jax/views.py) against the previous TF implementation of the same transforms.

Same parameters in, same pixels out (up to float rounding at .5 ties); per-clip statistics on
clips whose frames differ; the canvas conventions (padding never read, portrait transposed).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmpl_jax import benchmark, randaugment, train, views
from cmpl_jax.data import sampling
from configs import default
import reference_views as reference

APPLY_OP = jax.jit(randaugment.apply_op)  # op, level and sign traced: one compile for every op


def smooth_frames(num_frames, height, width, seed=0):
  """Frames of smooth random colour fields (bilinear sampling of noise hides index errors)."""
  rng = np.random.default_rng(seed)
  small = rng.uniform(0, 255, (num_frames, height // 4 + 2, width // 4 + 2, 3))
  ys = np.linspace(0, small.shape[1] - 1.001, height)
  xs = np.linspace(0, small.shape[2] - 1.001, width)
  y0, x0 = ys.astype(int), xs.astype(int)
  fy, fx = (ys - y0)[None, :, None, None], (xs - x0)[None, None, :, None]
  rows = small[:, y0] * (1 - fy) + small[:, y0 + 1] * fy
  frames = rows[:, :, x0] * (1 - fx) + rows[:, :, x0 + 1] * fx
  return np.round(frames + rng.uniform(-20, 20, frames.shape)).clip(0, 255).astype(np.uint8)


def on_canvas(frames_TxHxWx3, canvas_hw, transposed=False):
  """The host's canvas: long side along the width, padding 255 (must never be read)."""
  frames = np.swapaxes(frames_TxHxWx3, 1, 2) if transposed else frames_TxHxWx3
  canvas = np.full((frames.shape[0],) + tuple(canvas_hw) + (3,), 255, np.uint8)
  canvas[:, :frames.shape[1], :frames.shape[2]] = frames
  return canvas


def assert_close_pixels(actual, expected, max_off=0.05):
  """Equal up to rounding: no pixel off by more than 1, and few off by 1 (crops whose scale is
  a simple fraction put many values exactly on .5, where float rounding decides)."""
  diff = np.abs(np.asarray(actual, np.float64) - np.asarray(expected, np.float64))
  assert diff.max() <= 1.0, diff.max()
  assert (diff > 0).mean() <= max_off, (diff > 0).mean()


@pytest.mark.parametrize("height,width", [(37, 50), (50, 37), (40, 40)])
def test_crop_resize_flip_equals_slice_then_resize(height, width):
  frames = smooth_frames(3, height, width)
  transposed = height > width
  canvas = on_canvas(frames, (40, 56), transposed)
  crop = jax.jit(functools.partial(views.crop_resize_flip, crop_size=24))
  unrounded = jax.jit(lambda c, t, b, f: views.sample(c, *views.crop_taps(b, f, 24), t))
  for i in range(12):
    key = jax.random.key(i)
    box = views.crop_box(key, jnp.int32(height), jnp.int32(width), 0.25)
    flip = bool(i % 2)
    expected = reference.crop_resize_flip(frames, np.asarray(box), flip, 24)
    np.testing.assert_allclose(unrounded(canvas, jnp.bool_(transposed), box, jnp.bool_(flip)),
                               expected, atol=2e-3)
    out = crop(canvas, jnp.bool_(transposed), box, jnp.bool_(flip))
    assert out.shape == (3, 24, 24, 3)
    assert_close_pixels(out, np.clip(np.round(expected), 0, 255), max_off=0.1)  # .5 ties


@pytest.mark.parametrize("height,width,min_area", [(64, 80, 0.4), (128, 171, 0.25)])
def test_crop_boxes_are_distributed_like_tf_sample_distorted_bounding_box(height, width,
                                                                         min_area):
  """Same definition as the host pipeline's crops: the distributions of area, aspect, position
  and the whole-frame fallback agree with TF's (different random numbers, same law)."""
  count = 1500
  ours = np.asarray(jax.vmap(lambda k: views.crop_box(k, jnp.int32(height), jnp.int32(width),
                                                      min_area))(
      jax.random.split(jax.random.key(0), count)))
  theirs = reference.crop_boxes(count, height, width, min_area)
  def stats(boxes):
    y, x, h, w = boxes.T.astype(np.float64)
    return {"area": np.mean(h * w) / (height * width), "aspect": np.mean(w / h),
            "whole": np.mean((h == height) & (w == width)),
            "centre_y": np.mean(y + h / 2) / height, "centre_x": np.mean(x + w / 2) / width,
            "area_sd": np.std(h * w) / (height * width)}
  a, b = stats(ours), stats(theirs)
  for key in a:
    assert abs(a[key] - b[key]) < 0.025, (key, a, b)


def test_crop_box_respects_area_and_aspect():
  boxes = jax.vmap(lambda k: views.crop_box(k, jnp.int32(120), jnp.int32(160), 0.25))(
      jax.random.split(jax.random.key(0), 300))
  y, x, h, w = np.asarray(boxes).T
  assert np.all((y >= 0) & (x >= 0) & (y + h <= 120) & (x + w <= 160))
  assert np.all(h * w >= 0.25 * 120 * 160 * 0.95)
  assert np.all((w / h >= 3 / 4 * 0.97) & (w / h <= 4 / 3 * 1.03))
  assert len({tuple(b) for b in np.asarray(boxes)}) > 250  # They are random.
  # A frame too thin for any crop of that aspect: the whole frame.
  assert np.asarray(views.crop_box(jax.random.key(1), jnp.int32(10), jnp.int32(200), 0.9)
                    ).tolist() == [0, 0, 10, 200]


@pytest.mark.parametrize("height,width", [(40, 48), (48, 40), (36, 36), (128, 171)])
@pytest.mark.parametrize("num_crops", [1, 3])
def test_eval_views_equal_resize_then_crop(height, width, num_crops):
  frames = smooth_frames(2, height, width, seed=1)
  transposed = height > width
  canvas = on_canvas(frames, (max(36, min(height, width)), 180), transposed)
  out = views.eval_views(canvas[None], jnp.array([height, width]), jnp.bool_(transposed),
                         crop_size=32, num_crops=num_crops)
  assert out.shape == (num_crops, 2, 32, 32, 3)
  new_hw = tuple(int(v) for v in sampling.resized_shape(height, width, 32))
  offsets = sampling.eval_crop_offsets(*new_hw, 32, num_crops)
  crops = views.eval_taps(jnp.array([height, width]), 32, num_crops)
  for crop, offset in enumerate(offsets):
    expected = reference.eval_view(frames, new_hw, offset, 32)
    np.testing.assert_allclose(views.sample(canvas, *crops[crop], jnp.bool_(transposed)),
                               expected, atol=2e-3)
    assert_close_pixels(out[crop], np.clip(np.round(expected), 0, 255))


def test_eval_views_are_clip_major():
  clips = np.stack([np.full((1, 40, 48, 3), 20 * c, np.uint8) for c in range(3)])
  out = views.eval_views(clips, jnp.array([40, 48]), jnp.bool_(False), crop_size=16,
                         num_crops=3)
  np.testing.assert_array_equal(np.asarray(out).reshape(9, -1).mean(axis=1),
                                np.repeat([0.0, 20.0, 40.0], 3))


@pytest.mark.parametrize("name", randaugment.OP_NAMES)
def test_each_randaugment_op_equals_the_reference(name):
  clip = smooth_frames(3, 24, 24, seed=2).astype(np.float32)
  op = randaugment.OP_NAMES.index(name)
  for magnitude, sign in ((10, 1.0), (10, -1.0), (27, 1.0)):
    level = magnitude / randaugment.MAX_MAGNITUDE
    out = APPLY_OP(clip, op, jnp.float32(level), jnp.float32(sign))
    # Nearest-neighbour geometry may pick the other neighbour at exact .5 ties.
    max_off = 0.01 if name in ("rotate", "shear_x", "shear_y", "translate_x",
                               "translate_y") else 0.005
    diff = np.abs(np.asarray(out) - reference.apply_op(clip, name, level, sign))
    assert (diff > 0).mean() <= max_off, (name, magnitude, sign, (diff > 0).mean())
    if name not in ("rotate", "shear_x", "shear_y", "translate_x", "translate_y"):
      assert diff.max() <= 1.0, (name, diff.max())


@pytest.mark.parametrize("name", ["autocontrast", "equalize", "contrast"])
def test_clip_statistics_are_per_clip_not_per_frame(name):
  """Frames that differ (a dark and a bright one): the op must equal the reference applied to
  the whole clip as ONE image (frames stacked), and differ from applying it frame by frame."""
  dark = smooth_frames(1, 24, 24, seed=3) // 3
  bright = 255 - smooth_frames(1, 24, 24, seed=4) // 3
  clip = np.concatenate([dark, bright]).astype(np.float32)
  level = 10 / randaugment.MAX_MAGNITUDE
  out = np.asarray(APPLY_OP(clip, randaugment.OP_NAMES.index(name), jnp.float32(level),
                            jnp.float32(1.0)))
  as_one_image = reference.apply_op(clip.reshape(1, 48, 24, 3), name, level, 1.0)
  per_frame = np.concatenate([reference.apply_op(f[None], name, level, 1.0) for f in clip])
  assert_close_pixels(out.reshape(1, 48, 24, 3), as_one_image, max_off=0.002)
  assert np.abs(out - per_frame).mean() > 2.0


def test_one_draw_per_clip_applied_to_every_frame_with_clip_statistics():
  """Frames that differ: one image shifted into its own brightness band per frame. A weak view
  crops and flips every frame alike (resampling is linear: frame t stays frame 0 + 80 t); a
  strong view is its crop, then each drawn op on the WHOLE clip (apply_op on [T, S, S, 3]), then
  one Cutout square. The clips that drew autocontrast, equalize or contrast must differ from the
  same ops run frame by frame: with identical frames the two agree, so per-frame statistics
  would pass unseen there."""
  num_frames, num_clips = 3, 16
  bands = np.arange(num_frames)[:, None, None, None] * 80   # frame t in [80 t, 80 t + 93]
  frames = (np.repeat(smooth_frames(1, 24, 24, seed=5) // 8 * 3, num_frames, 0) + bands
            ).astype(np.uint8)
  cfg = views.ViewConfig(crop_size=24, min_area=0.25, num_layers=2, magnitude=10,
                         cutout_size=12)
  keys = jax.random.split(jax.random.key(3), num_clips)
  size, flags = np.tile([24, 24], (num_clips, 1)), np.zeros(num_clips, bool)
  batch = np.repeat(on_canvas(frames, (24, 32))[None], num_clips, axis=0)
  weak = np.asarray(jax.jit(views.weak_views, static_argnums=4)(keys, batch, size, flags, cfg))
  # Up to the .5 ties of rounding (the shift moves the float error of the weights).
  assert_close_pixels(weak - weak[:, :1], np.broadcast_to(bands, weak.shape), max_off=0.01)
  assert len({o.tobytes() for o in weak}) == num_clips  # every clip drew its own crop
  # Strong views of whole-frame crops (area 1 at S = the frame size: resampling is exact), so
  # what is compared below is the ops alone, not float ties of the bilinear resize.
  cfg = cfg._replace(min_area=1.0)
  strong = np.asarray(jax.jit(views.strong_views, static_argnums=4)(keys, batch, size, flags,
                                                                    cfg))
  assert strong.shape == (num_clips, num_frames, 24, 24, 3)
  assert len({o.tobytes() for o in strong}) == num_clips  # every clip drew its own view
  level = jnp.float32(cfg.magnitude / randaugment.MAX_MAGNITUDE)
  clip_stats = {randaugment.OP_NAMES.index(n) for n in ("autocontrast", "equalize", "contrast")}
  checked = 0
  for b in range(num_clips):
    d = views.strong_draws(keys[b], jnp.asarray(size[b]), cfg)
    per_clip = np.where(np.asarray(d["flip"]), frames[:, :, ::-1], frames).astype(np.float32)
    per_frame = per_clip
    for op, sign in zip(d["ops"], d["signs"]):
      per_clip = APPLY_OP(per_clip, op, level, sign)
      per_frame = jnp.concatenate([APPLY_OP(f[None], op, level, sign) for f in per_frame])
    per_clip, per_frame = (np.asarray(views.cutout(x, d["centre"], cfg.cutout_size))
                           for x in (per_clip, per_frame))
    assert_close_pixels(strong[b], per_clip, max_off=0.002)
    if set(np.asarray(d["ops"]).tolist()) & clip_stats:
      assert np.abs(strong[b] - per_frame).mean() > 2.0, b
      checked += 1
  assert checked >= 4, checked  # enough clips drew a clip-statistics op


def test_a_clips_views_follow_it_wherever_it_sits_in_the_batch():
  """Views are keyed by (seed, stream, position): reordering the clips of a batch (as another
  device or host count would slice them) reorders their views and changes none of them; and
  every model and view kind draws its own crop."""
  config = default.get_config()
  config.data.crop_size = 16
  config.model.primary.num_frames, config.model.auxiliary.num_frames = 2, 8
  config.model.primary.frame_stride, config.model.auxiliary.frame_stride = 4, 1
  config.batch_size, config.mu = 4, 1
  batch = jax.tree.map(lambda x: x[0], benchmark.random_batch(config, 1, 5, stored_short_side=32))
  order = np.array([2, 0, 3, 1])
  shuffled = jax.tree.map(lambda x: x[order], batch)
  inputs = jax.jit(lambda b, k: train.model_inputs(b, k, config))
  a, b = inputs(batch, jax.random.key(7)), inputs(shuffled, jax.random.key(7))
  for path, leaf in jax.tree_util.tree_leaves_with_path(a):
    np.testing.assert_array_equal(np.asarray(leaf)[order],
                                  _leaf(b, path), err_msg=jax.tree_util.keystr(path))
  unlabeled = a["unlabeled"]
  assert not np.array_equal(unlabeled["weak"]["primary"], unlabeled["strong"]["primary"])
  # The primary's 2 frames are the auxiliary's frames 0 and 4: same pixels, own crops.
  assert not np.array_equal(unlabeled["weak"]["primary"],
                            unlabeled["weak"]["auxiliary"][:, ::4])
  other_seed = inputs(batch, jax.random.key(8))
  assert not np.array_equal(a["labeled"]["primary"], other_seed["labeled"]["primary"])


def _leaf(tree, path):
  for entry in path:
    tree = tree[entry.key]
  return np.asarray(tree)


def test_cutout_is_one_grey_square_at_the_same_place_in_every_frame():
  out = np.asarray(views.cutout(jnp.zeros((3, 32, 32, 3)), jnp.array([3, 20]), 8))
  grey = np.all(out == views.GREY, axis=-1)
  assert np.array_equal(grey[0], grey[1]) and np.array_equal(grey[0], grey[2])
  rows, cols = np.nonzero(grey[0])
  assert (rows.min(), rows.max(), cols.min(), cols.max()) == (0, 6, 16, 23)  # clipped at the top
