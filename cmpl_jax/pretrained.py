"""Pretrained backbones converted from PyTorch: the on-disk format, loading and merging.

Training machines need neither PyTorch nor TensorFlow for this: only `cmpl_jax/tools/
import_torch.py` imports torch, and it writes through `save` here, so the format lives in one
place. A converted directory (**contract**) holds

  DIR/variables/         Orbax checkpoint (StandardCheckpointer) of {'params', 'batch_stats'},
                         float32, laid out exactly like our model's variables at width 1
  DIR/import_info.json   {"format", "source", "model", "width_multiplier", "num_classes",
                         "head_dropped"}; num_classes is null when the head was dropped

`import_info.json` is written last, so a directory without it is an interrupted conversion.

Training uses it through `merge_into` (or `load_into`): the backbone comes from the checkpoint,
the linear head stays freshly initialised when it was dropped or the class count differs
(fine-tuning Kinetics-400 weights on UCF-101), and anything else that does not fit (another
architecture, another width) is an error naming the parameter path and both shapes.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping

import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from cmpl_jax import fileio

INFO_FILE = "import_info.json"
VARIABLES_DIR = "variables"
HEAD = "head"  # module name of the linear classifier in cmpl_jax.models.resnet3d
_COLLECTIONS = ("params", "batch_stats")


def save(directory: str, variables: Mapping[str, Any], info: Mapping[str, Any]) -> None:
  """Writes `variables` with Orbax, waits until it is on disk, then `import_info.json`."""
  directory = os.path.abspath(directory)
  os.makedirs(directory, exist_ok=True)
  info_path = os.path.join(directory, INFO_FILE)
  if os.path.exists(info_path):
    os.remove(info_path)  # a crash below must not leave an old info beside new variables
  checkpointer = ocp.StandardCheckpointer()
  try:
    checkpointer.save(os.path.join(directory, VARIABLES_DIR),
                      {c: dict(variables.get(c, {})) for c in _COLLECTIONS}, force=True)
    checkpointer.wait_until_finished()
  finally:
    checkpointer.close()
  fileio.write_atomic(info_path, json.dumps(dict(info), indent=2) + "\n")


def load(directory: str) -> tuple[dict[str, Any], dict[str, Any]]:
  """(variables {'params', 'batch_stats'} as numpy, info) of a converted directory."""
  directory = os.path.abspath(directory)
  info_path = os.path.join(directory, INFO_FILE)
  if not os.path.isfile(info_path):
    raise FileNotFoundError(
        f"{directory}: no {INFO_FILE}; expected the output of `python -m "
        "cmpl_jax.tools.import_torch` (an interrupted conversion has no info file)")
  with open(info_path, encoding="utf-8") as f:
    info = json.load(f)
  variables_path = os.path.join(directory, VARIABLES_DIR)
  if not os.path.isdir(variables_path):
    raise FileNotFoundError(f"{directory}: {INFO_FILE} present but no {VARIABLES_DIR}/")
  checkpointer = ocp.StandardCheckpointer()
  try:
    restored = checkpointer.restore(variables_path)
  finally:
    checkpointer.close()
  variables = {c: _to_numpy(restored.get(c, {})) for c in _COLLECTIONS}
  return variables, info


def _to_numpy(tree: Mapping[str, Any]) -> dict[str, Any]:
  flat = traverse_util.flatten_dict(dict(tree))
  return traverse_util.unflatten_dict({k: np.asarray(v) for k, v in flat.items()})


def _fresh_head(info: Mapping[str, Any], num_classes: int) -> bool:
  return bool(info.get("head_dropped")) or info.get("num_classes") != num_classes


def merge_into(initial_variables: Mapping[str, Any], pretrained_variables: Mapping[str, Any],
               info: Mapping[str, Any], num_classes: int, *, model_name: str | None = None
               ) -> dict[str, Any]:
  """`initial_variables` with every backbone leaf replaced by the pretrained one.

  The head (`params/head/*`) keeps its initial value when the checkpoint's head was dropped or
  its class count differs from `num_classes`; otherwise it is taken too (same label set, e.g.
  continuing on Kinetics-400 — the class order is the caller's responsibility). Every other
  leaf must exist in the checkpoint with the same shape, and the checkpoint must have nothing
  the model lacks: ValueError naming each path and shape otherwise. `model_name` (the config's
  `model.<name>.name`), when given, must equal the checkpoint's model. Leaves are cast to the
  initial leaves' dtypes; collections other than params/batch_stats pass through unchanged.
  """
  where = (f"pretrained {info.get('model')} (width {info.get('width_multiplier', 1.0):g}) "
           f"from {info.get('source', '?')}")
  if model_name is not None and model_name != info.get("model"):
    raise ValueError(f"{where} cannot initialise a {model_name!r} model: the architecture "
                     "differs (convert a checkpoint of the same model)")
  head_kernel = initial_variables.get("params", {}).get(HEAD, {}).get("kernel")
  if head_kernel is not None and int(np.shape(head_kernel)[-1]) != int(num_classes):
    raise ValueError(f"num_classes={num_classes} but the model's head kernel has shape "
                     f"{tuple(np.shape(head_kernel))}")
  fresh_head = _fresh_head(info, num_classes)
  merged = dict(initial_variables)
  missing, extra, mismatched = [], [], []
  for collection in _COLLECTIONS:
    if collection not in initial_variables:
      continue
    initial = traverse_util.flatten_dict(dict(initial_variables[collection]))
    source = traverse_util.flatten_dict(dict(pretrained_variables.get(collection, {})))
    is_head = lambda path: collection == "params" and path[0] == HEAD  # noqa: E731
    out = {}
    for path, value in initial.items():
      name = "/".join((collection,) + path)
      if fresh_head and is_head(path):
        out[path] = value
      elif path not in source:
        missing.append(f"{name} {tuple(np.shape(value))}")
      elif tuple(np.shape(source[path])) != tuple(np.shape(value)):
        mismatched.append(f"{name}: pretrained {tuple(np.shape(source[path]))}, "
                          f"model {tuple(np.shape(value))}")
      else:
        out[path] = np.asarray(source[path], dtype=getattr(value, "dtype", np.float32))
    extra += ["/".join((collection,) + p) for p in source
              if p not in initial and not (fresh_head and is_head(p))]
    merged[collection] = traverse_util.unflatten_dict(out)
  problems = []
  for label, items in (("shape mismatches", mismatched), ("missing from the checkpoint", missing),
                       ("in the checkpoint but not in the model", extra)):
    if items:
      problems.append(f"{len(items)} {label}: " + "; ".join(items[:8]) +
                      (" ..." if len(items) > 8 else ""))
  if problems:
    raise ValueError(f"{where} does not fit the model (same architecture at width 1 "
                     "required): " + " | ".join(problems))
  logging.info("initialised from %s; head %s", where,
               "kept fresh" if fresh_head else "taken from the checkpoint")
  return merged


def load_into(directory: str, initial_variables: Mapping[str, Any], num_classes: int, *,
              model_name: str | None = None) -> dict[str, Any]:
  """`merge_into(initial_variables, *load(directory), ...)`: what `init_from=DIR` does."""
  pretrained_variables, info = load(directory)
  return merge_into(initial_variables, pretrained_variables, info, num_classes,
                    model_name=model_name)
