"""Which stored frames each model sees, and where eval crops go: pure numpy, no TensorFlow.

Shared by the tf.data pipeline (which uses TF ports of the same integer maths, tested to agree)
and by the TF-free predict tool, so a video is sampled the same way everywhere.

Temporal sampling. Every clip is one *window* of `window_length(models)` consecutive stored
frames, the longest `num_frames * frame_stride` over the models, so the primary and auxiliary
networks look at the same moment at their own frame rates. Model m samples `num_frames` frames
`frame_stride` apart; its span `num_frames * frame_stride` (each sampled frame standing for the
`frame_stride` frames that follow it) is centred in the window. With equal spans both models start
at the window start, so when one stride divides the other the slower model's frames are a subset
of the faster one's (the defaults: primary 8 x stride 8 ⊂ auxiliary 32 x stride 2), and decoding
the union costs no more than decoding the faster model's frames.

Short videos (fewer stored frames than the window) loop: indices are taken modulo the video
length, so a 40-frame video seen through a 64-frame window plays frames 0..39 then 0..23 again.
Looping keeps the frame rate (and so the motion speed the models learn) unchanged, unlike
stretching the stride; repeating the last frame would instead show a frozen scene.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import numpy as np

from cmpl_jax import methods

# Stream ids: salt of every random draw of a training stream (host window choice, device views).
LABELED_STREAM = 0
UNLABELED_STREAM = 1


class FrameSpec(NamedTuple):
  """Temporal sampling of one model: `num_frames` frames `stride` stored frames apart."""
  num_frames: int
  stride: int


def frame_specs(config: Any) -> dict[str, FrameSpec]:
  """{model name: FrameSpec} for the models `config.method` trains (`methods.model_names`)."""
  specs = {}
  for name in methods.model_names(config):
    model = config.model[name]
    specs[name] = FrameSpec(int(model.num_frames), int(model.frame_stride))
  return specs


def _as_spec(model: Any) -> FrameSpec:
  if isinstance(model, tuple):  # FrameSpec or a (num_frames, stride) pair.
    return FrameSpec(int(model[0]), int(model[1]))
  return FrameSpec(int(model.num_frames), int(model.frame_stride))  # A model ConfigDict.


def window_length(models: Sequence[Any] | dict[str, Any]) -> int:
  """Frames in one clip window: max(num_frames * stride) over the models.

  `models`: FrameSpecs, (num_frames, stride) pairs, model ConfigDicts, or a dict of those.
  """
  values = list(models.values()) if isinstance(models, dict) else list(models)
  if not values:
    raise ValueError("window_length needs at least one model")
  return max(spec.num_frames * spec.stride for spec in map(_as_spec, values))


def clip_offset(num_frames: int, stride: int, window: int) -> int:
  """First frame of a model's span relative to the window start (the span is centred)."""
  if num_frames * stride > window:
    raise ValueError(f"model span num_frames*stride={num_frames * stride} exceeds the window "
                     f"{window}")
  return (window - num_frames * stride) // 2


def clip_indices(start: int, num_frames: int, stride: int, window: int,
                 num_video_frames: int | None = None) -> np.ndarray:
  """int32[num_frames] stored-frame indices of one model's clip in the window at `start`.

  With `num_video_frames`, indices loop (modulo the video length) for short videos.
  """
  indices_T = (int(start) + clip_offset(num_frames, stride, window)
               + stride * np.arange(num_frames, dtype=np.int64))
  if num_video_frames is not None:
    if num_video_frames < 1:
      raise ValueError(f"video has {num_video_frames} frames")
    indices_T = indices_T % int(num_video_frames)
  return indices_T.astype(np.int32)


def union_offsets(specs: dict[str, FrameSpec]) -> tuple[tuple[int, ...], dict[str, tuple[int, ...]]]:
  """(offsets_U, {model: positions}): the distinct window offsets any model samples, sorted,
  and where each model's frames sit among them. The host decodes the U union frames once; the
  device picks each model's frames by these static positions (views.model_frames).
  """
  window = window_length(specs)
  per_model = {name: [clip_offset(s.num_frames, s.stride, window) + s.stride * t
                      for t in range(s.num_frames)] for name, s in specs.items()}
  offsets_U = tuple(sorted({o for offsets in per_model.values() for o in offsets}))
  where = {o: u for u, o in enumerate(offsets_U)}
  return offsets_U, {name: tuple(where[o] for o in offsets) for name, offsets in per_model.items()}


def window_frames(starts_J: Any, offsets_U: Sequence[int], num_video_frames: Any) -> Any:
  """int[J, U] stored-frame indices of J windows' union frames (looping for short videos).

  Plain arithmetic: the same line serves numpy arrays and TF tensors (int32 starts).
  """
  return (starts_J[:, None] + np.asarray(offsets_U, np.int32)) % num_video_frames


def max_window_start(num_video_frames: int, window: int) -> int:
  """Largest window start inside the video (0 when the video is shorter than the window)."""
  return max(int(num_video_frames) - int(window), 0)


