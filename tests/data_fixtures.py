"""Tiny real datasets for data tests: TFRecord shards + metadata.json as the converter writes them,
and a tiny TFDS builder with the features of TFDS `ucf101`.

Every frame is a flat grey JPEG whose level encodes its frame index (`frame_level`), so a test
can tell which stored frames a clip was sampled from (`frame_indices_of`), after any crop,
resize or flip.
"""
from __future__ import annotations

import functools
import io
import os
from typing import Any, Sequence

import numpy as np
from PIL import Image

from cmpl_jax.data import records

LEVEL_BASE, LEVEL_STEP = 10, 6
MAX_FRAMES = 40  # Levels stay inside [10, 244].
HEIGHT, WIDTH = 40, 48
CLASSES = ("ApplyEyeMakeup", "BabyCrawling", "HandstandPushups")


def frame_level(index: int) -> int:
  if not 0 <= index < MAX_FRAMES:
    raise ValueError(f"fixture videos have at most {MAX_FRAMES} frames")
  return LEVEL_BASE + LEVEL_STEP * index


def frame_indices_of(clip_TxHxWx3: np.ndarray) -> np.ndarray:
  """int[T]: the stored frame index each (flat grey) frame of a clip came from."""
  means = np.asarray(clip_TxHxWx3, np.float64).reshape(clip_TxHxWx3.shape[0], -1).mean(axis=1)
  return np.round((means - LEVEL_BASE) / LEVEL_STEP).astype(np.int64)


@functools.lru_cache(maxsize=None)
def jpeg_frame(level: int, height: int = HEIGHT, width: int = WIDTH) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(np.full((height, width, 3), level, np.uint8)).save(buffer, "JPEG", quality=95)
  return buffer.getvalue()


def frames_array(num_frames: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
  """uint8[T, H, W, 3] flat frames at the index levels (for TFDS, which encodes them itself)."""
  levels = np.array([frame_level(i) for i in range(num_frames)], np.uint8)
  return np.broadcast_to(levels[:, None, None, None], (num_frames, height, width, 3)).copy()


def media_id(class_name: str, group: int, clip: int) -> str:
  return f"{class_name}/v_{class_name}_g{group:02d}_c{clip:02d}"


def default_videos(classes: Sequence[str] = CLASSES, train_per_class: int = 4,
                   test_per_class: int = 2, frame_counts: Sequence[int] = (12, 16, 24, 40)
                   ) -> dict[str, list[tuple[str, int, int]]]:
  """{split: [(media_id, label, num_frames)]}, frame counts cycling through `frame_counts`."""
  videos: dict[str, list[tuple[str, int, int]]] = {"train": [], "test": []}
  n = 0
  for split, per_class, first_group in (("train", train_per_class, 8),
                                        ("test", test_per_class, 1)):
    for label, name in enumerate(classes):
      for i in range(per_class):
        videos[split].append((media_id(name, first_group + i, 1), label,
                              frame_counts[n % len(frame_counts)]))
        n += 1
  return videos


def write_dataset(output_dir: str, videos: dict[str, list[tuple[str, int, int]]] | None = None,
                  classes: Sequence[str] = CLASSES, num_shards: int = 2,
                  height: int = HEIGHT, width: int = WIDTH,
                  corrupt: dict[str, int] | None = None) -> dict[str, Any]:
  """Writes `{split}.tfrecord-*` shards + metadata.json; returns the metadata.

  `corrupt`: {media_id: frame index} frames replaced by a truncated JPEG (decoding fails).
  """
  videos = default_videos(classes) if videos is None else videos
  corrupt = corrupt or {}
  os.makedirs(output_dir, exist_ok=True)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  splits = {}
  for split, split_videos in videos.items():
    shards = np.array_split(np.arange(len(split_videos)), num_shards)
    info = {k: [] for k in ("files", "media_ids", "labels", "file_index", "offsets", "lengths",
                            "num_frames")}
    for shard, members in enumerate(shards):
      name = records.shard_filename(split, shard, num_shards)
      lengths = []
      with tf.io.TFRecordWriter(os.path.join(output_dir, name)) as writer:
        for i in members:
          vid, label, num_frames = split_videos[i]
          frames = [jpeg_frame(frame_level(t), height, width) for t in range(num_frames)]
          if vid in corrupt:
            frames[corrupt[vid]] = frames[corrupt[vid]][: len(frames[corrupt[vid]]) // 2]
          payload = records.encode_example(
              media_id=vid, label_index=label, label_string=classes[label], frame_rate=25.0,
              height=height, width=width, jpeg_frames=frames)
          writer.write(payload)
          lengths.append(len(payload))
          info["media_ids"].append(vid)
          info["labels"].append(label)
          info["file_index"].append(shard)
          info["num_frames"].append(num_frames)
      info["files"].append(name)
      info["lengths"].extend(lengths)
      info["offsets"].extend(records.payload_offsets(lengths))
    info["num_examples"] = len(split_videos)
    splits[split] = info
  metadata = {"dataset": "ucf101", "classes": list(classes), "frame_rate": 0.0,
              "short_side": min(height, width), "splits": splits, "skipped": []}
  records.write_metadata(output_dir, metadata)
  return metadata


@functools.lru_cache(maxsize=None)
def tiny_tfds_builder_class():
  """A GeneratorBasedBuilder with TFDS ucf101's features (Video of JPEG frames + ClassLabel).

  `builder = cls(data_dir=...); builder.download_and_prepare()` needs no network. The videos
  are `default_videos()` (train/test), frames as in `frames_array`.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  class TinyUcf101(tfds.core.GeneratorBasedBuilder):
    """Tiny stand-in for TFDS ucf101 (same feature types)."""
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "video": tfds.features.Video(shape=(None, HEIGHT, WIDTH, 3), encoding_format="jpeg"),
          "label": tfds.features.ClassLabel(names=list(CLASSES)),
      }))

    def _split_generators(self, dl_manager):
      del dl_manager
      videos = default_videos()
      return {split: self._generate_examples(videos[split]) for split in ("train", "test")}

    def _generate_examples(self, videos):
      for i, (vid, label, num_frames) in enumerate(videos):
        yield f"{i:04d}", {"video": frames_array(num_frames), "label": label}

  return TinyUcf101
