"""Benchmark presets: the exact shapes every speed figure in BENCHMARKS.md was measured at.

  python -m cmpl_jax.benchmark --config=configs/benchmark.py:paper_pair_112 --what=train_step
  python -m cmpl_jax.benchmark --config=configs/benchmark.py:paper_pair_224_bf16 --what=train_step
  python -m cmpl_jax.benchmark --config=configs/benchmark.py:r3d18_pair_112 --what=train_step
  python -m cmpl_jax.benchmark --config=configs/benchmark.py:demo --what=train_step
  python benchmarks/torch_reference.py --config=configs/benchmark.py:paper_pair_112   # PyTorch
  python benchmarks/compare_torch.py --preset=paper_pair_112 --pairs=3                # A B A B

Presets (CMPL, SGD, every model trained; inputs are random uint8 windows of these shapes):
* `paper_pair_112`: the paper's pair, SlowOnly-R50 8x112x112 (stride 8) + SlowOnly-R50 x1/4
  32x112x112 (stride 2), 1 labeled + 2 x 2 unlabeled clips, float32, joint BatchNorm: the CPU
  comparison with PyTorch.
* `paper_pair_224_bf16`: the same pair at 224x224 in bfloat16, 2 labeled + 7 x 2 x 2 unlabeled
  clips (mu 7, FixMatch's ratio), a batch sized for an 80-140 GB GPU; for accelerators
  (benchmarks/gpu.sh), see BENCHMARKS.md.
* `r3d18_pair_112`: R3D-18 8x112x112 + R3D-18 x1/4 32x112x112, the same batch as
  `paper_pair_112`.
* `demo`: the CPU demo's shapes (configs/demo.py).

`--config.batch_size`, `--config.mu` and `--config.dtype` override a preset's batch and dtype,
e.g. benchmarks/gpu.sh runs `r3d18_pair_112` in bfloat16 with a larger batch.
"""
from configs import default, demo

PRESETS = ("paper_pair_112", "paper_pair_224_bf16", "r3d18_pair_112", "demo")


def _pair(config, name: str, crop_size: int):
  for model, width, frames, stride in (("primary", 1.0, 8, 8), ("auxiliary", 0.25, 32, 2)):
    config.model[model].update(name=name, width_multiplier=width, num_frames=frames,
                               frame_stride=stride)
  config.data.crop_size = crop_size
  return config


def get_config(preset: str = "paper_pair_112"):
  if preset not in PRESETS:
    raise ValueError(f"configs/benchmark.py argument {preset!r}: expected one of {PRESETS}")
  if preset == "demo":
    return demo.get_config("cmpl")
  config = default.get_config()
  config.method = "cmpl"
  config.bn_batches = "joint"
  config.dtype = "float32"
  config.batch_size, config.mu = 1, 2
  if preset == "paper_pair_112":
    _pair(config, "slowonly_r50", 112)
  elif preset == "r3d18_pair_112":
    _pair(config, "r3d_18", 112)
  else:  # paper_pair_224_bf16
    _pair(config, "slowonly_r50", 224)
    config.dtype = "bfloat16"
    # 2 labeled + 14 unlabeled clips (x2 views) = 30 clips per device (FixMatch's mu = 7).
    # XLA's buffer assignment of this step (native convolutions, bfloat16) needs ~2.5 GB per
    # clip: ~75 GB here, for an 80-140 GB card. Sized by that estimate, not yet on a GPU
    # (BENCHMARKS.md); gpu.sh prints the peak it really used.
    config.batch_size, config.mu = 2, 7
  return config
