"""Multi-view evaluation: every video of the eval split once, softmax averaged over its views.

Each video contributes `num_clips` uniformly spaced windows x `num_crops` spatial crops; the
per-video score is the mean of the views' softmax (per model, and for two models also their
average). Results go to `workdir/eval_results.json` (README, "Evaluation"):
  {"step", "split", "num_examples", "views": {"clips", "crops"},
   "primary": {"top1", "top5"}, "auxiliary": {...}, "average": {...},
   "per_class": {model: {class name: top1}}}
plus `workdir/confusion_<split>.json` ({model: KxK counts, rows = true class}).
"""
from __future__ import annotations

import functools
import os
import time
from typing import Any, Callable, Iterable, Mapping

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from cmpl_jax import fileio, train

RESULTS_FILENAME = "eval_results.json"


@functools.lru_cache(maxsize=8)
def _pmapped_eval_step(models: tuple[tuple[str, Any], ...], spec: train.EvalSpec):
  """One compiled eval step per model set (periodic evaluations reuse it)."""
  return train.pmap(functools.partial(train.eval_step, models=dict(models), spec=spec),
                  axis_name=train.AXIS_NAME)


def predict_split(models: Mapping[str, Any], params, batch_stats, batches: Iterable[Mapping],
                  num_examples: int, num_classes: int, spec: train.EvalSpec,
                  num_skipped: Callable[[], int] = lambda: 0
                  ) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Video-level probabilities {model: [num_examples, K]} and labels [num_examples], in
  metadata order.

  `params`/`batch_stats` are replicated over local devices; batches are the pipeline's eval
  batches ([D, b, V, T, S, S, 3] per model, with 'index' and 'mask'). Every video must be seen
  exactly once across all hosts; a gap or a repeat raises (it would bias the accuracy), except
  the `num_skipped()` videos the pipeline skipped as bad records (config.data.skip_bad_records),
  which are left out of the returned arrays.
  """
  p_eval = _pmapped_eval_step(tuple(models.items()), spec)
  probs = {name: np.zeros((num_examples, num_classes), np.float32) for name in models}
  labels = np.zeros(num_examples, np.int64)
  seen = np.zeros(num_examples, np.int32)
  start, done = time.time(), 0
  for batch in batches:
    out = p_eval(params, batch_stats, {key: batch[key] for key in ("frames", "size",
                                                                    "transposed")})
    index = np.asarray(batch["index"]).reshape(-1)
    mask = np.asarray(batch["mask"]).reshape(-1).astype(bool)
    label = np.asarray(batch["label"]).reshape(-1)
    out = {name: np.asarray(v).reshape(index.size, -1) for name, v in out.items()}
    if jax.process_count() > 1:   # every host needs every video's scores
      index, mask, label, out = multihost_utils.process_allgather((index, mask, label, out),
                                                                  tiled=True)
    labels[index[mask]] = label[mask]
    for name in models:
      probs[name][index[mask]] = out[name][mask]
    np.add.at(seen, index[mask], 1)
    done += int(mask.sum())
    if done and (done % 200 < mask.sum() or done == num_examples):
      logging.info("eval: %d/%d videos (%.1f videos/s)", done, num_examples,
                   done / max(time.time() - start, 1e-9))
  num_skipped = num_skipped()
  if jax.process_count() > 1:
    num_skipped = int(np.sum(multihost_utils.process_allgather(np.asarray(num_skipped))))
  missing = int(np.sum(seen == 0))
  if np.any(seen > 1) or missing != num_skipped:
    raise RuntimeError(f"evaluation covered {np.sum(seen > 0)} of {num_examples} videos "
                       f"({np.sum(seen > 1)} more than once, {num_skipped} skipped as bad "
                       f"records): the eval stream is inconsistent")
  if missing:   # skip_bad_records: score the videos that could be read
    logging.warning("evaluating %d of %d videos: %d bad records skipped", num_examples - missing,
                    num_examples, missing)
    keep = seen == 1
    probs, labels = {name: p[keep] for name, p in probs.items()}, labels[keep]
  return probs, labels


def topk_accuracy(probs_ExK: np.ndarray, labels_E: np.ndarray, k: int) -> float:
  topk = np.argsort(-probs_ExK, axis=1)[:, :k]
  return float(np.mean(np.any(topk == labels_E[:, None], axis=1)))


def confusion_matrix(probs_ExK: np.ndarray, labels_E: np.ndarray) -> np.ndarray:
  num_classes = probs_ExK.shape[1]
  matrix = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(matrix, (labels_E, probs_ExK.argmax(1)), 1)
  return matrix


def summarize(probs: Mapping[str, np.ndarray], labels_E: np.ndarray, classes: list[str], *,
              step: int, split: str, num_clips: int, num_crops: int
              ) -> tuple[dict[str, Any], dict[str, list[list[int]]]]:
  """eval_results.json content and confusion matrices, from video-level probabilities."""
  scores = dict(probs)
  if len(scores) > 1:
    scores["average"] = np.mean([scores[name] for name in probs], axis=0)
  results: dict[str, Any] = {"step": int(step), "split": split, "num_examples": int(len(labels_E)),
                             "views": {"clips": int(num_clips), "crops": int(num_crops)}}
  per_class, confusion = {}, {}
  for name, probs_ExK in scores.items():
    results[name] = {"top1": topk_accuracy(probs_ExK, labels_E, 1),
                     "top5": topk_accuracy(probs_ExK, labels_E, min(5, len(classes)))}
    matrix = confusion_matrix(probs_ExK, labels_E)
    support = matrix.sum(1)
    per_class[name] = {c: (float(matrix[i, i] / support[i]) if support[i] else None)
                       for i, c in enumerate(classes)}
    confusion[name] = matrix.tolist()
  results["per_class"] = per_class
  return results, confusion


def write_results(workdir: str, results: Mapping[str, Any],
                  confusion: Mapping[str, Any] | None = None) -> str:
  """Atomic writes (a crash never leaves a truncated results file)."""
  path = os.path.join(workdir, RESULTS_FILENAME)
  fileio.write_json(path, results)
  if confusion is not None:
    fileio.write_json(os.path.join(workdir, f"confusion_{results['split']}.json"),
                      {"classes": list(results["per_class"][next(iter(results["per_class"]))]),
                       "rows_true_cols_predicted": confusion})
  return path


def scalar_summary(results: Mapping[str, Any]) -> dict[str, float]:
  """Flat {'eval/primary/top1': ...} for TensorBoard."""
  out = {}
  for name in ("primary", "auxiliary", "average"):
    for key in ("top1", "top5"):
      if name in results:
        out[f"eval/{name}/{key}"] = results[name][key]
  return out
