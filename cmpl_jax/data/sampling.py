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

from typing import Any, NamedTuple, Sequence

import numpy as np

from cmpl_jax import methods


class FrameSpec(NamedTuple):
  """Temporal sampling of one model: `num_frames` frames `stride` stored frames apart."""
  num_frames: int
  stride: int


def frame_specs(config: Any) -> dict[str, FrameSpec]:
  """{model name: FrameSpec} for the models `config.method` trains (`methods.model_names`)."""
  specs = {}
  for name in methods.model_names(config):
    model = config.model[name]
    spec = FrameSpec(int(model.num_frames), int(model.frame_stride))
    if spec.num_frames < 1 or spec.stride < 1:
      raise ValueError(f"config.model.{name}: num_frames and frame_stride must be >= 1, got "
                       f"num_frames={spec.num_frames}, frame_stride={spec.stride}")
    specs[name] = spec
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


def max_window_start(num_video_frames: int, window: int) -> int:
  """Largest window start inside the video (0 when the video is shorter than the window)."""
  return max(int(num_video_frames) - int(window), 0)


def eval_window_starts(num_video_frames: int, window: int, num_clips: int) -> np.ndarray:
  """int32[num_clips] uniformly spaced window starts covering the video (SlowFast-style).

  One clip: the centre window. Several: the first window starts at frame 0 and the last ends at
  the last frame. Integer maths (floor), so the TF port gives identical starts.
  """
  if num_clips < 1:
    raise ValueError(f"config.eval.num_clips must be >= 1, got {num_clips}")
  delta = max_window_start(num_video_frames, window)
  if num_clips == 1:
    return np.array([delta // 2], np.int32)
  return ((delta * np.arange(num_clips, dtype=np.int64)) // (num_clips - 1)).astype(np.int32)


def eval_clip_indices(num_video_frames: int, specs: dict[str, FrameSpec], num_clips: int
                      ) -> dict[str, np.ndarray]:
  """{model: int32[num_clips, num_frames]} frame indices of every eval clip (looping)."""
  window = window_length(specs)
  starts = eval_window_starts(num_video_frames, window, num_clips)
  return {name: np.stack([clip_indices(s, spec.num_frames, spec.stride, window, num_video_frames)
                          for s in starts])
          for name, spec in specs.items()}


def resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
  """(height, width) after resizing the short side to `short_side`, keeping the aspect ratio.

  The long side is rounded to the nearest pixel (integer maths, ported exactly to TF).
  """
  if height < 1 or width < 1:
    raise ValueError(f"bad frame size {height}x{width}")
  short, long = min(height, width), max(height, width)
  new_long = max((long * short_side + short // 2) // short, short_side)
  return (short_side, new_long) if height <= width else (new_long, short_side)


def eval_crop_offsets(height: int, width: int, crop_size: int, num_crops: int
                      ) -> list[tuple[int, int]]:
  """(y, x) top-left corners of the eval crops of a frame of this (already resized) size.

  1 crop: centre. 3 crops: start / centre / end along the long side (left/centre/right for
  landscape and square frames, top/centre/bottom for portrait), centred on the short side.
  """
  if num_crops not in (1, 3):
    raise ValueError(f"config.eval.num_crops must be 1 or 3, got {num_crops}")
  if height < crop_size or width < crop_size:
    raise ValueError(f"frame {height}x{width} is smaller than the crop {crop_size}")
  centre_y, centre_x = (height - crop_size) // 2, (width - crop_size) // 2
  if num_crops == 1:
    return [(centre_y, centre_x)]
  if height > width:  # Portrait: top / centre / bottom.
    return [(0, centre_x), (centre_y, centre_x), (height - crop_size, centre_x)]
  return [(centre_y, 0), (centre_y, centre_x), (centre_y, width - crop_size)]
