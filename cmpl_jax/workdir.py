"""What a training workdir holds besides checkpoints/ and TensorBoard events, in one place.

  config.json      the full training config (predict.py and --mode=eval rebuild models from it)
  data_info.json   class names, stored frame rate and short side (predict.py decodes new videos
                   like the training data)
  labeled_ids.txt  the labeled subset actually used (written by cmpl_jax/data/splits.py)
  eval_results.json, confusion_<split>.json   written by evaluate.py
  events.out.tfevents.*   TensorBoard scalars written by clu (`read_scalars` reads them back,
                   e.g. to plot curves in a notebook)
All JSON files are written atomically (cmpl_jax/fileio.py): a crash never leaves a truncated
one. A workdir may be local or on gs://.
"""
from __future__ import annotations

import json
import os
from typing import Any

import ml_collections
import numpy as np
from etils import epath

from cmpl_jax import fileio

CONFIG_FILENAME = "config.json"
DATA_INFO_FILENAME = "data_info.json"


# Kept under this name for the callers that write workdir files through this module.
write_json = fileio.write_json


def save_run(workdir: str, config: ml_collections.ConfigDict, data_info: dict[str, Any]) -> None:
  write_json(os.path.join(workdir, CONFIG_FILENAME), json.loads(config.to_json_best_effort()))
  write_json(os.path.join(workdir, DATA_INFO_FILENAME), data_info)


def load_run(workdir: str) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
  """(training config, data info) saved at training start."""
  paths = [epath.Path(workdir) / name for name in (CONFIG_FILENAME, DATA_INFO_FILENAME)]
  for path in paths:
    if not path.exists():
      raise FileNotFoundError(f"{path} not found: --workdir must be a training workdir")
  config = ml_collections.ConfigDict(json.loads(paths[0].read_text()))
  return config, json.loads(paths[1].read_text())


def read_scalars(workdir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{tag: (steps, values)} of every scalar in the workdir's TensorBoard event files.

  clu writes summaries as TF2 tensor events, so they are read as tensors, not legacy scalars.
  """
  from tensorboard.backend.event_processing import event_accumulator  # heavy; only when asked
  from tensorboard.util import tensor_util
  series: dict[str, list[tuple[int, float]]] = {}
  for name in sorted(os.listdir(workdir)):
    if not name.startswith("events.out.tfevents"):
      continue
    events = event_accumulator.EventAccumulator(os.path.join(workdir, name),
                                                size_guidance={event_accumulator.TENSORS: 0})
    events.Reload()
    for tag in events.Tags()["tensors"]:
      series.setdefault(tag, []).extend(
          (e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in events.Tensors(tag))
  out = {}
  for tag, points in series.items():
    points.sort()
    out[tag] = (np.array([s for s, _ in points]), np.array([v for _, v in points]))
  return out
