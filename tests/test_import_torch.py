"""PyTorch -> Flax checkpoint import: logits parity, head dropping/merging, clear errors.

The PyTorch peers come from torchvision / pytorchvideo when those import, else from the
faithful replicas in cmpl_jax/tools/torch_resnet3d.py (same state_dict keys, topology and parameter
counts; on CPU test machines torchvision does not import beside the CPU torch wheel). Every
BatchNorm's affine parameters and running statistics are randomised, so the BN conversion is
exercised, and eval-mode logits are compared in float32.

Clips are 1 x 3 x 8 x 64 x 64. pytorchvideo's slow_r50 head average-pools with a fixed
(8, 7, 7) kernel, which is global pooling only for 8 x 224 x 224 clips; the peer is built with
the kernel of the final feature map here (8, 2, 2), i.e. global pooling, as our model does.
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from cmpl_jax import pretrained  # noqa: E402
from cmpl_jax.models import resnet3d  # noqa: E402
from cmpl_jax.tools import import_torch  # noqa: E402
from cmpl_jax.tools import torch_resnet3d as torch_peers  # noqa: E402

CLIP_NCTHW = (1, 3, 8, 64, 64)
SLOW_HEAD_POOL = (8, 2, 2)  # final feature map of an 8 x 64 x 64 clip in slow_r50
PUBLISHED_PARAMS = {"torchvision_r3d_18": 33_371_472, "pytorchvideo_slow_r50": 32_454_096}


def _build_peer(format_name: str) -> tuple[torch.nn.Module, str]:
  """(model with 400 classes, where it came from): the real library if it imports."""
  try:
    if format_name == "torchvision_r3d_18":
      from torchvision.models.video import r3d_18  # pylint: disable=import-outside-toplevel
      return r3d_18(num_classes=400), "torchvision"
    from pytorchvideo.models.resnet import create_resnet  # pylint: disable=import-outside-toplevel
    # = pytorchvideo.models.hub.slow_r50, but with a global head pool at this clip size.
    return create_resnet(stem_conv_kernel_size=(1, 7, 7), model_depth=50, model_num_class=400,
                         head_pool_kernel_size=SLOW_HEAD_POOL), "pytorchvideo"
  except Exception:  # pylint: disable=broad-except  # absent, or built for another torch
    if format_name == "torchvision_r3d_18":
      return torch_peers.r3d_18(400), "replica"
    return torch_peers.slow_r50(400, head_pool_kernel_size=SLOW_HEAD_POOL), "replica"


def _randomise_batch_norms(model: torch.nn.Module, seed: int) -> None:
  generator = torch.Generator().manual_seed(seed)
  rand = lambda t, lo, hi: torch.rand(t.shape, generator=generator) * (hi - lo) + lo  # noqa
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm3d):
        module.weight.copy_(rand(module.weight, 0.5, 1.5))
        module.bias.copy_(rand(module.bias, -0.2, 0.2))
        module.running_mean.copy_(rand(module.running_mean, -0.2, 0.2))
        module.running_var.copy_(rand(module.running_var, 0.5, 1.5))
  model.eval()


class Peer:
  """A randomised PyTorch model, its saved state_dict file and its reference logits."""

  def __init__(self, format_name: str, directory: str, wrap: str | None):
    self.format = format_name
    self.model, self.origin = _build_peer(format_name)
    _randomise_batch_norms(self.model, seed=len(format_name))
    self.clip = torch.randn(*CLIP_NCTHW, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
      self.logits = self.model(self.clip).numpy()
    self.state_dict = self.model.state_dict()
    self.path = os.path.join(directory, f"{format_name}.pt")
    # pytorchvideo hub / PySlowFast files wrap the weights in {'model_state': ...}.
    torch.save(self.state_dict if wrap is None else {wrap: self.state_dict, "epoch": 196},
               self.path)


@pytest.fixture(scope="module")
def r3d(tmp_path_factory) -> Peer:
  return Peer("torchvision_r3d_18", str(tmp_path_factory.mktemp("r3d")), wrap=None)


@pytest.fixture(scope="module")
def slow(tmp_path_factory) -> Peer:
  return Peer("pytorchvideo_slow_r50", str(tmp_path_factory.mktemp("slow")), wrap="model_state")


@functools.lru_cache(maxsize=None)
def _forward(model_name: str, num_classes: int):
  model = resnet3d.create_model(model_name, num_classes)
  return jax.jit(lambda variables, clip: model.apply(variables, clip, train=False))


def _relative_error(peer: Peer, variables, info) -> float:
  clip = jnp.asarray(peer.clip.numpy().transpose(0, 2, 3, 4, 1))  # NCTHW -> NTHWC
  logits = np.asarray(_forward(info["model"], info["num_classes"])(variables, clip))
  return float(np.abs(logits - peer.logits).max() / np.abs(peer.logits).max())


@pytest.mark.parametrize("name", ["r3d", "slow"])
def test_conversion_matches_pytorch_logits(name, request, tmp_path):
  peer: Peer = request.getfixturevalue(name)
  assert sum(p.numel() for p in peer.model.parameters()) == PUBLISHED_PARAMS[peer.format], \
      peer.origin
  info = import_torch.convert_file(peer.path, peer.format, str(tmp_path / "out"))
  assert info["num_params"] == PUBLISHED_PARAMS[peer.format]
  variables, saved_info = pretrained.load(str(tmp_path / "out"))
  with open(tmp_path / "out" / pretrained.INFO_FILE, encoding="utf-8") as f:
    assert json.load(f) == saved_info
  assert saved_info == {"format": peer.format, "source": os.path.abspath(peer.path),
                        "model": import_torch.FORMATS[peer.format].model,
                        "width_multiplier": 1.0, "num_classes": 400, "head_dropped": False}
  error = _relative_error(peer, variables, saved_info)
  print(f"{peer.format} ({peer.origin}): max relative logit error {error:.2e}")
  assert error < 1e-4


def test_replicas_have_the_real_state_dict_keys(r3d, slow):
  """Where the real libraries import, the replicas must produce their exact keys and shapes."""
  checked = 0
  for peer, replica in ((r3d, torch_peers.r3d_18(400)),
                        (slow, torch_peers.slow_r50(400, head_pool_kernel_size=SLOW_HEAD_POOL))):
    if peer.origin != "replica":
      real = {k: tuple(v.shape) for k, v in peer.state_dict.items()}
      assert real == {k: tuple(v.shape) for k, v in replica.state_dict().items()}
      checked += 1
  if not checked:
    pytest.skip("neither torchvision nor pytorchvideo imports here; replicas were checked "
                "against their sources when written (see cmpl_jax/tools/torch_resnet3d.py)")


def _zero_variables(name: str, num_classes: int, width: float = 1.0):
  """A model's variables, all zeros (merge_into only needs their tree, shapes and dtypes)."""
  model = resnet3d.create_model(name, num_classes, width_multiplier=width)
  shapes = jax.eval_shape(functools.partial(resnet3d.init_variables, model, num_frames=2,
                                            size=16), jax.random.key(0))
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def test_cli_drop_head_then_merge_into_a_new_label_set(r3d, tmp_path):
  out = tmp_path / "backbone"
  result = subprocess.run(
      [sys.executable, "-m", "cmpl_jax.tools.import_torch", "--format=torchvision_r3d_18",
       f"--input={r3d.path}", f"--output={out}", "--drop_head"],
      capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  summary = result.stdout.strip().splitlines()
  assert len(summary) == 1 and "33,166,272 params" in summary[0], summary  # 400-class head gone
  variables, info = pretrained.load(str(out))
  assert info["num_classes"] is None and info["head_dropped"] is True
  assert "head" not in variables["params"]

  # A fresh model's variables; a real init of all 33M parameters costs ~10 s on CPU, and only
  # the head's values matter here.
  initial = _zero_variables("r3d_18", 7)
  initial["params"]["head"]["kernel"] = np.random.default_rng(0).normal(
      0, 0.01, (512, 7)).astype(np.float32)
  merged = pretrained.merge_into(initial, variables, info, 7, model_name="r3d_18")
  np.testing.assert_array_equal(merged["params"]["head"]["kernel"],
                                initial["params"]["head"]["kernel"])
  np.testing.assert_array_equal(merged["params"]["stem"]["conv"]["kernel"],
                                variables["params"]["stem"]["conv"]["kernel"])
  np.testing.assert_array_equal(merged["batch_stats"]["res5_1"]["conv_b"]["bn"]["var"],
                                variables["batch_stats"]["res5_1"]["conv_b"]["bn"]["var"])
  assert (jax.tree_util.tree_structure(merged) == jax.tree_util.tree_structure(initial))


def test_merge_into_keeps_or_replaces_the_head_by_class_count(r3d, tmp_path):
  variables, info = import_torch.convert_state_dict(
      import_torch.load_state_dict(r3d.path), "torchvision_r3d_18")
  same = pretrained.merge_into(_zero_variables("r3d_18", 400), variables, info, 400)
  np.testing.assert_array_equal(same["params"]["head"]["kernel"],
                                r3d.state_dict["fc.weight"].numpy().T)
  other = pretrained.merge_into(_zero_variables("r3d_18", 5), variables, info, 5)
  assert not other["params"]["head"]["kernel"].any()
  np.testing.assert_array_equal(other["params"]["res3_0"]["conv_a"]["conv"]["kernel"],
                                variables["params"]["res3_0"]["conv_a"]["conv"]["kernel"])

  with pytest.raises(ValueError, match=r"100 shape mismatches: .*params/res2_0/conv_a/conv/kernel: "
                     r"pretrained \(3, 3, 3, 64, 64\), model \(3, 3, 3, 32, 32\)"):
    pretrained.merge_into(_zero_variables("r3d_18", 5, width=0.5), variables, info, 5)
  with pytest.raises(ValueError, match="in the checkpoint but not in the model.*res2_1"):
    pretrained.merge_into(_zero_variables("r3d_10", 5), variables, info, 5)
  with pytest.raises(ValueError, match="cannot initialise a 'slowonly_r50' model"):
    pretrained.merge_into(_zero_variables("r3d_18", 400), variables, info, 400,
                          model_name="slowonly_r50")
  with pytest.raises(FileNotFoundError, match="import_info.json"):
    pretrained.load(str(tmp_path))


def test_wrong_architecture_and_leftover_keys_are_named(r3d, slow):
  slow_state = import_torch.load_state_dict(slow.path)  # unwraps {'model_state': ...}
  assert "blocks.5.proj.weight" in slow_state and "model_state" not in slow_state
  with pytest.raises(import_torch.ConversionError,
                     match="not a torchvision_r3d_18 state_dict.*--format=pytorchvideo_slow_r50"):
    import_torch.convert_state_dict(slow_state, "torchvision_r3d_18")
  with pytest.raises(import_torch.ConversionError, match="unknown --format='r3d'"):
    import_torch.convert_state_dict(slow_state, "r3d")

  state = import_torch.load_state_dict(r3d.path)
  extra = dict(state, **{"layer5.0.conv1.0.weight": np.zeros((1,), np.float32)})
  with pytest.raises(import_torch.ConversionError,
                     match=r"1 state_dict keys were not consumed: layer5\.0\.conv1\.0\.weight"):
    import_torch.convert_state_dict(extra, "torchvision_r3d_18")
  missing = {k: v for k, v in state.items() if k != "layer3.0.downsample.1.running_var"}
  with pytest.raises(import_torch.ConversionError,
                     match=r"layer3\.0\.downsample\.1\.running_var \(for "
                           r"batch_stats/res4_0/shortcut/bn/var\)"):
    import_torch.convert_state_dict(missing, "torchvision_r3d_18")
  mc3_like = dict(state, **{"layer2.0.conv1.0.weight": np.zeros((128, 64, 1, 3, 3), np.float32)})
  with pytest.raises(import_torch.ConversionError,
                     match=r"layer2\.0\.conv1\.0\.weight: shape \(128, 64, 1, 3, 3\)"):
    import_torch.convert_state_dict(mc3_like, "torchvision_r3d_18")


class _Config:
  """Stands for a pickled config object inside a checkpoint (e.g. a yacs CfgNode)."""


def test_state_dict_containers_and_unreadable_files(tmp_path):
  weight = torch.ones(2, 3)
  torch.save({"state_dict": {"module.fc.weight": weight}, "epoch": 3}, tmp_path / "lit.ckpt")
  assert list(import_torch.load_state_dict(str(tmp_path / "lit.ckpt"))) == ["fc.weight"]
  torch.save({"epoch": 3}, tmp_path / "empty.pt")
  with pytest.raises(import_torch.ConversionError, match="no state_dict found"):
    import_torch.load_state_dict(str(tmp_path / "empty.pt"))
  torch.save({"model_state": {"fc.weight": weight}, "cfg": _Config()}, tmp_path / "cfg.pyth")
  with pytest.raises(import_torch.ConversionError, match="objects besides tensors.*--allow_pickle"):
    import_torch.load_state_dict(str(tmp_path / "cfg.pyth"))
  assert list(import_torch.load_state_dict(str(tmp_path / "cfg.pyth"), allow_pickle=True)) == [
      "fc.weight"]
  (tmp_path / "junk.pt").write_bytes(b"not a torch file")
  with pytest.raises(import_torch.ConversionError, match="junk.pt: not a readable PyTorch file"):
    import_torch.load_state_dict(str(tmp_path / "junk.pt"))


def test_cli_errors_exit_2_with_one_line(slow, tmp_path):
  def run(*args):
    return subprocess.run([sys.executable, "-m", "cmpl_jax.tools.import_torch", *args],
                          capture_output=True, text=True, check=False)
  missing = run("--format=torchvision_r3d_18", f"--input={tmp_path / 'none.pt'}",
                f"--output={tmp_path / 'out'}")
  wrong = run("--format=torchvision_r3d_18", f"--input={slow.path}", f"--output={tmp_path}/o")
  for result, text in ((missing, "none.pt: no such file"), (wrong, "pytorchvideo_slow_r50")):
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and text in result.stderr
  assert not os.path.exists(tmp_path / "o")


def test_pretrained_imports_without_torch_or_tensorflow():
  code = ("import sys, cmpl_jax.pretrained; "
          "assert 'torch' not in sys.modules and 'tensorflow' not in sys.modules")
  subprocess.run([sys.executable, "-c", code], check=True)
