"""Orbax checkpoints of the model pair: save, find the latest, restore for training or eval.

A checkpoint `workdir/checkpoints/<step>/` holds three items, so evaluation and prediction can
restore the models without knowing the optimizer:
  model: {'params': {name: ...}, 'batch_stats': {name: ...}}: the weights to evaluate, i.e. the
         moving average of the weights when config.ema_decay > 0 (meta 'ema_decay')
  train: {'step': int, 'opt_state': ...}, plus the trained 'params' and 'batch_stats' when the
         model item holds the moving average, and 'teacher_stats' when kept
  meta:  JSON describing the models and classes, checked on restore (see `describe`).
Orbax writes each checkpoint under a temporary name and renames it when complete, so a save
interrupted by a crash or preemption never becomes the latest checkpoint; old ones rotate out
after `max_to_keep`. The data stream position is the step itself (streams are index-based, see
cmpl_jax/data/pipeline.py), so nothing else is needed to resume exactly, on any number of devices
or processes that divides the global batch (the state is saved unreplicated).

A finished checkpoint can still be damaged afterwards (a full disk, a killed copy, a truncated
file). Every restore names the step and the cause (`DamagedCheckpointError`); training falls
back to the newest checkpoint that restores (`restore_newest_intact`) and moves the damaged ones
to workdir/damaged_checkpoints/ rather than deleting them; evaluation and prediction never fall
back on their own.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from typing import Any, Callable, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from cmpl_jax import methods, train

DIRNAME = "checkpoints"   # workdir/checkpoints/<step>/ (README, "Training": the workdir)
DAMAGED_DIRNAME = "damaged_checkpoints"   # workdir/damaged_checkpoints/<step>/: kept, not deleted


class DamagedCheckpointError(RuntimeError):
  """A checkpoint step that exists but cannot be read back (files missing, truncated, corrupt)."""

  def __init__(self, directory: str, step: int, cause: BaseException, message: str = ""):
    self.path, self.step = os.path.join(directory, str(step)), step
    detail = " ".join(str(cause).split())   # tensorstore messages span lines
    self.reason = f"{type(cause).__name__}: {detail[:400]}"
    super().__init__(message or f"checkpoint {self.path} cannot be restored ({self.reason})")


def describe(config, classes: list[str]) -> dict[str, Any]:
  """What a checkpoint must agree with: model architectures, class list, method."""
  models = {}
  for name in methods.model_names(config):
    cfg = config.model[name]
    models[name] = {"name": cfg.name, "width_multiplier": float(cfg.width_multiplier),
                    "num_frames": int(cfg.num_frames), "frame_stride": int(cfg.frame_stride)}
  return {"method": config.method, "models": models, "num_classes": len(classes),
          "classes": list(classes), "crop_size": int(config.data.crop_size),
          "teacher_stats": list(methods.teacher_stats_models(config)),
          "ema_decay": train.ema_decay(config)}


def _model_item(state: train.TrainState) -> dict[str, Any]:
  params, batch_stats = train.eval_variables(state)
  return {"params": params, "batch_stats": batch_stats}


def _train_item(step: np.ndarray, state: train.TrainState) -> dict[str, Any]:
  """The 'train' item: step, optimizer state, and the trained weights and teacher statistics
  when the state has them apart (written only then, so checkpoints of runs without them keep
  their earlier layout)."""
  item = {"step": step, "opt_state": state.opt_state}
  if state.teacher_stats:
    item["teacher_stats"] = state.teacher_stats
  if state.ema:   # the model item holds the average; training resumes from these
    item.update(params=state.params, batch_stats=state.batch_stats)
  return item


def check_compatible(saved: Mapping[str, Any], expected: Mapping[str, Any], where: str,
                     training: bool = False) -> None:
  """Raises ValueError naming every field where a checkpoint differs from the config.

  `training`: also the state only training resumes (the teacher statistics).
  """
  problems = []
  for name in sorted(set(saved["models"]) | set(expected["models"])):
    got, want = saved["models"].get(name), expected["models"].get(name)
    if got is None or want is None:
      problems.append(f"model {name!r}: checkpoint has {'no' if got is None else 'a'} {name} "
                      f"model, config {'has' if want else 'has none'}")
      continue
    for key in ("name", "width_multiplier"):
      if got[key] != want[key]:
        problems.append(f"config.model.{name}.{key}: checkpoint {got[key]!r}, "
                        f"config {want[key]!r}")
  # Checkpoints written before the pseudo-label options existed keep no teacher statistics.
  got, want = saved.get("teacher_stats", []), expected.get("teacher_stats", [])
  if training and got != want:
    problems.append(f"teacher statistics (config.distribution_alignment / "
                    f"config.class_thresholds): checkpoint keeps them for {got or 'no model'}, "
                    f"config for {want or 'no model'}")
  # Older checkpoints keep no moving average. A different decay resumes; none against one not.
  got, want = saved.get("ema_decay", 0.0), expected.get("ema_decay", 0.0)
  if training and (got > 0) != (want > 0):
    problems.append(f"config.ema_decay: checkpoint {got!r}, config {want!r} (a moving average of "
                    "the weights is kept only when it is > 0)")
  if saved["num_classes"] != expected["num_classes"]:
    problems.append(f"number of classes: checkpoint {saved['num_classes']}, "
                    f"data {expected['num_classes']}")
  elif saved["classes"] != expected["classes"]:
    problems.append("class names differ between the checkpoint and the data")
  if problems:
    raise ValueError(f"checkpoint {where} does not match the config:\n  " +
                     "\n  ".join(problems))


class Checkpoints:
  """A thin wrapper over `ocp.CheckpointManager` for `train.TrainState`."""

  def __init__(self, workdir: str, max_to_keep: int = 3, read_only: bool = False):
    self.directory = os.path.join(os.path.abspath(workdir), DIRNAME)
    # Read-only managers get the options Orbax would force anyway (no rotation, no saving),
    # so it does not warn about overriding them on every evaluation and prediction.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else max_to_keep, create=not read_only,
        read_only=read_only, save_interval_steps=0 if read_only else 1)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("model", "train", "meta"))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, state: train.TrainState, meta: Mapping[str, Any], force: bool = True) -> int:
    """Saves an unreplicated state (host copies, so every process holds the same values)."""
    state = jax.device_get(state)
    step = int(state.step)
    self._manager.save(step, args=ocp.args.Composite(
        model=ocp.args.StandardSave(_model_item(state)),
        train=ocp.args.StandardSave(_train_item(np.asarray(step), state)),
        meta=ocp.args.JsonSave(dict(meta))), force=force)
    return step

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def _resolve(self, step: int | None) -> int:
    steps = self.all_steps()
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    if step is None or step < 0:
      return max(steps)
    if step not in steps:
      raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory}; "
                              f"available: {sorted(steps)}")
    return step

  @contextlib.contextmanager
  def _reading(self, step: int):
    """Turns any failure to read `step` into a DamagedCheckpointError naming it."""
    try:
      yield
    except (KeyboardInterrupt, SystemExit, DamagedCheckpointError):
      raise
    except Exception as e:  # tensorstore, JSON, OS and Orbax errors alike mean "unreadable"
      raise DamagedCheckpointError(self.directory, step, e) from e

  def restore_meta(self, step: int | None = None) -> dict[str, Any]:
    step = self._resolve(step)
    with self._reading(step):
      return dict(self._manager.restore(step, args=ocp.args.Composite(
          meta=ocp.args.JsonRestore()))["meta"])

  def restore_model(self, template: Mapping[str, Any], step: int | None = None,
                    expected_meta: Mapping[str, Any] | None = None, training: bool = False):
    """{'params', 'batch_stats'} of `step` (latest if None), shaped like `template`: the weights
    to evaluate (the moving average, in a checkpoint that keeps one)."""
    step = self._resolve(step)
    if expected_meta is not None:
      check_compatible(self.restore_meta(step), expected_meta, f"{self.directory}/{step}",
                       training)
    with self._reading(step):
      restored = self._manager.restore(step, args=ocp.args.Composite(
          model=ocp.args.StandardRestore(_abstract(template))))
    return step, restored["model"]

  def restore_arrays(self, step: int | None = None) -> tuple[int, dict[str, Any]]:
    """(step, {'params', 'batch_stats'}) as saved, without a config: for inspection and tests."""
    step = self._resolve(step)
    with self._reading(step):
      restored = self._manager.restore(step, args=ocp.args.Composite(
          model=ocp.args.StandardRestore()))
    return step, jax.tree.map(np.asarray, dict(restored["model"]))

  def restore_state(self, state: train.TrainState, step: int | None = None,
                    expected_meta: Mapping[str, Any] | None = None) -> train.TrainState:
    """The full TrainState (params, statistics, optimizer, step) for resuming training."""
    step, model = self.restore_model(_model_item(state), step, expected_meta, training=True)
    with self._reading(step):
      restored = self._manager.restore(step, args=ocp.args.Composite(
          train=ocp.args.StandardRestore(_abstract(_train_item(np.asarray(0), state)))))["train"]
    trained = restored if state.ema else model
    return state.replace(step=np.asarray(restored["step"], np.int32), params=trained["params"],
                         batch_stats=trained["batch_stats"], opt_state=restored["opt_state"],
                         teacher_stats=restored.get("teacher_stats", {}),
                         ema=model if state.ema else {})

  def newest_readable_meta(self) -> tuple[int, dict[str, Any]] | None:
    """(step, meta) of the newest checkpoint whose meta reads, or None if there is no checkpoint.

    For checking a workdir against the config before anything is compiled; damage elsewhere in
    the step is found by `restore_newest_intact`.
    """
    errors = []
    for step in sorted(self.all_steps(), reverse=True):
      try:
        return step, self.restore_meta(step)
      except DamagedCheckpointError as e:
        errors.append(e)
    if errors:
      raise _none_restores(errors, self.directory)
    return None

  def restore_newest_intact(self, state: train.TrainState, expected_meta: Mapping[str, Any]
                            ) -> tuple[train.TrainState, list[DamagedCheckpointError]]:
    """The newest checkpoint that restores completely, and the newer ones that did not.

    A checkpoint that reads but does not match the config raises (check_compatible): that is a
    wrong workdir, not damage. If no checkpoint restores, nothing is skipped: the error lists
    every step's cause, so a cause common to all (a changed optimizer, say) is seen as such.
    """
    damaged = []
    for step in sorted(self.all_steps(), reverse=True):
      try:
        return self.restore_state(state, step, expected_meta), damaged
      except DamagedCheckpointError as e:
        damaged.append(e)
    raise _none_restores(damaged, self.directory)

  def set_aside(self, damaged: DamagedCheckpointError, workdir: str,
                log: Callable[[str], None] = print) -> str:
    """Moves a damaged step out of Orbax's folder (so it is neither resumed, overwritten when
    that step is saved again, nor rotated away) into workdir/damaged_checkpoints/.

    Call on one process only, then `reload` on every process.
    """
    target_dir = os.path.join(os.path.abspath(workdir), DAMAGED_DIRNAME)
    os.makedirs(target_dir, exist_ok=True)
    target, n = os.path.join(target_dir, str(damaged.step)), 1
    while os.path.exists(target):   # damaged again after a later resume: keep both
      target, n = os.path.join(target_dir, f"{damaged.step}.{n}"), n + 1
    shutil.move(damaged.path, target)
    log(f"moved the damaged checkpoint {damaged.path} to {target} (kept for inspection; "
        "delete it when done)")
    return target

  def reload(self) -> None:
    """Re-reads the checkpoint folder (after another process changed it)."""
    self._manager.reload()


def _none_restores(errors: list[DamagedCheckpointError], directory: str) -> DamagedCheckpointError:
  causes = "\n  ".join(f"step {e.step}: {e.reason}" for e in errors)
  return DamagedCheckpointError(
      directory, errors[0].step, RuntimeError(errors[0].reason),
      f"no checkpoint in {directory} can be restored, so none was skipped or moved:\n  {causes}"
      "\nRepair the folder, or move it aside to start afresh.")


def _abstract(tree):
  """Restore targets as host numpy arrays (callers place them on devices themselves)."""
  return jax.tree.map(lambda x: np.zeros(np.shape(x), np.asarray(x).dtype)
                      if not isinstance(x, jax.ShapeDtypeStruct) else np.zeros(x.shape, x.dtype),
                      tree)
