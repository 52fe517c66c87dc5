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

from cmpl_jax.data.records import RecordTable
# skip_bad_records: a bad training video is replaced by the next one of the permutation, up to
# MAX_ATTEMPTS - 1 times; an element whose MAX_ATTEMPTS videos are all bad is an error.
MAX_ATTEMPTS = 4
BAD_RECORD_TAG = "BAD_RECORD: "
BAD_RECORD_END = " could not be read, parsed or decoded"

ExampleFn = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], dict]
# Our dataset functions have no Python control flow on tensors: skipping AutoGraph's conversion
# cuts building a pipeline from seconds to a fraction of one.
plain = tf.autograph.experimental.do_not_convert


def host_position(i: Any, global_batch: int, host_batch: int, process_index: int) -> Any:
  """Stream position of the host's i-th element: its slice of each global batch."""
  return (i // host_batch) * global_batch + process_index * host_batch + i % host_batch


def stream_video(index_set_E: Any, k: tf.Tensor, seed: int, stream_id: int,
                 attempt: int = 0, pool: Any = 0) -> tf.Tensor:
  """Video of stream position k: index_shuffle(k mod E, seed=(seed, stream + 16 pool, k // E)).

  `index_set_E`: int64[E] video indices, or a `range` (contiguous indices, never materialised:
  a pool of millions of videos costs nothing in the graph).
  """
  k = tf.cast(k, tf.int64)
  if isinstance(index_set_E, range):
    num_videos = tf.constant(len(index_set_E), tf.int64)
  else:
    num_videos = tf.size(index_set_E, out_type=tf.int64)
  epoch, position = k // num_videos, (k % num_videos + attempt) % num_videos
  salt = tf.constant(stream_id, tf.int64) + 16 * tf.cast(pool, tf.int64)
  shuffled = tf.raw_ops.RandomIndexShuffle(
      index=position, seed=tf.stack([tf.constant(seed, tf.int64), salt, epoch]),
      max_index=num_videos - 1, rounds=4)
  if isinstance(index_set_E, range):
    return tf.constant(index_set_E.start, tf.int64) + shuffled
  return tf.gather(index_set_E, shuffled)


def host_seed(seed: int, stream_id: int, k: Any) -> tf.Tensor:
  """The stateless seed of the host's random choice for stream position k (its window)."""
  return tf.random.experimental.stateless_fold_in(tf.constant([seed, stream_id], tf.int64), k)


class Pools:
  """Index sets a stream draws from, with mixing weights (the unlabeled stream: the train split
  and any extra unlabeled pools; every other stream: one set).

  Position k picks pool p with probability weight_p / sum(weights) by a stateless draw from
  (seed, stream, k), then the video at k of pool p's own permutation sequence (stream_video):
  a pure function of k. One pool of weight 1 gives exactly the single-set stream.
  """

  def __init__(self, index_sets: Sequence[Sequence[int]], weights: Sequence[float]):
    kept = [(s, float(w)) for s, w in zip(index_sets, weights) if w > 0 and len(s)]
    if not kept:
      raise ValueError("a training stream has no videos (every pool is empty or weighs 0)")
    self.sets = [s if isinstance(s, range) and s.step == 1 else
                 tf.constant(np.asarray(list(s), np.int64)) for s, _ in kept]
    total = sum(w for _, w in kept)
    self.cumulative = tf.constant(np.cumsum([w / total for _, w in kept])[:-1], tf.float32)

  def video(self, k: tf.Tensor, seed: int, stream_id: int, attempt: int = 0) -> tf.Tensor:
    if len(self.sets) == 1:
      return stream_video(self.sets[0], k, seed, stream_id, attempt)
    draw = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(
        tf.constant([seed, 1000 + stream_id], tf.int64), tf.cast(k, tf.int64)))
    pool = tf.reduce_sum(tf.cast(draw >= self.cumulative, tf.int32))
    return tf.switch_case(pool, [lambda p=p, s=s: stream_video(s, k, seed, stream_id, attempt, p)
                                 for p, s in enumerate(self.sets)])


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


def train_stream(table: RecordTable, pools: Pools, example_fn: ExampleFn, *,
                 seed: int, stream_id: int, global_batch: int, start_step: int,
                 process_index: int, process_count: int, parallel: int, skip_bad: bool,
                 placeholder: Callable[[], dict[str, Any]], hidden_labels: bool = False
                 ) -> tf.data.Dataset:
  """The host's elements of a training stream, from step `start_step` on (unbatched).

  `hidden_labels`: the unlabeled stream's labels come from the table (-1 for pools without
  this dataset's labels) and are diagnostics only, so records are not checked against them.
  """
  host_batch = global_batch // process_count
  num_attempts = MAX_ATTEMPTS if skip_bad else 1

  def element(k):
    element_seed = host_seed(seed, stream_id, k)
    videos = [pools.video(k, seed, stream_id, a) for a in range(num_attempts)]

    def attempt(a):
      def make(serialized):
        parsed = table.parse_checked(serialized, check_label=not hidden_labels)
        label = table.hidden_label(videos[a]) if hidden_labels else parsed["label"]
        example = example_fn(parsed["frames_N"], label, element_seed)
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
      example = maker.evaluation(parsed["frames_N"], parsed["label"])
      return dict(example, mask=tf.constant(True), index=tf.cast(g, tf.int32), **extras(0, -1))

    attempt = table.read(video).take(tf.cast(valid, tf.int64)).map(plain(make))
    final = tf.data.Dataset.from_tensors(g).map(plain(lambda g: eval_final(
        g, valid, maker.placeholder("eval"), table.describe(video), video, skip_bad)))
    return guarded([attempt], final)

  positions = tf.data.Dataset.range(num_batches * host_batch).map(
      plain(lambda i: host_position(i, global_batch, host_batch, process_index)))
  return interleave(positions, element, parallel)
