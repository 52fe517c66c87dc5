"""Failure injection: kill -9 and resume, SIGTERM, NaN losses, bad configs, interrupted saves.

Training runs here are real `python -m cmpl_jax.main` processes (one CPU device, like a single
accelerator host) on the smoke-sized synthetic dataset, so signals hit a real trainer. Run alone
with `pytest -m reliability`.
"""
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from cmpl_jax import checkpointing, config_checks, loop
from configs import demo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = [pytest.mark.slow, pytest.mark.reliability]


def trainer(smoke_cache, workdir, *overrides, stdout=subprocess.PIPE):
  """Starts `main --mode=train` on the smoke config in a fresh process with one CPU device."""
  env = dict(os.environ, CMPL_JAX_CACHE=smoke_cache, PYTHONUNBUFFERED="1")
  env.pop("XLA_FLAGS", None)
  command = [sys.executable, "-m", "cmpl_jax.main", "--config=configs/demo.py:cmpl,smoke",
             f"--workdir={workdir}", "--config.log_every_steps=1", *overrides]
  return subprocess.Popen(command, cwd=REPO, env=env, stdout=stdout, stderr=subprocess.STDOUT,
                          text=True)


def wait_for_line(process, prefix, timeout=300):
  """Reads the trainer's output until a line starts with `prefix`; returns all lines read."""
  lines, deadline = [], time.time() + timeout
  while time.time() < deadline:
    line = process.stdout.readline()
    if not line:
      break
    lines.append(line)
    if line.startswith(prefix):
      return lines
  raise AssertionError(f"no line starting {prefix!r} in:\n{''.join(lines)}")


def restore_params(workdir, step=None):
  checkpoints = checkpointing.Checkpoints(workdir, read_only=True)
  try:
    return checkpoints.restore_arrays(step)
  finally:
    checkpoints.close()


# The smoke config's own length (6 steps), so that every trainer process here, and the quickstart
# notebook's smoke run, compile the same train step: after the first, they load it from the
# session's compilation cache (tests/conftest.py) instead of compiling it again.
LAST = 6
STEPS = [f"--config.num_train_steps={LAST}", "--config.checkpoint_every_steps=1",
         "--config.eval_every_steps=100"]


@pytest.fixture(scope="module")
def reference(smoke_cache, tmp_path_factory):
  """An uninterrupted run, checkpointing every step (keep_checkpoints=3)."""
  workdir = str(tmp_path_factory.mktemp("reference") / "run")
  assert trainer(smoke_cache, workdir, *STEPS, stdout=subprocess.DEVNULL).wait(timeout=600) == 0
  return workdir


def test_kill_9_at_random_steps_then_resume_matches_an_uninterrupted_run(smoke_cache, reference,
                                                                        tmp_path):
  steps = STEPS

  interrupted = str(tmp_path / "interrupted")
  rng = random.Random(0)
  kills = []
  for _ in range(3):
    # Kill somewhere inside training: after the log line of a random step this start will still
    # run (it resumes after the last checkpoint on disk), plus a random delay.
    on_disk = checkpointing.Checkpoints(interrupted, read_only=True)
    first = (on_disk.latest_step() or 0) + 1
    on_disk.close()
    if first >= LAST:
      break
    target = rng.randint(first, min(first + 1, LAST - 1))   # early: leaves room for more kills
    process = trainer(smoke_cache, interrupted, *steps)
    lines = wait_for_line(process, f"step {target}/{LAST}")
    time.sleep(rng.uniform(0.0, 0.2))
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    kills.append((first, target, "".join(lines).count(f"resumed from {interrupted}")))
    on_disk = checkpointing.Checkpoints(interrupted, read_only=True)
    for step in on_disk.all_steps():   # every checkpoint left behind restores
      restore_params(interrupted, step)
    on_disk.close()
  assert trainer(smoke_cache, interrupted, *steps, stdout=subprocess.DEVNULL).wait(timeout=600) == 0
  assert len(kills) >= 2, kills
  # A start resumed exactly when an earlier one left a checkpoint.
  assert all(resumed == (first > 1) for first, _, resumed in kills), kills

  step_a, final_a = restore_params(reference)
  step_b, final_b = restore_params(interrupted)
  assert step_a == step_b == LAST
  jax.tree.map(np.testing.assert_array_equal, final_a, final_b)   # bit for bit


