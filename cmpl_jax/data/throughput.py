"""What feeding the accelerator costs the host: `python -m cmpl_jax.benchmark --what=input_pipeline`.

Host cost is process CPU time (every tf.data thread) per clip of a stream in steady state: on a
shared machine clips/s drops when other processes hold the cores, CPU-ms per clip much less.
Measured in the same run:
  * labeled / unlabeled stream: read, parse, sample the window, decode its frames onto the
    canvas, batch: everything the host does per clip (clips.py).
  * decode floor: the same frames' JPEG decode at the same DCT scale and nothing else (frames
    already in memory, no read, parse, canvas or batching): what no host pipeline can undercut.
  * device views: the jitted views of one per-device batch (train.model_inputs) on this
    process's JAX backend, ms per clip.
Without config.data.dir, a dataset at the paper's storage size (bench_data.py) is written to a
temporary folder first.
"""
from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import jax
import numpy as np
import tensorflow as tf

from cmpl_jax import methods, train
from cmpl_jax.data import bench_data, clips, records, sampling, splits, streams

BATCH = 8


def _cpu_ms_per_clip(ds: tf.data.Dataset, seconds: float, clips_per_element: int
                     ) -> tuple[float, float]:
  """(process CPU-ms per clip, wall clips/s) of iterating `ds` for `seconds` after warm-up."""
  iterator = iter(ds)
  for _ in range(3):
    next(iterator)
  count, start, cpu_start = 0, time.perf_counter(), time.process_time()
  while time.perf_counter() - start < seconds:
    next(iterator)
    count += clips_per_element
  wall = time.perf_counter() - start
  return 1000 * (time.process_time() - cpu_start) / count, count / wall


def _options(ds: tf.data.Dataset) -> tf.data.Dataset:
  options = tf.data.Options()
  options.deterministic = True
  options.threading.max_intra_op_parallelism = 1
  return ds.prefetch(2).with_options(options)


def _stream(table, maker, stream_id: int, index_set, parallel: int) -> tf.data.Dataset:
  return streams.train_stream(
      table, streams.Pools([index_set], [1.0]), maker.train, seed=0, stream_id=stream_id,
      global_batch=BATCH, start_step=0, process_index=0, process_count=1, parallel=parallel,
      skip_bad=False, placeholder=lambda: maker.placeholder("train"))


def _window_jpegs(table, maker, count: int) -> list[tf.Tensor]:
  """The encoded frames each of the first `count` unlabeled clips decodes (eagerly), chosen
  by the stream's own functions."""
  out = []
  pool = streams.Pools([range(table.num_examples)], [1.0])
  for k in range(count):
    video = pool.video(k, 0, sampling.UNLABELED_STREAM)
    encoded_N = records.parse_example(next(iter(table.read(video))))["frames_N"]
    indices_U = maker.train_indices(tf.shape(encoded_N)[0],
                                    streams.host_seed(0, sampling.UNLABELED_STREAM, k))
    out.append(tf.gather(encoded_N, tf.unique(indices_U)[0]))
  return out


