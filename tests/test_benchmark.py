"""The benchmark command's JSON contract (README, "Benchmarks"; ../shared/design.md)."""
import json
import os
import subprocess
import sys

import data_fixtures as fixtures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INPUT_PIPELINE_KEYS = {"unlabeled_host_cpu_ms_per_clip", "labeled_host_cpu_ms_per_clip",
                       "decode_floor_cpu_ms_per_clip", "clips_per_sec_per_core",
                       "h2d_bytes_per_clip", "device_views_ms_per_clip"}


def test_input_pipeline_benchmark_prints_one_json_line_with_the_contract_keys(tmp_path):
  fixtures.write_dataset(str(tmp_path))
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  out = subprocess.run(
      [sys.executable, "-m", "cmpl_jax.benchmark", "--config=configs/default.py",
       "--what=input_pipeline", f"--config.data.dir={tmp_path}", "--config.data.crop_size=32",
       "--config.model.primary.num_frames=3", "--config.model.primary.frame_stride=4",
       "--config.model.auxiliary.num_frames=8", "--config.model.auxiliary.frame_stride=2",
       "--seconds=1"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = [line for line in out.stdout.splitlines() if line.strip()]
  assert len(lines) == 1, out.stdout
  figures = json.loads(lines[0])
  assert INPUT_PIPELINE_KEYS <= set(figures), sorted(INPUT_PIPELINE_KEYS - set(figures))
  for key in INPUT_PIPELINE_KEYS:
    assert figures[key] > 0, key
  # 8 union frames of the 40x54 canvas + size, flag, position and label.
  assert figures["h2d_bytes_per_clip"] == 8 * 40 * 54 * 3 + 2 * 4 + 1 + 4 + 4
  # Decoding is part of the host's work, so the host can never be cheaper than the floor.
  assert figures["unlabeled_host_cpu_ms_per_clip"] > figures["decode_floor_cpu_ms_per_clip"]


def test_gpu_script_refuses_a_machine_without_a_gpu(tmp_path):
  """benchmarks/gpu.sh never falls back to CPU (these test machines have no GPU)."""
  out = subprocess.run(["bash", "benchmarks/gpu.sh"], cwd=REPO, capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, OUT_DIR=str(tmp_path)))
  assert out.returncode != 0
  assert "gpu.sh: JAX sees no GPU" in out.stderr, out.stderr[-2000:]
  assert not list(tmp_path.glob("*.json"))   # nothing was timed
