"""One video -> what the host ships for it (TF): sample the window, decode its frames once.

The host's share of a clip is the cheap, sequential part: choose the window (training: uniform
start from the element's seed; eval: `eval.num_clips` uniform windows), decode each of the
window's union frames once (sampling.union_offsets: the primary's frames are a subset of the
auxiliary's, so decoding the union costs what the faster model's frames cost) and lay them on a
fixed-size canvas. Crops, flips, RandAugment, Cutout and the eval crops happen on the device
(cmpl_jax/views.py), keyed by the step's rng, so weak and strong views of a clip share one
decode and one host-to-device copy.

Canvas (static per run, `sampling.canvas_for`): height Hc = the decode short side, width
Wc = ceil(Hc * config.data.max_aspect_ratio). A frame is decoded (JPEG: at the DCT scale 1/r
that keeps its short side >= Hc, which skips most of the IDCT when the crop needs fewer pixels
than are stored), turned so its long side runs along the width (portrait frames are stored
transposed, flagged), resized to short side Hc only if it is not already (our converter stores
one short side, so normally never), centre-cropped along the long side to Wc if wider, and
zero-padded to Wc. `size` is the frame's upright (height, width) on the canvas.
"""
from __future__ import annotations

from typing import Any

import tensorflow as tf
import tensorflow.experimental.numpy as tnp

from cmpl_jax.data import sampling

try:  # TF must never take accelerator memory from JAX (as in the flax examples).
  tf.config.set_visible_devices([], "GPU")
except (RuntimeError, ValueError):  # Devices already initialised, or no GPU support.
  pass

_UINT8_FRAME = tf.TensorSpec([None, None, 3], tf.uint8)
Canvas = sampling.Canvas


def random_window_start(seed: tf.Tensor, num_video_frames: tf.Tensor, window: int) -> tf.Tensor:
  """Uniform in [0, sampling.max_window_start]: where a training clip's window begins."""
  max_start = tf.maximum(tf.cast(num_video_frames, tf.int32) - window, 0)
  return tf.random.stateless_uniform([], seed, 0, max_start + 1, dtype=tf.int32)


