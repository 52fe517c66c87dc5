"""Where training and eval videos come from: one interface, chosen once from config.data.source.

A Source answers: class names; the train split's media ids and labels (to pick the labeled
subset); the stored frame size (for the canvas); and three host streams of encoded videos
turned into elements by a ClipMaker function: labeled, unlabeled, eval. Implemented by
  RecordSource  our converted TFRecords (records.RecordTable: read by byte offset, so every
                stream is index-based and resumable), with extra unlabeled pools
                (config.data.unlabeled_sources) mixed into the unlabeled stream;
  TfdsSource    a TFDS video dataset (tfds_source.py: sequential streams).
pipeline.py batches what a source yields; nothing downstream asks which source it is.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import tensorflow as tf

from cmpl_jax import config_checks
from cmpl_jax.data import records, sampling, streams, tfds_source

SOURCES = ("tfrecord", "tfds")


class Pool(NamedTuple):
  """An extra unlabeled pool: a converted folder (or dataset) split, and its mixing weight."""
  data_dir: str
  split: str
  weight: float


def pools(config: Any) -> list[Pool]:
  """The extra unlabeled pools of config.data.unlabeled_sources (syntax and default split as
  config_checks defines them)."""
  out = []
  for data_dir, split, weight in config_checks.parse_pools(
      config.data.get("unlabeled_sources", "")):
    names = records.read_metadata(data_dir).get("splits", {}) if not split else ()
    out.append(Pool(data_dir, config_checks.pool_split(split, names), float(weight or 1.0)))
  return out


class RecordSource:
  """Our TFRecords (+ metadata.json) in config.data.dir."""
  jpeg = True

  def __init__(self, config: Any, data_dir: str | None = None):
    self.config = config
    self.data_dir = data_dir or config.data.dir
    if not self.data_dir:
      raise ValueError("config.data.dir is empty: set it to the folder written by "
                       "`python -m cmpl_jax.data.convert` (or use config.data.source='tfds')")
    self.metadata = records.read_metadata(self.data_dir)
    self._tables: dict[str, records.RecordTable] = {}

  def table(self, split: str) -> records.RecordTable:
    """The split's offset index. The train split's also holds the extra unlabeled pools,
    after its own examples, so labeled indices (into the split) index it unchanged."""
    if split not in self._tables:
      extra = pools(self.config) if split == self.config.data.train_split else []
      self._tables[split] = records.RecordTable(self.data_dir, split,
                                                [(p.data_dir, p.split) for p in extra])
    return self._tables[split]

  def class_names(self) -> list[str]:
    return list(self.metadata["classes"])

  def storage_info(self) -> dict[str, Any]:
    return {"dataset": self.metadata.get("dataset"),
            "frame_rate": float(self.metadata.get("frame_rate") or 0.0),
            "short_side": int(self.metadata.get("short_side") or 0)}

  def train_split_labels(self) -> tuple[list[str], list[int]]:
    info = records.split_info(self.metadata, self.config.data.train_split, self.data_dir)
    return list(info["media_ids"]), [int(x) for x in info["labels"]]

  def stored_short_side(self, split: str) -> int:
    return self.table(split).stored_short_side()

  def labeled(self, labeled_indices: Sequence[int], example_fn, **kwargs) -> tf.data.Dataset:
    table = self.table(self.config.data.train_split)
    num_examples = table.ranges[0][1]  # the split's own, before any pool
    if num_examples == 0:
      raise ValueError(f"split {table.split!r} of {self.data_dir} has no examples")
    bad = [i for i in labeled_indices if not 0 <= i < num_examples]
    if bad:
      raise ValueError(f"labeled indices out of range [0, {num_examples}) of split "
                       f"{table.split!r}: {bad[:10]}")
    return streams.train_stream(table, streams.Pools([labeled_indices], [1.0]), example_fn,
                                stream_id=sampling.LABELED_STREAM, **kwargs)

  def unlabeled(self, example_fn, **kwargs) -> tf.data.Dataset:
    table = self.table(self.config.data.train_split)
    index_sets = [range(start, start + count) for start, count in table.ranges]
    weights = [float(self.config.data.get("unlabeled_train_weight", 1.0))]
    weights += [p.weight for p in pools(self.config)]
    return streams.train_stream(table, streams.Pools(index_sets, weights), example_fn,
                                stream_id=sampling.UNLABELED_STREAM, hidden_labels=True,
                                **kwargs)

  def eval_split(self, split: str, maker: Any, **kwargs) -> tuple[tf.data.Dataset, int]:
    table = self.table(split)
    if table.num_examples == 0:
      raise ValueError(f"split {split!r} of {self.data_dir} has no examples")
    num_batches = -(-table.num_examples // kwargs["global_batch"])
    return streams.eval_stream(table, maker, num_batches=num_batches, **kwargs), \
        table.num_examples

  def diagnose(self, split: str, index: int) -> str:
    return self.table(split).diagnose(index)

  def media_id(self, split: str, index: int) -> str:
    return self.table(split).media_ids[index]


class TfdsSource:
  """A TFDS video dataset (see tfds_source.py for what its sequential streams cost)."""

  def __init__(self, config: Any, data_dir: str | None = None):
    self.config = config
    self.data_dir = data_dir
    self.jpeg = tfds_source.is_jpeg(config, data_dir)
    self._train: dict[str, Any] | None = None

  def class_names(self) -> list[str]:
    return tfds_source.class_names(self.config, self.data_dir)

  def storage_info(self) -> dict[str, Any]:
    return {"dataset": self.config.data.tfds_name, "frame_rate": 0.0,
            "short_side": tfds_source.stored_short_side(self.config, self.data_dir)}

  def train_split_labels(self) -> tuple[list[str], list[int]]:
    ids, labels, _ = tfds_source.split_labels(self.config, self.config.data.train_split,
                                              self.data_dir)
    return ids, labels

  def stored_short_side(self, split: str) -> int:
    del split
    return tfds_source.stored_short_side(self.config, self.data_dir)

  def _sources(self, labeled_indices: Sequence[int] | None) -> dict[str, Any]:
    if self._train is None:
      self._train = tfds_source.train_sources(self.config, self.data_dir, labeled_indices or [])
    return self._train

  def labeled(self, labeled_indices: Sequence[int], example_fn, **kwargs) -> tf.data.Dataset:
    return tfds_source.train_stream(self._sources(labeled_indices)["labeled"], example_fn,
                                    stream_id=sampling.LABELED_STREAM, **kwargs)

  def unlabeled(self, example_fn, **kwargs) -> tf.data.Dataset:
    return tfds_source.train_stream(self._sources(None)["unlabeled"], example_fn,
                                    stream_id=sampling.UNLABELED_STREAM, **kwargs)

  def eval_split(self, split: str, maker: Any, **kwargs) -> tuple[tf.data.Dataset, int]:
    source_ds, num_examples, _ = tfds_source.eval_source(self.config, self.data_dir, split)
    if num_examples == 0:
      raise ValueError(f"split {split!r} has no examples")
    num_batches = -(-num_examples // kwargs["global_batch"])
    return tfds_source.eval_stream(source_ds, num_examples, maker, num_batches=num_batches,
                                   **kwargs), num_examples

  def diagnose(self, split: str, index: int) -> str:
    return f"TFDS example {split}[{index}]"

  def media_id(self, split: str, index: int) -> str:
    return f"{split}[{index}]"


def make(config: Any, data_dir: str | None = None) -> RecordSource | TfdsSource:
  """The source config.data.source names: the one place that choice is made."""
  source = config.data.get("source", "tfrecord")
  if source not in SOURCES:
    raise ValueError(f"config.data.source={source!r} is not one of {list(SOURCES)}")
  return (TfdsSource if source == "tfds" else RecordSource)(config, data_dir)
