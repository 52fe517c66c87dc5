"""config.data.source = 'tfds': a TFDS video dataset (e.g. `ucf101`) feeding the same clips.

The dataset needs features `video` (tfds.features.Video) and `label` (ClassLabel), as TFDS
`ucf101` has. Frames stay encoded (`decoders={'video': tfds.decode.SkipDecoding()}` gives the
string[T] of per-frame encoded images): TFDS stores a Video as a sequence of encoded images,
JPEG for `ucf101` (so labeled clips decode only their crop, as with our records) and PNG by
default for other datasets (decoded whole with tf.io.decode_image).

TFDS has no byte offsets, so unlike the tfrecord source:
  * training streams are sequential. The unlabeled stream reads the train split with files
    shuffled by the seed, a shuffle buffer of `config.data.shuffle_buffer` encoded videos, and
    repeats; position g of that sequence plays the role of k (augmentation seeds, batching).
  * the labeled subset is picked by example position (unshuffled order, as in
    `split_labels`) during the first pass and cached in memory (`.cache()`: the encoded frames of
    every labeled video), then reshuffled each epoch.
  * resuming at step s uses `.skip()`: every skipped record is read (not decoded), i.e.
    s * batch_size * (1 + mu) records, which takes minutes late in a long run.
  * each host reads the whole stream and keeps its slice of every global batch (the filter runs
    before decoding), so batches do not depend on the host count, but reading is not split.
  * with skip_bad_records a bad training video is dropped (the next one moves up), so batches
    after a skip differ from a run without it.
  * no media ids: ids are '<split>[<position>]'.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

from cmpl_jax.data import sampling, streams
from cmpl_jax.data.streams import plain


def _builder(config: Any, data_dir: str | None):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  # slow import
  name = config.data.tfds_name
  if not name:
    raise ValueError("config.data.tfds_name is empty (needed with config.data.source='tfds'), "
                     "e.g. 'ucf101/ucf101_1_256'")
  builder = tfds.builder(name, data_dir=data_dir or config.data.tfds_data_dir or None)
  features = builder.info.features
  if "video" not in features or "label" not in features:
    raise ValueError(f"config.data.tfds_name={name!r} has features {sorted(features)}; the tfds "
                     f"source needs 'video' (tfds.features.Video) and 'label' (ClassLabel)")
  return builder


def _read(builder, split: str, *, shuffle_files: bool, seed: int | None = None
          ) -> tf.data.Dataset:
  """{'video': encoded string[T], 'label': int64, 'tfds_id': string} in a deterministic order."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if split not in builder.info.splits:
    raise KeyError(f"TFDS dataset {builder.name!r} has no split {split!r} (it has "
                   f"{sorted(builder.info.splits)}); check config.data.train_split/eval_split")
  read_config = tfds.ReadConfig(shuffle_seed=seed, add_tfds_id=True, try_autocache=False)
  ds = builder.as_dataset(split=split, shuffle_files=shuffle_files, read_config=read_config,
                          decoders={"video": tfds.decode.SkipDecoding()})
  return ds.map(plain(lambda ex: {"video": ex["video"],
                                  "label": tf.cast(ex["label"], tf.int64),
                                  "tfds_id": ex["tfds_id"]}))


def _is_jpeg(builder) -> bool:
  return builder.info.features["video"].feature.encoding_format == "jpeg"


def is_jpeg(config: Any, data_dir: str | None) -> bool:
  """Whether the dataset's frames are JPEG (decoded at a DCT scale) rather than PNG."""
  return _is_jpeg(_builder(config, data_dir))


def _stream_seed(seed: int, stream_id: int) -> int:
  return 2 * int(seed) + stream_id


def split_labels(config: Any, split: str, data_dir: str | None
                 ) -> tuple[list[str], list[int], list[str]]:
  """(ids '<split>[i]', labels, class names), reading the split once in unshuffled order."""
  builder = _builder(config, data_dir)
  labels = [int(x) for x in _read(builder, split, shuffle_files=False).map(
      plain(lambda ex: ex["label"])).as_numpy_iterator()]
  return ([f"{split}[{i}]" for i in range(len(labels))], labels,
          list(builder.info.features["label"].names))


def class_names(config: Any, data_dir: str | None) -> list[str]:
  return list(_builder(config, data_dir).info.features["label"].names)


def stored_short_side(config: Any, data_dir: str | None) -> int:
  """Short side of the dataset's frames from its feature shape (0 when frame sizes vary)."""
  shape = _builder(config, data_dir).info.features["video"].shape  # (T, H, W, 3)
  return int(min(shape[1], shape[2])) if shape[1] and shape[2] else 0


