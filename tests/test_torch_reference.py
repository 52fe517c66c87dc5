"""benchmarks/torch_reference.py runs the same CMPL step as ours: the same models (parameter
counts of every benchmark preset), the same objective and SGD update from the same weights on
the same views, and the benchmark JSON keys of ours."""
import functools
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import traverse_util

torch = pytest.importorskip("torch")

from cmpl_jax import benchmark, train  # noqa: E402
from cmpl_jax.models import resnet3d  # noqa: E402
from cmpl_jax.tools import import_torch  # noqa: E402
from configs import benchmark as presets  # noqa: E402
from configs import default  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import torch_reference  # noqa: E402  pylint: disable=wrong-import-position

FORMAT = {"slowonly_r50": "pytorchvideo_slow_r50", "r3d_18": "torchvision_r3d_18",
          "r3d_10": "torchvision_r3d_18"}


@pytest.mark.parametrize("preset", presets.PRESETS)
def test_every_preset_builds_the_same_models_in_both_frameworks(preset):
  config = presets.get_config(preset)
  for name in torch_reference.model_names(config):
    cfg = config.model[name]
    ours = resnet3d.create_model(cfg.name, 101, width_multiplier=cfg.width_multiplier)
    shapes = jax.eval_shape(functools.partial(resnet3d.init_variables, ours, num_frames=8,
                                              size=32), jax.random.key(0))
    theirs = torch_reference.create_model(cfg, 101)
    assert resnet3d.count_params(shapes["params"]) == sum(
        p.numel() for p in theirs.parameters()), (preset, name)


def _flax_variables(torch_model, flax_model, num_frames, size):
  """Our variables holding the torch model's weights (import_torch's key mapping, any width)."""
  template = jax.eval_shape(functools.partial(resnet3d.init_variables, flax_model,
                                              num_frames=num_frames, size=size),
                            jax.random.key(0))
  state = {k: v.detach().numpy().copy() for k, v in torch_model.state_dict().items()}
  fmt = import_torch.FORMATS[FORMAT[_name(flax_model)]]
  flat = {}
  for path, spec in traverse_util.flatten_dict(template).items():
    key, transform = import_torch._torch_key(fmt, path)  # pylint: disable=protected-access
    flat[path] = np.asarray(transform(state[key]), np.float32)
    assert flat[path].shape == spec.shape, (path, key)
  return traverse_util.unflatten_dict(flat)


def _name(flax_model):
  return next(n for n, a in resnet3d.ARCHITECTURES.items() if a == flax_model.architecture)


def _tiny_config():
  config = default.get_config()
  config.method = "cmpl"
  for name, width, frames, stride in (("primary", 1 / 8, 4, 4), ("auxiliary", 1 / 16, 8, 2)):
    config.model[name].update(name="r3d_10", width_multiplier=width, num_frames=frames,
                              frame_stride=stride, dropout_rate=0.0)
  config.model.conv_impl = "native"
  config.data.crop_size = 16
  config.batch_size, config.mu = 2, 2
  config.tau = 0.0              # every pseudo-label passes: both unlabeled terms are live
  config.optim.learning_rate, config.optim.warmup_steps = 1.0, 0
  config.num_train_steps = 10
  return config


def test_same_weights_and_views_give_the_same_loss_and_update():
  config = _tiny_config()
  models = train.create_models(config, 5)
  torch.manual_seed(0)
  torch_models = {n: torch_reference.create_model(config.model[n], 5).train() for n in models}
  variables = {n: _flax_variables(torch_models[n], models[n], config.model[n].num_frames,
                                  config.data.crop_size) for n in models}
  tx = train.create_optimizer(config)
  state = train.create_train_state(config, models, jax.random.key(0), tx,
                                   initial_variables=variables)
  batch = jax.tree.map(lambda x: x[0], benchmark.random_batch(config, 1, 5))
  rng = jax.random.key(3)
  step = jax.pmap(functools.partial(train.train_step, models=models, tx=tx, config=config),
                  axis_name=train.AXIS_NAME, devices=jax.local_devices()[:1],
                  in_axes=(0, 0, None))
  new_state, metrics = step(jax.tree.map(lambda x: np.stack([x]), state),
                            jax.tree.map(lambda x: np.stack([x]), batch), rng)
  ours_loss = float(metrics["loss"][0][0] / metrics["loss"][1][0])

  # The views our step made (same key derivation), handed to PyTorch as its loader would.
  views = train.model_inputs(batch, jax.random.fold_in(rng, train._VIEWS_SALT), config)  # pylint: disable=protected-access
  to_torch = lambda x: torch.from_numpy(np.asarray(  # noqa: E731  NTHWC -> NCTHW, normalised
      resnet3d.normalize(x)).transpose(0, 4, 1, 2, 3).copy())
  inputs = {n: [to_torch(views["labeled"][n]), to_torch(views["unlabeled"]["weak"][n]),
                to_torch(views["unlabeled"]["strong"][n])] for n in models}
  labels = torch.from_numpy(np.asarray(batch["labeled"]["label"]).astype(np.int64))
  opt = torch_reference.create_optimizer(torch_models, config)
  loss = torch_reference.loss_fn(torch_models, inputs, labels, config)
  loss.backward()
  opt.step()
  np.testing.assert_allclose(float(loss.detach()), ours_loss, rtol=1e-4)
  for name in models:
    updated = _flax_variables(torch_models[name], models[name], config.model[name].num_frames,
                              config.data.crop_size)
    ours = jax.tree.map(lambda x: np.asarray(x[0]), new_state.params[name])
    moved = 0.0
    for (path, want), got in zip(traverse_util.flatten_dict(updated["params"]).items(),
                                 jax.tree.leaves(ours)):
      np.testing.assert_allclose(got, want, rtol=1e-3, atol=2e-4, err_msg=f"{name} {path}")
    for got, before in zip(jax.tree.leaves(ours), jax.tree.leaves(state.params[name])):
      moved = max(moved, float(np.abs(got - np.asarray(before)).max()))
    assert moved > 1e-2   # the step really moved the weights that were compared


def test_reference_prints_the_benchmark_keys_of_ours():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  out = subprocess.run([sys.executable, "benchmarks/torch_reference.py",
                        "--config=configs/demo.py:cmpl,smoke", "--steps=2", "--warmup=1",
                        "--num_classes=3"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  figures = json.loads(out.stdout.strip().splitlines()[-1])
  required = {"clips_per_sec", "step_ms", "compile_s", "flops_per_step", "achieved_tflops",
              "peak_host_rss_mb", "peak_device_mb", "config"}
  assert required <= set(figures)
  assert set(figures["config"]) == {"frames_F", "frames_A", "size", "labeled", "mu", "dtype",
                                    "bn_batches", "devices", "backend"}
  assert figures["config"]["frames_F"] == 2 and figures["config"]["labeled"] == 4
  assert figures["flops_per_step"] > 0 and figures["memory_format"] in ("contiguous",
                                                                        "channels_last_3d")
