r"""Input-pipeline throughput: clips/s of the unlabeled stream (and the labeled one), one JSON line.

  python benchmarks/input_pipeline.py [--data_dir=DIR] [--seconds=20] [--parallel=-1]

Without --data_dir it writes a dataset of realistic frames to a temp folder first: 64 videos x
64 frames, 170x128 (short side 128) JPEG (quality 90) of smooth noise plus moving shapes.
Measured with configs/default.py settings: primary 8 frames x stride 8, auxiliary 32 x stride 2
(one 64-frame window), 112x112 crops, RandAugment 2 ops at magnitude 10, Cutout 0.5.
An unlabeled clip = 4 views (weak + strong for both models); a labeled clip = one view per model.

Keys: `unlabeled_*` is the unlabeled stream as the pipeline runs it (each frame decoded once);
`*_decode_and_crop` the other strategy; `labeled_primary_only_*` a single-model (FixMatch,
supervised) labeled stream. `*_cpu_ms_per_clip` is process CPU time per clip, the figure to
compare on a shared machine (clips/s drops when other processes hold the cores; see
`load_average`).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top
from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from cmpl_jax.data import clips, records, streams  # pylint: disable=g-import-not-at-top
from configs import default  # pylint: disable=g-import-not-at-top


def _video_frames(rng: np.random.Generator, num_frames: int, height: int, width: int
                  ) -> list[bytes]:
  """JPEG frames: low-frequency coloured noise background + two shapes moving across."""
  small = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
  background = np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))
  grain = rng.integers(-12, 13, (height, width, 3))
  base = np.clip(background.astype(np.int32) + grain, 0, 255).astype(np.uint8)
  velocity = rng.uniform(-3, 3, (2, 2))
  start = rng.uniform([0, 0], [width, height], (2, 2))
  colors = [tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(2)]
  frames = []
  for t in range(num_frames):
    image = Image.fromarray(base)
    draw = ImageDraw.Draw(image)
    for (x, y), (vx, vy), color in zip(start, velocity, colors):
      cx, cy = (x + vx * t) % width, (y + vy * t) % height
      draw.ellipse([cx - 15, cy - 15, cx + 15, cy + 15], fill=color)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    frames.append(buffer.getvalue())
  return frames


def write_dataset(output_dir: str, num_videos: int = 64, num_frames: int = 64,
                  height: int = 128, width: int = 170, num_shards: int = 4) -> None:
  rng = np.random.default_rng(0)
  info = {k: [] for k in ("files", "media_ids", "labels", "file_index", "offsets", "lengths",
                          "num_frames")}
  for shard, members in enumerate(np.array_split(np.arange(num_videos), num_shards)):
    name = records.shard_filename("train", shard, num_shards)
    lengths = []
    with tf.io.TFRecordWriter(os.path.join(output_dir, name)) as writer:
      for i in members:
        payload = records.encode_example(
            media_id=f"video_{i:04d}", label_index=int(i % 4), label_string=f"class{i % 4}",
            frame_rate=25.0, height=height, width=width,
            jpeg_frames=_video_frames(rng, num_frames, height, width))
        writer.write(payload)
        lengths.append(len(payload))
        info["media_ids"].append(f"video_{i:04d}")
        info["labels"].append(int(i % 4))
        info["file_index"].append(shard)
        info["num_frames"].append(num_frames)
    info["files"].append(name)
    info["lengths"].extend(lengths)
    info["offsets"].extend(records.payload_offsets(lengths))
  info["num_examples"] = num_videos
  records.write_metadata(output_dir, {
      "dataset": "ucf101", "classes": [f"class{c}" for c in range(4)], "frame_rate": 0.0,
      "short_side": height, "splits": {"train": info}, "skipped": []})


def clips_per_second(table: streams.RecordTable, example_fn, placeholder, parallel: int,
                     seconds: float, batch: int = 8) -> tuple[float, float]:
  """(clips/s, process CPU ms per clip) of one stream in steady state (after 2 batches).

  CPU time per clip is the figure to compare on a shared machine: clips/s falls when other
  processes take the cores, CPU-ms per clip much less.
  """
  ds = streams.train_stream(
      table, list(range(table.num_examples)), example_fn, seed=0, stream_id=1,
      global_batch=batch, start_step=0, process_index=0, process_count=1, parallel=parallel,
      skip_bad=False, placeholder=placeholder)
  options = tf.data.Options()
  options.deterministic = True
  options.threading.max_intra_op_parallelism = 1
  iterator = iter(ds.batch(batch).prefetch(2).with_options(options))
  for _ in range(2):
    next(iterator)
  count, start, cpu_start = 0, time.perf_counter(), time.process_time()
  while time.perf_counter() - start < seconds:
    next(iterator)
    count += batch
  return (count / (time.perf_counter() - start),
          1000 * (time.process_time() - cpu_start) / count)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default="")
  parser.add_argument("--seconds", type=float, default=20.0)
  parser.add_argument("--parallel", type=int, default=-1, help="-1 = AUTOTUNE")
  args = parser.parse_args()
  data_dir = args.data_dir or tempfile.mkdtemp(prefix="cmpl_bench_")
  if not tf.io.gfile.exists(os.path.join(data_dir, records.METADATA_FILENAME)):
    write_dataset(data_dir)
  config = default.get_config()
  table = streams.RecordTable(data_dir, "train")
  maker = clips.ClipMaker(config)
  parallel = tf.data.AUTOTUNE if args.parallel <= 0 else args.parallel
  result = {"benchmark": "input_pipeline"}

  def measure(name, maker, kind, decode_and_crop):
    fn = getattr(maker, kind)
    clips_s, cpu_ms = clips_per_second(
        table, lambda f, l, s: fn(f, l, s, decode_and_crop=decode_and_crop),
        lambda: maker.placeholder(kind), parallel, args.seconds)
    result[f"{name}_clips_per_s"] = round(clips_s, 2)
    result[f"{name}_cpu_ms_per_clip"] = round(cpu_ms, 1)

  single = default.get_config()
  single.model.auxiliary = None
  single_maker = clips.ClipMaker(single)
  measure("unlabeled", maker, "unlabeled", False)  # The pipeline's choice: decode once.
  measure("unlabeled_decode_and_crop", maker, "unlabeled", True)
  measure("labeled", maker, "labeled", False)
  measure("labeled_decode_and_crop", maker, "labeled", True)
  measure("labeled_primary_only", single_maker, "labeled", False)
  measure("labeled_primary_only_decode_and_crop", single_maker, "labeled", True)
  result.update({
      "views": "unlabeled = weak+strong x (primary 8x stride 8, auxiliary 32x stride 2); "
               "labeled = primary + auxiliary",
      "crop": config.data.crop_size, "frames": "64 x 170x128 JPEG q90",
      "num_parallel_calls": args.parallel, "cpu_count": os.cpu_count(),
      "load_average": os.getloadavg()[0],
      "machine": platform.processor() or platform.machine(), "tensorflow": tf.__version__,
  })
  print(json.dumps(result))


if __name__ == "__main__":
  main()
