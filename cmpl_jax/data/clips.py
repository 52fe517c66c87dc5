"""One video -> its model inputs (TF): sample the window, decode the frames, make the views.

Input is a video's encoded frames `string[N]` (JPEG from our records; JPEG or PNG from TFDS)
and its label; output is a dict of fixed-shape uint8 clips. Temporal sampling is the TF port of
`sampling.py` (same integer maths, tested to agree); augmentations are in `augment.py`.

Decoding strategy. `decode_and_crop=False`: every distinct frame of the window is decoded once
(`decode_union`) and all views crop from the decoded frames. `decode_and_crop=True`: each view
decodes only its crop window (`tf.io.decode_and_crop_jpeg`). Measured with
benchmarks/input_pipeline.py (2 shared cores, 170x128 JPEG frames, default models, 112 crops):
  unlabeled (4 views): decode once 27 CPU-ms/clip, decode-and-crop 33 -> decode once;
  labeled, two models: decode once 9.4, decode-and-crop 10.5 (primary frames ⊂ auxiliary's);
  labeled, one model: 3.0 both (also ~equal at 340x256).
decode_and_crop_jpeg still entropy-decodes the whole scan and only saves the IDCT and colour
conversion outside the crop, hence the small gain. The random draws do not depend on the
strategy, so both give the same crops (up to JPEG rounding).
"""
from __future__ import annotations

from typing import Any

import tensorflow as tf

from cmpl_jax.data import augment, sampling


# --------------------------------------------------------------------------- temporal (TF ports)


def clip_indices(start: tf.Tensor, num_frames: int, stride: int, window: int,
                 num_video_frames: tf.Tensor) -> tf.Tensor:
  """int32[..., num_frames]: TF port of sampling.clip_indices (looping); `start` may be [C]."""
  offset = sampling.clip_offset(num_frames, stride, window)
  steps = stride * tf.range(num_frames, dtype=tf.int32)
  start = tf.cast(start, tf.int32)[..., None]
  return (start + offset + steps) % tf.cast(num_video_frames, tf.int32)


