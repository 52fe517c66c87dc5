"""Failure injection: kill -9 and resume, SIGTERM, NaN losses, bad configs, interrupted saves,
damaged checkpoints, resuming on another number of devices or processes.

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
      "config.teacher_stats_momentum=1.0": lambda c: setattr(c, "teacher_stats_momentum", 1.0),
      "config.ema_decay=1.0": lambda c: setattr(c, "ema_decay", 1.0),
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
  # Resuming with a pseudo-label option the run did not have: named, not taken for damage.
  config = demo.get_config("cmpl,smoke")
  config.batch_size = config.eval.batch_size = 8
  config.class_thresholds = True
  with pytest.raises(ValueError, match=r"teacher statistics .*checkpoint keeps them for no "
                                       r"model, config for \['primary', 'auxiliary'\]"):
    loop.train_and_evaluate(config, workdir)
  assert not compiled and not os.path.exists(os.path.join(workdir, "damaged_checkpoints"))


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


def _damage(workdir, step, how):
  """What a full disk or a killed copy leaves inside a finished step folder."""
  folder = os.path.join(workdir, "checkpoints", str(step))
  if how == "truncate":   # the model item's array data files, each cut in half
    data = os.path.join(folder, "model", "ocdbt.process_0", "d")
    for name in os.listdir(data):
      with open(os.path.join(data, name), "r+b") as f:
        f.truncate(os.path.getsize(os.path.join(data, name)) // 2)
  else:                   # the meta item's JSON file, gone
    os.remove(os.path.join(folder, "meta", "metadata"))
  return folder


def test_damaged_newest_checkpoints_are_skipped_named_and_kept(smoke_cache, reference, tmp_path):
  workdir = str(tmp_path / "damaged")
  shutil.copytree(reference, workdir)
  _damage(workdir, LAST, "truncate")
  _damage(workdir, LAST - 1, "remove")
  def files(folder):   # {path inside the step folder: size}
    return {os.path.relpath(os.path.join(d, f), folder): os.path.getsize(os.path.join(d, f))
            for d, _, names in os.walk(folder) for f in names}
  damaged_files = {step: files(os.path.join(workdir, "checkpoints", str(step)))
                   for step in (LAST, LAST - 1)}

  # --mode=eval evaluates the newest checkpoint or says why not; it never picks another itself.
  evaluation = trainer(smoke_cache, workdir, "--mode=eval")
  output, _ = evaluation.communicate(timeout=600)
  assert evaluation.returncode == 1, output
  assert f"checkpoint {workdir}/checkpoints/{LAST} cannot be restored" in output
  assert "does not fall back" in output and f"steps: {LAST - 2}, {LAST - 1}" in output
  assert not os.path.exists(os.path.join(workdir, checkpointing.DAMAGED_DIRNAME))

  # Training resumes from the newest intact one, says which it skipped and why, and moves the
  # damaged ones aside untouched.
  process = trainer(smoke_cache, workdir, *STEPS)
  output, _ = process.communicate(timeout=600)
  assert process.returncode == 0, output
  for step, cause in ((LAST, "OUT_OF_RANGE"), (LAST - 1, "metadata not found")):
    assert f"skipped the checkpoint {workdir}/checkpoints/{step}: it cannot be restored" in output
    assert cause in output.split(f"checkpoints/{step}: it cannot be restored")[1].split("\n")[0]
    kept = os.path.join(workdir, checkpointing.DAMAGED_DIRNAME, str(step))
    assert f"to {kept} (kept for inspection" in output
    assert files(kept) == damaged_files[step]   # moved as it was, nothing deleted
  assert f"resumed from {workdir}/checkpoints/{LAST - 2}" in output
  assert f"step {LAST - 1}/{LAST}" in output
  step_a, final_a = restore_params(reference)
  step_b, final_b = restore_params(workdir)
  assert step_a == step_b == LAST
  jax.tree.map(np.testing.assert_array_equal, final_a, final_b)   # the same run, bit for bit


def test_when_no_checkpoint_restores_nothing_is_moved_and_every_cause_is_named(
    smoke_cache, reference, tmp_path):
  workdir = str(tmp_path / "all_damaged")
  shutil.copytree(reference, workdir)
  for step in (LAST - 2, LAST - 1, LAST):
    _damage(workdir, step, "truncate")
  process = trainer(smoke_cache, workdir, *STEPS)
  output, _ = process.communicate(timeout=600)
  assert process.returncode == 1, output
  assert f"no checkpoint in {workdir}/checkpoints can be restored" in output
  for step in (LAST - 2, LAST - 1, LAST):
    assert f"step {step}: ValueError: OUT_OF_RANGE" in output
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints")), key=int) == [
      str(LAST - 2), str(LAST - 1), str(LAST)]
  assert not os.path.exists(os.path.join(workdir, checkpointing.DAMAGED_DIRNAME))
  assert "step 1/" not in output, "must not start afresh over a run it cannot read"


def _free_port():
  import socket
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


# Runs whose result must not depend on the slice: a global batch every device count here divides,
# and BatchNorm statistics over the global batch (per-device statistics would change with it).
SLICE = ["--config.num_train_steps=6", "--config.checkpoint_every_steps=3",
         "--config.eval_every_steps=100", "--config.batch_size=8", "--config.eval.batch_size=8",
         "--config.model.sync_batch_norm=True"]


def start(smoke_cache, workdir, devices, *extra, processes=1):
  """`main --mode=train` on the smoke config with `devices` CPU devices per process; with
  processes > 1, that many processes joined by jax.distributed (gloo). Returns the Popens."""
  env = dict(os.environ, CMPL_JAX_CACHE=smoke_cache, PYTHONUNBUFFERED="1",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  command = [sys.executable, "-m", "cmpl_jax.main", "--config=configs/demo.py:cmpl,smoke",
             f"--workdir={workdir}", "--config.log_every_steps=1", *extra]
  ranks = [[]]
  if processes > 1:
    port = _free_port()
    ranks = [[f"--coordinator_address=localhost:{port}", f"--num_processes={processes}",
              f"--process_id={i}"] for i in range(processes)]
  return [subprocess.Popen(command + rank, cwd=REPO, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True) for rank in ranks]


def finish(*runs):
  """Waits for every process of every run; returns each run's process-0 output."""
  outputs = [[p.communicate(timeout=600)[0] for p in run] for run in runs]
  for run, output in zip(runs, outputs):
    assert [p.returncode for p in run] == [0] * len(run), "\n".join(output)
  return [output[0] for output in outputs]


