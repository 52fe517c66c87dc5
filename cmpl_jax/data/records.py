"""The TFRecord schema (design brief section 3): one place that writes and parses it.

One `tf.train.SequenceExample` per video, keys from MediaPipe MediaSequence:
context `clip/media_id`, `clip/label/index`, `clip/label/string`, `image/frame_rate`,
`image/height`, `image/width`; feature list `image/encoded` with one JPEG per frame.

`metadata.json` beside the shards indexes every split so training can pick labeled subsets
(and read single records, see `record_locations`) without scanning the records.
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import tensorflow as tf

FRAMES_KEY = "image/encoded"
MEDIA_ID_KEY = "clip/media_id"
LABEL_INDEX_KEY = "clip/label/index"
LABEL_STRING_KEY = "clip/label/string"
FRAME_RATE_KEY = "image/frame_rate"
HEIGHT_KEY = "image/height"
WIDTH_KEY = "image/width"

METADATA_FILENAME = "metadata.json"

# TFRecord framing: uint64 length, uint32 masked crc of the length, payload, uint32 crc.
_TFRECORD_HEADER_BYTES = 12
_TFRECORD_FOOTER_BYTES = 4


def _bytes(values: Sequence[bytes]) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _int64(value: int) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def _float(value: float) -> tf.train.Feature:
  return tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))


def encode_example(*, media_id: str, label_index: int, label_string: str, frame_rate: float,
                   height: int, width: int, jpeg_frames: Sequence[bytes]) -> bytes:
  """Serialises one video as a SequenceExample."""
  if not jpeg_frames:
    raise ValueError(f"video {media_id!r} has no frames")
  context = tf.train.Features(feature={
      MEDIA_ID_KEY: _bytes([media_id.encode("utf-8")]),
      LABEL_INDEX_KEY: _int64(label_index),
      LABEL_STRING_KEY: _bytes([label_string.encode("utf-8")]),
      FRAME_RATE_KEY: _float(frame_rate),
      HEIGHT_KEY: _int64(height),
      WIDTH_KEY: _int64(width),
  })
  frames = tf.train.FeatureList(feature=[_bytes([f]) for f in jpeg_frames])
  example = tf.train.SequenceExample(
      context=context, feature_lists=tf.train.FeatureLists(feature_list={FRAMES_KEY: frames}))
  return example.SerializeToString(deterministic=True)  # same bytes in every process


def parse_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
  """Parses one serialised SequenceExample (graph-mode safe).

  Returns `frames_T` (encoded JPEG strings), `media_id`, `label`, `label_string`,
  `frame_rate`, `height`, `width`.
  """
  context, sequence = tf.io.parse_single_sequence_example(
      serialized,
      context_features={
          MEDIA_ID_KEY: tf.io.FixedLenFeature([], tf.string),
          LABEL_INDEX_KEY: tf.io.FixedLenFeature([], tf.int64),
          LABEL_STRING_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
          FRAME_RATE_KEY: tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
          HEIGHT_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=0),
          WIDTH_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=0),
      },
      sequence_features={FRAMES_KEY: tf.io.FixedLenSequenceFeature([], tf.string)})
  return {
      "frames_T": sequence[FRAMES_KEY],
      "media_id": context[MEDIA_ID_KEY],
      "label": context[LABEL_INDEX_KEY],
      "label_string": context[LABEL_STRING_KEY],
      "frame_rate": context[FRAME_RATE_KEY],
      "height": context[HEIGHT_KEY],
      "width": context[WIDTH_KEY],
  }


def shard_filename(split: str, index: int, count: int) -> str:
  return f"{split}.tfrecord-{index:05d}-of-{count:05d}"


def payload_offsets(payload_lengths: Sequence[int]) -> list[int]:
  """Byte offset of each record's payload in a TFRecord file holding these records in order.

  Lets a reader fetch one record with `tf.data.FixedLengthRecordDataset(header_bytes=offset)`
  instead of scanning the shard (the labeled subset is a few records spread over all shards).
  """
  offsets, position = [], 0
  for length in payload_lengths:
    offsets.append(position + _TFRECORD_HEADER_BYTES)
    position += _TFRECORD_HEADER_BYTES + int(length) + _TFRECORD_FOOTER_BYTES
  return offsets


def write_metadata(output_dir: str, metadata: dict[str, Any]) -> str:
  """Writes metadata.json atomically (a crash never leaves a half-written index)."""
  path = os.path.join(output_dir, METADATA_FILENAME)
  tmp_path = path + ".tmp"
  with tf.io.gfile.GFile(tmp_path, "w") as f:
    json.dump(metadata, f, indent=1)
  tf.io.gfile.rename(tmp_path, path, overwrite=True)
  return path


def read_metadata(data_dir: str) -> dict[str, Any]:
  path = os.path.join(data_dir, METADATA_FILENAME)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f"{path} not found: config.data.dir must be a folder written by "
        f"`python -m cmpl_jax.data.convert`")
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def record_locations(data_dir: str, split_info: dict[str, Any], indices: Sequence[int]
                     ) -> tuple[list[str], list[int], list[int]]:
  """(file path, payload offset, payload length) of the given examples of one split."""
  files = split_info["files"]
  paths = [os.path.join(data_dir, files[split_info["file_index"][i]]) for i in indices]
  offsets = [int(split_info["offsets"][i]) for i in indices]
  lengths = [int(split_info["lengths"][i]) for i in indices]
  return paths, offsets, lengths