def eval_window_starts(num_video_frames: Any, window: int, num_clips: int, xp: Any = np) -> Any:
  """int32[num_clips] uniformly spaced window starts covering the video (SlowFast-style).

  One clip: the centre window. Several: the first window starts at frame 0 and the last ends at
  the last frame. Integer maths (floor) written once for numpy and, with
  `xp=tf.experimental.numpy`, for TF tensors (the tf.data pipeline).
  """
  if num_clips < 1:
    raise ValueError(f"config.eval.num_clips must be >= 1, got {num_clips}")
  delta = xp.maximum(xp.asarray(num_video_frames, xp.int32) - window, 0)
  if num_clips == 1:
    return xp.asarray(xp.reshape(delta // 2, [1]), xp.int32)
  return xp.asarray((delta * xp.arange(num_clips, dtype=xp.int32)) // (num_clips - 1), xp.int32)


def eval_clip_indices(num_video_frames: int, specs: dict[str, FrameSpec], num_clips: int
                      ) -> dict[str, np.ndarray]:
  """{model: int32[num_clips, num_frames]} frame indices of every eval clip (looping)."""
  window = window_length(specs)
  starts = eval_window_starts(num_video_frames, window, num_clips)
  return {name: np.stack([clip_indices(s, spec.num_frames, spec.stride, window, num_video_frames)
                          for s in starts])
          for name, spec in specs.items()}


def resized_shape(height: Any, width: Any, short_side: int, xp: Any = np) -> tuple[Any, Any]:
  """(height, width) after resizing the short side to `short_side`, keeping the aspect ratio.

  The long side is rounded to the nearest pixel. Integer maths written once for numpy and,
  with `xp=jax.numpy`, for traced values (the device's eval views, cmpl_jax/views.py).
  """
  short, long = xp.minimum(height, width), xp.maximum(height, width)
  new_long = xp.maximum((long * short_side + short // 2) // short, short_side)
  portrait = height > width
  return xp.where(portrait, new_long, short_side), xp.where(portrait, short_side, new_long)


def eval_crop_offsets(height: Any, width: Any, crop_size: int, num_crops: int, xp: Any = np
                      ) -> Any:
  """int[num_crops, 2] (y, x) top-left corners of the eval crops in a frame of this (already
  resized) size; numpy or, with `xp=jax.numpy`, traced values.

  1 crop: centre. 3 crops: start / centre / end along the long side (left/centre/right for
  landscape and square frames, top/centre/bottom for portrait), centred on the short side.
  """
  centre_y, centre_x = (height - crop_size) // 2, (width - crop_size) // 2
  pair = lambda y, x: xp.stack([xp.asarray(y, xp.int32), xp.asarray(x, xp.int32)])
  if num_crops == 1:
    return xp.stack([pair(centre_y, centre_x)])
  portrait = xp.stack([pair(0, centre_x), pair(centre_y, centre_x),
                       pair(height - crop_size, centre_x)])
  landscape = xp.stack([pair(centre_y, 0), pair(centre_y, centre_x),
                        pair(centre_y, width - crop_size)])
  return xp.where(height > width, portrait, landscape)


# --------------------------------------------------------------------------- canvas

JPEG_RATIOS = (8, 4, 2, 1)


class Canvas(NamedTuple):
  """Static frame layout of a run: canvas height/width and the JPEG DCT decode ratio."""
  height: int
  width: int
  jpeg_ratio: int


def canvas_for(config: Any, stored_short_side: int = 0) -> Canvas:
  """The canvas of `config` for frames stored at `stored_short_side` (0 = sizes vary/unknown).

  Canvas height Hc: config.data.decode_short_side, else (0) the smallest JPEG DCT scale of the
  stored short side that still covers config.data.crop_size (with jpeg_dct_scaling; without,
  the stored short side), so no resize is needed: 256-pixel frames decode at 128 for 112 crops
  and at 256 for 224 crops. Unknown or mixed sizes: Hc = the crop size, and each video decodes
  at its own largest DCT scale covering Hc (clips.jpeg_ratio), then is resized to it.
  `jpeg_ratio` is the largest DCT ratio a video may use.
  """
  crop = int(config.data.crop_size)
  stored = int(stored_short_side)
  # .get: workdirs written before these fields existed (predict.py reads their config.json).
  wanted = int(config.data.get("decode_short_side", 0)) or None
  scaling = bool(config.data.get("jpeg_dct_scaling", True))
  if stored <= 0:
    height = wanted or crop
    ratio = max(JPEG_RATIOS) if scaling else 1
  else:
    ratio = next((r for r in JPEG_RATIOS if scaling and -(-stored // r) >= (wanted or crop)), 1)
    height = wanted or -(-stored // ratio)
  aspect = float(config.data.get("max_aspect_ratio", 4 / 3))
  return Canvas(height, int(math.ceil(height * aspect)), ratio)