def jpeg_ratio(height: tf.Tensor, width: tf.Tensor, canvas: Canvas) -> tf.Tensor:
  """int32: the largest DCT scale 1/r (r <= canvas.jpeg_ratio) keeping the short side >= Hc.

  Per video: in data of mixed sizes a small video is not shrunk below the canvas (and blown up
  again) because the run's first video was large. libjpeg rounds scaled sizes up.
  """
  short = tf.minimum(height, width)
  ratio = tf.constant(1, tf.int32)
  for r in sorted(r for r in sampling.JPEG_RATIOS if 1 < r <= canvas.jpeg_ratio):
    ratio = tf.where((short + r - 1) // r >= canvas.height, r, ratio)
  return ratio


def _decoder(first_frame: tf.Tensor, canvas: Canvas, jpeg: bool):
  """frame bytes -> uint8[h, w, 3]: JPEG at the video's DCT scale, anything else whole."""
  if not jpeg:
    return lambda data: tf.io.decode_image(data, channels=3, dtype=tf.uint8,
                                           expand_animations=False)
  ratios = [r for r in sorted(sampling.JPEG_RATIOS) if r <= canvas.jpeg_ratio]
  if len(ratios) == 1:
    return lambda data: tf.io.decode_jpeg(data, channels=3)
  shape = tf.io.extract_jpeg_shape(first_frame)
  branch = tf.argmax(tf.cast(tf.equal(jpeg_ratio(shape[0], shape[1], canvas), ratios),
                             tf.int32), output_type=tf.int32)
  return lambda data: tf.switch_case(branch, [
      lambda r=r: tf.io.decode_jpeg(data, channels=3, ratio=r) for r in ratios])


def decode_canvas(encoded_U: tf.Tensor, canvas: Canvas, jpeg: bool
                  ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """(uint8[U, Hc, Wc, 3] canvas, int32[2] upright size on it, bool transposed) of U frames
  of one video (all of one size, as a video's frames are)."""
  frames = tf.map_fn(_decoder(encoded_U[0], canvas, jpeg), encoded_U,
                     fn_output_signature=_UINT8_FRAME)
  height, width = tf.shape(frames)[1], tf.shape(frames)[2]
  transposed = height > width
  frames = tf.cond(transposed, lambda: tf.transpose(frames, [0, 2, 1, 3]), lambda: frames)
  short, long = tf.minimum(height, width), tf.maximum(height, width)

  def resize():
    new_long = tf.maximum((long * canvas.height + short // 2) // short, canvas.height)
    resized = tf.image.resize(frames, tf.stack([canvas.height, new_long]), antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

  frames = tf.cond(tf.equal(short, canvas.height), lambda: frames, resize)
  long = tf.shape(frames)[2]
  kept = tf.minimum(long, canvas.width)
  begin = (long - kept) // 2
  frames = frames[:, :, begin:begin + kept]
  frames = tf.pad(frames, [[0, 0], [0, 0], [0, canvas.width - kept], [0, 0]])
  frames = tf.ensure_shape(frames, [None, canvas.height, canvas.width, 3])
  size = tf.where(transposed, tf.stack([kept, canvas.height]), tf.stack([canvas.height, kept]))
  return frames, tf.cast(size, tf.int32), transposed


def decode_indices(encoded_N: tf.Tensor, indices: tf.Tensor, canvas: Canvas, jpeg: bool
                   ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """decode_canvas of the frames `indices` (any shape), each distinct frame decoded once;
  the canvas comes back shaped indices.shape + [Hc, Wc, 3]."""
  flat = tf.reshape(indices, [-1])
  unique, positions = tf.unique(flat)
  frames, size, transposed = decode_canvas(tf.gather(encoded_N, unique), canvas, jpeg)
  frames = tf.gather(frames, positions)
  frames = tf.reshape(frames, tf.concat([tf.shape(indices), [canvas.height, canvas.width, 3]],
                                        axis=0))
  return frames, size, transposed


class ClipMaker:
  """What the host ships per video for one config: training windows and eval windows."""

  def __init__(self, config: Any, canvas: Canvas, jpeg: bool = True):
    self.specs = sampling.frame_specs(config)
    self.window = sampling.window_length(self.specs)
    self.offsets_U, self.positions = sampling.union_offsets(self.specs)
    self.num_clips = int(config.eval.num_clips)
    self.canvas = canvas
    self.jpeg = jpeg

  def _shape(self, kind: str) -> list[int]:
    shape = [len(self.offsets_U), self.canvas.height, self.canvas.width, 3]
    return [self.num_clips] + shape if kind == "eval" else shape

  def train_indices(self, num_video_frames: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """int32[U]: the stored frames of a training clip's one random window."""
    start = random_window_start(seed, num_video_frames, self.window)
    return sampling.window_frames(tf.reshape(start, [1]), self.offsets_U, num_video_frames)[0]

  def train(self, encoded_N: tf.Tensor, label: tf.Tensor, seed: tf.Tensor) -> dict[str, Any]:
    """{'frames': uint8[U, Hc, Wc, 3], 'size', 'transposed', 'label'}: one random window."""
    indices_U = self.train_indices(tf.shape(encoded_N)[0], seed)
    frames, size, transposed = decode_indices(encoded_N, indices_U, self.canvas, self.jpeg)
    return {"frames": tf.ensure_shape(frames, self._shape("train")), "size": size,
            "transposed": transposed, "label": tf.cast(label, tf.int32)}

  def evaluation(self, encoded_N: tf.Tensor, label: tf.Tensor) -> dict[str, Any]:
    """{'frames': uint8[num_clips, U, Hc, Wc, 3], 'size', 'transposed', 'label'}: the uniform
    eval windows (their crops are taken on the device, views.eval_views)."""
    num_video_frames = tf.shape(encoded_N)[0]
    starts = sampling.eval_window_starts(num_video_frames, self.window, self.num_clips, xp=tnp)
    indices_JxU = sampling.window_frames(starts, self.offsets_U, num_video_frames)
    frames, size, transposed = decode_indices(encoded_N, indices_JxU, self.canvas, self.jpeg)
    return {"frames": tf.ensure_shape(frames, self._shape("eval")), "size": size,
            "transposed": transposed, "label": tf.cast(label, tf.int32)}

  def placeholder(self, kind: str) -> dict[str, Any]:
    """Zeros shaped like `kind`'s output ('train' | 'eval'), label -1 (padding, bad records)."""
    return {"frames": tf.zeros(self._shape(kind), tf.uint8),
            "size": tf.constant([self.canvas.height, self.canvas.height], tf.int32),
            "transposed": tf.constant(False), "label": tf.constant(-1, tf.int32)}
