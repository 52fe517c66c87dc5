"""How the train step's cost grows with frames, resolution and per-device batch.

  python benchmarks/scaling.py --preset=paper_pair_112
  python benchmarks/scaling.py --preset=paper_pair_224_bf16 --frames=8,16,32 --sizes=224 \\
      --labeled=4,8 -- --config.mu=7

Varies one factor at a time around the preset (the first value of each list is the base): the
primary's frames (its stride shrinks so the window stays 64 stored frames; the auxiliary keeps
its 32), the crop size, and the labeled clips per step (`config.batch_size`, global: per
device on one device; mu unlabeled clips each, x2 views).
Each point is one run of `python -m cmpl_jax.benchmark --what=train_step` in a fresh process;
prints a Markdown table (step ms, clips/s, GFLOP per step, achieved TFLOP/s, compile s) and
the JSON lines. Extra arguments after `--` go to every run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ints(text: str) -> list[int]:
  return [int(v) for v in text.split(",") if v]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--preset", default="paper_pair_112")
  parser.add_argument("--frames", type=_ints, default=[8, 16, 32], help="primary frames")
  parser.add_argument("--sizes", type=_ints, default=[112, 224], help="crop sizes")
  parser.add_argument("--labeled", type=_ints, default=[1, 2],
                      help="labeled clips per step (global config.batch_size)")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("extra", nargs="*", help="after --: passed to every run")
  args = parser.parse_args()
  base = {"frames": args.frames[0], "size": args.sizes[0], "labeled": args.labeled[0]}
  points = [dict(base)]
  for key, values in (("frames", args.frames), ("size", args.sizes), ("labeled", args.labeled)):
    points += [dict(base, **{key: v}) for v in values[1:]]
  rows = []
  for point in points:
    if 64 % point["frames"]:
      raise SystemExit(f"--frames: {point['frames']} does not divide the 64-frame window")
    command = [sys.executable, "-m", "cmpl_jax.benchmark",
               f"--config=configs/benchmark.py:{args.preset}", "--what=train_step",
               f"--steps={args.steps}", "--warmup=1",
               f"--config.model.primary.num_frames={point['frames']}",
               f"--config.model.primary.frame_stride={64 // point['frames']}",
               f"--config.data.crop_size={point['size']}",
               f"--config.batch_size={point['labeled']}", *args.extra]
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if out.returncode != 0:
      raise SystemExit(f"failed: {' '.join(command)}\n{out.stderr[-3000:]}")
    figures = json.loads([l for l in out.stdout.splitlines() if l.startswith("{")][-1])
    print(json.dumps(figures), file=sys.stderr, flush=True)
    rows.append((point, figures))
  print("| frames F | size | labeled | clips/step | step ms (min-max) | clips/s | "
        "GFLOP/step | TFLOP/s | compile s |")
  print("|---|---|---|---|---|---|---|---|---|")
  for point, f in rows:
    clips = f["global_batch"]["clips_per_step"]
    print(f"| {point['frames']} | {point['size']} | {point['labeled']} | {clips} | "
          f"{f['step_ms']:.0f} ({f['step_ms_min']:.0f}-{f['step_ms_max']:.0f}) | "
          f"{f['clips_per_sec']:.2f} | {f['flops_per_step'] / 1e9:.0f} | "
          f"{f['achieved_tflops']:.3f} | {f['compile_s']:.0f} |")


if __name__ == "__main__":
  main()
