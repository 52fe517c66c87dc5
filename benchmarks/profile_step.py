"""Where one train step's time goes, per kind of op, in ours (XLA's trace) or in PyTorch's.

  python benchmarks/profile_step.py --preset=paper_pair_112                  # ours
  python benchmarks/profile_step.py --preset=paper_pair_112 --framework=torch

Ours: the compiled step (as the benchmark compiles it) runs once untraced, then once under
`jax.profiler`; every XLA op event of the trace is attributed through its HLO metadata to the
layer kind it comes from (convolution incl. its matrix products and patches, BatchNorm, ReLU,
residual add, pooling, the views, the optimizer), forward or backward. Layout copies XLA adds
between ops carry no metadata and are counted apart. PyTorch: `torch.profiler` on one step of
benchmarks/torch_reference.py, its aten ops grouped the same way. Prints ms per group.
"""
from __future__ import annotations

import argparse
import collections
import functools
import glob
import os
import re
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

_LAYER = (("conv", "convolution"), ("bn", "batch norm"), ("relu", "relu"), ("max", "relu"),
          ("select_n", "relu"), ("reduce_window", "pooling"), ("select_and_scatter", "pooling"),
          ("add", "residual add"))


def _group_xla(op_name: str) -> str:
  if not op_name:
    return "layout copies (no metadata)"
  if "ResNet3D" not in op_name:
    return "optimizer, loss, views" if "while" not in op_name else "views (RandAugment)"
  side = "backward" if "transpose(jvp" in op_name else "forward"
  parts = op_name.split("/")
  for key, group in _LAYER:
    if key in parts or (parts and parts[-1].startswith(key)):
      return f"{side}: {group}"
  return f"{side}: other"


def profile_ours(preset: str) -> dict[str, float]:
  import jax  # pylint: disable=import-outside-toplevel
  from jax._src.profiler import ProfileData  # pylint: disable=import-outside-toplevel
  from cmpl_jax import benchmark, train  # pylint: disable=import-outside-toplevel
  from configs import benchmark as presets  # pylint: disable=import-outside-toplevel
  config = presets.get_config(preset)
  models = train.create_models(config, 101)
  tx = train.create_optimizer(config)
  state = train.replicate(train.create_train_state(config, models, jax.random.key(0), tx))
  step = jax.pmap(functools.partial(train.train_step, models=models, tx=tx, config=config),
                  axis_name=train.AXIS_NAME, in_axes=(0, 0, None), donate_argnums=(0,))
  batch = jax.device_put(benchmark.random_batch(config, jax.local_device_count(), 101),
                         train.local_device_sharding())
  rng = jax.random.key(1)
  compiled = step.lower(state, batch, rng).compile(compiler_options=train.compiler_options())
  state, metrics = compiled(state, batch, rng)
  jax.block_until_ready(metrics)
  metadata = {}
  for line in compiled.as_text().splitlines():
    name = re.match(r"^\s*(?:ROOT )?%([\w.\-]+) = ", line)
    if name:
      op = re.search(r'op_name="([^"]*)"', line)
      metadata[name.group(1)] = op.group(1) if op else ""
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    state, metrics = compiled(state, batch, rng)
    jax.block_until_ready(metrics)
    jax.profiler.stop_trace()
    trace = ProfileData.from_file(glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)[0])
  groups = collections.Counter()
  for plane in trace.planes:
    for line in plane.lines:
      for event in line.events:
        if event.name in metadata:   # XLA ops only (not the executor's own spans)
          groups[_group_xla(metadata[event.name])] += event.duration_ns / 1e6
  return groups


_TORCH = {"aten::mkldnn_convolution": "forward: convolution",
          "aten::convolution_backward": "backward: convolution",
          "aten::native_batch_norm": "forward: batch norm",
          "aten::native_batch_norm_backward": "backward: batch norm",
          "aten::clamp_min": "forward: relu", "aten::threshold_backward": "backward: relu",
          "aten::max_pool3d_with_indices": "forward: pooling",
          "aten::max_pool3d_with_indices_backward": "backward: pooling",
          "aten::add": "residual add (+ gradient sums)", "aten::add_": "optimizer, grad sums"}


def profile_torch(preset: str) -> dict[str, float]:
  import torch  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, os.path.join(REPO, "benchmarks"))
  import torch_reference as ref  # pylint: disable=import-outside-toplevel
  config = ref.load_config(f"configs/benchmark.py:{preset}")
  names, device = ref.model_names(config), torch.device("cpu")
  fmt = torch.channels_last_3d
  models = {n: ref.create_model(config.model[n], 101).to(memory_format=fmt).train() for n in names}
  opt = ref.create_optimizer(models, config)
  inputs, labels = ref.random_inputs(config, names, device, fmt)

  def step():
    opt.zero_grad(set_to_none=True)
    ref.loss_fn(models, inputs, labels, config).backward()
    opt.step()

  step()
  step()   # oneDNN builds its primitives in the first steps
  with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    step()
  groups = collections.Counter()
  for event in prof.key_averages():
    group = _TORCH.get(event.key, "other")
    groups[group] += event.self_cpu_time_total / 1e3
  return groups


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--preset", default="paper_pair_112")
  parser.add_argument("--framework", choices=["jax", "torch"], default="jax")
  args = parser.parse_args()
  groups = (profile_ours if args.framework == "jax" else profile_torch)(args.preset)
  total = sum(groups.values())
  print(f"| {args.framework} {args.preset}: group | ms | share |")
  print("|---|---|---|")
  for group, ms in sorted(groups.items(), key=lambda kv: -kv[1]):
    print(f"| {group} | {ms:.0f} | {100 * ms / total:.1f}% |")
  print(f"| total (sum of op times) | {total:.0f} | 100% |")


if __name__ == "__main__":
  main()
