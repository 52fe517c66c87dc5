"""Trains every (method, label percent, seed) of a comparison and tabulates the results.

  python -m cmpl_jax.compare --config=configs/demo.py --methods=supervised,fixmatch,cmpl \
      --label_percents=10,30 --seeds=3 --workdir=/tmp/cmpl_compare [--config.KEY=VALUE ...]

Each run is `python -m cmpl_jax.main` in its own workdir, DIR/<method>_<percent>pct_seed<s>,
with the overrides given here plus its own `config.method`, `config.data.labeled_percent`,
`config.seed` and `config.data.labeled_seed` (seed s: the same labeled subset for every
method), and for methods other than CMPL no auxiliary model. Everything else is the same for
every method: steps, labeled batch, schedule, primary model. A finished run (its
eval_results.json at config.num_train_steps) is skipped, an interrupted one resumes from its
checkpoint. Runs can be spread over processes or machines sharing DIR:

  python -m cmpl_jax.compare ... --only=cmpl:10:2     # one run (METHOD:PERCENT:SEED, repeatable)
  python -m cmpl_jax.compare ... --collect            # tabulate whatever has finished

Outputs in DIR: comparison.md (mean +- standard deviation of primary top-1 per method and label
percent; CMPL's auxiliary and average too), comparison.json
  {"runs": [{"method", "label_percent", "seed", "workdir", "primary_top1", "auxiliary_top1",
             "average_top1"}],
   "summary": {METHOD: {PERCENT: {"mean", "std", "n"}}}}     (primary top-1; keys are strings)
and comparison.png (bars: mean over seeds, dots: seeds). Each run's output goes to its
workdir's train.log; its progress lines are echoed here with the overall ETA.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from typing import Any, Sequence

from absl import app
from absl import flags
from ml_collections import config_flags

from cmpl_jax import console, diagnostics, evaluate, fileio, methods

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Base config file (its default argument), "
                                "e.g. configs/demo.py; --config.KEY=VALUE overrides go to "
                                "every run.", lock_config=False)
flags.DEFINE_string("workdir", None, "Folder of the comparison: one sub-folder per run.")
flags.DEFINE_list("methods", ["supervised", "fixmatch", "cmpl"], "Methods to compare.")
flags.DEFINE_list("label_percents", ["10", "30"], "Labeled percents of the train split.")
flags.DEFINE_integer("seeds", 3, "Seeds 0 .. N-1 per (method, percent).")
flags.DEFINE_multi_string("only", [], "Run only METHOD:PERCENT:SEED (repeatable), then "
                          "tabulate what has finished.")
flags.DEFINE_bool("collect", False, "Train nothing: tabulate the finished runs.")
flags.DEFINE_string("compilation_cache_dir", "",
                    "XLA compilation cache shared by the runs ('' = DIR/xla_cache): runs of one "
                    "method compile the same programs, so only the first compiles them.")
flags.mark_flags_as_required(["config", "workdir"])

RESULTS_MD, RESULTS_JSON, RESULTS_PNG = "comparison.md", "comparison.json", "comparison.png"
# How each method's runs are shown, in this order.
LABELS = {"supervised": "supervised-only", "fixmatch": "FixMatch", "cmpl": "CMPL"}


@dataclasses.dataclass(frozen=True)
class Run:
  method: str
  percent: str   # as given ('10', '0.5'), for names and JSON keys
  seed: int

  @property
  def name(self) -> str:
    return f"{self.method}_{self.percent}pct_seed{self.seed}"

  def overrides(self) -> list[str]:
    args = [f"--config.method={self.method}", f"--config.data.labeled_percent={self.percent}",
            f"--config.seed={self.seed}", f"--config.data.labeled_seed={self.seed}"]
    if self.method != "cmpl":
      args.append("--config.model.auxiliary.name=")
    return args


def _percent_text(value: str) -> str:
  try:
    number = float(value)
  except ValueError:
    raise app.UsageError(f"--label_percents: {value!r} is not a number") from None
  if not 0 < number <= 100:
    raise app.UsageError(f"--label_percents: {value!r} must be in (0, 100]")
  return f"{number:g}"


def planned_runs(method_names: Sequence[str], percents: Sequence[str], seeds: int) -> list[Run]:
  """Seed-major order: every method has finished a run early, for the ETA and partial tables."""
  for method in method_names:
    if method not in methods.METHODS:
      raise app.UsageError(f"--methods: {method!r} is not one of {list(methods.METHODS)}")
  if seeds < 1:
    raise app.UsageError(f"--seeds={seeds}: need at least 1")
  percents = [_percent_text(p) for p in percents]
  return [Run(m, p, s) for s in range(seeds) for p in percents for m in method_names]


def parse_only(specs: Sequence[str], runs: Sequence[Run]) -> list[Run]:
  chosen = []
  for spec in specs:
    parts = spec.split(":")
    if len(parts) != 3:
      raise app.UsageError(f"--only={spec!r}: expected METHOD:PERCENT:SEED")
    try:
      run = Run(parts[0], _percent_text(parts[1]), int(parts[2]))
    except ValueError:
      raise app.UsageError(f"--only={spec!r}: SEED must be an integer") from None
    if run not in runs:
      raise app.UsageError(f"--only={spec!r} is not in this comparison (--methods, "
                           "--label_percents, --seeds)")
    chosen.append(run)
  return chosen


def read_result(workdir: str, num_train_steps: int) -> dict[str, Any] | None:
  """The run's final eval_results.json, or None while it is missing or from an earlier step."""
  path = os.path.join(workdir, evaluate.RESULTS_FILENAME)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    results = json.load(f)
  return results if results.get("step") == num_train_steps else None


