"""The same CMPL train step in plain PyTorch, timed the way `cmpl_jax.benchmark` times ours.

  python benchmarks/torch_reference.py --config=configs/benchmark.py:paper_pair_112
  python benchmarks/torch_reference.py --config=configs/benchmark.py:paper_pair_224_bf16 --compile

Same models (cmpl_jax/tools/torch_resnet3d.py: pytorchvideo `slow_r50` / torchvision `r3d_18`
topologies at the config's widths; parameter counts are checked against our Flax models by
tests/test_torch_reference.py), same shapes, losses (cross-entropy on labeled clips, each
model's confident weak-view argmax as its sibling's target on the strong view), BatchNorm
batching (`config.bn_batches`) and optimizer (SGD, nesterov momentum, weight decay on kernels).
Prints one JSON line with the keys of ours (`clips_per_sec`, median `step_ms` with its min and
max, `compile_s`, `flops_per_step`, `achieved_tflops`, `mfu` on GPU, `peak_host_rss_mb`,
`peak_device_mb`, `config`).

What differs, by design: PyTorch receives the model inputs (float clips, already cropped and
normalised) because its data loader makes the views on the host, while our step makes them
from the uint8 windows on the device, inside the timed step. On CPU the reference times both
memory formats (contiguous, channels_last_3d) and keeps the faster; on GPU it uses
channels_last_3d. A bfloat16 config runs under AMP (autocast to bfloat16) on either device.
`--compile` adds torch.compile.
Needs torch (CPU wheel: `pip install torch==2.13.0`) and ml_collections; not torchvision.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils import flop_counter as torch_flop_counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cmpl_jax.tools import torch_resnet3d  # noqa: E402  (torch only, no JAX)

MEAN, STD = 0.45, 0.225


def load_config(spec: str):
  """configs/FILE.py[:ARG] -> its ConfigDict (the same files our benchmark reads)."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise SystemExit(f"--config={spec}: no config file {path!r}")
  loader = importlib.util.spec_from_file_location("benchmark_config", path)
  module = importlib.util.module_from_spec(loader)
  loader.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def model_names(config) -> list[str]:
  if config.method == "fixmatch" or not config.model.auxiliary.get("name"):
    return ["primary"]
  return ["primary", "auxiliary"]


def create_model(cfg, num_classes: int) -> torch.nn.Module:
  w, p = cfg.width_multiplier, cfg.dropout_rate
  if cfg.name == "slowonly_r50":
    return torch_resnet3d.slow_r50(num_classes, None, w, p)
  if cfg.name in ("r3d_18", "r3d_10"):
    depth = (2, 2, 2, 2) if cfg.name == "r3d_18" else (1, 1, 1, 1)
    return torch_resnet3d.VideoResNet(depth, num_classes, w, p)
  raise ValueError(f"config model name {cfg.name!r} has no PyTorch replica")


