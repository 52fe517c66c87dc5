"""The TFRecord schema (README, "Data"): one place that writes, parses and indexes it.

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

import numpy as np
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

  Returns `frames_N` (encoded JPEG strings), `media_id`, `label`, `label_string`,
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
      "frames_N": sequence[FRAMES_KEY],
      "media_id": context[MEDIA_ID_KEY],
      "label": context[LABEL_INDEX_KEY],
      "label_string": context[LABEL_STRING_KEY],
      "frame_rate": context[FRAME_RATE_KEY],
      "height": context[HEIGHT_KEY],
      "width": context[WIDTH_KEY],
  }


def shard_filename(split: str, index: int, count: int) -> str:
  return f"{split}.tfrecord-{index:05d}-of-{count:05d}"


# The converter's per-shard bookkeeping (README, "Data": nothing beside the shards may
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
  """metadata.json (README, "Data") from the converter's shard sidecars, in file then
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


# --------------------------------------------------------------------------- reading by offset


def split_info(metadata: dict[str, Any], split: str, data_dir: str) -> dict[str, Any]:
  """metadata['splits'][split], checked for the keys reading by offset needs."""
  splits = metadata.get("splits", {})
  if split not in splits:
    raise KeyError(f"split {split!r} is not in {data_dir}/{METADATA_FILENAME} (it has "
                   f"{sorted(splits)}); check config.data.train_split/eval_split")
  info = splits[split]
  missing = [key for key in ("media_ids", "labels", "files", "file_index", "offsets",
                             "lengths") if key not in info]
  if missing:
    raise KeyError(f"{data_dir}/{METADATA_FILENAME}: split {split!r} lacks {missing}; "
                   f"re-run `python -m cmpl_jax.data.convert`")
  return info