def resume_copy(workdir, name, step):
  """A copy of a finished run with its checkpoints after `step` removed: that run restarted at
  `step` (what a preemption after that save leaves)."""
  copy = os.path.join(os.path.dirname(workdir), name)
  shutil.copytree(workdir, copy)
  for saved in os.listdir(os.path.join(copy, "checkpoints")):
    if int(saved) > step:
      shutil.rmtree(os.path.join(copy, "checkpoints", saved))
  return copy


def losses(output):
  return {int(line.split()[1].split("/")[0]): line.split("| loss ")[1].split(" |")[0]
          for line in output.splitlines() if line.startswith("step ")}


def relative_distance(a, b):
  """||a - b|| / ||b|| over all parameters (one L2 norm of everything)."""
  diff = sum(float(np.sum((np.float64(x) - y) ** 2)) for x, y in
             zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  return np.sqrt(diff / sum(float(np.sum(np.float64(y) ** 2)) for y in jax.tree.leaves(b)))


def test_resume_on_another_number_of_devices_continues_the_same_run(smoke_cache, tmp_path):
  """8 devices, 4 devices, 8 -> 4 and 4 -> 8 (restarted after step 3) end within 1%; 8 -> 8
  ends bit for bit where the 8-device run did."""
  eight, four = str(tmp_path / "8"), str(tmp_path / "4")
  out_8, out_4 = finish(start(smoke_cache, eight, 8, *SLICE), start(smoke_cache, four, 4, *SLICE))
  to_4, to_8 = resume_copy(eight, "8to4", 3), resume_copy(four, "4to8", 3)
  same = resume_copy(eight, "8to8", 3)
  too_many = resume_copy(eight, "8to3", 3)
  refused = start(smoke_cache, too_many, 3, *SLICE)[0]
  out_8to4, out_4to8, _ = finish(start(smoke_cache, to_4, 4, *SLICE),
                                 start(smoke_cache, to_8, 8, *SLICE),
                                 start(smoke_cache, same, 8, *SLICE))
  for output, devices, workdir in ((out_8to4, 4, to_4), (out_4to8, 8, to_8)):
    assert f"resumed from {workdir}/checkpoints/3" in output
    assert f"{devices} devices, steps 3 -> 6" in output
    assert "step 3/6" not in output and "step 4/6" in output
  # The data stream continues at step 4: the resumed runs' losses are the uninterrupted ones'.
  for resumed, original in ((out_8to4, out_8), (out_4to8, out_4)):
    for step in (4, 5, 6):
      assert abs(float(losses(resumed)[step]) - float(losses(original)[step])) <= 2e-3, (
          step, losses(resumed), losses(original))

  output, _ = refused.communicate(timeout=600)
  assert refused.returncode == 2, output
  assert "config.batch_size=8: must be a positive multiple of the 3 devices" in output
  assert "step 4/6" not in output

  params = {name: restore_params(workdir) for name, workdir in
            (("8", eight), ("4", four), ("8to4", to_4), ("4to8", to_8), ("8to8", same))}
  assert {step for step, _ in params.values()} == {6}
  _, start_3 = restore_params(resume_copy(eight, "8_at_3", 3))
  final = {name: p for name, (_, p) in params.items()}
  jax.tree.map(np.testing.assert_array_equal, final["8"], final["8to8"])   # same slice: bit for bit
  update = relative_distance(final["8"], start_3)   # how far steps 4-6 moved the parameters
  for a, b in (("8", "4"), ("8to4", "8"), ("4to8", "4"), ("8to4", "4to8")):
    gap = relative_distance(final[a], final[b])
    print(f"relative L2 distance {a} vs {b}: {gap:.2e} (steps 4-6 moved the parameters by "
          f"{update:.2e})")
    assert gap < 0.01, (a, b, gap)
    # ... and small against what three steps change, so a stream that restarted elsewhere or a
    # device-dependent random draw would not pass.
    assert gap < 0.1 * update, (a, b, gap, update)


def test_two_processes_with_gloo_match_one_process_and_resume_on_either(smoke_cache, tmp_path):
  """2 processes x 2 CPU devices (jax.distributed + gloo) == 1 process x 4 devices, and a run
  restarted after step 3 on the other layout (2 -> 1 and 1 -> 2 processes) ends the same."""
  # All three processes at once: each mostly compiles, single-threaded, so they overlap on 2 cores.
  single, multi = str(tmp_path / "single"), str(tmp_path / "multi")
  multi_run = start(smoke_cache, multi, 2, *SLICE, processes=2)
  output_single, = finish(start(smoke_cache, single, 4, *SLICE))
  outputs = [p.communicate(timeout=600)[0] for p in multi_run]
  assert [p.returncode for p in multi_run] == [0, 0], outputs
  assert "4 devices" in outputs[0] and "step 6/6" in outputs[0]
  assert "step 1/6" not in outputs[1], "only process 0 reports"
  events = [n for n in os.listdir(multi) if n.startswith("events.out.tfevents")]
  assert len(events) == 1, f"one TensorBoard writer expected, found {events}"
  assert losses(outputs[0]) == losses(output_single) and len(losses(output_single)) == 6

  to_one, to_two = resume_copy(multi, "2to1", 3), resume_copy(single, "1to2", 3)
  out_to_one, out_to_two = finish(start(smoke_cache, to_one, 4, *SLICE),
                                  start(smoke_cache, to_two, 2, *SLICE, processes=2))
  for output, workdir in ((out_to_one, to_one), (out_to_two, to_two)):
    assert f"resumed from {workdir}/checkpoints/3" in output and "step 4/6" in output
    assert {s: v for s, v in losses(output).items()} == {
        s: v for s, v in losses(output_single).items() if s > 3}
  # Checkpoints written by two processes restore in one, and every run ends the same.
  _, reference_params = restore_params(single)
  for workdir in (multi, to_one, to_two):
    step, params = restore_params(workdir)
    assert step == 6
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 reference_params, params)