def _forwarded_overrides(argv: Sequence[str]) -> list[str]:
  """The command line's --config.KEY=VALUE arguments, verbatim (also as two tokens)."""
  out, i = [], 0
  while i < len(argv):
    if argv[i].startswith("--config."):
      if "=" in argv[i] or i + 1 == len(argv):
        out.append(argv[i])
      else:
        out.append(f"{argv[i]}={argv[i + 1]}")
        i += 1
    i += 1
  return out


class _Eta:
  """Remaining time from the durations of this invocation's runs, per method (their costs
  differ several-fold), falling back to the mean over all methods."""

  def __init__(self):
    self.durations: dict[str, list[float]] = {}

  def add(self, run: Run, seconds: float) -> None:
    self.durations.setdefault(run.method, []).append(seconds)

  def remaining(self, runs: Sequence[Run]) -> str:
    every = [d for ds in self.durations.values() for d in ds]
    if not every:
      return "ETA unknown until a run finishes"
    mean = lambda ds: sum(ds) / len(ds)
    total = sum(mean(self.durations.get(r.method, every)) for r in runs)
    return f"ETA {console.format_duration(total)}"


def train_run(run: Run, workdir: str, config_arg: str, overrides: Sequence[str], prefix: str,
              env: dict[str, str]) -> int:
  """Runs main.py for one run; its output goes to workdir/train.log, progress lines echoed."""
  os.makedirs(workdir, exist_ok=True)
  command = [sys.executable, "-m", "cmpl_jax.main", f"--config={config_arg}",
             f"--workdir={workdir}", *overrides, *run.overrides()]
  with open(os.path.join(workdir, "train.log"), "a", encoding="utf-8") as log:
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env, bufsize=1)
    for line in process.stdout:
      log.write(line)
      if line.startswith(("step ", "eval step", "resumed", "cmpl_jax.main:")):
        print(f"{prefix} {line.rstrip()}", flush=True)
    return process.wait()


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
  mean = sum(values) / len(values)
  if len(values) < 2:
    return mean, None
  return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def tabulate(directory: str, runs: Sequence[Run], num_train_steps: int,
             budget: Sequence[str] = ()) -> dict[str, Any]:
  """Writes comparison.json / .md / .png from the runs' results; returns the JSON content."""
  rows, missing = [], []
  for run in runs:
    workdir = os.path.join(directory, run.name)
    results = read_result(workdir, num_train_steps)
    if results is None:
      missing.append(run)
      continue
    top1 = {name: results[name]["top1"] if name in results else None
            for name in ("primary", "auxiliary", "average")}
    rows.append({"method": run.method, "label_percent": float(run.percent), "seed": run.seed,
                 "workdir": workdir, "primary_top1": top1["primary"],
                 "auxiliary_top1": top1["auxiliary"], "average_top1": top1["average"]})
  summary: dict[str, dict[str, dict[str, Any]]] = {}
  for model in ("primary", "auxiliary", "average"):
    for row in rows:
      if row[f"{model}_top1"] is None:
        continue
      cell = summary.setdefault(row["method"] if model == "primary" else
                                f"{row['method']}/{model}", {}).setdefault(
                                    f"{row['label_percent']:g}", [])
      cell.append(row[f"{model}_top1"])
  for cells in summary.values():
    for percent, values in cells.items():
      mean, std = _mean_std(values)
      cells[percent] = {"mean": mean, "std": std, "n": len(values)}
  primary = {m: c for m, c in summary.items() if "/" not in m}
  content = {"runs": rows, "summary": primary}
  fileio.write_json(os.path.join(directory, RESULTS_JSON), content)
  fileio.write_atomic(os.path.join(directory, RESULTS_MD),
                      _markdown(summary, rows, missing, runs, budget))
  if rows:
    fileio.write_atomic(os.path.join(directory, RESULTS_PNG), _bar_plot(summary, runs, rows))
  return content


