"""What the two models teach each other, per class, in numbers and figures (README, "Diagnostics").

The train step reports per-class pseudo-label counts (`ssl.py`, names under `per_class/`) as
vectors of K; `PerClassSums` adds them up on the device between evaluations. At each evaluation
`record` turns the interval's sums and the evaluation's per-class test accuracy into
  * `eval_results.json["pseudo_labels"]`: {model as teacher: {"precision", "coverage"}:
    {class: value or null}} over the training steps since the previous evaluation;
  * one entry of `workdir/diagnostics.json` (the history the figures are drawn from; a resumed
    run appends to it);
  * two figures, as PNGs in `workdir/figures/` and as TensorBoard images: per-class test top-1
    of each model (`per_class_accuracy`), and per-class pseudo-label precision and coverage of
    each teacher at every evaluation so far (`pseudo_labels`).
A value is null where there was nothing to count: no clip of that class (coverage), no clip
pseudo-labelled as it (precision), or no hidden labels at all (a pool without labels).
"""
from __future__ import annotations

import io
import json
import os
from typing import Any, Mapping

import jax
import numpy as np

from cmpl_jax import fileio

PREFIX = "per_class/"
HISTORY_FILENAME = "diagnostics.json"
FIGURES_DIRNAME = "figures"


def split_per_class(metrics: dict[str, Any]) -> dict[str, Any]:
  """Removes the per-class (vector) metrics from a step's metrics and returns them."""
  return {name: metrics.pop(name) for name in list(metrics) if name.startswith(PREFIX)}


class PerClassSums:
  """Sums per-class (total, count) vectors of the steps since the last `take`, on the device."""

  def __init__(self, first_step: int):
    self._sums = None
    self.first_step = first_step

  def add(self, metrics: Mapping[str, Any]) -> None:
    if metrics:
      self._sums = metrics if self._sums is None else jax.tree.map(jax.numpy.add, self._sums,
                                                                   metrics)

  def take(self, last_step: int) -> dict[str, Any]:
    """{'from_step', 'to_step', teacher: {'precision': [K], 'coverage': [K]}} (NaN where the
    count is 0), and starts a new interval; teachers absent when nothing was summed."""
    out: dict[str, Any] = {"from_step": self.first_step, "to_step": last_step}
    if self._sums is not None:
      sums = jax.device_get(jax.tree.map(lambda x: x[0], self._sums))   # replicated: device 0
      for name, (total, count) in sums.items():
        teacher, kind = name[len(PREFIX):].split("/")
        with np.errstate(invalid="ignore", divide="ignore"):
          out.setdefault(teacher, {})[kind] = np.where(count > 0, total / count, np.nan)
    self._sums, self.first_step = None, last_step + 1
    return out


def _by_class(values: np.ndarray, classes: list[str]) -> dict[str, float | None]:
  return {c: (None if np.isnan(v) else float(v)) for c, v in zip(classes, values)}


def _from_json(values: Mapping[str, float | None], classes: list[str]) -> np.ndarray:
  return np.array([np.nan if values.get(c) is None else values[c] for c in classes])


def record(workdir: str, writer, step: int, results: dict[str, Any],
           interval: Mapping[str, Any], classes: list[str]) -> None:
  """Adds the interval's per-class pseudo-label numbers to `results` (eval_results.json), appends
  them with the per-class test accuracy to diagnostics.json, and writes both figures (PNG and
  TensorBoard). Call on process 0 only."""
  teachers = {name: {kind: _by_class(v, classes) for kind, v in kinds.items()}
              for name, kinds in interval.items() if isinstance(kinds, dict)}
  if teachers:
    results["pseudo_labels"] = {"from_step": interval["from_step"],
                                "to_step": interval["to_step"], **teachers}
  path = os.path.join(workdir, HISTORY_FILENAME)
  history = {"classes": classes, "evaluations": []}
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      history = json.load(f)
  history["evaluations"] = [e for e in history["evaluations"] if e["step"] < step]
  history["evaluations"].append({"step": int(step), "test_top1": results["per_class"],
                                 "pseudo_labels": teachers})
  fileio.write_json(path, history)
  figures = {"per_class_accuracy": per_class_accuracy_figure(results["per_class"], classes,
                                                             step),
             "pseudo_labels": pseudo_label_figure(history) if teachers else None}
  images = {}
  for name, png in figures.items():
    if png is None:
      continue
    fileio.write_atomic(os.path.join(workdir, FIGURES_DIRNAME, f"{name}_{step:07d}.png"), png)
    images[f"diagnostics/{name}"] = _decode_png(png)[None]
  writer.write_images(step, images)


def figure(**kwargs):
  # A bare Figure, not pyplot: no global backend switch or figure registry (a notebook that
  # trains in-process keeps its own plotting).
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  return Figure(layout="constrained", **kwargs)


def to_png(fig) -> bytes:
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
  return buffer.getvalue()


def _decode_png(png: bytes) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def per_class_accuracy_figure(per_class: Mapping[str, Mapping[str, float | None]],
                              classes: list[str], step: int) -> bytes:
  """Grouped bars: per-class test top-1 of each model (and of their average)."""
  names = list(per_class)
  k = len(classes)
  fig = figure(figsize=(max(6.0, 0.35 * k * len(names) / 2 + 2), 3.5))
  ax = fig.subplots()
  width = 0.8 / len(names)
  for i, name in enumerate(names):
    values = np.nan_to_num(_from_json(per_class[name], classes))
    ax.bar(np.arange(k) + (i - (len(names) - 1) / 2) * width, values, width, label=name)
  ax.set_xticks(np.arange(k), classes, rotation=90 if k > 8 else 0, fontsize=7 if k > 20 else 9)
  ax.set_ylim(0, 1)
  ax.set_ylabel("test top-1")
  ax.set_title(f"per-class test accuracy, step {step}")
  ax.legend(fontsize=8)
  return to_png(fig)


def pseudo_label_figure(history: Mapping[str, Any]) -> bytes:
  """Heatmaps (class x evaluation) of each teacher's pseudo-label precision and coverage."""
  classes, evaluations = history["classes"], history["evaluations"]
  teachers = [t for t in ("primary", "auxiliary")
              if any(t in e["pseudo_labels"] for e in evaluations)]
  fig = figure(figsize=(8, max(2.5, 0.18 * len(classes)) * len(teachers)))
  axes = fig.subplots(len(teachers), 2, squeeze=False)
  for row, teacher in enumerate(teachers):
    for col, kind in enumerate(("precision", "coverage")):
      grid = np.stack([_from_json(e["pseudo_labels"].get(teacher, {}).get(kind, {}), classes)
                       for e in evaluations], axis=1)
      ax = axes[row, col]
      image = ax.imshow(np.ma.masked_invalid(grid), vmin=0, vmax=1, aspect="auto",
                        cmap="viridis", interpolation="nearest")
      ax.set_title(f"{teacher} as teacher: {kind}", fontsize=9)
      ax.set_xticks(range(len(evaluations)), [e["step"] for e in evaluations], fontsize=7)
      ax.set_xlabel("evaluation step (blank: nothing to count)", fontsize=8)
      ax.set_yticks(range(len(classes)), classes, fontsize=6 if len(classes) > 20 else 8)
      fig.colorbar(image, ax=ax)
  return to_png(fig)
