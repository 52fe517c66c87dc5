"""Checks a training/eval config before anything is compiled or written.

A typo in a config should cost seconds, not a compile and a crash an hour into a TPU run:
`validate` collects every problem it finds and raises one `ConfigError` that names each field,
its value and what is allowed. The data-dependent checks (class counts of a labeled subset, a
checkpoint from another model) live where the data is read (`splits.py`, `checkpointing.py`)
and also run before compilation (see `loop.py`).
"""
from __future__ import annotations

import json
import os
from typing import Any

from cmpl_jax import methods, randaugment, train
from cmpl_jax.models import resnet3d

BN_BATCHES = ("joint", "separate")
SOURCES = ("tfrecord", "tfds")
CONV_IMPLS = ("auto",) + tuple(resnet3d.CONV_IMPLS)
NUM_CROPS = (1, 3)


class ConfigError(ValueError):
  """One or more config fields are invalid; the message lists each."""


def _positive_int(problems: list[str], field: str, value: Any) -> None:
  if not isinstance(value, int) or isinstance(value, bool) or value < 1:
    problems.append(f"{field}={value!r}: must be a positive integer")


def _batch(problems: list[str], field: str, value: Any, devices: int) -> None:
  if not isinstance(value, int) or value < 1 or value % devices:
    problems.append(f"{field}={value!r}: must be a positive multiple of the {devices} devices "
                    f"(jax.device_count()), e.g. {devices * max(1, -(-int(value or 1) // devices))}")


def _non_negative_int(problems: list[str], field: str, value: Any) -> None:
  if not isinstance(value, int) or isinstance(value, bool) or value < 0:
    problems.append(f"{field}={value!r}: must be an integer >= 0")


def _in_range(problems: list[str], field: str, value: Any, low: float, high: float,
              low_open: bool = False) -> None:
  ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
      (low < value if low_open else low <= value) and value <= high)
  if not ok:
    problems.append(f"{field}={value!r}: must be in {'(' if low_open else '['}{low:g}, {high:g}]")


def _boolean(problems: list[str], field: str, value: Any) -> None:
  if not isinstance(value, bool):
    problems.append(f"{field}={value!r}: must be True or False")


def _choice(problems: list[str], field: str, value: Any, allowed) -> bool:
  if value not in allowed:
    problems.append(f"{field}={value!r}: allowed values are {list(allowed)}")
    return False
  return True


def synthetic_cache(settings: Any, data_dir: str, raw_dir: str) -> dict[str, Any]:
  """The generator's arguments for `config.data.synthetic`; refuses a cache made otherwise.

  `raw_dir` holds the generated videos of `data_dir`. A dataset cached there with other
  settings must not stand in for the one asked for (the converted records alone would not
  tell).
  """
  from cmpl_jax.data import synthetic, synthetic_scene  # pylint: disable=g-import-not-at-top
  wanted = dict(num_classes=settings.classes, videos_per_class=settings.videos_per_class,
                seed=settings.seed, num_frames=settings.num_frames,
                size=(settings.height, settings.width),
                pass_frames=tuple(settings.get("pass_frames", synthetic_scene.PERIOD_FRAMES)))
  try:
    synthetic.check_settings(raw_dir, synthetic.dataset_settings(**wanted))
  except ValueError as e:
    raise ConfigError(f"config.data.dir={data_dir!r}: {e}; config.data.synthetic asks for "
                      f"another dataset, so give it its own config.data.dir") from e
  return wanted


