"""The model pair, its TrainState and optimizer, and the per-device train/eval steps.

Everything here is TensorFlow-free and pure: `train_step` and `eval_step` are per-device bodies
that only talk to other devices through `lax` collectives over `axis_name`, so they run under
`jax.pmap(..., axis_name='batch')` (what `loop.py` does) or equally under `jax.shard_map` over a
1-D mesh with that axis name.

A batch is the dict built by `cmpl_jax/data/pipeline.py` (per device): for each stream
'labeled' and 'unlabeled', a window of decoded frames per clip on a canvas,
  {'frames': uint8[B, U, H, W, 3], 'size': int32[B, 2], 'transposed': bool[B],
   'position': int32[B], 'label': int32[B]}
and `model_inputs` turns it into each model's views (cmpl_jax/views.py) first thing in the step:
  labeled: {model: [B_l, T_m, S, S, 3]}; unlabeled: {'weak': {model: ...}, 'strong': {model: ...}}.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Mapping, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax import lax

from cmpl_jax import methods, ssl, views
from cmpl_jax.data import sampling
from cmpl_jax.models import resnet3d

AXIS_NAME = "batch"


def local_device_sharding() -> jax.sharding.NamedSharding:
  """How `jax.pmap(..., axis_name=AXIS_NAME)` lays out its [local devices, ...] arrays.

  Inputs placed this way are what the pmapped step returns, so its first call compiles the
  same program as every later one. (flax's `replicate` uses another mesh axis name, which made
  jax compile the train step twice per start: ~20-25 s extra for the smoke config on 2 CPU
  cores, and it grows with the model.)
  """
  mesh = jax.sharding.Mesh(np.array(jax.local_devices()), (AXIS_NAME,))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(AXIS_NAME))


def replicate(tree: Any) -> Any:
  """One copy of every leaf per local device, stacked on a leading axis (for the pmapped step)."""
  sharding, count = local_device_sharding(), jax.local_device_count()
  return jax.tree.map(
      lambda x: jax.device_put(np.broadcast_to(np.asarray(x), (count,) + np.shape(x)), sharding),
      tree)


# XLA:CPU hands dots, reductions, elementwise ops and convolutions to its YNNPACK library by
# default. For these 3D-ResNets its convolutions (weight gradients above all) and elementwise
# fusions are slower than XLA's own; dots and reductions stay with the library (BENCHMARKS.md,
# "The tuning log"). An XLA_FLAGS that sets this option itself takes precedence.
_CPU_LIBRARY_FUSIONS = "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE"


def compiler_options() -> dict[str, str] | None:
  """XLA options for compiling the train and eval steps on this backend (None: defaults)."""
  if jax.default_backend() != "cpu" or "ynn_fusion_type" in os.environ.get("XLA_FLAGS", ""):
    return None
  return {"xla_cpu_experimental_ynn_fusion_type": _CPU_LIBRARY_FUSIONS}


def pmap(fun, **pmap_kwargs):
  """`jax.pmap(fun, **pmap_kwargs)` whose programs are compiled with `compiler_options()`.

  pmap takes no compiler options, so each new set of argument shapes is lowered and compiled
  ahead of time once and the executable reused (the train and eval steps see one shape each).
  """
  mapped = jax.pmap(fun, **pmap_kwargs)
  options = compiler_options()
  # Several processes: the ahead-of-time executable expects global shapes while each process
  # passes its local ones, so those runs keep XLA's defaults (README, "Models").
  if options is None or jax.process_count() > 1:
    return mapped
  executables = {}

  def call(*args):
    key = (jax.tree.structure(args),
           tuple((np.shape(x), str(getattr(x, "dtype", type(x)))) for x in jax.tree.leaves(args)))
    if key not in executables:
      executables[key] = mapped.lower(*args).compile(compiler_options=options)
    return executables[key](*args)

  call.lower = mapped.lower
  return call


DTYPES = ("float32", "bfloat16")


def compute_dtype(config: ml_collections.ConfigDict):
  """The compute dtype (config_checks allows DTYPES only)."""
  return jnp.dtype(config.dtype)


def create_models(config: ml_collections.ConfigDict, num_classes: int
                  ) -> dict[str, resnet3d.ResNet3D]:
  axis_name = AXIS_NAME if config.model.sync_batch_norm else None
  models = {}
  for name in methods.model_names(config):
    cfg = config.model[name]
    models[name] = resnet3d.create_model(
        cfg.name, num_classes, width_multiplier=cfg.width_multiplier,
        dropout_rate=cfg.dropout_rate, dtype=compute_dtype(config), bn_axis_name=axis_name,
        conv_impl=config.model.get("conv_impl", "auto"))
  return models


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: dict[str, Any]        # {model name: params}
  batch_stats: dict[str, Any]   # {model name: BatchNorm running statistics}
  opt_state: optax.OptState     # one optimizer over both models' params
  # {teacher model: ssl.TeacherStats}; empty unless a pseudo-label option needs them.
  teacher_stats: dict[str, Any] = flax.struct.field(default_factory=dict)
  # {'params', 'batch_stats'}: moving average of the weights, what evaluation uses; empty
  # unless config.ema_decay > 0.
  ema: dict[str, Any] = flax.struct.field(default_factory=dict)


def ema_decay(config: ml_collections.ConfigDict) -> float:
  return float(config.get("ema_decay", 0.0))


def eval_variables(state: TrainState) -> tuple[dict[str, Any], dict[str, Any]]:
  """(params, batch_stats) that evaluation uses: the moving average when one is kept."""
  if state.ema:
    return state.ema["params"], state.ema["batch_stats"]
  return state.params, state.batch_stats


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up to the peak, then cosine decay to 0 at num_train_steps."""
  warmup = min(config.optim.warmup_steps, max(config.num_train_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.optim.learning_rate, warmup_steps=warmup,
      decay_steps=max(config.num_train_steps, warmup + 1), end_value=0.0)


OPTIMIZERS = ("sgd", "adamw")


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """SGD (nesterov, the paper setting we assume) or AdamW, with weight decay on kernels only
  and optional gradient clipping."""
  # Decay only conv/dense kernels: decaying BatchNorm scales and biases hurts (PySlowFast's
  # default of zero weight decay for BN parameters).
  decay_mask = functools.partial(jax.tree.map, lambda p: p.ndim > 1)
  clip = config.optim.grad_clip_norm
  updates = {  # config_checks allows these names only
      "adamw": lambda: optax.adamw(learning_rate_schedule(config),
                                   weight_decay=config.optim.weight_decay, mask=decay_mask),
      "sgd": lambda: optax.chain(
          optax.add_decayed_weights(config.optim.weight_decay, mask=decay_mask),
          optax.sgd(learning_rate_schedule(config), momentum=config.optim.momentum,
                    nesterov=config.optim.nesterov)),
  }
  assert set(updates) == set(OPTIMIZERS)
  update = updates[config.optim.get("name", "sgd")]()
  return optax.chain(optax.clip_by_global_norm(clip) if clip > 0 else optax.identity(), update)


def init_model_variables(config: ml_collections.ConfigDict, models: Mapping[str, Any],
                         rng: jax.Array) -> dict[str, Any]:
  variables = {}
  for i, (name, model) in enumerate(models.items()):
    variables[name] = resnet3d.init_variables(
        model, jax.random.fold_in(rng, i), config.model[name].num_frames, config.data.crop_size)
  return variables


def create_train_state(config: ml_collections.ConfigDict, models: Mapping[str, Any],
                       rng: jax.Array, tx: optax.GradientTransformation,
                       initial_variables: Mapping[str, Any] | None = None) -> TrainState:
  variables = initial_variables or jax.jit(
      functools.partial(init_model_variables, config, models))(rng)
  params = {name: v["params"] for name, v in variables.items()}
  batch_stats = {name: v["batch_stats"] for name, v in variables.items()}
  num_classes = next(iter(models.values())).num_classes
  teacher_stats = {name: ssl.init_teacher_stats(num_classes)
                   for name in methods.teacher_stats_models(config)}
  ema = {"params": params, "batch_stats": batch_stats} if ema_decay(config) > 0 else {}
  return TrainState(step=jnp.asarray(0, jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params), teacher_stats=teacher_stats, ema=ema)


def teacher_options(config: ml_collections.ConfigDict) -> ssl.TeacherOptions:
  return ssl.TeacherOptions(
      distribution_alignment=bool(config.get("distribution_alignment", False)),
      class_thresholds=bool(config.get("class_thresholds", False)),
      momentum=float(config.get("teacher_stats_momentum", 0.99)))


# Salts of the view and dropout keys: the two must not share draws.
_VIEWS_SALT = 0x76696577
_DROPOUT_SALT = 0x64726f70


def stream_inputs(part: Mapping[str, Any], key: jax.Array, config: ml_collections.ConfigDict,
                  stream: int, kinds: tuple[str, ...]) -> dict[str, dict[str, jax.Array]]:
  """{kind: {model: float32[B, T_m, S, S, 3]}} for kinds 'weak' / 'strong' of one stream's
  part of a batch. Every model crops its own views; all come from the one decoded window."""
  cfg = views.ViewConfig.from_config(config)
  _, positions = sampling.union_offsets(sampling.frame_specs(config))
  keys_B = views.clip_keys(key, stream, part["position"])
  out = {kind: {} for kind in kinds}
  for i, (name, model_positions) in enumerate(positions.items()):
    frames = views.model_frames(part["frames"], model_positions)
    for j, kind in enumerate(kinds):
      keys = jax.vmap(lambda k, i=i, j=j: jax.random.fold_in(k, 2 * i + j))(keys_B)
      make = views.weak_views if kind == "weak" else views.strong_views
      out[kind][name] = make(keys, frames, part["size"], part["transposed"], cfg)
  return out


def model_inputs(batch: Mapping[str, Any], key: jax.Array, config: ml_collections.ConfigDict
                 ) -> dict[str, Any]:
  """Every model's views of the batch's clips, computed here on the device: a labeled clip's
  weak view per model; an unlabeled clip's weak and strong view per model."""
  labeled = stream_inputs(batch["labeled"], key, config, sampling.LABELED_STREAM, ("weak",))
  inputs = {"labeled": dict(labeled["weak"], label=batch["labeled"]["label"])}
  if "unlabeled" in batch:
    inputs["unlabeled"] = dict(
        stream_inputs(batch["unlabeled"], key, config, sampling.UNLABELED_STREAM,
                      ("weak", "strong")), label=batch["unlabeled"]["label"])
  return inputs


class _Part(NamedTuple):
  """One kind of a model's input in a step: clips, a dropout key per clip, and whether dropout
  applies (False for a teacher pass without dropout: `config.teacher_dropout`)."""
  clips: jax.Array
  dropout_keys_B: jax.Array
  dropout_B: jax.Array


def _forward_parts(raw_batch: Mapping[str, Any], batch: Mapping[str, Any], model_index: int,
                   name: str, key: jax.Array, config: ml_collections.ConfigDict) -> list[_Part]:
  """[labeled] or [labeled, weak, strong] clips of one model. Each clip's dropout key comes
  from (key, stream, its position in the stream, kind, model): the same clip gets the same mask
  on any number of devices or processes."""
  kinds = [("labeled", sampling.LABELED_STREAM, batch["labeled"][name], True)]
  if methods.uses_unlabeled(config.method):
    unlabeled = batch["unlabeled"]
    kinds += [("weak", sampling.UNLABELED_STREAM, unlabeled["weak"][name],
               bool(config.get("teacher_dropout", False))),
              ("strong", sampling.UNLABELED_STREAM, unlabeled["strong"][name], True)]
  parts = []
  for k, (kind, stream, clips, dropout) in enumerate(kinds):
    stream_part = raw_batch["labeled" if kind == "labeled" else "unlabeled"]
    keys_B = views.clip_keys(key, stream, stream_part["position"])
    keys_B = jax.vmap(lambda x, k=k: jax.random.fold_in(x, 3 * model_index + k))(keys_B)
    parts.append(_Part(clips, keys_B, jnp.full((clips.shape[0],), dropout)))
  return parts


def train_step(state: TrainState, batch: Mapping[str, Any], rng: jax.Array, *,
               models: Mapping[str, resnet3d.ResNet3D], tx: optax.GradientTransformation,
               config: ml_collections.ConfigDict, axis_name: str = AXIS_NAME
               ) -> tuple[TrainState, dict[str, tuple[jax.Array, jax.Array]]]:
  """One optimisation step of the configured method; per-device body (see module doc).

  With `config.bn_batches='joint'` each model sees its labeled, weak and strong clips in ONE
  forward pass, so BatchNorm normalises them with shared statistics (as FixMatch does) and the
  device runs one big convolution batch; with 'separate' the three kinds are normalised apart
  (three forward passes) and the running statistics follow the labeled clips. Teacher
  predictions (weak views) are under stop-gradient inside `ssl`.
  """
  use_unlabeled = methods.uses_unlabeled(config.method)
  dtype = compute_dtype(config)
  raw_batch = batch
  batch = model_inputs(raw_batch, jax.random.fold_in(rng, _VIEWS_SALT), config)
  dropout_key = jax.random.fold_in(rng, _DROPOUT_SALT)

  def loss_fn(params):
    logits, new_batch_stats = {}, {}
    for i, (name, model) in enumerate(models.items()):
      def forward(part, model=model, name=name):
        return model.apply({"params": params[name], "batch_stats": state.batch_stats[name]},
                           resnet3d.normalize(part.clips, dtype), train=True,
                           dropout_keys_B=part.dropout_keys_B, dropout_B=part.dropout_B,
                           mutable=["batch_stats"])
      parts = _forward_parts(raw_batch, batch, i, name, dropout_key, config)
      if config.bn_batches == "joint":
        out_BxK, mutated = forward(_Part(*(jnp.concatenate(x, axis=0) for x in zip(*parts))))
        sizes = [p.clips.shape[0] for p in parts]
        outs = jnp.split(out_BxK, [sum(sizes[:k]) for k in range(1, len(sizes))])
      else:  # 'separate': running statistics follow the labeled clips alone
        results = [forward(part) for part in parts]
        outs, mutated = [out for out, _ in results], results[0][1]
      logits[name] = ssl.Logits(*outs)
      new_batch_stats[name] = mutated["batch_stats"]
    kwargs = {}
    if use_unlabeled:
      kwargs = dict(unlabeled_labels_B=batch["unlabeled"]["label"], tau=config.tau,
                    lambda_u=config.lambda_u, teacher_stats=state.teacher_stats,
                    options=options)
    loss, metrics = ssl.OBJECTIVES[config.method](logits, batch["labeled"]["label"], **kwargs)
    return loss, (metrics, new_batch_stats, logits)

  options = teacher_options(config)
  (_, (metrics, new_batch_stats, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  # Running teacher statistics over the global batch, from this step's predictions; the step's
  # pseudo-labels used the statistics of the steps before.
  teacher_stats = {
      name: ssl.update_teacher_stats(stats, lax.pmean(ssl.teacher_batch_stats(
          logits[name].weak_BxK, config.tau, stats, options), axis_name), options.momentum)
      for name, stats in state.teacher_stats.items()}
  # Per-device losses are means over equal per-device batches, so the mean of the per-device
  # gradients is the gradient of the global batch.
  grads = lax.pmean(grads, axis_name)
  if not config.model.sync_batch_norm:  # keep replicas identical
    new_batch_stats = lax.pmean(new_batch_stats, axis_name)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema = state.ema
  if ema:
    # The decay ramps up as (1 + n) / (10 + n) after n steps (TF's ExponentialMovingAverage
    # with num_updates): a short run's average is not dominated by the random init.
    n = state.step.astype(jnp.float32)
    decay = jnp.minimum(ema_decay(config), (1.0 + n) / (10.0 + n))
    ema = jax.tree.map(lambda e, w: decay * e + (1.0 - decay) * w, ema,
                       {"params": params, "batch_stats": new_batch_stats})
  metrics = lax.psum(metrics, axis_name)
  metrics["grad_norm"] = (optax.tree.norm(grads), jnp.ones((), jnp.float32))
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=new_batch_stats,
                            opt_state=opt_state, teacher_stats=teacher_stats, ema=ema)
  return new_state, metrics


class EvalSpec(NamedTuple):
  """What the eval step needs of a config (hashable, so one compiled step per spec)."""
  positions: tuple[tuple[str, tuple[int, ...]], ...]  # (model, its frames in the union)
  crop_size: int
  num_crops: int
  dtype: str


def eval_spec(config: ml_collections.ConfigDict) -> EvalSpec:
  _, positions = sampling.union_offsets(sampling.frame_specs(config))
  return EvalSpec(tuple(positions.items()), int(config.data.crop_size),
                  int(config.eval.num_crops), str(compute_dtype(config)))


def eval_inputs(batch: Mapping[str, Any], spec: EvalSpec) -> dict[str, jax.Array]:
  """{model: float32[B, V, T_m, S, S, 3]}: the eval views (views.eval_views) of a batch of
  videos {'frames': uint8[B, J, U, H, W, 3], 'size', 'transposed'}; V = J x crops."""
  fn = functools.partial(views.eval_views, crop_size=spec.crop_size, num_crops=spec.num_crops)
  all_views = jax.vmap(fn)(batch["frames"], batch["size"], batch["transposed"])
  return {name: all_views[:, :, jnp.asarray(pos)] for name, pos in spec.positions}


def eval_step(params: Mapping[str, Any], batch_stats: Mapping[str, Any],
              batch: Mapping[str, Any], *, models: Mapping[str, resnet3d.ResNet3D],
              spec: EvalSpec) -> dict[str, jax.Array]:
  """Video-level class probabilities per model: softmax averaged over the V views.

  `batch` holds decoded eval windows (see `eval_inputs`); returns {name: probs_BxK}.
  Per-device and collective-free: results are gathered on the host.
  """
  dtype = jnp.dtype(spec.dtype)
  inputs = eval_inputs(batch, spec)
  probs = {}
  for name, model in models.items():
    clips = inputs[name]
    b, v = clips.shape[:2]
    logits = model.apply({"params": params[name], "batch_stats": batch_stats[name]},
                         resnet3d.normalize(clips.reshape(b * v, *clips.shape[2:]), dtype),
                         train=False)
    probs[name] = jnp.mean(jax.nn.softmax(logits).reshape(b, v, -1), axis=1)
  return probs
