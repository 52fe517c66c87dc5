"""What a training workdir holds besides checkpoints/ and TensorBoard events, in one place.

  config.json      the full training config (predict.py and --mode=eval rebuild models from it)
  data_info.json   class names, stored frame rate and short side (predict.py decodes new videos
                   like the training data)
  labeled_ids.txt  the labeled subset actually used (written by cmpl_jax/data/splits.py)
  eval_results.json, confusion_<split>.json   written by evaluate.py
  diagnostics.json, figures/*.png   per-class pseudo-label and test numbers, their figures
                   (diagnostics.py)
  events.out.tfevents.*   TensorBoard scalars and figures written by clu (`read_scalars` and
                   `read_images` read them back, e.g. to plot curves in a notebook)
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


def _tensor_events(workdir: str):
  """(tag, TensorBoard plugin name, event) of every tensor event in the workdir's event files.

  clu writes summaries as TF2 tensor events, so they are read as tensors, not legacy scalars.
  """
  from tensorboard.backend.event_processing import event_accumulator  # heavy; only when asked
  for name in sorted(os.listdir(workdir)):
    if not name.startswith("events.out.tfevents"):
      continue
    events = event_accumulator.EventAccumulator(
        os.path.join(workdir, name), size_guidance={event_accumulator.TENSORS: 0})
    events.Reload()
    for tag in events.Tags()["tensors"]:
      plugin = events.SummaryMetadata(tag).plugin_data.plugin_name
      for event in events.Tensors(tag):
        yield tag, plugin, event


def read_scalars(workdir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{tag: (steps, values)} of every scalar in the workdir's TensorBoard event files."""
  from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top
  series: dict[str, list[tuple[int, float]]] = {}
  for tag, plugin, event in _tensor_events(workdir):
    if plugin == "scalars":
      series.setdefault(tag, []).append(
          (event.step, float(tensor_util.make_ndarray(event.tensor_proto))))
  out = {}
  for tag, points in series.items():
    points.sort()
    out[tag] = (np.array([s for s, _ in points]), np.array([v for _, v in points]))
  return out


def read_images(workdir: str) -> dict[str, list[tuple[int, np.ndarray]]]:
  """{tag: [(step, uint8 [H, W, 3]), ...]} of the images in the workdir's event files (the
  per-class figures of diagnostics.py)."""
  import io  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top
  out: dict[str, list[tuple[int, np.ndarray]]] = {}
  for tag, plugin, event in _tensor_events(workdir):
    if plugin == "images":   # [width, height, encoded image, ...] as strings
      encoded = tensor_util.make_ndarray(event.tensor_proto)[2]
      out.setdefault(tag, []).append(
          (event.step, np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))))
  return {tag: sorted(v, key=lambda x: x[0]) for tag, v in out.items()}
