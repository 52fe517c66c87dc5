"""The Flax 3D-ResNet family: shapes, exact parameter counts, dtypes, synchronised BatchNorm."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmpl_jax.models import resnet3d
from model_fixtures import variables_of_a_net_in_training


def _param_shapes(name, num_classes, width=1.0):
  model = resnet3d.create_model(name, num_classes, width_multiplier=width)
  variables = jax.eval_shape(
      functools.partial(resnet3d.init_variables, model, num_frames=8, size=224),
      jax.random.key(0))
  return variables["params"]


@pytest.mark.parametrize("name,width,num_classes,expected", [
    ("r3d_18", 1.0, 101, 33_218_085),
    ("r3d_18", 1.0, 400, 33_371_472),          # torchvision video.r3d_18
    ("slowonly_r50", 1.0, 400, 32_454_096),    # pytorchvideo slow_r50
    ("slowonly_r50", 1.0, 101, 31_841_445),
    ("slowonly_r50", 0.25, 101, 2_040_693),    # the paper's auxiliary "3D-ResNet50 x1/4"
    ("r3d_18", 0.25, 101, 2_093_013),
])
def test_parameter_counts_match_pytorch_originals(name, width, num_classes, expected):
  assert resnet3d.count_params(_param_shapes(name, num_classes, width)) == expected


@pytest.mark.parametrize("name", ["r3d_18", "slowonly_r50"])
def test_width_multiplier_scales_every_channel_dimension(name):
  num_classes = 7
  full = jax.tree_util.tree_leaves_with_path(_param_shapes(name, num_classes, 1.0))
  half = jax.tree_util.tree_leaves_with_path(_param_shapes(name, num_classes, 0.5))
  assert [p for p, _ in full] == [p for p, _ in half]
  for (path, f), (_, h) in zip(full, half):
    key = jax.tree_util.keystr(path)
    if "kernel" in key and f.ndim == 5:   # conv (kt, kh, kw, in, out): RGB input stays 3
      kernel_dims, (cin, cout) = f.shape[:3], f.shape[3:]
      expected = (*kernel_dims, cin if cin == 3 else cin // 2, cout // 2)
    elif "head" in key:                   # dense (in, K) / bias (K,)
      expected = (f.shape[0] // 2, num_classes) if f.ndim == 2 else (num_classes,)
    else:                                 # BatchNorm scale / bias (C,)
      expected = (f.shape[0] // 2,)
    assert h.shape == expected, key


def test_auxiliary_width_quarter_channels():
  params = _param_shapes("slowonly_r50", 101, 0.25)
  assert params["stem"]["conv"]["kernel"].shape == (1, 7, 7, 3, 16)
  inner = [params[f"res{s}_0"]["conv_b"]["conv"]["kernel"].shape[-1] for s in (2, 3, 4, 5)]
  outs = [params[f"res{s}_0"]["conv_c"]["conv"]["kernel"].shape[-1] for s in (2, 3, 4, 5)]
  assert inner == [16, 32, 64, 128] and outs == [64, 128, 256, 512]
  assert params["head"]["kernel"].shape == (512, 101)
  # SlowOnly: temporal kernel 1 in res2/res3 and 3 in res4/res5 (first conv of the bottleneck).
  assert [params[f"res{s}_1"]["conv_a"]["conv"]["kernel"].shape[0] for s in (2, 3, 4, 5)] == [
      1, 1, 3, 3]


@pytest.mark.parametrize("name,clip_shape", [
    ("r3d_18", (2, 4, 32, 32, 3)),
    ("r3d_18", (1, 8, 48, 40, 3)),
    ("slowonly_r50", (2, 4, 32, 32, 3)),
    ("slowonly_r50", (1, 6, 64, 48, 3)),
])
def test_output_shapes(name, clip_shape):
  model = resnet3d.create_model(name, 5, width_multiplier=0.125)
  variables = resnet3d.init_variables(model, jax.random.key(0), clip_shape[1], 32)
  clip = jax.random.normal(jax.random.key(1), clip_shape)
  logits, updates = jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))(
      variables, clip, rngs={"dropout": jax.random.key(2)})
  assert logits.shape == (clip_shape[0], 5) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  assert jax.tree.structure(updates["batch_stats"]) == jax.tree.structure(
      variables["batch_stats"])


def test_bfloat16_forward_is_finite_and_close_to_float32():
  clip = jax.random.normal(jax.random.key(1), (2, 4, 32, 32, 3))
  f32 = resnet3d.create_model("slowonly_r50", 10, width_multiplier=0.25)
  bf16 = resnet3d.create_model("slowonly_r50", 10, width_multiplier=0.25, dtype=jnp.bfloat16)
  variables = resnet3d.init_variables(f32, jax.random.key(0), 4, 32)
  # Non-trivial head weights so the logits carry signal worth comparing.
  variables["params"]["head"]["kernel"] = jax.random.normal(
      jax.random.key(3), variables["params"]["head"]["kernel"].shape)
  assert jax.tree.leaves(jax.eval_shape(bf16.init, jax.random.key(0), clip))[0].dtype == \
      jnp.float32  # parameters stay float32 under bfloat16 compute
  ref = jax.jit(f32.apply)(variables, clip)
  out = jax.jit(bf16.apply)(variables, clip)
  assert out.dtype == jnp.float32 and np.all(np.isfinite(out))
  scale = float(jnp.max(jnp.abs(ref)))
  assert float(jnp.max(jnp.abs(out - ref))) < 0.05 * scale
  assert float(jnp.max(jnp.abs(out - ref))) > 0  # really computed in lower precision


@pytest.mark.parametrize("axis_name", ["batch", None])
def test_batchnorm_statistics_synchronised_across_8_devices(axis_name):
  n = jax.local_device_count()
  assert n == 8, "tests/conftest.py should give 8 fake CPU devices"
  model = resnet3d.create_model("r3d_18", 3, width_multiplier=0.125, bn_axis_name=axis_name)
  variables = resnet3d.init_variables(model, jax.random.key(0), 4, 16)
  # Each device sees differently distributed data, so unsynchronised statistics differ.
  clips = jax.random.normal(jax.random.key(1), (n, 2, 4, 16, 16, 3)) * \
      jnp.arange(1, n + 1, dtype=jnp.float32)[:, None, None, None, None, None]

  def forward(v, x):
    return model.apply(v, x, train=True, mutable=["batch_stats"],
                       rngs={"dropout": jax.random.key(0)})[1]["batch_stats"]

  per_device = jax.pmap(forward, axis_name="batch", in_axes=(None, 0))(variables, clips)
  means = per_device["stem"]["bn"]["mean"]          # [n, C]
  spread = float(jnp.max(jnp.abs(means - means[0])))
  if axis_name is None:
    assert spread > 1e-3
    return
  assert spread < 1e-6
  # And they equal the statistics of the whole global batch on one device (an unsynchronised
  # twin: outside a mapped axis there is nothing to reduce over).
  single = resnet3d.create_model("r3d_18", 3, width_multiplier=0.125)
  whole = jax.jit(functools.partial(single.apply, train=True, mutable=["batch_stats"]))(
      variables, clips.reshape(-1, *clips.shape[2:]),
      rngs={"dropout": jax.random.key(0)})[1]["batch_stats"]
  np.testing.assert_allclose(means[0], whole["stem"]["bn"]["mean"], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(per_device["res5_1"]["conv_b"]["bn"]["var"][0],
                             whole["res5_1"]["conv_b"]["bn"]["var"], rtol=1e-3, atol=1e-5)


def test_summary_reports_params_and_flops():
  model = resnet3d.create_model("slowonly_r50", 101, width_multiplier=0.25)
  line = resnet3d.summary(model, 4, 32, "aux")
  assert "2,040,693 params" in line
  flops = resnet3d.flops_per_clip(model, 4, 32)
  # Doubling frames (no temporal down-sampling in SlowOnly) roughly doubles the work.
  assert 1.8 < resnet3d.flops_per_clip(model, 8, 32) / flops < 2.2


def test_unknown_model_name_lists_allowed():
  with pytest.raises(ValueError, match="slowonly_r50"):
    resnet3d.create_model("resnet9000", 10)


# Every route on the small basic-block net; on the bottleneck net only the CPU default,
# 'hybrid', which runs both other routes there (matmul for its 1x1-spatial kernels, 2D convs
# for the rest) and is the costly one to compile (slowonly_r50 has 53 convs).
@pytest.mark.parametrize("name,impl,num_frames", [
    ("r3d_10", "sum_of_2d", 6), ("r3d_10", "matmul", 6), ("r3d_10", "hybrid", 6),
    ("slowonly_r50", "hybrid", 3),   # T=3: every tap of res4/res5's 3-tap kernels reads a frame
])
def test_every_conv_route_equals_native_3d(name, impl, num_frames):
  """The CPU routes compute the same function, with the same parameters, as lax's 3D conv:
  logits, and the gradients of a loss w.r.t. every parameter and the input, at parameters away
  from the init (no residual branch cut off by its zero-init scale), so that every gradient
  compared is non-zero.

  In float64: in float32 the routes' different summation orders round a pre-ReLU value near 0
  to different sides often enough (on an AVX2-only CPU, in slowonly_r50's res2 at seed 0) to put
  ~3e-3 into the gradients below it, the size of the errors this test is there to catch. In
  float64 the routes differ by at most ~1e-13 of each gradient's scale (measured on all four cases)
  and a wrong tap, stride or channel order still gives O(0.1)."""
  with jax.enable_x64(True):
    clip_shape = (2, num_frames, 32, 32, 3)
    clip = jax.random.normal(jax.random.key(1), clip_shape, jnp.float64)
    native, fast = (resnet3d.create_model(name, 4, width_multiplier=0.125, conv_impl=i,
                                          dtype=jnp.float64) for i in ("native", impl))
    # Random at the scales of a net in training (model_fixtures): adding 0.1 to the init instead
    # sends the slowonly_r50 logits to ~1e28, where sin(logits) compares nothing.
    variables = variables_of_a_net_in_training(native, clip_shape, seed=0)
    assert jax.tree.structure(variables) == jax.tree.structure(
        variables_of_a_net_in_training(fast, clip_shape, seed=0))
    variables = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), variables)

    def loss(model, params, x):
      logits, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                              train=True, mutable=["batch_stats"],
                              rngs={"dropout": jax.random.key(0)})
      return jnp.sum(jnp.sin(logits)), logits

    # Logits and gradients out of one program per model (a separate forward compiles twice more).
    (logits, fast_logits), grads = zip(*(
        jax.jit(jax.grad(functools.partial(loss, m), argnums=(0, 1), has_aux=True))(
            variables["params"], clip)[::-1] for m in (native, fast)))
    # As numpy: arithmetic on jax arrays outside the context would truncate them to float32.
    logits, fast_logits, grads = jax.tree.map(np.asarray, (logits, fast_logits, grads))
  # Logits that carry signal, at a scale where sin(logits) is smooth.
  assert 0.1 < float(np.std(logits)) and float(np.max(np.abs(logits))) < 20
  np.testing.assert_allclose(fast_logits, logits, rtol=1e-6,
                             atol=1e-6 * float(np.max(np.abs(logits))))
  leaves = jax.tree_util.tree_leaves_with_path(grads[0])
  assert len(leaves) == len(jax.tree.leaves(variables["params"])) + 1   # + the input
  for (path, a), b in zip(leaves, jax.tree.leaves(grads[1])):
    key = jax.tree_util.keystr(path)
    assert a.dtype == b.dtype == np.float64, key
    scale = float(np.abs(a).max())
    assert scale > 1e-6, f"{key}: zero gradient, compares nothing"
    np.testing.assert_allclose(a / scale, b / scale, rtol=0, atol=1e-6, err_msg=key)



@pytest.mark.parametrize("kernel,strides", [((1, 7, 7), (1, 2, 2)), ((3, 1, 1), (1, 1, 1)),
                                            ((1, 3, 3), (1, 2, 2)), ((1, 1, 1), (1, 2, 2)),
                                            ((3, 3, 3), (2, 2, 2))])
def test_conv3d_as_matmul_equals_lax_conv(kernel, strides):
  x = jax.random.normal(jax.random.key(0), (2, 5, 13, 11, 4))
  w = jax.random.normal(jax.random.key(1), (*kernel, 4, 6))
  padding = [(k // 2, k // 2) for k in kernel]
  want = jax.lax.conv_general_dilated(x, w, strides, padding,
                                      dimension_numbers=("NTHWC", "THWIO", "NTHWC"))
  got = resnet3d.conv3d_as_matmul(x, w, strides, padding)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_conv_impl_auto_picks_by_backend():
  assert resnet3d.create_model("r3d_10", 3).conv_impl == "hybrid"   # tests run on CPU
  with pytest.raises(ValueError, match="sum_of_2d"):
    resnet3d.create_model("r3d_10", 3, conv_impl="winograd")


@pytest.mark.parametrize("shape", [(2, 3, 15, 16, 4), (1, 2, 14, 13, 3)])
def test_stem_max_pool_as_strided_maxima_equals_reduce_window(shape):
  x = jax.random.normal(jax.random.key(0), shape)   # no ties: one gradient is right
  want, got = (resnet3d.stem_max_pool(x, impl) for impl in ("native", "hybrid"))
  np.testing.assert_array_equal(got, want)
  grad = lambda impl: jax.grad(lambda x: jnp.sum(jnp.sin(resnet3d.stem_max_pool(x, impl))))(x)  # noqa: E731
  np.testing.assert_allclose(grad("hybrid"), grad("native"), rtol=1e-6, atol=1e-7)
