"""Ours against the same CMPL step in PyTorch, alternately on one machine: A B A B ...

  python benchmarks/compare_torch.py --preset=paper_pair_112 --pairs=3
  python benchmarks/compare_torch.py --preset=r3d18_pair_112 --pairs=3 -- --config.dtype=bfloat16

Each pair runs `python -m cmpl_jax.benchmark --what=train_step` (A) and
`benchmarks/torch_reference.py` (B) as fresh processes on the same preset, one after the
other, so both see the same machine state; the ratio of clips/s is taken within each pair.
Prints a line per run, then one JSON line: the median ratio (ours / PyTorch) with its min and
max over the pairs, both sides' median clips/s, step times and the exact shapes.
Extra arguments after `--` go to both commands: `--config.batch_size`, `--config.mu` and
`--config.dtype`, the overrides the PyTorch reference takes.
Needs torch (`pip install torch==2.13.0`, a CPU build here).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESETS = ("paper_pair_112", "paper_pair_224_bf16", "r3d18_pair_112", "demo")


def _run(command: list[str]) -> dict:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                       check=False)
  if out.returncode != 0:
    raise SystemExit(f"failed ({out.returncode}): {' '.join(command)}\n{out.stderr[-4000:]}")
  lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
  if not lines:
    raise SystemExit(f"no JSON line from: {' '.join(command)}\n{out.stdout[-2000:]}")
  return json.loads(lines[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--preset", default="paper_pair_112", choices=PRESETS)
  parser.add_argument("--pairs", type=int, default=3, help="A B pairs (at least 3 for a spread)")
  parser.add_argument("--steps", type=int, default=5, help="timed steps per run")
  parser.add_argument("--warmup", type=int, default=1, help="untimed steps per run")
  parser.add_argument("extra", nargs="*", help="after --: passed to both commands")
  args = parser.parse_args()
  config = f"--config=configs/benchmark.py:{args.preset}"
  common = [f"--steps={args.steps}", f"--warmup={args.warmup}", *args.extra]
  ours_cmd = [sys.executable, "-m", "cmpl_jax.benchmark", config, "--what=train_step", *common]
  torch_cmd = [sys.executable, os.path.join("benchmarks", "torch_reference.py"), config, *common]
  ours, theirs, ratios = [], [], []
  for i in range(args.pairs):
    a = _run(ours_cmd)
    b = _run(torch_cmd)
    if a["config"] != b["config"]:
      raise SystemExit(f"the two sides ran different shapes: {a['config']} vs {b['config']}")
    ours.append(a)
    theirs.append(b)
    ratios.append(a["clips_per_sec"] / b["clips_per_sec"])
    print(f"pair {i + 1}: cmpl_jax {a['clips_per_sec']:.3f} clips/s ({a['step_ms']:.0f} ms, "
          f"compile {a['compile_s']:.1f} s), torch {b['clips_per_sec']:.3f} clips/s "
          f"({b['step_ms']:.0f} ms, {b['memory_format']}), ratio {ratios[-1]:.3f}",
          file=sys.stderr, flush=True)
  median = lambda runs, key: round(statistics.median(r[key] for r in runs), 3)  # noqa: E731
  print(json.dumps({
      "preset": args.preset, "pairs": args.pairs, "extra": args.extra,
      "ratio_clips_per_sec": round(statistics.median(ratios), 3),
      "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3),
      "ours": {"clips_per_sec": median(ours, "clips_per_sec"), "step_ms": median(ours, "step_ms"),
               "compile_s": median(ours, "compile_s"),
               "achieved_tflops": median(ours, "achieved_tflops")},
      "torch": {"clips_per_sec": median(theirs, "clips_per_sec"),
                "step_ms": median(theirs, "step_ms"),
                "memory_format": theirs[-1]["memory_format"], "mode": theirs[-1]["mode"],
                "framework": theirs[-1]["framework"],
                "achieved_tflops": median(theirs, "achieved_tflops")},
      "config": ours[-1]["config"]}))


if __name__ == "__main__":
  main()