def validate(config: Any, device_count: int, *, training: bool = True) -> None:
  """Raises ConfigError listing every invalid field; `device_count` is the global count."""
  problems: list[str] = []
  if _choice(problems, "config.method", config.method, methods.METHODS):
    if config.method == "cmpl" and not methods.has_auxiliary(config):
      problems.append("config.model.auxiliary.name='': method 'cmpl' needs an auxiliary model; "
                      f"allowed names are {sorted(resnet3d.ARCHITECTURES)}")
  for name in methods.selected_models(config):
    cfg = config.model[name]
    _choice(problems, f"config.model.{name}.name", cfg.name, sorted(resnet3d.ARCHITECTURES))
    if not (isinstance(cfg.width_multiplier, (int, float)) and cfg.width_multiplier > 0):
      problems.append(f"config.model.{name}.width_multiplier={cfg.width_multiplier!r}: must be > 0")
    _positive_int(problems, f"config.model.{name}.num_frames", cfg.num_frames)
    _positive_int(problems, f"config.model.{name}.frame_stride", cfg.frame_stride)
    if not 0 <= cfg.dropout_rate < 1:
      problems.append(f"config.model.{name}.dropout_rate={cfg.dropout_rate!r}: must be in [0, 1)")
    if cfg.get("init_from") and not os.path.isdir(cfg.init_from):
      problems.append(f"config.model.{name}.init_from={cfg.init_from!r}: no such folder")
  _choice(problems, "config.dtype", config.dtype, train.DTYPES)
  _choice(problems, "config.model.conv_impl", config.model.get("conv_impl", "auto"), CONV_IMPLS)
  _boolean(problems, "config.model.sync_batch_norm", config.model.sync_batch_norm)
  _data_fields(problems, config.data)
  _batch(problems, "config.eval.batch_size", config.eval.batch_size, device_count)
  _positive_int(problems, "config.eval.num_clips", config.eval.num_clips)
  _choice(problems, "config.eval.num_crops", config.eval.num_crops, NUM_CROPS)
  source = config.data.get("source", "tfrecord")
  if _choice(problems, "config.data.source", source, SOURCES) and source == "tfrecord":
    synthetic = config.data.get("synthetic")
    generated = synthetic is not None and synthetic.enabled
    if not config.data.dir:
      problems.append("config.data.dir='': set it to the folder the converter wrote "
                      "(python -m cmpl_jax.data.convert ... --output_dir=DIR)")
    elif not generated and not os.path.isdir(config.data.dir):
      problems.append(f"config.data.dir={config.data.dir!r}: no such folder")
  _unlabeled_pools(problems, config, source)
  if training:
    _batch(problems, "config.batch_size", config.batch_size, device_count)
    _positive_int(problems, "config.num_train_steps", config.num_train_steps)
    for field in ("log_every_steps", "checkpoint_every_steps", "eval_every_steps"):
      _positive_int(problems, f"config.{field}", config[field])
    if methods.uses_unlabeled(config.method):
      if not (isinstance(config.tau, (int, float)) and 0 < config.tau <= 1):
        problems.append(f"config.tau={config.tau!r}: the confidence threshold must be in (0, 1]")
      if not config.lambda_u >= 0:
        problems.append(f"config.lambda_u={config.lambda_u!r}: must be >= 0")
      _positive_int(problems, "config.mu", config.mu)
      for field in ("teacher_dropout", "distribution_alignment", "class_thresholds"):
        if not isinstance(config.get(field, False), bool):
          problems.append(f"config.{field}={config[field]!r}: must be True or False")
      momentum = config.get("teacher_stats_momentum", 0.99)
      if not (isinstance(momentum, (int, float)) and 0 <= momentum < 1):
        problems.append(f"config.teacher_stats_momentum={momentum!r}: must be in [0, 1)")
    decay = config.get("ema_decay", 0.0)
    if not (isinstance(decay, (int, float)) and 0 <= decay < 1):
      problems.append(f"config.ema_decay={decay!r}: must be in [0, 1) (0: no moving average)")
    if not config.data.get("labeled_list"):
      percent = config.data.labeled_percent
      if not (isinstance(percent, (int, float)) and 0 < percent <= 100):
        problems.append(f"config.data.labeled_percent={percent!r}: must be in (0, 100]")
    elif not os.path.isfile(config.data.labeled_list):
      problems.append(f"config.data.labeled_list={config.data.labeled_list!r}: no such file")
    _choice(problems, "config.optim.name", config.optim.get("name", "sgd"), train.OPTIMIZERS)
    _choice(problems, "config.bn_batches", config.get("bn_batches", "joint"), BN_BATCHES)
    if not config.optim.learning_rate > 0:
      problems.append(f"config.optim.learning_rate={config.optim.learning_rate!r}: must be > 0")
  if problems:
    raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def parse_pools(spec: str) -> list[tuple[str, str, str]]:
  """config.data.unlabeled_sources 'DIR[:SPLIT][*WEIGHT],...' -> [(dir, split, weight text)]
  ('' where not given). Syntax only: the one parser, shared with cmpl_jax/data/sources.py."""
  out = []
  for entry in (e.strip() for e in spec.split(",") if e.strip()):
    path, _, weight = entry.partition("*")
    data_dir, _, split = path.partition(":")
    out.append((data_dir, split, weight))
  return out


