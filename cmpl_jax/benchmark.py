"""Throughput of the train step or the input pipeline for a config; prints one JSON line.

  python -m cmpl_jax.benchmark --config=configs/demo.py --what=train_step
  python -m cmpl_jax.benchmark --config=configs/ucf101.py:cmpl_1pct --what=train_step \\
      --config.data.crop_size=112 --config.batch_size=2 --config.mu=1 --steps=3
  python -m cmpl_jax.benchmark --config=configs/demo.py --what=input_pipeline

`train_step` times the pmapped step on random uint8 clips of the configured shapes over all
local devices (no data needed; TensorFlow is not imported). `input_pipeline` times the host's
training batches from config.data.dir. Clips per step count every clip a step consumes:
labeled + weak + strong unlabeled (each model sees its own copy at its own frame rate).
"""
from __future__ import annotations

import functools
import json
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from cmpl_jax import methods, train
from cmpl_jax.data import sampling

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Only when run as a program: importing this module (tests do) must not claim flag names."""
  config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:ARG]).",
                                  lock_config=True)
  flags.DEFINE_enum("what", "train_step", ["train_step", "input_pipeline"], "What to time.")
  flags.DEFINE_integer("steps", 10, "Timed steps (after the warm-up).")
  flags.DEFINE_integer("warmup", 2, "Untimed steps first (the first one compiles).")
  flags.DEFINE_integer("num_classes", 101, "Classes of the head (train_step only).")
  flags.DEFINE_float("seconds", 10.0, "Seconds per timed stream (input_pipeline only).")
  flags.mark_flags_as_required(["config"])


def clips_per_step(config) -> int:
  unlabeled = 2 * config.mu if methods.uses_unlabeled(config.method) else 0
  return config.batch_size * (1 + unlabeled)


def default_stored_short_side(config) -> int:
  """Short side the benchmark assumes frames were stored at: 256 (the paper's preprocessing)
  for crops of 112 and more, twice the crop below that."""
  crop = int(config.data.crop_size)
  return 256 if crop >= 112 else 2 * crop


def random_batch(config, num_devices: int, num_classes: int, seed: int = 0,
                 stored_short_side: int = 0):
  """A host batch shaped like the pipeline's (decoded windows on the canvas), random pixels."""
  rng = np.random.default_rng(seed)
  canvas = sampling.canvas_for(config, stored_short_side or default_stored_short_side(config))
  offsets_U, _ = sampling.union_offsets(sampling.frame_specs(config))
  b_l = config.batch_size // num_devices
  if b_l * num_devices != config.batch_size:
    raise ValueError(f"config.batch_size={config.batch_size} is not divisible by the "
                     f"{num_devices} devices")
  width = min(canvas.width, int(round(canvas.height * 4 / 3)))  # a 4:3 frame on the canvas

  def stream(n):
    return {"frames": rng.integers(0, 256, (num_devices, n, len(offsets_U), canvas.height,
                                            canvas.width, 3), dtype=np.uint8),
            "size": np.broadcast_to(np.array([canvas.height, width], np.int32),
                                    (num_devices, n, 2)).copy(),
            "transposed": np.zeros((num_devices, n), bool),
            "position": np.arange(num_devices * n, dtype=np.int32).reshape(num_devices, n),
            "label": rng.integers(0, num_classes, (num_devices, n)).astype(np.int32)}

  batch = {"labeled": stream(b_l)}
  if methods.uses_unlabeled(config.method):
    batch["unlabeled"] = stream(b_l * config.mu)
  return batch


def time_train_step(config, num_classes: int, steps: int, warmup: int) -> dict:
  models = train.create_models(config, num_classes)
  tx = train.create_optimizer(config)
  state = train.replicate(
      train.create_train_state(config, models, jax.random.key(0), tx))
  p_step = jax.pmap(functools.partial(train.train_step, models=models, tx=tx, config=config),
                    axis_name=train.AXIS_NAME, in_axes=(0, 0, None), donate_argnums=(0,))
  batch = jax.device_put(random_batch(config, jax.local_device_count(), num_classes),
                         train.local_device_sharding())
  rng = jax.random.key(1)
  start = time.perf_counter()
  for _ in range(max(warmup, 1)):
    state, metrics = p_step(state, batch, rng)
  jax.block_until_ready(metrics)
  warmup_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = p_step(state, batch, rng)
  jax.block_until_ready(metrics)
  seconds = time.perf_counter() - start
  views = jax.jit(lambda b, k: train.model_inputs(b, k, config))
  one_device = jax.tree.map(lambda x: x[0], batch)
  jax.block_until_ready(views(one_device, rng))
  times = []
  for i in range(max(3, min(steps, 10))):
    start_views = time.perf_counter()
    jax.block_until_ready(views(one_device, jax.random.fold_in(rng, i)))
    times.append(time.perf_counter() - start_views)
  views_ms = 1e3 * float(np.median(times))
  step_ms = 1e3 * seconds / steps
  return {"warmup_s_incl_compile": round(warmup_s, 2), "step_ms": round(step_ms, 1),
          # The views of one device's batch, timed alone: their share of the step.
          "views_ms": round(views_ms, 2), "views_share_of_step": round(views_ms / step_ms, 4),
          "steps_per_sec": round(steps / seconds, 3),
          "clips_per_sec": round(steps * clips_per_step(config) / seconds, 2)}


def main(argv):
  del argv
  config = FLAGS.config
  if FLAGS.what == "train_step":
    figures = time_train_step(config, FLAGS.num_classes, FLAGS.steps, FLAGS.warmup)
  else:
    from cmpl_jax.data import throughput  # pylint: disable=g-import-not-at-top  (TensorFlow)
    figures = throughput.measure(config, FLAGS.seconds)
  device = jax.local_devices()[0]
  print(json.dumps({
      "what": FLAGS.what, "method": config.method, "dtype": config.dtype,
      "models": {n: f"{config.model[n].name} x{config.model[n].width_multiplier:g} "
                    f"{config.model[n].num_frames}x{config.data.crop_size}x"
                    f"{config.data.crop_size} stride {config.model[n].frame_stride}"
                 for n in methods.model_names(config)},
      "global_batch": {"labeled": config.batch_size, "mu": config.mu,
                       "clips_per_step": clips_per_step(config)},
      "devices": f"{jax.device_count()} x {device.device_kind} ({device.platform})",
      "steps": FLAGS.steps, **figures}))


if __name__ == "__main__":
  from cmpl_jax import console  # pylint: disable=g-import-not-at-top
  console.quiet_tensorflow()
  _define_flags()
  app.run(main)