class RecordTable:
  """Where each example of a split lives (metadata.json's offset index), as lists and tensors.

  `pools`: extra (data_dir, split) pairs appended after the split's own examples (unlabeled
  video from elsewhere: a `--dataset=folder` conversion, another dataset). Their hidden labels
  (`labels`, diagnostics only) are kept when their class list is this dataset's, else -1.
  `ranges` lists (first example, count) of the split and of each pool.
  """

  def __init__(self, data_dir: str, split: str, pools: Sequence[tuple[str, str]] = ()):
    metadata = read_metadata(data_dir)
    self.split = split
    self.metadata_short_side = int(metadata.get("short_side") or 0)
    classes = list(metadata.get("classes", []))
    self.num_classes = len(classes) or None
    parts = [self._part(data_dir, split, metadata, check_labels=True)]
    for pool_dir, pool_split in pools:
      pool_metadata = read_metadata(pool_dir)
      part = self._part(pool_dir, pool_split, pool_metadata, check_labels=False)
      if list(pool_metadata.get("classes", [])) != classes:
        part["labels"] = np.full_like(part["labels"], -1)
      if int(pool_metadata.get("short_side") or 0) != self.metadata_short_side:
        self.metadata_short_side = 0  # mixed sizes: every video picks its own DCT scale
      parts.append(part)
    self.ranges, start = [], 0
    for part in parts:
      self.ranges.append((start, len(part["media_ids"])))
      start += len(part["media_ids"])
    self.media_ids: list[str] = [m for part in parts for m in part["media_ids"]]
    self.num_examples = len(self.media_ids)
    self.paths = [p for part in parts for p in part["paths"]]
    shifts = np.cumsum([0] + [len(part["paths"]) for part in parts[:-1]])
    self.file_index = np.concatenate([part["file_index"] + s for part, s in zip(parts, shifts)])
    self.ordinals = np.concatenate([part["ordinals"] for part in parts])
    self.labels = np.concatenate([part["labels"] for part in parts])
    self._files = tf.constant(self.paths or [""], tf.string)
    self._sizes = tf.constant(np.concatenate([part["sizes"] for part in parts]) if self.paths
                              else [0], tf.int64)
    self._file_index = tf.constant(self.file_index, tf.int64)
    self._offsets = tf.constant(np.concatenate([part["offsets"] for part in parts]), tf.int64)
    self._lengths = tf.constant(np.concatenate([part["lengths"] for part in parts]), tf.int64)
    self._ordinals = tf.constant(self.ordinals, tf.int64)
    self._media_ids = tf.constant(self.media_ids or [""], tf.string)
    self._labels = tf.constant(self.labels, tf.int64)

  @staticmethod
  def _part(data_dir: str, split: str, metadata: dict[str, Any], check_labels: bool
            ) -> dict[str, Any]:
    info = split_info(metadata, split, data_dir)
    paths = [os.path.join(data_dir, name) for name in info["files"]]
    sizes = []
    for path in paths:
      if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path} (split {split!r} of {METADATA_FILENAME}) is missing")
      sizes.append(tf.io.gfile.stat(path).length)
    file_index = np.asarray(info["file_index"], np.int64)
    offsets = np.asarray(info["offsets"], np.int64)
    # Record number inside its shard, for error messages: rank of the offset within the file.
    order = np.lexsort((offsets, file_index))
    first = np.searchsorted(file_index[order], file_index[order], side="left")
    ordinals = np.empty_like(offsets)
    ordinals[order] = np.arange(len(order)) - first
    labels = np.asarray(info["labels"], np.int64)
    num_classes = len(metadata.get("classes", []))
    if check_labels and num_classes and labels.size:
      bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
      if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{data_dir}/{METADATA_FILENAME}: split {split!r} has {bad.size} label(s) outside "
            f"[0, {num_classes}) (the class list); first: label {labels[i]} of media id "
            f"{info['media_ids'][i]!r}, record {ordinals[i]} of {paths[file_index[i]]}. "
            f"Re-convert the data.")
    return {"media_ids": list(info["media_ids"]), "paths": paths,
            "sizes": np.asarray(sizes, np.int64), "file_index": file_index, "offsets": offsets,
            "lengths": np.asarray(info["lengths"], np.int64), "ordinals": ordinals,
            "labels": labels}

  def read(self, video: tf.Tensor) -> tf.data.Dataset:
    """A dataset of exactly one element: the serialized record of example `video`."""
    file = tf.gather(self._file_index, video)
    offset, length = tf.gather(self._offsets, video), tf.gather(self._lengths, video)
    return tf.data.FixedLengthRecordDataset(
        tf.gather(self._files, file), record_bytes=length, header_bytes=offset,
        footer_bytes=tf.gather(self._sizes, file) - offset - length)

  def stored_short_side(self) -> int:
    """The short side the converter stored frames at (metadata.json; 0 = sizes kept/mixed)."""
    return self.metadata_short_side

  def hidden_label(self, video: tf.Tensor) -> tf.Tensor:
    """The metadata label of example `video` (-1 for pools without this dataset's labels)."""
    return tf.gather(self._labels, video)

  def describe(self, video: tf.Tensor) -> tf.Tensor:
    """'record R of FILE (media id M, split index I)' as a string tensor."""
    video = tf.cast(video, tf.int64)
    return tf.strings.join([
        "record ", tf.strings.as_string(tf.gather(self._ordinals, video)), " of ",
        tf.gather(self._files, tf.gather(self._file_index, video)), " (media id ",
        tf.gather(self._media_ids, video), ", split index ", tf.strings.as_string(video), ")"])

  def parse_checked(self, serialized: tf.Tensor, check_label: bool = True
                    ) -> dict[str, tf.Tensor]:
    """parse_example + in-graph checks that the record has frames and (with `check_label`)
    an in-range label: a failed check makes the record 'bad', like a read or decode error."""
    parsed = parse_example(serialized)
    checks = [tf.debugging.assert_positive(tf.size(parsed["frames_N"]),
                                           message="record has no frames")]
    if self.num_classes is not None and check_label:
      checks += [tf.debugging.assert_non_negative(parsed["label"], message="label < 0"),
                 tf.debugging.assert_less(parsed["label"], tf.constant(self.num_classes,
                                                                      tf.int64),
                                          message="label >= number of classes")]
    with tf.control_dependencies(checks):
      return {key: tf.identity(value) for key, value in parsed.items()}

  def diagnose(self, video: int) -> str:
    """The underlying error of a bad record, found by re-reading it eagerly (error path only)."""
    try:
      serialized = next(iter(self.read(tf.constant(video, tf.int64))))
    except (tf.errors.OpError, StopIteration) as e:
      return f"reading failed: {getattr(e, 'message', e)}"
    try:
      parsed = parse_example(serialized)
    except tf.errors.OpError as e:
      return f"parsing failed: {e.message.splitlines()[0]}"
    frames_N, label = parsed["frames_N"], int(parsed["label"])
    in_pool = video >= self.ranges[0][1]
    if self.num_classes is not None and not in_pool and not 0 <= label < self.num_classes:
      return f"label {label} is outside [0, {self.num_classes})"
    if int(tf.size(frames_N)) == 0:
      return "the record has no frames"
    for i, frame in enumerate(frames_N):
      try:
        tf.io.decode_jpeg(frame, channels=3)
      except tf.errors.OpError as e:
        return f"frame {i}: {e.message.splitlines()[0]}"
    return "it reads and decodes when retried"
