"""The accelerator path imports without TensorFlow, TFDS and clu (benchmarks/gpu.sh relies on
it): model, objectives, train step, checkpointing and the train-step benchmark, run for real
with those packages made unimportable."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_STEP_KEYS = {"clips_per_sec", "step_ms", "step_ms_min", "step_ms_max", "compile_s",
                   "flops_per_step", "achieved_tflops", "peak_host_rss_mb", "peak_device_mb",
                   "config"}

# Runs in a fresh interpreter: any import of a blocked package raises, then the benchmark CLI
# runs one tiny train step and the test checks nothing blocked was loaded.
_SCRIPT = r"""
import importlib.abc, runpy, sys
BLOCKED = ("tensorflow", "tensorflow_datasets", "clu")

class Block(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in BLOCKED:
      raise ImportError(f"{name} is blocked in this test")
    return None

sys.meta_path.insert(0, Block())
import cmpl_jax.models.resnet3d, cmpl_jax.ssl, cmpl_jax.train, cmpl_jax.checkpointing  # noqa
sys.argv = ["benchmark", "--config=configs/demo.py:cmpl,smoke", "--what=train_step",
            "--steps=2", "--warmup=1", "--num_classes=3"]
try:
  runpy.run_module("cmpl_jax.benchmark", run_name="__main__")
except SystemExit as e:
  assert not e.code, e.code
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not loaded, loaded
"""


def test_train_step_benchmark_runs_without_tensorflow_tfds_and_clu_and_keeps_its_contract():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  out = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = [line for line in out.stdout.splitlines() if line.strip()]
  assert len(lines) == 1, out.stdout   # the benchmark's contract: one JSON line
  figures = json.loads(lines[0])
  assert TRAIN_STEP_KEYS <= set(figures), sorted(TRAIN_STEP_KEYS - set(figures))
  assert figures["config"] == {"frames_F": 2, "frames_A": 4, "size": 16, "labeled": 4, "mu": 1,
                               "dtype": "float32", "bn_batches": "joint", "devices": 1,
                               "backend": "cpu"}
  for key in ("clips_per_sec", "step_ms", "compile_s", "flops_per_step", "achieved_tflops",
              "peak_host_rss_mb"):
    assert figures[key] > 0, key
  assert figures["step_ms_min"] <= figures["step_ms"] <= figures["step_ms_max"]
  # 4 labeled + 4 x 2 unlabeled clips per step, at the median step time.
  assert abs(figures["clips_per_sec"] - 12 / (figures["step_ms"] / 1e3)) < 0.01 * figures[
      "clips_per_sec"]
  assert figures["peak_device_mb"] is None and "mfu" not in figures   # XLA:CPU: neither
