"""The TFRecord schema (design brief section 3): one place that writes and parses it.

One `tf.train.SequenceExample` per video, keys from MediaPipe MediaSequence:
context `clip/media_id`, `clip/label/index`, `clip/label/string`, `image/frame_rate`,
`image/height`, `image/width`; feature list `image/encoded` with one JPEG per frame.

`metadata.json` beside the shards indexes every split so training can pick labeled subsets
(and read single records, see `record_locations`) without scanning the records. Unlabeled
splits (`--dataset=folder`) store label index -1 and an empty label string, and have no classes.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Sequence

import tensorflow as tf

from cmpl_jax import fileio

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


# The converter's per-shard bookkeeping (design brief section 3: nothing beside the shards may
# match the `{split}.tfrecord-*` glob that DMVR/Scenic/TFDS-style readers use):
#   OUTPUT_DIR/.shard_index/<shard>.json     sidecar of a finished shard (what it holds)
#   OUTPUT_DIR/.<shard>.incomplete.<pid>     a shard being written (hidden: no glob reaches it)
SHARD_INDEX_DIRNAME = ".shard_index"


_LEGACY_SIDECAR_SUFFIX = ".index.json"  # older versions wrote sidecars beside their shard


def sidecar_path(output_dir: str, shard_name: str) -> str:
  return os.path.join(output_dir, SHARD_INDEX_DIRNAME, shard_name + ".json")


def temporary_shard_path(path: str) -> str:
  """Where the shard `path` is written before it is complete: `.<shard>.incomplete.<pid>`,
  hidden, in the same folder (so the final rename is atomic; the pid keeps a stray worker of a
  killed run off the file)."""
  return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.incomplete.{os.getpid()}")


def split_file_pattern(split: str) -> re.Pattern[str]:
  """Matches every name the converter may leave for `split`, in OUTPUT_DIR or in
  .shard_index/: shards, sidecars, and temporaries (leading dot), including the sidecars
  (`<shard>.index.json`) and temporaries that older versions wrote beside the shards."""
  return re.compile(r"^\.?" + re.escape(split) + r"\.tfrecord-\d{5}-of-\d{5}")


def remove_stale_files(output_dir: str, split: str, shard_names: Sequence[str]) -> None:
  """Deletes every file of `split` (see `split_file_pattern`) but the shards `shard_names`
  and their sidecars: leftovers of a run with another --videos_per_shard, temporaries of a
  killed run, so a glob never mixes two plans. A sidecar that an older version wrote beside a
  planned shard is moved into .shard_index/ instead, so a conversion interrupted before an
  upgrade still resumes."""
  pattern, planned = split_file_pattern(split), set(shard_names)
  index_dir = os.path.join(output_dir, SHARD_INDEX_DIRNAME)
  for name in tf.io.gfile.listdir(output_dir):
    if not pattern.match(name) or name in planned:
      continue
    path, shard = os.path.join(output_dir, name), name[:-len(_LEGACY_SIDECAR_SUFFIX)]
    if (name.endswith(_LEGACY_SIDECAR_SUFFIX) and shard in planned
        and not tf.io.gfile.exists(sidecar_path(output_dir, shard))):
      tf.io.gfile.makedirs(index_dir)
      tf.io.gfile.rename(path, sidecar_path(output_dir, shard))
    else:
      tf.io.gfile.remove(path)
  if tf.io.gfile.isdir(index_dir):
    keep = {os.path.basename(sidecar_path(output_dir, name)) for name in planned}
    for name in tf.io.gfile.listdir(index_dir):
      if pattern.match(name) and name not in keep:
        tf.io.gfile.remove(os.path.join(index_dir, name))


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


def build_metadata(dataset: str, classes: Sequence[str],
                   sidecars: dict[str, list[dict[str, Any]]], listing_skipped: list[dict], *,
                   frame_rate: float, short_side: int, conversion: dict[str, Any]
                   ) -> dict[str, Any]:
  """metadata.json (design brief section 3) from the converter's shard sidecars, in file then
  record order. `conversion` (the settings) is recorded as is."""
  splits, skipped, warnings = {}, list(listing_skipped), []
  for split, split_sidecars in sidecars.items():
    info = {"num_examples": 0, "files": [], "media_ids": [], "labels": [], "file_index": [],
            "offsets": [], "lengths": [], "num_frames": [], "frame_rates": []}
    for file_index, sidecar in enumerate(split_sidecars):
      kept = sidecar["records"]
      info["files"].append(sidecar["shard"])
      for key in ("media_ids", "labels", "lengths", "num_frames", "frame_rates"):
        info[key].extend(kept[key])
      info["file_index"].extend([file_index] * len(kept["lengths"]))
      info["offsets"].extend(payload_offsets(kept["lengths"]))
      skipped.extend(sidecar["skipped"])
      warnings.extend(sidecar["warnings"])
    info["num_examples"] = len(info["media_ids"])
    splits[split] = info
  return {"dataset": dataset, "classes": list(classes), "frame_rate": float(frame_rate),
          "short_side": int(short_side), "splits": splits, "skipped": skipped,
          "warnings": warnings, "conversion": dict(conversion)}


def write_metadata(output_dir: str, metadata: dict[str, Any]) -> str:
  """Writes metadata.json atomically (a crash never leaves a half-written index)."""
  return fileio.write_json(os.path.join(output_dir, METADATA_FILENAME), metadata)


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
