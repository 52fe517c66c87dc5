"""tf.data input pipeline: source -> read -> parse -> sample -> decode -> host batches.

The phases, each in one place: the source (sources.py, chosen once from config) reads and
parses records in stream order (streams.py); clips.py samples each video's window
(sampling.py's maths) and decodes its frames onto the canvas; this file batches them for the
local devices. The views are then made on the device in the jitted step (cmpl_jax/views.py).

Design (what makes resume, multi-host and device-count independence exact):
  * A training stream is a sequence of elements k = 0, 1, 2, ... Element k is video
    `index_shuffle(k mod N, seed=(config.seed, stream, epoch=k // N), N - 1)` of the stream's
    index set (labeled subset; or the train split plus any extra unlabeled pools, mixed by
    weight, see streams.Pools), read by byte offset from its shard
    (FixedLengthRecordDataset), and augmented with stateless seeds from (config.seed, stream, k).
    A stream is thus a pure function of (seed, k): resuming at step s starts the labeled stream
    at k = s * batch_size and the unlabeled one at k = s * batch_size * mu; no iterator state.
  * The global batch of step s is elements [s * B, (s + 1) * B); process p of P takes the
    contiguous slice [s * B + p * B / P, s * B + (p + 1) * B / P), reshaped to
    [local_devices, per_device, ...]. The global batch is the same for any host/device count and
    hosts read disjoint data.
  * Eval covers the split once in metadata order, split the same way; the last batch is padded
    (mask False, index -1), never dropped.
  * Bad data: a record that fails to read, parse or decode raises `BadRecordError` naming the
    shard file, record number and media id. With `config.data.skip_bad_records`, a bad training
    video is replaced by the next one of the epoch's permutation (so element k stays a pure
    function of k), a bad eval video becomes a masked-out entry; skips are counted
    (`TrainIterator.num_skipped_records`, `EvalIterator.num_skipped_records`).
  * `config.data.source == 'tfds'`: TFDS has no byte offsets, so its training streams are
    sequential (see tfds_source.py for what that costs).
Importing clips.py hides GPUs from TF, so TF never takes accelerator memory from JAX.
"""
from __future__ import annotations

import re
from typing import Any, Iterator, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from cmpl_jax import methods
from cmpl_jax.data import clips, sampling, sources
from cmpl_jax.data.streams import plain


class BadRecordError(RuntimeError):
  """A record could not be read, parsed or decoded (message names file, record, media id)."""


def _host_batch(global_batch: int, field: str, process_count: int, num_local_devices: int
                ) -> int:
  if process_count < 1 or num_local_devices < 1:
    raise ValueError(f"process_count={process_count} and num_local_devices={num_local_devices} "
                     f"must be >= 1")
  shards = process_count * num_local_devices
  if global_batch < 1 or global_batch % shards:
    raise ValueError(f"{field}={global_batch} must be a positive multiple of process_count * "
                     f"num_local_devices = {process_count} * {num_local_devices} = {shards}")
  return global_batch // process_count


def _to_devices(ds: tf.data.Dataset, host_batch: int, num_local_devices: int
                ) -> tf.data.Dataset:
  """Batches host elements and reshapes every leaf to [devices, per_device, ...]."""
  per_device = host_batch // num_local_devices
  ds = ds.batch(host_batch, drop_remainder=True)
  return ds.map(plain(lambda batch: tf.nest.map_structure(
      lambda x: tf.reshape(x, [num_local_devices, per_device] + x.shape[1:].as_list()), batch)))


def _with_options(ds: tf.data.Dataset) -> tf.data.Dataset:
  options = tf.data.Options()
  options.deterministic = True
  options.threading.max_intra_op_parallelism = 1  # Parallelism comes from elements, not ops.
  options.experimental_optimization.map_parallelization = True
  return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def _stream_kwargs(config: Any, process_index: int, process_count: int) -> dict[str, Any]:
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} not in [0, process_count={process_count})")
  calls = int(config.data.num_parallel_calls)
  return dict(process_index=process_index, process_count=process_count,
              parallel=tf.data.AUTOTUNE if calls <= 0 else calls,
              skip_bad=bool(config.data.skip_bad_records))