def eval_window_starts(num_video_frames: tf.Tensor, window: int, num_clips: int) -> tf.Tensor:
  """int32[num_clips]: TF port of sampling.eval_window_starts."""
  delta = tf.maximum(tf.cast(num_video_frames, tf.int32) - window, 0)
  if num_clips == 1:
    return tf.reshape(delta // 2, [1])
  return (delta * tf.range(num_clips, dtype=tf.int32)) // (num_clips - 1)


def random_window_start(seed: tf.Tensor, num_video_frames: tf.Tensor, window: int) -> tf.Tensor:
  """Uniform in [0, sampling.max_window_start]: where a training clip's window begins."""
  max_start = tf.maximum(tf.cast(num_video_frames, tf.int32) - window, 0)
  return tf.random.stateless_uniform([], seed, 0, max_start + 1, dtype=tf.int32)


def decode_union(encoded_N: tf.Tensor, indices: dict[str, tf.Tensor], jpeg: bool
                 ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
  """Decodes each distinct frame of `indices` once.

  Returns (uint8[U, H, W, 3] decoded frames, {name: positions into them, shaped like indices}).
  """
  flat = [tf.reshape(idx, [-1]) for idx in indices.values()]
  unique_U, positions = tf.unique(tf.concat(flat, axis=0))
  decoded = augment.decode_frames(tf.gather(encoded_N, unique_U), jpeg)
  sizes = [tf.size(f) for f in flat]
  split = tf.split(positions, tf.stack(sizes), num=len(flat))
  return decoded, {name: tf.reshape(pos, tf.shape(idx))
                   for (name, idx), pos in zip(indices.items(), split)}


# --------------------------------------------------------------------------- examples


class ClipMaker:
  """Builds the per-video views for one config (frame specs, crop size, augmentations)."""

  def __init__(self, config: Any, jpeg: bool = True):
    self.specs = sampling.frame_specs(config)
    self.window = sampling.window_length(self.specs)
    self.crop_size = int(config.data.crop_size)
    self.min_area = float(config.data.min_area)
    self.strong_kwargs = dict(
        crop_size=self.crop_size, min_area=self.min_area,
        num_layers=int(config.data.randaugment_layers),
        magnitude=float(config.data.randaugment_magnitude),
        cutout_fraction=float(config.data.cutout_fraction))
    self.num_clips = int(config.eval.num_clips)
    self.num_crops = int(config.eval.num_crops)
    self.jpeg = jpeg
    if not 0 < self.min_area <= 1:
      raise ValueError(f"config.data.min_area must be in (0, 1], got {self.min_area}")
    if self.num_crops not in (1, 3):
      raise ValueError(f"config.eval.num_crops must be 1 or 3, got {self.num_crops}")
    if self.num_clips < 1:
      raise ValueError(f"config.eval.num_clips must be >= 1, got {self.num_clips}")

  def _clip_shape(self, name: str) -> list[int]:
    return [self.specs[name].num_frames, self.crop_size, self.crop_size, 3]

  def _window_indices(self, seed: tf.Tensor, num_video_frames: tf.Tensor
                      ) -> dict[str, tf.Tensor]:
    start = random_window_start(seed, num_video_frames, self.window)
    return {name: clip_indices(start, spec.num_frames, spec.stride, self.window,
                               num_video_frames)
            for name, spec in self.specs.items()}

  def labeled(self, encoded_N: tf.Tensor, label: tf.Tensor, seed: tf.Tensor,
              decode_and_crop: bool = True) -> dict[str, tf.Tensor]:
    """{model: uint8[T_m, S, S, 3] weak view, 'label': int32}: one window, a crop per model."""
    window_seed, *model_seeds = augment.split_seed(seed, 1 + len(self.specs))
    indices = self._window_indices(window_seed, tf.shape(encoded_N)[0])
    kwargs = dict(crop_size=self.crop_size, min_area=self.min_area)
    out = {}
    if decode_and_crop and self.jpeg:
      for (name, idx), model_seed in zip(indices.items(), model_seeds):
        out[name] = augment.weak_view(tf.gather(encoded_N, idx), model_seed, encoded=True,
                                      **kwargs)
    else:
      decoded, positions = decode_union(encoded_N, indices, self.jpeg)
      for (name, pos), model_seed in zip(positions.items(), model_seeds):
        out[name] = augment.weak_view(tf.gather(decoded, pos), model_seed, **kwargs)
    out = {name: tf.ensure_shape(clip, self._clip_shape(name)) for name, clip in out.items()}
    out["label"] = tf.cast(label, tf.int32)
    return out

  def unlabeled(self, encoded_N: tf.Tensor, label: tf.Tensor, seed: tf.Tensor,
                decode_and_crop: bool = False) -> dict[str, Any]:
    """{'weak': {model: clip}, 'strong': {model: clip}, 'label'}: 4 views of one window."""
    window_seed, *view_seeds = augment.split_seed(seed, 1 + 2 * len(self.specs))
    indices = self._window_indices(window_seed, tf.shape(encoded_N)[0])
    encoded = decode_and_crop and self.jpeg
    if encoded:
      clips = {name: tf.gather(encoded_N, idx) for name, idx in indices.items()}
    else:
      decoded, positions = decode_union(encoded_N, indices, self.jpeg)
      clips = {name: tf.gather(decoded, pos) for name, pos in positions.items()}
    weak, strong = {}, {}
    for i, name in enumerate(self.specs):
      weak_seed, strong_seed = view_seeds[2 * i], view_seeds[2 * i + 1]
      weak[name] = tf.ensure_shape(augment.weak_view(
          clips[name], weak_seed, crop_size=self.crop_size, min_area=self.min_area,
          encoded=encoded), self._clip_shape(name))
      strong[name] = tf.ensure_shape(augment.strong_view(
          clips[name], strong_seed, encoded=encoded, **self.strong_kwargs),
          self._clip_shape(name))
    return {"weak": weak, "strong": strong, "label": tf.cast(label, tf.int32)}

  def evaluation(self, encoded_N: tf.Tensor, label: tf.Tensor) -> dict[str, tf.Tensor]:
    """{model: uint8[V, T_m, S, S, 3], 'label'}: V = num_clips * num_crops, clip-major.

    View v = clip c * num_crops + crop j. Distinct frames are decoded and resized once.
    """
    num_video_frames = tf.shape(encoded_N)[0]
    starts_C = eval_window_starts(num_video_frames, self.window, self.num_clips)
    indices = {name: clip_indices(starts_C, spec.num_frames, spec.stride, self.window,
                                  num_video_frames)
               for name, spec in self.specs.items()}
    decoded, positions = decode_union(encoded_N, indices, self.jpeg)
    resized = augment.resize_short_side(decoded, self.crop_size)
    out = {}
    for name, pos_CxT in positions.items():
      num_frames = self.specs[name].num_frames
      frames = tf.gather(resized, tf.reshape(pos_CxT, [-1]))
      crops_KxCTxSxSx3 = augment.eval_crops(frames, self.crop_size, self.num_crops)
      crops = tf.reshape(crops_KxCTxSxSx3, [self.num_crops, self.num_clips, num_frames,
                                            self.crop_size, self.crop_size, 3])
      crops = tf.transpose(crops, [1, 0, 2, 3, 4, 5])
      out[name] = tf.reshape(crops, [self.num_clips * self.num_crops] + self._clip_shape(name))
    out["label"] = tf.cast(label, tf.int32)
    return out

  def placeholder(self, kind: str) -> dict[str, Any]:
    """Zero clips shaped like `kind`'s output ('labeled' | 'unlabeled' | 'eval'), label -1."""
    views = self.num_clips * self.num_crops
    def clip(name):
      shape = self._clip_shape(name) if kind != "eval" else [views] + self._clip_shape(name)
      return tf.zeros(shape, tf.uint8)
    models = {name: clip(name) for name in self.specs}
    if kind == "unlabeled":
      return {"weak": models, "strong": dict(models), "label": tf.constant(-1, tf.int32)}
    return dict(models, label=tf.constant(-1, tf.int32))
