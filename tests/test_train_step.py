"""The pmapped train step: 8 devices equal 1 device on the same global batch; all methods run."""
import functools

import jax
import numpy as np
import pytest

from cmpl_jax import benchmark, methods, train
from configs import default


def tiny_config(method="cmpl"):
  config = default.get_config()
  config.method = method
  for name, frames in (("primary", 4), ("auxiliary", 8)):
    config.model[name].name = "r3d_10"
    config.model[name].width_multiplier = 1 / 16
    config.model[name].num_frames = frames
    # Each clip's dropout mask is keyed by its stream position, not by the device it runs on.
    config.model[name].dropout_rate = 0.5
  config.model.conv_impl = "native"   # quicker to compile; sum-of-2D is checked in test_models
  config.data.crop_size = 16
  config.batch_size = 8
  config.mu = 2
  config.tau = 0.8
  config.optim.learning_rate = 0.5
  config.optim.warmup_steps = 0
  config.num_train_steps = 10
  return config


def random_batch(config, num_devices, seed=0):
  """A global batch reshaped to [num_devices, per_device, ...], as the pipeline delivers."""
  return benchmark.random_batch(config, num_devices, num_classes=5, seed=seed)


def run_one_step(config, num_devices, batch):
  models = train.create_models(config, num_classes=5)
  tx = train.create_optimizer(config)
  state = train.create_train_state(config, models, jax.random.key(0), tx)
  # A confident head (the default init is near-uniform) so that some pseudo-labels pass tau.
  state = state.replace(params=jax.tree_util.tree_map_with_path(
      lambda path, p: p * 100 if "head" in jax.tree_util.keystr(path) else p, state.params))
  devices = jax.local_devices()[:num_devices]
  step = jax.pmap(functools.partial(train.train_step, models=models, tx=tx, config=config),
                  axis_name=train.AXIS_NAME, devices=devices, in_axes=(0, 0, None))
  replicated = jax.tree.map(lambda x: np.stack([x] * num_devices), state)
  new_state, metrics = step(replicated, batch, jax.random.key(1))
  return jax.tree.map(lambda x: np.asarray(x[0]), new_state), jax.tree.map(
      lambda x: np.asarray(x[0]), metrics), state


