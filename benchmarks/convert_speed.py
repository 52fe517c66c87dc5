r"""Conversion speed and size on UCF-101-like input; prints one JSON line per run.

  python benchmarks/convert_speed.py [--num_videos=60 --short_side=256 --num_workers=2]
  python benchmarks/convert_speed.py --num_videos=1000 --runners=pool,DirectRunner --repeats=3

`--runners` compares executors on the same clips, interleaved (pool, Beam, pool, Beam, ...) so
machine load hits both alike: `pool` is the default process pool, any other name is a Beam runner
(`--runner=NAME --direct_num_workers=--num_workers`). Each run also reports the peak resident
memory of the whole process tree (sampled every 0.1 s) and of its largest process.

Generates `--num_videos` clips shaped like UCF-101's (320x240, 25 fps, ~7 s, MPEG-4 part 2 in
.avi at ~UCF's bit rate; content: moving shapes over a panning textured background with sensor
noise), lays them out as the release (class folders + ucfTrainTestlist), runs the real CLI
(`python -m cmpl_jax.data.convert`, as a subprocess, so TensorFlow imports and worker start-up
count), then re-runs it (every shard complete: measures the fixed start-up cost alone).

Reported: `s_per_1000_videos` = (conversion wall time - fixed start-up of the CLI and of its
workers) / videos * 1000, the marginal rate a 13k-video UCF-101 run sees; `wall_s` includes
start-up. On a shared
machine wall time depends on the other load (`load_avg_1min`, before and after), so CPU time
is reported too: `cpu_s_per_1000_videos` (all processes, start-up excluded) and
`idle_machine_s_per_1000_videos` = that / min(workers, cores), the wall time to expect when
the cores are free. Synthetic noise compresses worse than real footage, so
`mb_per_1000_videos` is an upper-side estimate.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time

from absl import app, flags
import av
import numpy as np
import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_integer("num_videos", 60, "Clips to generate and convert (80% train, 20% test).")
flags.DEFINE_integer("num_classes", 6, "Class folders the clips are spread over.")
flags.DEFINE_integer("short_side", 256, "--short_side of the conversion.")
flags.DEFINE_integer("num_workers", 2, "--num_workers of the conversion.")
flags.DEFINE_integer("videos_per_shard", 5, "Small, so 2 workers stay busy to the end.")
flags.DEFINE_float("fps", 0.0, "--fps of the conversion (0 = native 25).")
flags.DEFINE_integer("jpeg_quality", 90, "--jpeg_quality of the conversion.")
flags.DEFINE_float("seconds", 7.0, "Clip length (UCF-101 averages ~7 s).")
flags.DEFINE_integer("bit_rate", 600_000, "Encoder bit rate (UCF-101 averages ~0.5 MB / 7 s).")
flags.DEFINE_list("runners", ["pool"], "Executors to measure: pool and/or Beam runner names.")
flags.DEFINE_integer("repeats", 1, "Runs per executor (medians and ranges are printed last).")
flags.DEFINE_string("work_dir", "/tmp/cmpl_convert_speed", "Scratch folder (raw clips kept "
                    "between runs, so other settings reuse them).")


def _clip(path: str, seed: int, seconds: float, bit_rate: int, fps: int = 25,
          height: int = 240, width: int = 320) -> None:
  """A UCF-like clip: textured background panning slowly, two moving shapes, sensor noise."""
  rng = np.random.default_rng(seed)
  texture = rng.integers(0, 256, size=(height // 8 + 2, width // 8 + 2, 3)).astype(np.float32)
  texture = np.kron(texture, np.ones((8, 8, 1), np.float32))  # blocky scene detail
  texture = 0.6 * texture + 0.4 * rng.normal(128, 30, size=texture.shape)  # fine detail
  yy, xx = np.mgrid[:height, :width]
  colors = rng.integers(60, 256, size=(2, 3))
  with av.open(path, "w") as container:
    stream = container.add_stream("mpeg4", rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.bit_rate = bit_rate
    for t in range(int(seconds * fps)):
      dx = t % 16
      frame = texture[4:4 + height, dx:dx + width].copy()
      for i, color in enumerate(colors):
        cx = (40 + 3 * t * (i + 1)) % width
        cy = height // 3 * (i + 1) + 20 * np.sin(t / 10 + i)
        frame[(xx - cx) ** 2 + (yy - cy) ** 2 < 400 + 200 * i] = color
      frame += rng.normal(0, 4, size=frame.shape)
      rgb = np.clip(frame, 0, 255).astype(np.uint8)
      container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
    container.mux(stream.encode())


def _make_dataset(root: str) -> tuple[str, str, float]:
  """UCF-101 layout under root; reuses clips already there. Returns dirs and raw MB."""
  videos, lists = os.path.join(root, "UCF-101"), os.path.join(root, "ucfTrainTestlist")
  os.makedirs(lists, exist_ok=True)
  classes = [f"Class{c:02d}" for c in range(flags.FLAGS.num_classes)]
  train, test = [], []
  for i in range(flags.FLAGS.num_videos):
    name = classes[i % len(classes)]
    rel = f"{name}/v_{name}_g{i // len(classes) + 1:02d}_c01.avi"
    path = os.path.join(videos, rel)
    if not os.path.exists(path):
      os.makedirs(os.path.dirname(path), exist_ok=True)
      _clip(path, i, flags.FLAGS.seconds, flags.FLAGS.bit_rate)
    (test if i % 5 == 4 else train).append((rel, i % len(classes) + 1))
  for name, lines in (("classInd.txt", [f"{i + 1} {c}" for i, c in enumerate(classes)]),
                      ("trainlist01.txt", [f"{r} {l}" for r, l in train]),
                      ("testlist01.txt", [r for r, _ in test])):
    with open(os.path.join(lists, name), "w", newline="\r\n") as f:
      f.write("\n".join(lines) + "\n")
  raw_bytes = sum(os.path.getsize(os.path.join(videos, r)) for r, _ in train + test)
  return videos, lists, raw_bytes / 1e6


def _cli_command(videos: str, lists: str, out: str, runner: str = "pool") -> list[str]:
  f = flags.FLAGS
  executor = [] if runner == "pool" else [f"--runner={runner}"] + (
      [f"--direct_num_workers={f.num_workers}"] if runner == "DirectRunner" else [])
  return [sys.executable, "-m", "cmpl_jax.data.convert", "--dataset=ucf101",
          f"--input_dir={videos}", f"--splits_dir={lists}", f"--output_dir={out}",
          f"--short_side={f.short_side}", f"--num_workers={f.num_workers}",
          f"--videos_per_shard={f.videos_per_shard}", f"--fps={f.fps}",
          f"--jpeg_quality={f.jpeg_quality}", *executor]


def _timed(command: list[str]) -> tuple[float, float, dict[str, float]]:
  """(wall seconds, CPU seconds of the process and all its children, peak memory in MB)."""
  before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
  process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  tree_peak = 0.0
  root = psutil.Process(process.pid)
  while process.poll() is None:
    try:
      members = [root] + root.children(recursive=True)
      rss = 0
      for member in members:
        try:
          rss += member.memory_info().rss
        except psutil.Error:
          pass
      tree_peak = max(tree_peak, rss / 1e6)
    except psutil.Error:
      pass
    time.sleep(0.1)
  if process.returncode:
    raise subprocess.CalledProcessError(process.returncode, command)
  wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
  # ru_maxrss: the largest single descendant so far (KB on Linux), a lower bound per process.
  memory = {"peak_tree_rss_mb": round(tree_peak, 1),
            "peak_process_rss_mb": round(after.ru_maxrss / 1e3, 1)}
  return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), memory


def main(argv):
  del argv
  f = flags.FLAGS
  videos, lists, raw_mb = _make_dataset(os.path.join(f.work_dir, "raw"))
  results = []
  for _ in range(f.repeats):
    for runner in f.runners:
      results.append(_measure(videos, lists, raw_mb, runner))
      print(json.dumps(results[-1]), flush=True)
  if len(results) > 1:
    summary = {}
    for runner in f.runners:
      mine = [r for r in results if r["runner"] == runner]
      summary[runner] = {key: {"median": float(np.median([r[key] for r in mine])),
                               "min": min(r[key] for r in mine), "max": max(r[key] for r in mine)}
                         for key in ("s_per_1000_videos", "cpu_s_per_1000_videos", "wall_s",
                                     "startup_s", "peak_tree_rss_mb")}
    print(json.dumps({"summary": summary, "runs_per_runner": f.repeats}))


def _measure(videos: str, lists: str, raw_mb: float, runner: str) -> dict:
  f = flags.FLAGS
  out = os.path.join(f.work_dir, f"out_{f.short_side}_{runner}")
  shutil.rmtree(out, ignore_errors=True)
  load_before = os.getloadavg()[0]
  wall, cpu, memory = _timed(_cli_command(videos, lists, out, runner))
  load_after = os.getloadavg()[0]
  # Fixed costs: the CLI with every shard complete (imports, listing, metadata), and one
  # worker's start (spawned interpreter importing the converter, TensorFlow included).
  startup, startup_cpu, _ = _timed(_cli_command(videos, lists, out, runner))
  worker_start, worker_start_cpu, _ = _timed(
      [sys.executable, "-c", "import cmpl_jax.data.convert"])
  workers = min(f.num_workers, os.cpu_count() or 1)
  with open(os.path.join(out, "metadata.json")) as fh:
    metadata = json.load(fh)
  n = sum(s["num_examples"] for s in metadata["splits"].values())
  frames = sum(sum(s["num_frames"]) for s in metadata["splits"].values())
  size = sum(os.path.getsize(os.path.join(out, name))
             for s in metadata["splits"].values() for name in s["files"])
  marginal = max(wall - startup - (worker_start if f.num_workers > 1 else 0), 1e-9)
  # Worker CPU per video; on an idle machine the workers run in parallel, one core each.
  fixed_cpu = startup_cpu + (f.num_workers * worker_start_cpu if f.num_workers > 1 else 0)
  cpu_per_video = max(cpu - fixed_cpu, 0.0) / n
  return {
      "runner": runner, **memory, "videos": n, "frames": frames, "wall_s": round(wall, 1), "startup_s": round(startup, 1),
      "worker_start_s": round(worker_start, 1),
      "videos_per_s": round(n / marginal, 2), "frames_per_s": round(frames / marginal, 1),
      "s_per_1000_videos": round(marginal / n * 1000, 1),
      "cpu_s_per_1000_videos": round(cpu_per_video * 1000, 1),
      "idle_machine_s_per_1000_videos": round(cpu_per_video * 1000 / workers, 1),
      "load_avg_1min": [round(load_before, 1), round(load_after, 1)],
      "mb_per_1000_videos": round(size / 1e6 / n * 1000, 1),
      "raw_input_mb_per_1000_videos": round(raw_mb / n * 1000, 1),
      "settings": {"short_side": f.short_side, "num_workers": f.num_workers, "fps": f.fps,
                   "jpeg_quality": f.jpeg_quality, "videos_per_shard": f.videos_per_shard,
                   "input": f"320x240 25fps {f.seconds:g}s mpeg4 .avi @{f.bit_rate // 1000}kb/s",
                   "cpu_count": os.cpu_count()}}


if __name__ == "__main__":
  app.run(main)