def pool_split(split: str, split_names) -> str:
  """A pool's split: as given, else 'unlabeled' (a folder conversion) when it has one, else
  'train'."""
  return split or ("unlabeled" if "unlabeled" in split_names else "train")


def _unlabeled_pools(problems: list[str], config: Any, source: str) -> None:
  """config.data.unlabeled_sources / unlabeled_train_weight (cmpl_jax/data/sources.py)."""
  spec = config.data.get("unlabeled_sources", "")
  weight = config.data.get("unlabeled_train_weight", 1.0)
  _in_range(problems, "config.data.unlabeled_train_weight", weight, 0, 1e6)
  if not spec:
    if weight == 0 and methods.uses_unlabeled(config.method):
      problems.append("config.data.unlabeled_train_weight=0 and no unlabeled_sources: the "
                      "unlabeled stream would have no videos")
    return
  if not isinstance(spec, str):
    problems.append(f"config.data.unlabeled_sources={spec!r}: must be a string "
                    "'DIR[:SPLIT][*WEIGHT],...'")
    return
  if source != "tfrecord":
    problems.append("config.data.unlabeled_sources: extra unlabeled pools need "
                    "config.data.source='tfrecord'")
  for data_dir, split, pool_weight in parse_pools(spec):
    where = f"config.data.unlabeled_sources entry {data_dir!r}"
    try:
      if pool_weight and not float(pool_weight) > 0:
        problems.append(f"{where}: the weight must be > 0")
    except ValueError:
      problems.append(f"{where}: the weight {pool_weight!r} is not a number")
    metadata = os.path.join(data_dir, "metadata.json")
    if not os.path.isfile(metadata):
      problems.append(f"{where}: {metadata} not found (convert the videos first: python -m "
                      "cmpl_jax.data.convert --dataset=folder --input_dir=... "
                      f"--output_dir={data_dir})")
      continue
    with open(metadata, encoding="utf-8") as f:
      splits = json.load(f).get("splits", {})
    if pool_split(split, splits) not in splits:
      problems.append(f"{where}: split {pool_split(split, splits)!r} is not in {metadata} (it "
                      f"has {sorted(splits)})")


def _data_fields(problems: list[str], data: Any) -> None:
  """config.data: the views (cmpl_jax/views.py), the host decode and tf.data settings."""
  _positive_int(problems, "config.data.crop_size", data.crop_size)
  _in_range(problems, "config.data.min_area", data.min_area, 0, 1, low_open=True)
  _non_negative_int(problems, "config.data.randaugment_layers", data.randaugment_layers)
  _in_range(problems, "config.data.randaugment_magnitude", data.randaugment_magnitude, 0,
            randaugment.MAX_MAGNITUDE)
  _in_range(problems, "config.data.cutout_fraction", data.cutout_fraction, 0, 1)
  _non_negative_int(problems, "config.data.decode_short_side", data.decode_short_side)
  _boolean(problems, "config.data.jpeg_dct_scaling", data.jpeg_dct_scaling)
  _in_range(problems, "config.data.max_aspect_ratio", data.max_aspect_ratio, 1, 10)
  if not isinstance(data.num_parallel_calls, int) or data.num_parallel_calls == 0:
    problems.append(f"config.data.num_parallel_calls={data.num_parallel_calls!r}: must be a "
                    "positive integer, or -1 for AUTOTUNE")
  _boolean(problems, "config.data.skip_bad_records", data.skip_bad_records)
  _positive_int(problems, "config.data.shuffle_buffer", data.shuffle_buffer)
