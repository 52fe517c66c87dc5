"""The accelerator path imports without TensorFlow, TFDS and clu (benchmarks/gpu.sh relies on
it): model, objectives, train step, checkpointing and the train-step benchmark, run for real
with those packages made unimportable."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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


def test_train_step_benchmark_runs_without_tensorflow_tfds_and_clu():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  out = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  figures = json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])
  assert figures["clips_per_sec"] > 0
  assert figures["config"]["backend"] == "cpu"
