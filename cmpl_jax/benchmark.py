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
import resource
import time

import jax
import jax.numpy as jnp
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
  flags.DEFINE_integer("warmup", 2, "Untimed steps after compiling, before the timed ones.")
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


def _peak_device_mb(devices) -> float | None:
  """Peak bytes in use on the busiest device, where the backend keeps memory statistics
  (GPU/TPU do; XLA:CPU does not)."""
  peaks = []
  for device in devices:
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
      peaks.append(stats["peak_bytes_in_use"])
  return round(max(peaks) / 2**20, 1) if peaks else None


def peak_host_rss_mb() -> float:
  """This process's peak resident memory (Linux reports ru_maxrss in KiB)."""
  return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def matmul_peak_tflops(device, n: int = 8192, repeats: int = 10) -> float:
  """The device's own bfloat16 matmul rate (median of `repeats`, [n, n] x [n, n]): the peak
  MFU is quoted against, measured rather than taken from a datasheet."""
  a = jax.device_put(jnp.ones((n, n), jnp.bfloat16), device)
  matmul = jax.jit(lambda x, y: x @ y)
  jax.block_until_ready(matmul(a, a))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(matmul(a, a))
    times.append(time.perf_counter() - start)
  return 2 * n ** 3 / float(np.median(times)) / 1e12


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
    cost = cost[0]
  return float(cost.get("flops", 0.0)) if cost else 0.0


def spread(times_s) -> dict:
  """Median and spread (min, max) of per-step times, in ms."""
  ms = 1e3 * np.asarray(times_s)
  return {"step_ms": round(float(np.median(ms)), 2), "step_ms_min": round(float(ms.min()), 2),
          "step_ms_max": round(float(ms.max()), 2)}


def shape_config(config) -> dict:
  """The exact shapes a train-step figure ran at (the "config" key of the JSON line)."""
  names = methods.model_names(config)
  return {"frames_F": int(config.model.primary.num_frames),
          "frames_A": int(config.model.auxiliary.num_frames) if "auxiliary" in names else 0,
          "size": int(config.data.crop_size), "labeled": int(config.batch_size),
          "mu": int(config.mu) if methods.uses_unlabeled(config.method) else 0,
          "dtype": str(config.dtype), "bn_batches": str(config.bn_batches),
          "devices": jax.device_count(), "backend": jax.default_backend()}


def time_train_step(config, num_classes: int, steps: int, warmup: int) -> dict:
  """Compiles the pmapped step once (timed), runs `warmup` untimed steps, then times `steps`
  steps one by one; FLOPs come from XLA's cost analysis of the compiled program."""
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
  compiled = p_step.lower(state, batch, rng).compile(compiler_options=train.compiler_options())
  compile_s = time.perf_counter() - start
  for _ in range(warmup):
    state, metrics = compiled(state, batch, rng)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = compiled(state, batch, rng)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  figures = spread(times)
  step_s = figures["step_ms"] / 1e3
  # pmap's program is the per-device one: the step does it once on every local device.
  flops = _flops(compiled) * jax.local_device_count() * jax.process_count()
  figures.update({
      "clips_per_sec": round(clips_per_step(config) / step_s, 3),
      "compile_s": round(compile_s, 2), "flops_per_step": flops,
      "achieved_tflops": round(flops / step_s / 1e12, 4),
      "peak_host_rss_mb": peak_host_rss_mb(),
      "peak_device_mb": _peak_device_mb(jax.local_devices())})
  if jax.default_backend() != "cpu":
    peak = matmul_peak_tflops(jax.local_devices()[0])
    figures["matmul_peak_tflops"] = round(peak, 1)
    figures["mfu"] = round(figures["achieved_tflops"] / (peak * jax.device_count()), 4)
  views = jax.jit(lambda b, k: train.model_inputs(b, k, config))
  one_device = jax.tree.map(lambda x: x[0], batch)
  jax.block_until_ready(views(one_device, rng))
  view_times = []
  for i in range(max(3, min(steps, 10))):
    start = time.perf_counter()
    jax.block_until_ready(views(one_device, jax.random.fold_in(rng, i)))
    view_times.append(time.perf_counter() - start)
  views_ms = 1e3 * float(np.median(view_times))
  # The views of one device's batch, timed alone: their share of the step.
  figures.update({"views_ms": round(views_ms, 2),
                  "views_share_of_step": round(views_ms / figures["step_ms"], 4),
                  "config": shape_config(config)})
  return figures


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