def _cell(cell: dict[str, Any] | None) -> str:
  if cell is None:
    return "-"
  std = "" if cell["std"] is None else f" ± {100 * cell['std']:.1f}"
  return f"{100 * cell['mean']:.1f}{std} (n={cell['n']})"


def _markdown(summary, rows, missing, runs, budget) -> str:
  percents = sorted({r.percent for r in runs}, key=float)
  method_order = [m for m in LABELS if any(r.method == m for r in runs)]
  lines = ["# Comparison: test top-1 (%), mean ± standard deviation over seeds", "",
           "| method | " + " | ".join(f"{p}% labels" for p in percents) + " |",
           "|---|" + "---|" * len(percents)]
  for method in method_order:
    for key, label in ((method, LABELS[method]), (f"{method}/auxiliary", "auxiliary"),
                       (f"{method}/average", "average of both")):
      if key in summary or key == method:
        name = label if key == method else f"{LABELS[method]}, {label}"
        lines.append(f"| {name} | " + " | ".join(_cell(summary.get(key, {}).get(p))
                                               for p in percents) + " |")
  lines += ["", "Primary model unless stated. Every method: " + "; ".join(budget) + ". "
            "FixMatch and CMPL also read unlabeled clips (weak + strong view each); CMPL also "
            "trains the auxiliary model.", "",
            "| run | primary | auxiliary | average |", "|---|---|---|---|"]
  pct = lambda v: "-" if v is None else f"{100 * v:.1f}"
  for row in rows:
    lines.append(f"| {os.path.basename(row['workdir'])} | {pct(row['primary_top1'])} | "
                 f"{pct(row['auxiliary_top1'])} | {pct(row['average_top1'])} |")
  if missing:
    lines += ["", "Not finished: " + ", ".join(r.name for r in missing)]
  return "\n".join(lines) + "\n"


