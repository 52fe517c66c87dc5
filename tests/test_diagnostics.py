"""Per-class pseudo-label diagnostics, complementarity, the per-clip dropout keys, and the
comparison tables: each against counts made by hand."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from clu import metric_writers

from cmpl_jax import compare, diagnostics, evaluate, ssl, train
from cmpl_jax import workdir as workdir_lib
from cmpl_jax.models import resnet3d
from configs import default

K = 3
# Six unlabeled clips; logits put the teacher's probability mass where the comments say.
CONFIDENT, UNSURE = 10.0, 0.0


def _logits(rows):
  """rows: (class, confident?) per clip -> [B, K] logits."""
  out = np.zeros((len(rows), K), np.float32)
  for i, (k, sure) in enumerate(rows):
    out[i, k] = CONFIDENT if sure else UNSURE + 0.1   # unsure: nearly uniform, argmax k
  return jnp.asarray(out)


TRUE = jnp.asarray([0, 0, 1, 1, 2, -1])   # the last clip has no hidden label
F_ROWS = [(0, True), (1, True), (1, True), (1, False), (2, True), (0, True)]
A_ROWS = [(0, True), (1, True), (1, False), (1, True), (0, True), (1, True)]


def _cmpl_metrics():
  logits = {"primary": ssl.Logits(jnp.zeros((2, K)), _logits(F_ROWS), jnp.zeros((6, K))),
            "auxiliary": ssl.Logits(jnp.zeros((2, K)), _logits(A_ROWS), jnp.zeros((6, K)))}
  _, metrics = ssl.cmpl(logits, jnp.asarray([0, 1]), TRUE, tau=0.9, lambda_u=1.0)
  return {k: (np.asarray(t), np.asarray(c)) for k, (t, c) in metrics.items()}


def test_per_class_precision_coverage_and_complementarity_match_hand_counts():
  m = _cmpl_metrics()
  # F confident on clips 0,1,2,4,5; right on 0 (class 0), 2 (class 1), 4 (class 2); clip 5 has
  # no hidden label, so it counts in the mask rate only.
  np.testing.assert_allclose(m["primary/mask_rate"], (5, 6))
  np.testing.assert_allclose(m["primary/pseudo_label_acc"], (3, 4))
  # precision: F labels class 0 on clip 0 (right), class 1 on clips 1 (wrong), 2 (right),
  # class 2 on clip 4 (right).
  np.testing.assert_allclose(m["per_class/primary/precision"][0], [1, 1, 1])
  np.testing.assert_allclose(m["per_class/primary/precision"][1], [1, 2, 1])
  # coverage: true class 0 = clips 0,1 (one right), class 1 = clips 2,3 (one), class 2 = clip 4.
  np.testing.assert_allclose(m["per_class/primary/coverage"][0], [1, 1, 1])
  np.testing.assert_allclose(m["per_class/primary/coverage"][1], [2, 2, 1])
  # A confident on 0,1,3,4,5; right on 0 (class 0) and 3 (class 1); labels class 0 on clips
  # 0, 4 and class 1 on clips 1, 3 (and 5, without a hidden label).
  np.testing.assert_allclose(m["per_class/auxiliary/precision"][0], [1, 1, 0])
  np.testing.assert_allclose(m["per_class/auxiliary/precision"][1], [2, 2, 0])
  np.testing.assert_allclose(m["per_class/auxiliary/coverage"][0], [1, 1, 0])
  np.testing.assert_allclose(m["per_class/auxiliary/coverage"][1], [2, 2, 1])
  # Each student receives what its sibling is confident about.
  np.testing.assert_allclose(m["primary/received_rate"], (5, 6))   # from A
  np.testing.assert_allclose(m["auxiliary/received_rate"], (5, 6))  # from F
  # Of the 5 clips with a hidden label: both right on 0; only F on 2, 4; only A on 3; neither 1.
  for name, count in (("both", 1), ("only_primary", 2), ("only_auxiliary", 1), ("neither", 1)):
    np.testing.assert_allclose(m[f"complementarity/{name}"], (count, 5), err_msg=name)


def test_without_hidden_labels_the_label_metrics_count_nothing():
  logits = {"primary": ssl.Logits(jnp.zeros((2, K)), _logits(F_ROWS), jnp.zeros((6, K)))}
  _, metrics = ssl.fixmatch(logits, jnp.asarray([0, 1]), jnp.full((6,), -1), tau=0.9,
                            lambda_u=1.0)
  assert float(metrics["primary/mask_rate"][1]) == 6
  for name in ("primary/pseudo_label_acc", "per_class/primary/precision",
               "per_class/primary/coverage"):
    assert not np.any(np.asarray(metrics[name][1])), name
  interval = diagnostics.PerClassSums(1)
  interval.add({k: jax.tree.map(lambda x: x[None], v) for k, v in metrics.items()
                if k.startswith(diagnostics.PREFIX)})
  taken = interval.take(5)
  assert np.all(np.isnan(taken["primary"]["precision"]))   # absent, not 0
  assert (taken["from_step"], taken["to_step"]) == (1, 5)


def test_record_writes_results_history_pngs_and_tensorboard_images(tmp_path):
  classes = ["a", "b", "c"]
  workdir = str(tmp_path)
  writer = metric_writers.create_default_writer(workdir, asynchronous=False)
  sums = diagnostics.PerClassSums(1)
  per_class = {k: jax.tree.map(lambda x: x[None], v) for k, v in _cmpl_metrics().items()
               if k.startswith(diagnostics.PREFIX)}
  for step in (1, 2):
    sums.add(per_class)
    results = {"per_class": {"primary": {"a": 1.0, "b": 0.5, "c": None},
                             "auxiliary": {"a": 0.0, "b": 1.0, "c": 0.5}}}
    diagnostics.record(workdir, writer, 10 * step, results, sums.take(10 * step), classes)
  writer.flush()
  assert results["pseudo_labels"]["primary"]["precision"] == {"a": 1.0, "b": 0.5, "c": 1.0}
  assert results["pseudo_labels"]["auxiliary"]["precision"]["c"] is None   # never predicted
  assert results["pseudo_labels"]["from_step"] == 11
  with open(os.path.join(workdir, diagnostics.HISTORY_FILENAME)) as f:
    history = json.load(f)
  assert [e["step"] for e in history["evaluations"]] == [10, 20]
  figures = sorted(os.listdir(os.path.join(workdir, diagnostics.FIGURES_DIRNAME)))
  assert figures == [f"{n}_{s:07d}.png" for n in ("per_class_accuracy", "pseudo_labels")
                     for s in (10, 20)]
  images = workdir_lib.read_images(workdir)
  assert sorted(images) == ["diagnostics/per_class_accuracy", "diagnostics/pseudo_labels"]
  step, image = images["diagnostics/pseudo_labels"][-1]
  assert step == 20 and image.ndim == 3 and image.shape[0] > 100 and image.std() > 10


def _dropout_model():
  model = resnet3d.create_model("r3d_10", K, width_multiplier=1 / 16, dropout_rate=0.5,
                                conv_impl="native")
  variables = resnet3d.init_variables(model, jax.random.key(0), 2, 16)
  return model, variables


def test_keyed_dropout_follows_the_clip_not_its_neighbours():
  model, variables = _dropout_model()
  clips = jax.random.uniform(jax.random.key(1), (4, 2, 16, 16, 3))
  keys = jax.random.split(jax.random.key(2), 4)
  run = lambda c, k, on=None: model.apply(variables, c, train=True, dropout_keys_B=k,
                                          dropout_B=on, mutable=["batch_stats"])[0]
  out = run(clips, keys)
  order = jnp.asarray([2, 0, 3, 1])
  # The same clips and keys in another order: BatchNorm sees the same batch, each clip keeps
  # its mask.
  np.testing.assert_allclose(run(clips[order], keys[order]), out[order], rtol=1e-5, atol=1e-6)
  # Rows with dropout off equal a model without dropout; the others differ from it.
  plain = resnet3d.create_model("r3d_10", K, width_multiplier=1 / 16, dropout_rate=0.0,
                                conv_impl="native")
  reference = plain.apply(variables, clips, train=True, mutable=["batch_stats"])[0]
  mixed = run(clips, keys, jnp.asarray([False, True, False, True]))
  np.testing.assert_allclose(mixed[0::2], reference[0::2], rtol=1e-5, atol=1e-6)
  assert np.all(np.abs(np.asarray(mixed[1::2] - reference[1::2])) > 1e-4)
  with pytest.raises(ValueError, match="dropout_keys_B"):
    model.apply(variables, clips, train=True, dropout_B=jnp.ones(4, bool),
                mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})


@pytest.mark.parametrize("teacher_dropout", [False, True])
def test_teacher_dropout_switches_the_weak_pass_only(teacher_dropout):
  config = default.get_config()
  config.teacher_dropout = teacher_dropout
  raw = {s: {"position": jnp.arange(3)} for s in ("labeled", "unlabeled")}
  clips = jnp.zeros((3, 1))
  batch = {"labeled": {"primary": clips},
           "unlabeled": {"weak": {"primary": clips}, "strong": {"primary": clips}}}
  parts = train._forward_parts(raw, batch, 0, "primary", jax.random.key(0), config)  # pylint: disable=protected-access
  assert [bool(p.dropout_B.all()) for p in parts] == [True, teacher_dropout, True]
  assert [bool(p.dropout_B.any()) for p in parts] == [True, teacher_dropout, True]
  # Weak and strong views of one clip get different masks.
  assert not np.array_equal(jax.random.key_data(parts[1].dropout_keys_B),
                            jax.random.key_data(parts[2].dropout_keys_B))


def _fake_run(directory, run, top1, steps=8):
  """A run's workdir as main.py leaves it, written by evaluate.write_results."""
  results = {"step": steps, "split": "test", "primary": {"top1": top1, "top5": 1.0}}
  if run.method == "cmpl":
    results["auxiliary"] = {"top1": top1 - 0.1, "top5": 1.0}
    results["average"] = {"top1": top1 + 0.05, "top5": 1.0}
  os.makedirs(os.path.join(directory, run.name))
  evaluate.write_results(os.path.join(directory, run.name), results)