def _decode_floor(jpegs: list[tf.Tensor], ratio: int, seconds: float, parallel: int
                  ) -> float:
  def decode(encoded):
    frames = tf.map_fn(lambda d: tf.io.decode_jpeg(d, channels=3, ratio=ratio), encoded,
                       fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
    return tf.shape(frames)[0]  # nothing leaves the decoder: no copy, no batching
  ds = tf.data.Dataset.from_tensor_slices(tf.ragged.stack(jpegs)).repeat()
  ds = ds.map(lambda e: decode(e.flat_values if hasattr(e, "flat_values") else e),
              num_parallel_calls=parallel, deterministic=True).batch(BATCH)
  return _cpu_ms_per_clip(_options(ds), seconds, BATCH)[0]


def _views_ms_per_clip(config: Any, host_batch: dict[str, Any], repeats: int = 5
                       ) -> dict[str, float]:
  """Median ms per clip of the jitted device views of one host batch, per stream."""
  out = {}
  for stream, stream_id, kinds in (("labeled", sampling.LABELED_STREAM, ("weak",)),
                                   ("unlabeled", sampling.UNLABELED_STREAM, ("weak", "strong"))):
    if stream not in host_batch:
      continue
    part = jax.device_put(host_batch[stream])
    fn = jax.jit(lambda p, k, s=stream_id, kinds=kinds: train.stream_inputs(p, k, config, s,
                                                                             kinds))
    jax.block_until_ready(fn(part, jax.random.key(0)))
    times = []
    for i in range(repeats):
      start = time.perf_counter()
      jax.block_until_ready(fn(part, jax.random.key(i)))
      times.append(time.perf_counter() - start)
    out[f"{stream}_views_ms_per_clip"] = round(
        1e3 * float(np.median(times)) / part["frames"].shape[0], 3)
  return out


def measure(config: Any, seconds: float = 10.0) -> dict[str, Any]:
  """The input_pipeline benchmark's figures (see the module docstring)."""
  data_dir = config.data.dir
  if not data_dir or not tf.io.gfile.exists(os.path.join(data_dir, records.METADATA_FILENAME)):
    data_dir = data_dir or os.path.join(tempfile.gettempdir(), "cmpl_jax_bench_data_256")
    if not tf.io.gfile.exists(os.path.join(data_dir, records.METADATA_FILENAME)):
      bench_data.write_dataset(data_dir)
  table = records.RecordTable(data_dir, config.data.train_split)
  canvas = sampling.canvas_for(config, table.stored_short_side())
  maker = clips.ClipMaker(config, canvas)
  calls = int(config.data.num_parallel_calls)
  parallel = tf.data.AUTOTUNE if calls <= 0 else calls
  everything = range(table.num_examples)
  info = records.read_metadata(data_dir)["splits"][config.data.train_split]
  labeled = splits.class_balanced_subset([int(x) for x in info["labels"]],
                                         max(1, len(set(info["labels"]))), 50, seed=0)
  figures: dict[str, Any] = {}
  host = {}
  for name, stream_id, index_set in (("labeled", sampling.LABELED_STREAM, labeled),
                                     ("unlabeled", sampling.UNLABELED_STREAM, everything)):
    if name == "unlabeled" and not methods.uses_unlabeled(config.method):
      continue
    ds = _options(_stream(table, maker, stream_id, index_set, parallel).batch(BATCH))
    cpu_ms, clips_s = _cpu_ms_per_clip(ds, seconds, BATCH)
    figures[f"{name}_host_cpu_ms_per_clip"] = round(cpu_ms, 2)
    figures[f"{name}_clips_per_sec_wall"] = round(clips_s, 1)
    batch = next(iter(ds))
    host[name] = jax.tree.map(lambda x: x.numpy(), {
        k: v for k, v in batch.items() if not k.startswith("_")})
  stream = "unlabeled" if "unlabeled" in host else "labeled"
  floor = _decode_floor(_window_jpegs(table, maker, 2 * BATCH), canvas.jpeg_ratio, seconds,
                        parallel)
  element = jax.tree.map(lambda x: x[0], host[stream])
  figures.update({
      "decode_floor_cpu_ms_per_clip": round(floor, 2),
      "host_to_floor_ratio": round(figures[f"{stream}_host_cpu_ms_per_clip"] / floor, 2),
      "clips_per_sec_per_core": round(1000 / figures[f"{stream}_host_cpu_ms_per_clip"], 1),
      "h2d_bytes_per_clip": int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(element))),
  })
  views = _views_ms_per_clip(config, host)
  figures.update(views)
  figures["device_views_ms_per_clip"] = views[f"{stream}_views_ms_per_clip"]
  figures.update({
      "data_dir": data_dir, "canvas": list(canvas), "frames_per_clip": len(maker.offsets_U),
      "stored_short_side": table.stored_short_side(), "crop_size": int(config.data.crop_size),
      "num_parallel_calls": calls, "cpu_count": os.cpu_count(),
      "load_average_1min": round(os.getloadavg()[0], 2), "backend": jax.default_backend()})
  return figures