def train_split_labels(config: Any, data_dir: str | None = None
                       ) -> tuple[list[str], list[int], list[str]]:
  """(media ids, labels, class names) of the train split, in the order of labeled indices.

  tfrecord: from metadata.json. tfds: one pass over the split (every record is read once);
  media ids are `<split>[<position>]`.
  """
  source = sources.make(config, data_dir)
  return (*source.train_split_labels(), source.class_names())


def class_names(config: Any, data_dir: str | None = None) -> list[str]:
  """Class names in label order, without reading any record (metadata.json / TFDS info)."""
  return sources.make(config, data_dir).class_names()


def storage_info(config: Any, data_dir: str | None = None) -> dict[str, Any]:
  """How the frames were stored ({'dataset', 'frame_rate', 'short_side'}; 0 = unknown/kept),
  so predict.py decodes a new video the same way."""
  return sources.make(config, data_dir).storage_info()


def _maker(config: Any, source: Any, split: str) -> clips.ClipMaker:
  canvas = sampling.canvas_for(config, source.stored_short_side(split))
  return clips.ClipMaker(config, canvas, jpeg=source.jpeg)


# --------------------------------------------------------------------------- training


def _train_dataset(config: Any, data_dir: str | None, labeled_indices: Sequence[int], *,
                   start_step: int, process_index: int, process_count: int,
                   num_local_devices: int) -> tuple[tf.data.Dataset, Any]:
  """The host's training batches, and their source (for error messages).

  Leaves also carry `_bad`, `_bad_index`, `_ok` (skip accounting; the iterator removes them).
  """
  if start_step < 0:
    raise ValueError(f"start_step must be >= 0, got {start_step}")
  labeled_batch = int(config.batch_size)
  _host_batch(labeled_batch, "config.batch_size", process_count, num_local_devices)  # Checks.
  labeled_indices = [int(i) for i in labeled_indices]
  if not labeled_indices:
    raise ValueError("the labeled subset is empty")
  source = sources.make(config, data_dir)
  maker = _maker(config, source, config.data.train_split)
  common = dict(_stream_kwargs(config, process_index, process_count), seed=int(config.seed),
                start_step=start_step, placeholder=lambda: maker.placeholder("train"))

  def batched(ds, global_batch):
    return _to_devices(ds, global_batch // process_count, num_local_devices)

  labeled = batched(source.labeled(labeled_indices, maker.train, global_batch=labeled_batch,
                                   **common), labeled_batch)
  if not methods.uses_unlabeled(config.method):
    return _with_options(labeled.map(plain(lambda batch: {"labeled": batch}))), source
  unlabeled_batch = labeled_batch * int(config.mu)
  unlabeled = batched(source.unlabeled(maker.train, global_batch=unlabeled_batch, **common),
                      unlabeled_batch)
  ds = tf.data.Dataset.zip(labeled, unlabeled)
  return _with_options(ds.map(plain(lambda lab, unl: {"labeled": lab, "unlabeled": unl}))), source


class _Batches:
  """Numpy batches of a dataset; turns our in-graph bad-record assertion into BadRecordError."""

  def __init__(self, dataset: tf.data.Dataset, source: Any, split: str):
    self._iterator = dataset.as_numpy_iterator()
    self._source, self._split = source, split
    self.num_skipped_records = 0
    self.skipped_media_ids: list[str] = []

  def next(self) -> dict[str, Any]:
    try:
      batch = next(self._iterator)
    except tf.errors.InvalidArgumentError as e:
      match = re.search(r"BAD_RECORD: (.*?could not be read, parsed or decoded)", e.message)
      if not match:
        raise
      message = match.group(1)
      cause = re.search(r"split index (\d+)", message)
      if cause:
        message += f" ({self._source.diagnose(self._split, int(cause.group(1)))})"
      raise BadRecordError(message + "; set config.data.skip_bad_records=True to skip such "
                           "records, or re-convert the video") from None
    self._account(batch)
    return batch

  def _account(self, tree: dict[str, Any]) -> None:
    """Pops the skip-accounting leaves of every stream in `tree`, updating the counts."""
    if "_bad" in tree:
      bad, bad_index = tree.pop("_bad"), tree.pop("_bad_index")
      tree.pop("_ok", None)
      count = int(bad.sum())
      if count:
        self.num_skipped_records += count
        names = [self._source.media_id(self._split, int(i))
                 for i in np.unique(bad_index[bad_index >= 0])]
        self.skipped_media_ids.extend(names)
        logging.warning("skipped %d bad record(s) (%s); %d so far", count, ", ".join(names),
                        self.num_skipped_records)
    for value in tree.values():
      if isinstance(value, dict):
        self._account(value)


class TrainIterator:
  """Yields the host's batch of each step from `start_step` on (see `make_train_iterator`)."""

  def __init__(self, batches: _Batches, start_step: int):
    self.step = start_step  # Step of the next batch.
    self._batches = batches

  @property
  def num_skipped_records(self) -> int:
    return self._batches.num_skipped_records

  @property
  def skipped_media_ids(self) -> list[str]:
    return self._batches.skipped_media_ids

  def __iter__(self) -> Iterator[dict[str, Any]]:
    return self

  def __next__(self) -> dict[str, Any]:
    batch = self._batches.next()
    self.step += 1
    return batch


def make_train_iterator(config: Any, data_dir: str | None, labeled_indices: Sequence[int], *,
                        start_step: int, process_index: int, process_count: int,
                        num_local_devices: int) -> TrainIterator:
  """Iterator over the host's training batches, one per step from `start_step`:

    {'labeled':   {'frames': uint8[D, b_l, U, Hc, Wc, 3], 'size': int32[D, b_l, 2],
                   'transposed': bool[D, b_l], 'position': int32[D, b_l], 'label': int32[D, b_l]},
     'unlabeled': the same with b_u}

  D = num_local_devices, b_l = batch_size / (process_count * D), b_u = mu * b_l; U = the
  window's union frames (sampling.union_offsets), Hc x Wc the canvas (sampling.canvas_for).
  'unlabeled' not for method 'supervised'; unlabeled labels are for diagnostics only.
  `labeled_indices` index the train split (`splits.py`).
  """
  dataset, source = _train_dataset(
      config, data_dir, labeled_indices, start_step=start_step, process_index=process_index,
      process_count=process_count, num_local_devices=num_local_devices)
  return TrainIterator(_Batches(dataset, source, config.data.train_split), start_step)


# --------------------------------------------------------------------------- evaluation


class EvalIterator:
  """One pass over an eval split; `len()` / `num_batches` batches, the last padded + masked."""

  def __init__(self, batches: _Batches, num_batches: int, num_examples: int):
    self.num_batches = num_batches
    self.num_examples = num_examples
    self._batches = batches
    self._produced = 0

  @property
  def num_skipped_records(self) -> int:
    return self._batches.num_skipped_records

  @property
  def skipped_media_ids(self) -> list[str]:
    return self._batches.skipped_media_ids

  def __len__(self) -> int:
    return self.num_batches

  def __iter__(self) -> Iterator[dict[str, Any]]:
    return self

  def __next__(self) -> dict[str, Any]:
    if self._produced >= self.num_batches:
      raise StopIteration
    batch = self._batches.next()
    self._produced += 1
    return batch


def make_eval_iterator(config: Any, data_dir: str | None, split: str | None = None, *,
                       process_index: int, process_count: int, num_local_devices: int
                       ) -> EvalIterator:
  """Iterator over `split` (default config.data.eval_split), each video exactly once:

    {'frames': uint8[D, b, J, U, Hc, Wc, 3], 'size': int32[D, b, 2], 'transposed': bool[D, b],
     'label': int32[D, b], 'mask': bool[D, b], 'index': int32[D, b]}

  J = eval.num_clips uniform windows; the eval.num_crops crops of each are taken on the device
  (views.eval_views). `index` = the video's position in metadata (or TFDS) order, -1 for
  padding. b = eval.batch_size / (P * D).
  """
  split = split or config.data.eval_split
  global_batch = int(config.eval.batch_size)
  host_batch = _host_batch(global_batch, "config.eval.batch_size", process_count,
                           num_local_devices)
  source = sources.make(config, data_dir)
  maker = _maker(config, source, split)
  ds, num_examples = source.eval_split(split, maker, global_batch=global_batch,
                                       **_stream_kwargs(config, process_index, process_count))
  ds = _with_options(_to_devices(ds, host_batch, num_local_devices))
  return EvalIterator(_Batches(ds, source, split), -(-num_examples // global_batch), num_examples)