def test_comparison_tables_from_finished_runs(tmp_path):
  runs = compare.planned_runs(["supervised", "cmpl"], ["10", "30.0"], 2)
  assert runs[:2] == [compare.Run("supervised", "10", 0), compare.Run("cmpl", "10", 0)]
  values = {("supervised", "10"): (0.2, 0.4), ("supervised", "30"): (0.5, 0.7),
            ("cmpl", "10"): (0.3, 0.5)}   # cmpl 30% seed 0 finished, seed 1 still at step 4
  for run in runs:
    if (run.method, run.percent) in values:
      _fake_run(str(tmp_path), run, values[run.method, run.percent][run.seed])
  _fake_run(str(tmp_path), compare.Run("cmpl", "30", 0), 0.9)
  _fake_run(str(tmp_path), compare.Run("cmpl", "30", 1), 0.1, steps=4)
  content = compare.tabulate(str(tmp_path), runs, num_train_steps=8)
  summary = content["summary"]
  assert summary["supervised"]["10"]["mean"] == pytest.approx(0.3)
  assert summary["supervised"]["10"]["std"] == pytest.approx(np.std([0.2, 0.4], ddof=1))
  assert summary["cmpl"]["30"] == {"mean": pytest.approx(0.9), "std": None, "n": 1}
  assert len(content["runs"]) == 7
  cmpl_row = [r for r in content["runs"] if r["method"] == "cmpl"][0]
  assert cmpl_row["auxiliary_top1"] == pytest.approx(0.2) and cmpl_row["label_percent"] == 10.0
  with open(tmp_path / compare.RESULTS_JSON) as f:
    assert json.load(f) == json.loads(json.dumps(content))
  table = (tmp_path / compare.RESULTS_MD).read_text()
  assert "| CMPL | 40.0 ± 14.1 (n=2) | 90.0 (n=1) |" in table
  assert "| CMPL, auxiliary | 30.0 ± 14.1 (n=2) | 80.0 (n=1) |" in table
  assert "Not finished: cmpl_30pct_seed1" in table
  assert (tmp_path / compare.RESULTS_PNG).read_bytes()[:4] == b"\x89PNG"


