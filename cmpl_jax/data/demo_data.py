"""The demo's dataset: generated and converted on first use, through the real tools.

`ensure(config)` runs `synthetic.generate` (a UCF-101-layout folder of encoded .avi files and
split lists) and the UCF-101 converter into `config.data.dir` when `config.data.synthetic` is
enabled and `config.data.dir` has no metadata.json yet. Both steps resume where an interrupted
run stopped, so a killed first start costs nothing on the second.
"""
from __future__ import annotations

import os
from typing import Any

from cmpl_jax import config_checks
from cmpl_jax.data import convert, records, synthetic


def raw_dir(data_dir: str) -> str:
  """Where the generated videos go: beside the TFRecords, so one folder holds the dataset."""
  return os.path.join(os.path.dirname(os.path.abspath(data_dir)), "raw")


def ensure(config: Any) -> str | None:
  """Builds the synthetic dataset for `config` if asked for and missing; returns its dir."""
  settings = config.data.get("synthetic")
  if settings is None or not settings.enabled:
    return None
  data_dir = config.data.dir
  if not data_dir:
    raise ValueError("config.data.synthetic.enabled needs config.data.dir (where to put it)")
  raw = raw_dir(data_dir)
  wanted = config_checks.synthetic_cache(settings, data_dir, raw)
  if os.path.exists(os.path.join(data_dir, records.METADATA_FILENAME)):
    return data_dir
  print(f"building the synthetic dataset in {raw} (first run only)", flush=True)
  synthetic.generate(raw, num_workers=settings.num_workers, **wanted)
  convert.convert(dataset="ucf101", input_dir=os.path.join(raw, synthetic.VIDEOS_DIRNAME),
                  splits_dir=os.path.join(raw, synthetic.SPLITS_DIRNAME), split_id=1,
                  output_dir=data_dir, short_side=settings.short_side,
                  num_workers=settings.num_workers)
  return data_dir