def _bar_plot(summary, runs, rows) -> bytes:
  percents = sorted({r.percent for r in runs}, key=float)
  method_order = [m for m in LABELS if any(r.method == m for r in runs)]
  fig = diagnostics.figure(figsize=(2 + 1.6 * len(percents) * len(method_order) / 3, 3.5))
  ax = fig.subplots()
  width = 0.8 / len(method_order)
  for i, method in enumerate(method_order):
    xs = [j + (i - (len(method_order) - 1) / 2) * width for j in range(len(percents))]
    cells = [summary.get(method, {}).get(p) for p in percents]
    ax.bar(xs, [100 * c["mean"] if c else 0 for c in cells], width, label=LABELS[method],
           yerr=[100 * (c["std"] or 0) if c else 0 for c in cells], capsize=3)
    for x, p in zip(xs, percents):
      seeds = [100 * r["primary_top1"] for r in rows
               if r["method"] == method and f"{r['label_percent']:g}" == p]
      ax.plot([x] * len(seeds), seeds, "k.", markersize=4)
  ax.set_xticks(range(len(percents)), [f"{p}% labels" for p in percents])
  ax.set_ylabel("primary test top-1 (%)")
  ax.set_ylim(0, 100)
  ax.legend(fontsize=8)
  return diagnostics.to_png(fig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = FLAGS.config
  runs = planned_runs(FLAGS.methods, FLAGS.label_percents, FLAGS.seeds)
  todo = parse_only(FLAGS.only, runs) if FLAGS.only else list(runs)
  directory = os.path.abspath(FLAGS.workdir)
  os.makedirs(directory, exist_ok=True)
  steps = int(config.num_train_steps)
  budget = [f"{steps} steps", f"{config.batch_size} labeled clips per step",
            f"lr {config.optim.learning_rate} with {config.optim.warmup_steps} warm-up steps, "
            "cosine decay",
            f"primary {config.model.primary.name} x{config.model.primary.width_multiplier:g}",
            f"{config.mu} unlabeled clips per labeled clip, tau {config.tau} (FixMatch, CMPL)"]
  if not FLAGS.collect:
    env = dict(os.environ)
    env.setdefault("JAX_COMPILATION_CACHE_DIR",
                   FLAGS.compilation_cache_dir or os.path.join(directory, "xla_cache"))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    config_arg = config_flags.get_config_filename(FLAGS["config"])
    overrides = _forwarded_overrides(sys.argv[1:])
    pending = [r for r in todo if read_result(os.path.join(directory, r.name), steps) is None]
    print(f"compare: {len(runs)} runs in {directory}; {len(todo) - len(pending)} of the "
          f"{len(todo)} asked for already finished, {len(pending)} to train", flush=True)
    eta, failed, start = _Eta(), [], time.time()
    for i, run in enumerate(pending):
      prefix = f"[{i + 1}/{len(pending)} {run.name}]"
      print(f"{prefix} starting | elapsed {console.format_duration(time.time() - start)} | "
            f"{eta.remaining(pending[i:])}", flush=True)
      run_start = time.time()
      code = train_run(run, os.path.join(directory, run.name), config_arg, overrides, prefix, env)
      eta.add(run, time.time() - run_start)
      if code or read_result(os.path.join(directory, run.name), steps) is None:
        failed.append(run)
        print(f"{prefix} FAILED (exit code {code}); see "
              f"{os.path.join(directory, run.name, 'train.log')}", flush=True)
      else:
        print(f"{prefix} done in {console.format_duration(time.time() - run_start)} | "
              f"{eta.remaining(pending[i + 1:])}", flush=True)
      tabulate(directory, runs, steps, budget)
    if failed:   # the table after the last run already holds what finished
      raise SystemExit(f"compare: {len(failed)} run(s) failed: "
                       f"{', '.join(r.name for r in failed)}")
  content = tabulate(directory, runs, steps, budget)
  print(f"compare: {len(content['runs'])} of {len(runs)} runs finished; "
        f"{os.path.join(directory, RESULTS_MD)}", flush=True)
  with open(os.path.join(directory, RESULTS_MD), encoding="utf-8") as f:
    print(f.read().split("\n\n")[1], flush=True)


if __name__ == "__main__":
  app.run(main)
