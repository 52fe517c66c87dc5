"""Benchmark data: JPEG-frame records at the paper's storage size, written in seconds.

Frames are low-frequency coloured noise with film grain and two moving discs, JPEG quality 90:
about as costly to decode as real footage at the same size (noise compresses worse than most
video, so this errs on the slow side). Default: 32 videos x 64 frames of 341x256 (UCF-101's
4:3 at the paper's short side 256).
"""
from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, ImageDraw
import tensorflow as tf

from cmpl_jax.data import records


def _video_frames(rng: np.random.Generator, num_frames: int, height: int, width: int
                  ) -> list[bytes]:
  """JPEG frames: low-frequency coloured noise background + two shapes moving across."""
  small = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
  background = np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))
  grain = rng.integers(-12, 13, (height, width, 3))
  base = np.clip(background.astype(np.int32) + grain, 0, 255).astype(np.uint8)
  velocity = rng.uniform(-3, 3, (2, 2))
  start = rng.uniform([0, 0], [width, height], (2, 2))
  colors = [tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(2)]
  frames = []
  for t in range(num_frames):
    image = Image.fromarray(base)
    draw = ImageDraw.Draw(image)
    for (x, y), (vx, vy), color in zip(start, velocity, colors):
      cx, cy = (x + vx * t) % width, (y + vy * t) % height
      r = height // 8
      draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    frames.append(buffer.getvalue())
  return frames


def write_dataset(output_dir: str, num_videos: int = 32, num_frames: int = 64,
                  height: int = 256, width: int = 341, num_shards: int = 4) -> None:
  """Writes `num_videos` records in our schema (split 'train', 4 classes) + metadata.json."""
  tf.io.gfile.makedirs(output_dir)
  rng = np.random.default_rng(0)
  info = {k: [] for k in ("files", "media_ids", "labels", "file_index", "offsets", "lengths",
                          "num_frames")}
  for shard, members in enumerate(np.array_split(np.arange(num_videos), num_shards)):
    name = records.shard_filename("train", shard, num_shards)
    lengths = []
    with tf.io.TFRecordWriter(os.path.join(output_dir, name)) as writer:
      for i in members:
        payload = records.encode_example(
            media_id=f"video_{i:04d}", label_index=int(i % 4), label_string=f"class{i % 4}",
            frame_rate=25.0, height=height, width=width,
            jpeg_frames=_video_frames(rng, num_frames, height, width))
        writer.write(payload)
        lengths.append(len(payload))
        info["media_ids"].append(f"video_{i:04d}")
        info["labels"].append(int(i % 4))
        info["file_index"].append(shard)
        info["num_frames"].append(num_frames)
    info["files"].append(name)
    info["lengths"].extend(lengths)
    info["offsets"].extend(records.payload_offsets(lengths))
  info["num_examples"] = num_videos
  records.write_metadata(output_dir, {
      "dataset": "ucf101", "classes": [f"class{c}" for c in range(4)], "frame_rate": 0.0,
      "short_side": height, "splits": {"train": info}, "skipped": []})