def create_optimizer(models, config) -> torch.optim.Optimizer:
  """SGD as cmpl_jax.train.create_optimizer: weight decay on kernels (ndim > 1) only."""
  params = [p for m in models.values() for p in m.parameters()]
  groups = [{"params": [p for p in params if p.ndim > 1],
             "weight_decay": config.optim.weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
  return torch.optim.SGD(groups, lr=config.optim.learning_rate, momentum=config.optim.momentum,
                         nesterov=config.optim.nesterov)


def random_inputs(config, names, device, memory_format, seed: int = 0):
  """Per model: labeled, weak and strong clips [B, 3, T, S, S], normalised; labels."""
  g = torch.Generator().manual_seed(seed)
  b_l, size = config.batch_size, config.data.crop_size
  b_u = b_l * config.mu if config.method != "supervised" else 0

  def clips(n, frames):
    x = torch.randint(0, 256, (n, 3, frames, size, size), generator=g).float()
    x = ((x / 255 - MEAN) / STD).to(device)
    return x.contiguous(memory_format=memory_format)

  inputs = {}
  for name in names:
    t = config.model[name].num_frames
    inputs[name] = [clips(b_l, t)] + ([clips(b_u, t), clips(b_u, t)] if b_u else [])
  labels = torch.randint(0, NUM_CLASSES, (b_l,), generator=g).to(device)
  return inputs, labels


def _unsup(student_strong, teacher_weak, tau):
  probs = torch.softmax(teacher_weak.detach().float(), dim=-1)
  confidence, targets = probs.max(dim=-1)
  ce = F.cross_entropy(student_strong.float(), targets, reduction="none")
  return (ce * (confidence >= tau).float()).mean()


def loss_fn(models, inputs, labels, config):
  """The objective of cmpl_jax.ssl for the config's method."""
  logits = {}
  for name, model in models.items():
    parts = inputs[name]
    if config.bn_batches == "joint":
      out = model(torch.cat(parts))
      logits[name] = out.split([p.shape[0] for p in parts])
    else:
      logits[name] = [model(p) for p in parts]
  loss = sum(F.cross_entropy(logits[n][0].float(), labels) for n in models)
  if config.method == "fixmatch":
    loss = loss + config.lambda_u * _unsup(logits["primary"][2], logits["primary"][1], config.tau)
  elif config.method == "cmpl":
    f, a = logits["primary"], logits["auxiliary"]
    loss = loss + config.lambda_u * (_unsup(f[2], a[1], config.tau) + _unsup(a[2], f[1], config.tau))
  return loss


def matmul_peak_tflops(device, n: int = 8192, repeats: int = 10) -> float:
  a = torch.ones((n, n), dtype=torch.bfloat16, device=device)
  times = []
  for i in range(repeats + 1):
    torch.cuda.synchronize()
    start = time.perf_counter()
    a @ a
    torch.cuda.synchronize()
    if i:
      times.append(time.perf_counter() - start)
  return 2 * n ** 3 / statistics.median(times) / 1e12


def time_steps(config, device, memory_format, steps: int, warmup: int, compile_model: bool,
               count_flops: bool = True):
  names = model_names(config)
  models = {n: create_model(config.model[n], NUM_CLASSES).to(device).to(
      memory_format=memory_format).train() for n in names}
  opt = create_optimizer(models, config)
  inputs, labels = random_inputs(config, names, device, memory_format)
  # bfloat16 configs run under AMP (autocast) on either device; float32 ones in float32.
  use_amp = config.dtype == "bfloat16"
  autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_amp else (
      contextlib.nullcontext)

  def step():
    opt.zero_grad(set_to_none=True)
    with autocast():
      loss = loss_fn(models, inputs, labels, config)
    loss.backward()
    opt.step()
    return loss

  run = torch.compile(step) if compile_model else step
  sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
  start = time.perf_counter()
  run()
  sync()
  first_step_s = time.perf_counter() - start
  for _ in range(warmup):
    run()
  sync()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    run()
    sync()
    times.append(time.perf_counter() - start)
  if not count_flops:
    return times, first_step_s, 0.0
  counter = torch_flop_counter.FlopCounterMode(display=False)
  with counter:  # forward + backward of one more eager step
    step()
  return times, first_step_s, float(counter.get_total_flops())


def main() -> None:
  global NUM_CLASSES
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", required=True, help="configs/FILE.py[:ARG]")
  parser.add_argument("--steps", type=int, default=10, help="timed steps")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
  parser.add_argument("--num_classes", type=int, default=101)
  parser.add_argument("--compile", action="store_true", help="torch.compile the step")
  parser.add_argument("--memory_format", choices=["auto", "contiguous", "channels_last_3d"],
                      default="auto", help="auto: the faster on CPU, channels_last_3d on GPU")
  parser.add_argument("--device", default="auto", help="auto (cuda if available) | cpu | cuda")
  parser.add_argument("--config.batch_size", dest="batch_size", type=int)
  parser.add_argument("--config.mu", dest="mu", type=int)
  parser.add_argument("--config.dtype", dest="dtype")
  args = parser.parse_args()
  NUM_CLASSES = args.num_classes
  config = load_config(args.config)
  for key in ("batch_size", "mu", "dtype"):
    if getattr(args, key) is not None:
      config[key] = getattr(args, key)
  device = torch.device(("cuda" if torch.cuda.is_available() else "cpu")
                        if args.device == "auto" else args.device)
  formats = {"contiguous": torch.contiguous_format, "channels_last_3d": torch.channels_last_3d}
  chosen = args.memory_format
  if chosen == "auto" and device.type == "cuda":
    chosen = "channels_last_3d"
  tried = {}
  if chosen == "auto":  # CPU: a short trial of each, then the full run with the faster
    for name, fmt in formats.items():
      times, _, _ = time_steps(config, device, fmt, 2, 1, False, count_flops=False)
      tried[name] = round(1e3 * statistics.median(times), 1)
    chosen = min(tried, key=tried.get)
  times, first_step_s, flops = time_steps(config, device, formats[chosen], args.steps,
                                          args.warmup, args.compile)
  step_s = statistics.median(times)
  b_l = config.batch_size
  clips = b_l * (1 + (2 * config.mu if config.method != "supervised" else 0))
  names = model_names(config)
  figures = {
      "what": "train_step", "framework": f"torch {torch.__version__}",
      "mode": "torch.compile" if args.compile else "eager", "memory_format": chosen,
      "trial_step_ms": tried, "threads": torch.get_num_threads(),
      "amp_bf16": config.dtype == "bfloat16",
      "step_ms": round(1e3 * step_s, 2), "step_ms_min": round(1e3 * min(times), 2),
      "step_ms_max": round(1e3 * max(times), 2), "clips_per_sec": round(clips / step_s, 3),
      # Eager PyTorch compiles nothing; with --compile, the first call's time (incl. compiling).
      "compile_s": round(first_step_s, 2) if args.compile else 0.0,
      "first_step_s": round(first_step_s, 2), "flops_per_step": flops,
      "achieved_tflops": round(flops / step_s / 1e12, 4),
      "peak_host_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
      "peak_device_mb": (round(torch.cuda.max_memory_allocated() / 2**20, 1)
                         if device.type == "cuda" else None),
      "config": {"frames_F": config.model.primary.num_frames,
                 "frames_A": config.model.auxiliary.num_frames if "auxiliary" in names else 0,
                 "size": config.data.crop_size, "labeled": b_l,
                 "mu": config.mu if config.method != "supervised" else 0,
                 "dtype": config.dtype, "bn_batches": config.bn_batches, "devices": 1,
                 "backend": "gpu" if device.type == "cuda" else "cpu"},
  }
  if device.type == "cuda":
    peak = matmul_peak_tflops(device)
    figures["matmul_peak_tflops"] = round(peak, 1)
    figures["mfu"] = round(figures["achieved_tflops"] / peak, 4)
    figures["device_name"] = torch.cuda.get_device_name(device)
  print(json.dumps(figures))


NUM_CLASSES = 101

if __name__ == "__main__":
  main()