def test_sigterm_saves_the_current_step_and_exits_0(smoke_cache, tmp_path):
  workdir = str(tmp_path / "run")
  no_saves = ["--config.num_train_steps=6", "--config.checkpoint_every_steps=1000",
              "--config.eval_every_steps=1000"]
  process = trainer(smoke_cache, workdir, *no_saves)
  wait_for_line(process, "step 1/")   # the stop is agreed at the next step (log_every_steps=1)
  process.send_signal(signal.SIGTERM)
  output, _ = process.communicate(timeout=120)
  assert process.returncode == 0, output
  assert "signal 15 received: saved the checkpoint of step" in output
  assert "done: step" not in output, "stopped early, not at the end of training"
  saved = checkpointing.Checkpoints(workdir, read_only=True)
  step = saved.latest_step()
  saved.close()
  assert step is not None and 1 <= step < 6

  resumed = trainer(smoke_cache, workdir, *no_saves)
  output, _ = resumed.communicate(timeout=600)
  assert resumed.returncode == 0, output
  assert f"resumed from {os.path.join(workdir, 'checkpoints')}/{step}" in output
  assert f"step {step + 1}/6" in output and "done: step 6" in output


def test_nan_loss_stops_naming_step_and_term_and_keeps_the_last_checkpoint(smoke_cache, tmp_path,
                                                                          monkeypatch):
  monkeypatch.setenv("CMPL_JAX_CACHE", smoke_cache)
  config = demo.get_config("cmpl,smoke")
  config.batch_size = config.eval.batch_size = jax.device_count()
  config.log_every_steps = config.checkpoint_every_steps = 1
  config.num_train_steps = 20
  # Warm-up starts at lr 0 (step 1 changes nothing), then an absurd peak blows the nets up.
  config.optim.warmup_steps = 2
  config.optim.learning_rate = 1e30
  workdir = str(tmp_path / "nan")
  with pytest.raises(FloatingPointError) as error:
    loop.train_and_evaluate(config, workdir)
  message = str(error.value)
  assert message.startswith("non-finite training loss at step ")
  bad_step = int(message.split("step ")[1].split(":")[0])
  assert "loss" in message.split(":")[1] and "is intact and restorable" in message
  step, params = restore_params(workdir)
  assert step == bad_step - 1 and f"(step {step})" in message
  assert all(np.all(np.isfinite(p)) for p in jax.tree.leaves(params))


def test_bad_configurations_fail_before_compilation_naming_the_field(smoke_cache, tmp_path,
                                                                     monkeypatch):
  monkeypatch.setenv("CMPL_JAX_CACHE", smoke_cache)
  cases = {
      "config.batch_size=3": lambda c: setattr(c, "batch_size", 3),
      "config.tau=1.5": lambda c: setattr(c, "tau", 1.5),
      "config.tau=0": lambda c: setattr(c, "tau", 0.0),
      "config.method='mixmatch'": lambda c: setattr(c, "method", "mixmatch"),
      "config.model.auxiliary.name=''": lambda c: c.model.auxiliary.update(name=""),
      "config.model.primary.name='resnet9000'": lambda c: c.model.primary.update(
          name="resnet9000"),
      "config.data.dir='/nonexistent/data'": lambda c: (c.data.update(dir="/nonexistent/data"),
                                                         c.data.synthetic.update(enabled=False)),
      "config.data.labeled_percent=0": lambda c: c.data.update(labeled_percent=0),
  }
  for expected, mutate in cases.items():
    config = demo.get_config("cmpl,smoke")
    config.batch_size = config.eval.batch_size = 8
    mutate(config)
    with pytest.raises(config_checks.ConfigError) as error:
      loop.train_and_evaluate(config, str(tmp_path / "never"))
    assert expected.split("=")[0] in str(error.value), (expected, str(error.value))
    assert "allowed" in str(error.value) or "must" in str(error.value) or \
        "no such" in str(error.value)
  assert not os.path.exists(str(tmp_path / "never")), "nothing may be written for a bad config"

  # A labeled share so small that some class gets no video: named by the splits module.
  config = demo.get_config("cmpl,smoke")
  config.batch_size = config.eval.batch_size = 8
  config.data.labeled_list = str(tmp_path / "one_video.txt")
  from cmpl_jax.data import demo_data, synthetic
  with open(os.path.join(demo_data.raw_dir(config.data.dir), synthetic.SPLITS_DIRNAME,
                         "trainlist01.txt")) as f:
    ids = f.read().split()
  (tmp_path / "one_video.txt").write_text(ids[0] + "\n")
  with pytest.raises(ValueError, match=r"leaves 2 of 3 classes without a labeled video"):
    loop.train_and_evaluate(config, str(tmp_path / "few"))