def train_sources(config: Any, data_dir: str | None, labeled_indices: Sequence[int]
                  ) -> dict[str, Any]:
  """{'labeled': ds, 'unlabeled': ds (both infinite, encoded), 'jpeg': bool}."""
  builder = _builder(config, data_dir)
  split = config.data.train_split
  num_examples = builder.info.splits[split].num_examples
  indices = np.asarray(sorted(set(labeled_indices)), np.int64)
  if indices.size == 0 or indices.min() < 0 or indices.max() >= num_examples:
    raise ValueError(f"labeled indices must be in [0, {num_examples}) for TFDS split {split!r}")
  mask_E = np.zeros(num_examples, bool)
  mask_E[indices] = True
  mask = tf.constant(mask_E)
  labeled = _read(builder, split, shuffle_files=False).enumerate().filter(
      plain(lambda position, ex: tf.gather(mask, position))).map(
          plain(lambda position, ex: ex)).cache()
  labeled = labeled.shuffle(indices.size, seed=_stream_seed(config.seed,
                                                           sampling.LABELED_STREAM),
                            reshuffle_each_iteration=True).repeat()
  unlabeled_seed = _stream_seed(config.seed, sampling.UNLABELED_STREAM)
  unlabeled = _read(builder, split, shuffle_files=True, seed=unlabeled_seed).repeat().shuffle(
      int(config.data.shuffle_buffer), seed=unlabeled_seed, reshuffle_each_iteration=True)
  return {"labeled": labeled, "unlabeled": unlabeled, "jpeg": _is_jpeg(builder)}


def _host_filter(global_batch: int, host_batch: int, process_index: int):
  return plain(lambda position, ex: (position % global_batch) // host_batch == process_index)


def train_stream(source: tf.data.Dataset, example_fn: streams.ExampleFn, *, seed: int,
                 stream_id: int, global_batch: int, start_step: int, process_index: int,
                 process_count: int, parallel: int, skip_bad: bool,
                 placeholder: Callable[[], dict[str, Any]]) -> tf.data.Dataset:
  """The host's elements of a sequential TFDS stream from `start_step` (unbatched)."""
  host_batch = global_batch // process_count
  base_seed = tf.constant([seed, stream_id], tf.int64)
  ds = source.enumerate().skip(start_step * global_batch)
  ds = ds.filter(_host_filter(global_batch, host_batch, process_index))

  def element(position, ex):
    element_seed = tf.random.experimental.stateless_fold_in(base_seed, position)
    attempt = tf.data.Dataset.from_tensors(ex).map(plain(lambda ex: streams.with_position(dict(
        example_fn(ex["video"], ex["label"], element_seed), **streams.extras(0, -1)), position)))
    if skip_bad:
      value = lambda _: streams.with_position(
          dict(placeholder(), **streams.extras(1, -1, ok=False)), position)
    else:
      value = lambda _: streams.raise_bad_record(
          tf.strings.join(["TFDS example ", ex["tfds_id"]]),
          streams.with_position(dict(placeholder(), **streams.extras(1, -1)), position))
    return streams.guarded([attempt], tf.data.Dataset.from_tensors(position).map(plain(value)))

  ds = streams.interleave(ds, element, parallel)
  if not skip_bad:
    return ds

  def carry(pending, ex):  # Moves the count of dropped elements onto the next kept one.
    bad = pending + ex["_bad"]
    return tf.where(ex["_ok"], 0, bad), dict(ex, _bad=tf.where(ex["_ok"], bad, 0))
  return ds.scan(tf.constant(0, tf.int32), plain(carry)).filter(plain(lambda ex: ex["_ok"]))


def eval_source(config: Any, data_dir: str | None, split: str
                ) -> tuple[tf.data.Dataset, int, bool]:
  builder = _builder(config, data_dir)
  return (_read(builder, split, shuffle_files=False), builder.info.splits[split].num_examples,
          _is_jpeg(builder))


def eval_stream(source: tf.data.Dataset, num_examples: int, maker: Any, *, global_batch: int,
                num_batches: int, process_index: int, process_count: int, parallel: int,
                skip_bad: bool) -> tf.data.Dataset:
  """The host's elements of one pass over a TFDS split, padded to num_batches full batches."""
  host_batch = global_batch // process_count
  padding = tf.data.Dataset.range(num_examples, num_batches * global_batch).map(
      plain(lambda position: (position, {"video": tf.zeros([0], tf.string),
                                         "label": tf.constant(-1, tf.int64),
                                         "tfds_id": tf.constant("")})))
  ds = source.enumerate().concatenate(padding)
  ds = ds.filter(_host_filter(global_batch, host_batch, process_index))

  def element(position, ex):
    valid = position < num_examples
    attempt = tf.data.Dataset.from_tensors(ex).take(tf.cast(valid, tf.int64)).map(
        plain(lambda ex: dict(maker.evaluation(ex["video"], ex["label"]),
                              mask=tf.constant(True), index=tf.cast(position, tf.int32),
                              **streams.extras(0, -1))))
    final = tf.data.Dataset.from_tensors(position).map(plain(lambda p: streams.eval_final(
        p, valid, maker.placeholder("eval"), tf.strings.join(["TFDS example ", ex["tfds_id"]]),
        -1, skip_bad)))
    return streams.guarded([attempt], final)

  return streams.interleave(ds, element, parallel)
