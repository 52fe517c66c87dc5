"""The training loop and checkpoint evaluation: what `main.py --mode=train|eval` runs.

This is the one module that ties the TF input pipeline (cmpl_jax/data) to the pure JAX step
(train.py); everything it writes lands in the workdir:
  checkpoints/ (Orbax), TensorBoard event files, config.json, data_info.json (classes and frame
  rate, for predict.py), labeled_ids.txt, eval_results.json, confusion_<split>.json, and the
  per-class diagnostics (diagnostics.py): diagnostics.json and figures/*.png.
"""
from __future__ import annotations

import functools
import os
import signal
import threading
import time
from typing import Any, Iterator, Mapping

import flax.jax_utils
import jax
import ml_collections
import numpy as np
from clu import metric_writers
from jax.experimental import multihost_utils

from cmpl_jax import checkpointing, config_checks, console, diagnostics, evaluate, pretrained
from cmpl_jax import train
from cmpl_jax import workdir as workdir_lib
from cmpl_jax.data import demo_data, pipeline, splits
from cmpl_jax.models import resnet3d

def _console(message: str) -> None:
  if jax.process_index() == 0:
    print(message, flush=True)


def prefetch_to_devices(batches: Iterator[Mapping], size: int = 2) -> Iterator[Any]:
  """Starts host->device copies `size` batches ahead (batches are [D, ...] numpy trees)."""
  sharding = train.local_device_sharding()
  queue = []
  for batch in batches:
    queue.append(jax.tree.map(lambda x: jax.device_put(x, sharding), batch))
    if len(queue) > size:
      yield queue.pop(0)
  yield from queue


class _MetricAccumulator:
  """Sums the steps' (total, count) metric pairs on device; divides once per log interval.

  It also keeps each step's metrics until `check_finite`, so a NaN/Inf is reported at the step
  where it appeared without a device sync per step (the check runs at log and checkpoint steps).
  """

  def __init__(self):
    self._sums = None
    self._unchecked: list[tuple[int, Any]] = []

  def add(self, step: int, metrics) -> None:
    self._sums = metrics if self._sums is None else jax.tree.map(jax.numpy.add, self._sums,
                                                                 metrics)
    self._unchecked.append((step, metrics))

  def check_finite(self, last_checkpoint: int | None) -> None:
    """Raises FloatingPointError naming the first step and loss term that is NaN or Inf."""
    unchecked, self._unchecked = self._unchecked, []
    for step, metrics in unchecked:
      values = jax.device_get({name: total[0] for name, (total, _) in metrics.items()})
      bad = sorted(name for name, value in values.items() if not np.isfinite(value))
      if bad:
        terms = ", ".join(f"{name} = {values[name]}" for name in bad)
        where = (f"the last checkpoint (step {last_checkpoint}) is intact and restorable"
                 if last_checkpoint is not None else "no checkpoint was written")
        raise FloatingPointError(
            f"non-finite training loss at step {step}: {terms}; stopped before saving it, "
            f"{where}. Lower config.optim.learning_rate or set config.optim.grad_clip_norm.")

  def result(self) -> dict[str, float]:
    sums = jax.device_get(jax.tree.map(lambda x: x[0], self._sums))
    self._sums = None
    # A ratio over nothing (pseudo-label accuracy when no clip cleared tau, or when no clip of
    # the interval has a hidden label) is undefined: absent, not a misleading 0.
    return {f"train/{name}": float(total) / float(count)
            for name, (total, count) in sums.items() if float(count) > 0}


class _StopSignal:
  """Turns SIGTERM (what TPU VMs and schedulers send before preemption) into a request to save a
  checkpoint at the current step and return normally, instead of dying mid-step."""

  def __init__(self):
    self.received: int | None = None
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():  # signal() works only there
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame) -> None:
    del frame
    self.received = signum

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def agreed(self, step: int, every: int) -> bool:
    """Whether to stop now. One process decides alone; several agree every `every` steps (the
    save that follows is collective, so all must stop at the same step)."""
    if jax.process_count() == 1:
      return self.received is not None
    if step % every:
      return False
    flags = multihost_utils.process_allgather(np.asarray(self.received is not None))
    return bool(np.any(flags))