def test_workdir_of_another_model_fails_before_compilation(smoke_cache, reference, tmp_path,
                                                          monkeypatch):
  monkeypatch.setenv("CMPL_JAX_CACHE", smoke_cache)
  workdir = str(tmp_path / "copy")
  shutil.copytree(reference, workdir)
  config = demo.get_config("cmpl,smoke")
  config.batch_size = config.eval.batch_size = 8
  config.model.primary.width_multiplier = 1 / 8
  compiled = []
  monkeypatch.setattr(jax, "pmap", lambda *a, **k: compiled.append(1))
  with pytest.raises(ValueError, match=r"config.model.primary.width_multiplier: checkpoint "
                                       r"0.0625, config 0.125"):
    loop.train_and_evaluate(config, workdir)
  assert not compiled


def test_interrupted_save_is_never_the_latest_and_old_checkpoints_rotate(reference, tmp_path):
  directory = os.path.join(reference, "checkpoints")
  assert sorted(os.listdir(directory), key=int) == [str(LAST - 2), str(LAST - 1), str(LAST)]
  workdir = str(tmp_path / "copy")
  shutil.copytree(reference, workdir)
  # What a save killed mid-write leaves: Orbax's temporary folder, never renamed to its step.
  partial = os.path.join(workdir, "checkpoints", f"{LAST + 1}.orbax-checkpoint-tmp-1234567890")
  shutil.copytree(os.path.join(workdir, "checkpoints", str(LAST)), partial)
  step, params = restore_params(workdir)
  assert step == LAST
  assert all(np.all(np.isfinite(p)) for p in jax.tree.leaves(params))


def _free_port():
  import socket
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_with_gloo_match_one_process_with_the_same_devices(smoke_cache, tmp_path):
  """2 processes x 2 CPU devices (jax.distributed + gloo) == 1 process x 4 devices."""
  common = ["--config.num_train_steps=3", "--config.checkpoint_every_steps=3",
            "--config.eval_every_steps=3", "--config.batch_size=4", "--config.eval.batch_size=4",
            "--config.model.sync_batch_norm=True"]

  def start(workdir, devices, *extra):
    env = dict(os.environ, CMPL_JAX_CACHE=smoke_cache, PYTHONUNBUFFERED="1",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return subprocess.Popen(
        [sys.executable, "-m", "cmpl_jax.main", "--config=configs/demo.py:cmpl,smoke",
         f"--workdir={workdir}", "--config.log_every_steps=1", *common, *extra],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

  # All three at once: each mostly compiles, single-threaded, so they overlap well on 2 cores.
  single = str(tmp_path / "single")
  reference_run = start(single, 4)
  multi = str(tmp_path / "multi")
  port = _free_port()
  processes = [start(multi, 2, f"--coordinator_address=localhost:{port}", "--num_processes=2",
                     f"--process_id={i}") for i in range(2)]
  outputs = [p.communicate(timeout=600)[0] for p in processes]
  output_single, _ = reference_run.communicate(timeout=600)
  assert reference_run.returncode == 0, output_single
  assert [p.returncode for p in processes] == [0, 0], outputs
  assert "4 devices" in outputs[0] and "step 3/3" in outputs[0]
  assert "step 1/3" not in outputs[1], "only process 0 reports"
  events = [n for n in os.listdir(multi) if n.startswith("events.out.tfevents")]
  assert len(events) == 1, f"one TensorBoard writer expected, found {events}"

  def losses(output):
    return [line.split("| loss ")[1].split(" |")[0] for line in output.splitlines()
            if line.startswith("step ")]
  assert losses(outputs[0]) == losses(output_single) and len(losses(output_single)) == 3
  # The multi-process checkpoint restores in this single process and matches the 4-device run.
  step_a, params_a = restore_params(single)
  step_b, params_b = restore_params(multi)
  assert step_a == step_b == 3
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               params_a, params_b)
