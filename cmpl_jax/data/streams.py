"""Index-based streams over TFRecord shards: stream position -> one video, read by byte offset.

See pipeline.py for the design. Each stream element is produced by a tiny per-element dataset,
read with `FixedLengthRecordDataset(header_bytes=offset, footer_bytes=...)` and processed inside
a deterministic parallel interleave; `guarded` turns a failure (unreadable record, bad
protobuf, undecodable JPEG) into either a named error or a replacement, without giving up the
"element k is a pure function of k" property.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

from cmpl_jax.data import records
from cmpl_jax.data.sampling import LABELED_STREAM, UNLABELED_STREAM  # pylint: disable=unused-import
# skip_bad_records: a bad training video is replaced by the next one of the permutation, up to
# MAX_ATTEMPTS - 1 times; an element whose MAX_ATTEMPTS videos are all bad is an error.
MAX_ATTEMPTS = 4
BAD_RECORD_TAG = "BAD_RECORD: "
BAD_RECORD_END = " could not be read, parsed or decoded"

ExampleFn = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], dict]
# Our dataset functions have no Python control flow on tensors: skipping AutoGraph's conversion
# cuts building a pipeline from seconds to a fraction of one.
plain = tf.autograph.experimental.do_not_convert


class RecordTable:
  """Where each example of one split lives (from metadata.json), as Python lists and tensors."""

  @staticmethod
  def split_info(metadata: dict[str, Any], split: str, data_dir: str) -> dict[str, Any]:
    splits = metadata.get("splits", {})
    if split not in splits:
      raise KeyError(f"split {split!r} is not in {data_dir}/{records.METADATA_FILENAME} "
                     f"(it has {sorted(splits)}); check config.data.train_split/eval_split")
    info = splits[split]
    missing = [key for key in ("media_ids", "labels", "files", "file_index", "offsets",
                               "lengths") if key not in info]
    if missing:
      raise KeyError(f"{data_dir}/{records.METADATA_FILENAME}: split {split!r} lacks {missing}; "
                     f"re-run `python -m cmpl_jax.data.convert`")
    return info

  def __init__(self, data_dir: str, split: str):
    metadata = records.read_metadata(data_dir)
    info = self.split_info(metadata, split, data_dir)
    self.split = split
    self.metadata_short_side = int(metadata.get("short_side") or 0)
    self.num_classes = len(metadata.get("classes", [])) or None
    self.media_ids: list[str] = list(info["media_ids"])
    self.num_examples = len(self.media_ids)
    self.paths = [os.path.join(data_dir, name) for name in info["files"]]
    sizes = []
    for path in self.paths:
      if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path} (split {split!r} of {records.METADATA_FILENAME}) is "
                                f"missing")
      sizes.append(tf.io.gfile.stat(path).length)
    file_index = np.asarray(info["file_index"], np.int64)
    offsets = np.asarray(info["offsets"], np.int64)
    lengths = np.asarray(info["lengths"], np.int64)
    # Record number inside its shard, for error messages: rank of the offset within the file.
    order = np.lexsort((offsets, file_index))
    first = np.searchsorted(file_index[order], file_index[order], side="left")
    ordinals = np.empty_like(offsets)
    ordinals[order] = np.arange(len(order)) - first
    self.ordinals = ordinals
    labels = np.asarray(info["labels"], np.int64)
    if self.num_classes is not None and labels.size:
      bad = np.flatnonzero((labels < 0) | (labels >= self.num_classes))
      if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{data_dir}/{records.METADATA_FILENAME}: split {split!r} has {bad.size} label(s) "
            f"outside [0, {self.num_classes}) (the class list); first: label {labels[i]} of "
            f"media id {self.media_ids[i]!r}, record {ordinals[i]} of "
            f"{self.paths[file_index[i]]}. Re-convert the data.")
    self.file_index = file_index
    self._files = tf.constant(self.paths or [""], tf.string)
    self._sizes = tf.constant(sizes or [0], tf.int64)
    self._file_index = tf.constant(file_index, tf.int64)
    self._offsets = tf.constant(offsets, tf.int64)
    self._lengths = tf.constant(lengths, tf.int64)
    self._ordinals = tf.constant(ordinals, tf.int64)
    self._media_ids = tf.constant(self.media_ids or [""], tf.string)

  def read(self, video: tf.Tensor) -> tf.data.Dataset:
    """A dataset of exactly one element: the serialized record of example `video`."""
    file = tf.gather(self._file_index, video)
    offset, length = tf.gather(self._offsets, video), tf.gather(self._lengths, video)
    return tf.data.FixedLengthRecordDataset(
        tf.gather(self._files, file), record_bytes=length, header_bytes=offset,
        footer_bytes=tf.gather(self._sizes, file) - offset - length)

  def stored_short_side(self) -> int:
    """The short side the converter stored frames at (metadata.json; 0 = sizes kept)."""
    return self.metadata_short_side

  def describe(self, video: tf.Tensor) -> tf.Tensor:
    """'record R of FILE (media id M, split index I)' as a string tensor."""
    video = tf.cast(video, tf.int64)
    return tf.strings.join([
        "record ", tf.strings.as_string(tf.gather(self._ordinals, video)), " of ",
        tf.gather(self._files, tf.gather(self._file_index, video)), " (media id ",
        tf.gather(self._media_ids, video), ", split index ", tf.strings.as_string(video), ")"])

  def parse_checked(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """records.parse_example + in-graph checks that the record has frames and an in-range
    label (a failed check makes the record 'bad', like a read or decode error)."""
    parsed = records.parse_example(serialized)
    checks = [tf.debugging.assert_positive(tf.size(parsed["frames_T"]),
                                           message="record has no frames")]
    if self.num_classes is not None:
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
      parsed = records.parse_example(serialized)
    except tf.errors.OpError as e:
      return f"parsing failed: {e.message.splitlines()[0]}"
    frames_T, label = parsed["frames_T"], int(parsed["label"])
    if self.num_classes is not None and not 0 <= label < self.num_classes:
      return f"label {label} is outside [0, {self.num_classes})"
    if int(tf.size(frames_T)) == 0:
      return "the record has no frames"
    for i, frame in enumerate(frames_T):
      try:
        tf.io.decode_jpeg(frame, channels=3)
      except tf.errors.OpError as e:
        return f"frame {i}: {e.message.splitlines()[0]}"
    return "it reads and decodes when retried"


def host_position(i: Any, global_batch: int, host_batch: int, process_index: int) -> Any:
  """Stream position of the host's i-th element: its slice of each global batch."""
  return (i // host_batch) * global_batch + process_index * host_batch + i % host_batch


def stream_video(index_set_N: tf.Tensor, k: tf.Tensor, seed: int, stream_id: int,
                 attempt: int = 0) -> tf.Tensor:
  """Video of stream position k: index_shuffle(k mod N, seed=(seed, stream, k // N))."""
  k = tf.cast(k, tf.int64)
  num_videos = tf.size(index_set_N, out_type=tf.int64)
  epoch, position = k // num_videos, (k % num_videos + attempt) % num_videos
  shuffled = tf.raw_ops.RandomIndexShuffle(
      index=position, seed=tf.stack([tf.constant(seed, tf.int64),
                                     tf.constant(stream_id, tf.int64), epoch]),
      max_index=num_videos - 1, rounds=4)
  return tf.gather(index_set_N, shuffled)


def raise_bad_record(description: tf.Tensor, value: dict[str, Any]) -> dict[str, Any]:
  """`value`, guarded by an assertion that fails at run time with a BAD_RECORD message."""
  message = tf.strings.join([BAD_RECORD_TAG, description, BAD_RECORD_END])
  check = tf.debugging.Assert(tf.equal(tf.strings.length(message), -1), [message])
  with tf.control_dependencies([check]):
    return tf.nest.map_structure(tf.identity, value)


def guarded(attempts: Sequence[tf.data.Dataset], final: tf.data.Dataset) -> tf.data.Dataset:
  """The first attempt that yields without error, else `final` (an error or a placeholder).

  Attempts are opened lazily: a later one is read only when the earlier ones failed.
  """
  ds = attempts[0].ignore_errors()
  for attempt in attempts[1:]:
    ds = ds.concatenate(attempt.ignore_errors())
  return ds.concatenate(final).take(1)


def extras(bad: Any, bad_index: Any, ok: Any = True) -> dict[str, tf.Tensor]:
  return {"_bad": tf.cast(bad, tf.int32), "_bad_index": tf.cast(bad_index, tf.int32),
          "_ok": tf.cast(ok, tf.bool)}


def with_position(example: dict[str, Any], k: tf.Tensor) -> dict[str, Any]:
  """The element's stream position rides along: the device keys its views with it."""
  return dict(example, position=tf.cast(k, tf.int32))


def interleave(positions: tf.data.Dataset, element_fn: Callable[..., tf.data.Dataset],
               parallel: int) -> tf.data.Dataset:
  """One element per position, in position order, `parallel` produced at a time."""
  cycle = parallel if parallel > 0 else max(os.cpu_count() or 1, 2)
  return positions.interleave(plain(element_fn), cycle_length=cycle, block_length=1,
                              num_parallel_calls=parallel, deterministic=True)


def train_stream(table: RecordTable, index_set: Sequence[int], example_fn: ExampleFn, *,
                 seed: int, stream_id: int, global_batch: int, start_step: int,
                 process_index: int, process_count: int, parallel: int, skip_bad: bool,
                 placeholder: Callable[[], dict[str, Any]]) -> tf.data.Dataset:
  """The host's elements of a training stream, from step `start_step` on (unbatched)."""
  host_batch = global_batch // process_count
  index_set_N = tf.constant(np.asarray(index_set, np.int64))
  base_seed = tf.constant([seed, stream_id], tf.int64)
  num_attempts = MAX_ATTEMPTS if skip_bad else 1

  def element(k):
    element_seed = tf.random.experimental.stateless_fold_in(base_seed, k)
    videos = [stream_video(index_set_N, k, seed, stream_id, a) for a in range(num_attempts)]

    def attempt(a):
      def make(serialized):
        parsed = table.parse_checked(serialized)
        example = example_fn(parsed["frames_T"], parsed["label"], element_seed)
        return with_position(dict(example, **extras(a, videos[0] if a else -1)), k)
      return table.read(videos[a]).map(plain(make))

    description = tf.strings.reduce_join(tf.stack([table.describe(v) for v in videos]),
                                         separator="; ")
    final = tf.data.Dataset.from_tensors(k).map(plain(lambda _: raise_bad_record(
        description, with_position(dict(placeholder(), **extras(num_attempts, videos[0])), k))))
    return guarded([attempt(a) for a in range(num_attempts)], final)

  positions = tf.data.Dataset.counter(start_step * host_batch).map(
      plain(lambda i: host_position(i, global_batch, host_batch, process_index)))
  return interleave(positions, element, parallel)


def eval_final(position: tf.Tensor, valid: tf.Tensor, placeholder: dict[str, Any],
               description: tf.Tensor, bad_index: tf.Tensor, skip_bad: bool
               ) -> dict[str, Any]:
  """The element of an eval position that produced nothing: padding, a skip, or the error."""
  del position
  pad = dict(placeholder, mask=tf.constant(False), index=tf.constant(-1, tf.int32),
             **extras(tf.cast(valid, tf.int32), tf.where(valid, tf.cast(bad_index, tf.int32), -1)))
  if skip_bad:
    return pad
  return tf.cond(valid, lambda: raise_bad_record(description, pad), lambda: pad)


def eval_stream(table: RecordTable, maker: Any, *, global_batch: int, num_batches: int,
                process_index: int, process_count: int, parallel: int, skip_bad: bool
                ) -> tf.data.Dataset:
  """The host's elements of one pass over the split, padded to num_batches full batches."""
  host_batch = global_batch // process_count
  num_examples = table.num_examples

  def element(g):
    valid = g < num_examples
    video = tf.minimum(g, num_examples - 1)

    def make(serialized):
      parsed = table.parse_checked(serialized)
      example = maker.evaluation(parsed["frames_T"], parsed["label"])
      return dict(example, mask=tf.constant(True), index=tf.cast(g, tf.int32), **extras(0, -1))

    attempt = table.read(video).take(tf.cast(valid, tf.int64)).map(plain(make))
    final = tf.data.Dataset.from_tensors(g).map(plain(lambda g: eval_final(
        g, valid, maker.placeholder("eval"), table.describe(video), video, skip_bad)))
    return guarded([attempt], final)

  positions = tf.data.Dataset.range(num_batches * host_batch).map(
      plain(lambda i: host_position(i, global_batch, host_batch, process_index)))
  return interleave(positions, element, parallel)