def _prepare_data(config, workdir: str):
  """Class names, labeled subset (written to labeled_ids.txt) and data info for the workdir."""
  demo_data.ensure(config)
  media_ids, labels, classes = pipeline.train_split_labels(config)
  labeled = splits.labeled_indices(config, media_ids, labels, classes)
  if jax.process_index() == 0:
    splits.write_labeled_ids(workdir, [media_ids[i] for i in labeled])
    workdir_lib.save_run(workdir, config, _data_info(config, classes))
  return classes, labeled


def _data_info(config, classes: list[str]) -> dict[str, Any]:
  """What predict.py needs to preprocess a new video like the training data."""
  return {"classes": list(classes), "source": config.data.source,
          **pipeline.storage_info(config)}


def _initial_variables(config, models, rng, num_classes: int):
  """Random init, with `config.model.<name>.init_from` (converted PyTorch weights) applied."""
  variables = jax.jit(functools.partial(train.init_model_variables, config, models))(rng)
  for name in models:
    init_from = config.model[name].get("init_from")
    if init_from:
      variables[name] = pretrained.load_into(init_from, variables[name], num_classes,
                                             model_name=config.model[name].name)
      _console(f"{name}: initialised from {init_from}")
  return variables


def run_evaluation(config, models, params, batch_stats, classes: list[str], step: int,
                   split: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
  """Multi-view evaluation of replicated params on the eval split."""
  split = split or config.data.eval_split
  batches = pipeline.make_eval_iterator(
      config, None, split, process_index=jax.process_index(),
      process_count=jax.process_count(), num_local_devices=jax.local_device_count())
  probs, labels = evaluate.predict_split(
      models, params, batch_stats, prefetch_to_devices(batches), batches.num_examples,
      len(classes), train.eval_spec(config), lambda: batches.num_skipped_records)
  return evaluate.summarize(probs, labels, classes, step=step, split=split,
                            num_clips=config.eval.num_clips, num_crops=config.eval.num_crops)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains `config.method` to `config.num_train_steps`, resuming from the latest checkpoint.

  Returns the final evaluation results (also written to workdir/eval_results.json).
  """
  config_checks.validate(config, jax.device_count())   # before anything is written or compiled
  os.makedirs(workdir, exist_ok=True)
  classes, labeled = _prepare_data(config, workdir)
  meta = checkpointing.describe(config, classes)
  checkpoints = checkpointing.Checkpoints(workdir, config.keep_checkpoints)
  newest = checkpoints.newest_readable_meta()
  resuming = newest is not None
  if resuming:  # a workdir of another model fails here, before any compilation
    checkpointing.check_compatible(newest[1], meta, f"{checkpoints.directory}/{newest[0]}",
                                   training=True)
  models = train.create_models(config, len(classes))
  for name, model in models.items():
    _console(model_summary(config, name, model))
  tx = train.create_optimizer(config)
  schedule = train.learning_rate_schedule(config)
  rng = jax.random.key(config.seed)
  # Pretrained weights only on a fresh start: when a checkpoint exists, resuming it wins.
  state = train.create_train_state(config, models, rng, tx, initial_variables=None if resuming
                                   else _initial_variables(config, models, rng, len(classes)))
  if resuming:
    state = _resume(checkpoints, state, meta, workdir)
  start_step = int(state.step)
  if start_step >= config.num_train_steps:
    _console(f"checkpoint step {start_step} >= config.num_train_steps={config.num_train_steps}: "
             "nothing to train; evaluating it")
    checkpoints.close()
    return evaluate_checkpoint(config, workdir)
  _console(f"{config.method}: {len(labeled)} labeled videos, {len(classes)} classes, "
           f"{jax.device_count()} devices, steps {start_step} -> {config.num_train_steps}")

  p_train_step = train.pmap(
      functools.partial(train.train_step, models=models, tx=tx, config=config),
      axis_name=train.AXIS_NAME, in_axes=(0, 0, None), donate_argnums=(0,))
  replicated = train.replicate(state)
  batches = pipeline.make_train_iterator(
      config, None, labeled, start_step=start_step, process_index=jax.process_index(),
      process_count=jax.process_count(), num_local_devices=jax.local_device_count())
  writer = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() > 0, asynchronous=True)
  accumulator = _MetricAccumulator()
  per_class = diagnostics.PerClassSums(start_step + 1)
  step_rng = jax.random.fold_in(rng, 1)
  results: dict[str, Any] = {}
  scalars: dict[str, float] = {}
  interval_start, interval_step = time.time(), start_step
  last_saved = checkpoints.latest_step()
  device_batches = prefetch_to_devices(batches)
  with _StopSignal() as stop:
    try:
      for step in range(start_step + 1, config.num_train_steps + 1):
        replicated, metrics = p_train_step(replicated, next(device_batches), step_rng)
        per_class.add(diagnostics.split_per_class(metrics))
        accumulator.add(step, metrics)
        last = step == config.num_train_steps
        preempted = stop.agreed(step, config.log_every_steps)
        if step % config.log_every_steps == 0 or last or preempted:
          accumulator.check_finite(last_saved)
          scalars = accumulator.result()
          elapsed = time.time() - interval_start
          steps_per_sec = (step - interval_step) / max(elapsed, 1e-9)
          interval_start, interval_step = time.time(), step
          scalars["train/learning_rate"] = float(schedule(step - 1))
          scalars["train/steps_per_sec"] = steps_per_sec
          scalars["train/clips_per_sec"] = steps_per_sec * config.batch_size * (
              1 + (2 * config.mu if config.method != "supervised" else 0))
          writer.write_scalars(step, scalars)
          eta = (config.num_train_steps - step) / max(steps_per_sec, 1e-9)
          _console(_progress_line(step, config.num_train_steps, scalars, steps_per_sec, eta))
        if (step % config.checkpoint_every_steps == 0 or last or preempted) and last_saved != step:
          accumulator.check_finite(last_saved)   # a NaN state is never saved
          checkpoints.save(flax.jax_utils.unreplicate(replicated), meta)
          last_saved = step
        if preempted:
          _console(f"signal {stop.received} received: saved the checkpoint of step {step} in "
                   f"{checkpoints.directory}; run the same command again to resume")
          return results
        if step % config.eval_every_steps == 0 or last:
          results, confusion = run_evaluation(config, models, *train.eval_variables(replicated),
                                              classes, step)
          writer.write_scalars(step, evaluate.scalar_summary(results))
          interval = per_class.take(step)
          if jax.process_index() == 0:
            diagnostics.record(workdir, writer, step, results, interval, classes)
            evaluate.write_results(workdir, results, confusion)
          _console(_eval_line(results))
    finally:
      writer.flush()
      checkpoints.close()
  if jax.process_index() == 0:
    _console(_final_summary(workdir, results, scalars))
  return results


def _resume(checkpoints: checkpointing.Checkpoints, state: train.TrainState,
            meta: Mapping[str, Any], workdir: str) -> train.TrainState:
  """Restores the newest intact checkpoint; damaged newer ones are named and set aside."""
  state, damaged = checkpoints.restore_newest_intact(state, meta)
  for bad in damaged:
    _console(f"WARNING: skipped the checkpoint {bad.path}: it cannot be restored ({bad.reason})")
  if damaged:   # every process has restored before any folder moves
    multihost_utils.sync_global_devices("cmpl_jax: restored past damaged checkpoints")
    if jax.process_index() == 0:
      for bad in damaged:
        checkpoints.set_aside(bad, workdir, _console)
    multihost_utils.sync_global_devices("cmpl_jax: damaged checkpoints set aside")
    checkpoints.reload()
  _console(f"resumed from {checkpoints.directory}/{int(state.step)}")
  return state


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """--mode=eval: restores `config.eval.step` (latest if -1) and evaluates the eval split."""
  config_checks.validate(config, jax.device_count(), training=False)
  checkpoints = checkpointing.Checkpoints(workdir, read_only=True)
  demo_data.ensure(config)
  classes = pipeline.class_names(config)
  models = train.create_models(config, len(classes))
  template = jax.eval_shape(functools.partial(train.init_model_variables, config, models),
                            jax.random.key(0))
  template = {"params": {n: v["params"] for n, v in template.items()},
              "batch_stats": {n: v["batch_stats"] for n, v in template.items()}}
  try:
    step, variables = checkpoints.restore_model(
        template, step=config.eval.step, expected_meta=checkpointing.describe(config, classes))
  except checkpointing.DamagedCheckpointError as e:
    others = sorted(s for s in checkpoints.all_steps() if s != e.step)
    raise checkpointing.DamagedCheckpointError(
        checkpoints.directory, e.step, e.__cause__ or e,
        f"{e}\n--mode=eval evaluates only the checkpoint asked for (config.eval.step="
        f"{config.eval.step}{': the newest' if config.eval.step < 0 else ''}) and does not fall "
        f"back to another; pass --config.eval.step=STEP to evaluate one of the others "
        f"(steps: {', '.join(map(str, others)) or 'none'})") from e
  replicated = train.replicate(variables)
  results, confusion = run_evaluation(config, models, replicated["params"],
                                      replicated["batch_stats"], classes, step)
  if jax.process_index() == 0:
    evaluate.write_results(workdir, results, confusion)
  _console(_eval_line(results))
  return results


def model_summary(config, name: str, model) -> str:
  cfg = config.model[name]
  return f"{name}: " + resnet3d.summary(model, cfg.num_frames, config.data.crop_size, cfg.name) + \
      f", frame stride {cfg.frame_stride}"


def _progress_line(step: int, total: int, scalars: Mapping[str, float], steps_per_sec: float,
                   eta: float) -> str:
  parts = [f"step {step}/{total}", f"loss {scalars['train/loss']:.3f}"]
  for name in ("primary", "auxiliary"):
    if f"train/{name}/sup_top1" in scalars:
      part = f"{name[:3]} top1 {scalars[f'train/{name}/sup_top1']:.2f}"
      if f"train/{name}/mask_rate" in scalars:
        part += f" mask {scalars[f'train/{name}/mask_rate']:.2f}"
        accuracy = scalars.get(f"train/{name}/pseudo_label_acc")
        part += " pl_acc " + ("-" if accuracy is None else f"{accuracy:.2f}")
      parts.append(part)
  parts += [f"lr {scalars['train/learning_rate']:.4f}", f"{steps_per_sec:.2f} steps/s",
            f"ETA {console.format_duration(eta)}"]
  return " | ".join(parts)


def _final_summary(workdir: str, results: Mapping[str, Any], scalars: Mapping[str, float]
                   ) -> str:
  """What a finished run prints last: its accuracies, mask rates and where its outputs are."""
  lines = [f"done: step {results.get('step', '?')}"]
  for name in ("primary", "auxiliary", "average"):
    if name in results:
      line = f"  {name:<9} test top1 {results[name]['top1']:.3f} top5 {results[name]['top5']:.3f}"
      if f"train/{name}/mask_rate" in scalars:
        accuracy = scalars.get(f"train/{name}/pseudo_label_acc")
        line += (f" | last mask rate {scalars[f'train/{name}/mask_rate']:.2f}, pseudo-label acc "
                 + ("-" if accuracy is None else f"{accuracy:.2f}"))
      lines.append(line)
  workdir = os.path.abspath(workdir)
  lines += [f"  checkpoints: {os.path.join(workdir, checkpointing.DIRNAME)}",
            f"  results:     {os.path.join(workdir, evaluate.RESULTS_FILENAME)}",
            f"  TensorBoard: tensorboard --logdir {workdir}"]
  return "\n".join(lines)


def _eval_line(results: Mapping[str, Any]) -> str:
  parts = [f"eval step {results['step']} on {results['split']} "
           f"({results['num_examples']} videos x {results['views']['clips']} clips x "
           f"{results['views']['crops']} crops)"]
  for name in ("primary", "auxiliary", "average"):
    if name in results:
      parts.append(f"{name} top1 {results[name]['top1']:.3f} top5 {results[name]['top5']:.3f}")
  return " | ".join(parts)