def test_comparison_arguments_are_checked():
  runs = compare.planned_runs(["cmpl"], ["10"], 1)
  assert compare.parse_only(["cmpl:10.0:0"], runs) == runs
  for bad, message in ((["cmpl:10"], "METHOD:PERCENT:SEED"), (["cmpl:30:0"], "not in this"),
                       (["cmpl:10:x"], "integer")):
    with pytest.raises(Exception, match=message):
      compare.parse_only(bad, runs)
  with pytest.raises(Exception, match="not one of"):
    compare.planned_runs(["mixmatch"], ["10"], 1)
  with pytest.raises(Exception, match=r"\(0, 100\]"):
    compare.planned_runs(["cmpl"], ["150"], 1)
  assert compare._forwarded_overrides(  # pylint: disable=protected-access
      ["--seeds=2", "--config.a=1", "--config.b", "x y"]) == ["--config.a=1", "--config.b=x y"]


def test_compare_collect_command_tabulates_without_training(tmp_path):
  """The CLI as a user runs it: flags, config file and its overrides, then --collect."""
  _fake_run(str(tmp_path), compare.Run("supervised", "50", 0), 0.25, steps=6)
  _fake_run(str(tmp_path), compare.Run("cmpl", "50", 0), 0.75, steps=6)
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run(
      [sys.executable, "-m", "cmpl_jax.compare", "--config=configs/demo.py:cmpl,smoke",
       "--methods=supervised,cmpl", "--label_percents=50", "--seeds=1", "--collect",
       f"--workdir={tmp_path}", "--config.num_train_steps=6"],
      cwd=repo, capture_output=True, text=True, timeout=300, check=True).stdout
  assert "2 of 2 runs finished" in out and "| CMPL | 75.0 (n=1) |" in out
  assert "6 steps; 4 labeled clips per step" in (tmp_path / compare.RESULTS_MD).read_text()
  # A finished run is one at num_train_steps: asked for 8 steps, neither counts.
  out = subprocess.run(
      [sys.executable, "-m", "cmpl_jax.compare", "--config=configs/demo.py:cmpl,smoke",
       "--methods=supervised,cmpl", "--label_percents=50", "--seeds=1", "--collect",
       f"--workdir={tmp_path}", "--config.num_train_steps=8"],
      cwd=repo, capture_output=True, text=True, timeout=300, check=True).stdout
  assert "0 of 2 runs finished" in out