@pytest.mark.slow
def test_eight_devices_equal_one_device_on_the_same_global_batch():
  config = tiny_config("cmpl")
  global_batch = random_batch(config, 1)
  state8, metrics8, initial = run_one_step(
      config, 8, jax.tree.map(lambda x: x.reshape(8, -1, *x.shape[2:]), global_batch))
  state1, metrics1, _ = run_one_step(config, 1, global_batch)

  for key in ("loss", "primary/sup_loss", "auxiliary/unsup_loss", "primary/mask_rate",
              "agreement"):
    v8 = metrics8[key][0] / metrics8[key][1]
    v1 = metrics1[key][0] / metrics1[key][1]
    np.testing.assert_allclose(v8, v1, rtol=2e-4, atol=1e-6, err_msg=key)
  assert 0 < metrics1["primary/mask_rate"][0] / metrics1["primary/mask_rate"][1] < 1
  moved = 0.0
  for (path, p8), p1, p0 in zip(jax.tree_util.tree_leaves_with_path(state8.params),
                                jax.tree.leaves(state1.params), jax.tree.leaves(initial.params)):
    # Reduction order (per-device sums, synchronised BatchNorm) moves single weights by a few
    # 1e-6 after one step at lr 0.5; the inputs themselves are identical (checked below).
    np.testing.assert_allclose(p8, p1, rtol=1e-4, atol=1e-5, err_msg=jax.tree_util.keystr(path))
    moved = max(moved, float(np.max(np.abs(p1 - np.asarray(p0)))))
  assert moved > 1e-3   # the step really changed the parameters
  for s8, s1 in zip(jax.tree.leaves(state8.batch_stats), jax.tree.leaves(state1.batch_stats)):
    np.testing.assert_allclose(s8, s1, rtol=1e-4, atol=1e-5)
  assert int(state8.step) == int(state1.step) == 1
  # The views the step made are bit-identical on 8 and on 1 device: keyed by stream position.
  inputs = lambda b, k: train.model_inputs(b, k, config)
  views1 = jax.pmap(inputs, in_axes=(0, None), devices=jax.local_devices()[:1])(
      global_batch, jax.random.key(1))
  views8 = jax.pmap(inputs, in_axes=(0, None))(
      jax.tree.map(lambda x: x.reshape(8, -1, *x.shape[2:]), global_batch), jax.random.key(1))
  for (path, v1), v8 in zip(jax.tree_util.tree_leaves_with_path(views1), jax.tree.leaves(views8)):
    np.testing.assert_array_equal(np.asarray(v8).reshape(np.shape(v1)), v1,
                                  err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("method,expected_models", [
    ("supervised", ("primary", "auxiliary")), ("fixmatch", ("primary",))])
def test_baselines_run_from_the_same_step(method, expected_models):
  config = tiny_config(method)
  assert methods.model_names(config) == expected_models
  state, metrics, _ = run_one_step(config, 2, random_batch(config, 2))
  assert set(state.params) == set(expected_models)
  assert np.isfinite(metrics["loss"][0])
  assert ("primary/unsup_loss" in metrics) == (method == "fixmatch")


def test_cpu_compiler_options_keep_the_step_the_same(monkeypatch):
  """train.pmap compiles with XLA:CPU library-fusion options (a speed setting only): the step's
  results equal those of plain jax.pmap, and XLA_FLAGS that set the option themselves win."""
  config = tiny_config()
  config.model.conv_impl = "hybrid"
  batch = random_batch(config, 1)
  models = train.create_models(config, num_classes=5)
  tx = train.create_optimizer(config)
  state = jax.tree.map(lambda x: np.stack([x]),
                       train.create_train_state(config, models, jax.random.key(0), tx))
  fn = functools.partial(train.train_step, models=models, tx=tx, config=config)
  kwargs = dict(axis_name=train.AXIS_NAME, devices=jax.local_devices()[:1], in_axes=(0, 0, None))
  assert train.compiler_options() is not None   # tests run on CPU without that XLA flag
  plain = jax.pmap(fn, **kwargs)(state, batch, jax.random.key(1))
  tuned = train.pmap(fn, **kwargs)(state, batch, jax.random.key(1))
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(tuned)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")
  assert train.compiler_options() is None


def test_teacher_statistics_follow_the_global_batch_and_survive_a_checkpoint(tmp_path):
  """With the pseudo-label options on, the step updates each teacher's running statistics from
  the global batch (2 devices = 1 device; means, not per-device sums), they round-trip through
  a checkpoint, and a checkpoint without them is refused for training with a reason, not taken
  for a damaged one."""
  from cmpl_jax import checkpointing
  config = tiny_config("fixmatch")
  config.distribution_alignment = config.class_thresholds = True
  config.teacher_stats_momentum = 0.5
  global_batch = random_batch(config, 1)
  state2, metrics2, initial = run_one_step(
      config, 2, jax.tree.map(lambda x: x.reshape(2, -1, *x.shape[2:]), global_batch))
  state1, _, _ = run_one_step(config, 1, global_batch)
  assert set(state1.teacher_stats) == {"primary"}
  for a, b in zip(jax.tree.leaves(state2.teacher_stats), jax.tree.leaves(state1.teacher_stats)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  new, old = state1.teacher_stats["primary"], initial.teacher_stats["primary"]
  # new = m * old + (1 - m) * batch, where the batch's shares are those of one distribution.
  batch = {k: (new[k] - 0.5 * np.asarray(old[k])) / 0.5 for k in new}
  np.testing.assert_allclose(batch["prob_mean_K"].sum(), 1.0, rtol=1e-5)
  np.testing.assert_allclose(batch["confident_K"].sum() + batch["unconfident"], 1.0, rtol=1e-5)
  assert 0 < batch["unconfident"] < 1   # some weak views clear tau=0.8, some do not
  assert "primary/threshold_mean" in metrics2

  meta = checkpointing.describe(config, [str(k) for k in range(5)])
  saver = checkpointing.Checkpoints(str(tmp_path))
  saver.save(state1, meta)
  saver.close()
  reader = checkpointing.Checkpoints(str(tmp_path), read_only=True)
  restored = reader.restore_state(initial, expected_meta=meta)
  assert (jax.tree.structure(restored.teacher_stats)
          == jax.tree.structure(state1.teacher_stats)), restored.teacher_stats
  for a, b in zip(jax.tree.leaves(restored.teacher_stats), jax.tree.leaves(state1.teacher_stats)):
    np.testing.assert_array_equal(a, b)
  plain = tiny_config("fixmatch")
  models = train.create_models(plain, num_classes=5)
  plain_state = train.create_train_state(plain, models, jax.random.key(0),
                                         train.create_optimizer(plain))
  assert plain_state.teacher_stats == {}
  with pytest.raises(ValueError, match="teacher statistics.*no model"):
    reader.restore_state(plain_state, expected_meta=checkpointing.describe(
        plain, [str(k) for k in range(5)]))
  # Evaluation needs only the weights: the options do not matter there.
  reader.restore_model({"params": plain_state.params, "batch_stats": plain_state.batch_stats},
                       expected_meta=checkpointing.describe(plain, [str(k) for k in range(5)]))


def test_weight_average_follows_its_ramp_and_is_what_the_checkpoint_serves(tmp_path):
  """With config.ema_decay, each step folds the new weights and BatchNorm statistics into their
  moving average with decay min(ema_decay, (1 + n) / (10 + n)) after n steps; the checkpoint's
  model item (what evaluation and prediction read) is that average, while resuming gets back
  the trained weights and the average apart; resuming with the average off is refused."""
  from cmpl_jax import checkpointing
  config = tiny_config("supervised")   # both models (the auxiliary trains supervised)
  config.ema_decay = 0.5
  models = train.create_models(config, num_classes=5)
  tx = train.create_optimizer(config)
  initial = train.create_train_state(config, models, jax.random.key(0), tx)
  step = jax.pmap(functools.partial(train.train_step, models=models, tx=tx, config=config),
                  axis_name=train.AXIS_NAME, devices=jax.local_devices()[:1], in_axes=(0, 0, None))
  states = [jax.tree.map(lambda x: np.asarray(x)[None], initial)]
  for seed in range(2):
    states.append(step(states[-1], random_batch(config, 1, seed=seed), jax.random.key(1))[0])
  states = [jax.tree.map(lambda x: np.asarray(x[0]), s) for s in states]
  assert set(states[2].ema["params"]) == {"primary", "auxiliary"}
  expected = {"params": initial.params, "batch_stats": initial.batch_stats}
  for n, decay in ((0, 0.1), (1, 2 / 11)):
    trained = {"params": states[n + 1].params, "batch_stats": states[n + 1].batch_stats}
    expected = jax.tree.map(lambda e, w, d=decay: d * np.asarray(e) + (1 - d) * w,
                            expected, trained)
    leaves = jax.tree_util.tree_leaves_with_path(states[n + 1].ema)
    assert len(leaves) == len(jax.tree.leaves(expected)) > 0
    for (path, got), want, w in zip(leaves, jax.tree.leaves(expected), jax.tree.leaves(trained)):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path))
  moved = [np.abs(a - b).max() for a, b in zip(jax.tree.leaves(states[2].ema["params"]),
                                               jax.tree.leaves(states[2].params))]
  assert max(moved) > 1e-3   # the average is not the trained weights
  assert train.eval_variables(states[2]) == (states[2].ema["params"], states[2].ema["batch_stats"])

  meta = checkpointing.describe(config, [str(k) for k in range(5)])
  assert meta["ema_decay"] == 0.5
  saver = checkpointing.Checkpoints(str(tmp_path))
  saver.save(states[2], meta)
  saver.close()
  reader = checkpointing.Checkpoints(str(tmp_path), read_only=True)
  _, served = reader.restore_arrays()
  for a, b in zip(jax.tree.leaves(served), jax.tree.leaves(states[2].ema)):
    np.testing.assert_array_equal(a, b)
  assert jax.tree.structure(served) == jax.tree.structure(states[2].ema)
  restored = reader.restore_state(initial, expected_meta=meta)
  for got, want in ((restored.params, states[2].params), (restored.ema, states[2].ema),
                    (restored.batch_stats, states[2].batch_stats)):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(a, b)
  assert int(restored.step) == 2
  plain = tiny_config("supervised")
  plain_state = train.create_train_state(plain, models, jax.random.key(0), tx)
  assert plain_state.ema == {}
  with pytest.raises(ValueError, match="config.ema_decay: checkpoint 0.5, config 0.0"):
    reader.restore_state(plain_state, expected_meta=checkpointing.describe(
        plain, [str(k) for k in range(5)]))
