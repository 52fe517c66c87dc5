"""Converts public PyTorch Kinetics checkpoints into Flax variables of our 3D-ResNets.

  python -m cmpl_jax.tools.import_torch --format=torchvision_r3d_18 \
      --input=r3d_18-b3b3357e.pth --output=/tmp/r3d18_k400 [--drop_head]
  python -m cmpl_jax.tools.import_torch --format=pytorchvideo_slow_r50 \
      --input=SLOW_8x8_R50.pyth --output=/tmp/slow_r50_k400 [--drop_head]

Our `r3d_18` / `slowonly_r50` (cmpl_jax/models/resnet3d.py, width 1) have exactly the
topologies of torchvision `r3d_18` and pytorchvideo `slow_r50`, so the conversion is a renaming
plus layout changes: conv kernels [out, in, kt, kh, kw] -> [kt, kh, kw, in, out], BatchNorm
weight/bias -> params scale/bias and running_mean/var -> batch_stats mean/var
(num_batches_tracked has no Flax counterpart), linear weight [K, C] -> head kernel [C, K].
The mapping is driven by our model's own variable tree: every Flax leaf must be filled and
every state_dict key consumed, otherwise the conversion fails listing what is left over, so a
checkpoint of another architecture or depth can never half-load.

The output directory holds `variables/` (an Orbax checkpoint of {'params', 'batch_stats'},
numpy float32) and `import_info.json`; `cmpl_jax.pretrained` reads both without torch.
PyTorch is needed only here (`pip install "cmpl_jax[torch]"`).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
import sys
from typing import Any, Callable, Mapping

import jax
import numpy as np
from flax import traverse_util

from cmpl_jax import pretrained
from cmpl_jax.models import resnet3d

Path = tuple[str, ...]


class ConversionError(ValueError):
  """A checkpoint that cannot be converted; the message names the file, key and shape."""


@dataclasses.dataclass(frozen=True)
class Format:
  model: str                              # our model name (cmpl_jax.models.resnet3d)
  head: tuple[str, str]                   # torch keys of the linear head: weight, bias
  module: Callable[[str, str], str]       # (Flax block name, sub-layer) -> torch module prefix
  signature: str                          # a key only this format's state_dicts have


def _r3d_module(block: str, layer: str) -> str:
  """torchvision VideoResNet: stem = (Conv3d, BN, ReLU); blocks conv1/conv2/downsample."""
  if block == "stem":
    return {"conv": "stem.0", "bn": "stem.1"}[layer]
  stage, index = block[len("res"):].split("_")            # res2_0 -> layer1.0
  sub, layer = layer.split("/")
  name = {"conv_a": "conv1", "conv_b": "conv2", "shortcut": "downsample"}[sub]
  position = {"conv": 0, "bn": 1}[layer]                   # index inside the nn.Sequential
  return f"layer{int(stage) - 1}.{index}.{name}.{position}"


def _slow_module(block: str, layer: str) -> str:
  """pytorchvideo create_resnet: blocks.0 = stem, blocks.1-4 = stages, blocks.5 = head."""
  if block == "stem":
    return {"conv": "blocks.0.conv", "bn": "blocks.0.norm"}[layer]
  stage, index = block[len("res"):].split("_")            # res2_0 -> blocks.1.res_blocks.0
  sub, layer = layer.split("/")
  prefix = f"blocks.{int(stage) - 1}.res_blocks.{index}"
  if sub == "shortcut":
    return f"{prefix}.branch1_{'conv' if layer == 'conv' else 'norm'}"
  letter = sub[-1]                                          # conv_a -> a
  return f"{prefix}.branch2.{'conv' if layer == 'conv' else 'norm'}_{letter}"


FORMATS: dict[str, Format] = {
    "torchvision_r3d_18": Format("r3d_18", ("fc.weight", "fc.bias"), _r3d_module,
                                 signature="stem.0.weight"),
    "pytorchvideo_slow_r50": Format("slowonly_r50", ("blocks.5.proj.weight", "blocks.5.proj.bias"),
                                    _slow_module, signature="blocks.0.conv.weight"),
}

# Flax BatchNorm leaf -> torch BatchNorm3d entry.
_BN = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
# Containers that PySlowFast, pytorchvideo hub and Lightning-style checkpoints wrap weights in.
_CONTAINER_KEYS = ("model_state", "state_dict", "model")


def _fail_hint(state_dict: Mapping[str, Any]) -> str:
  """Names the format the keys look like, so a wrong --format gets a one-step fix."""
  for name, fmt in FORMATS.items():
    if fmt.signature in state_dict:
      return f"; its keys look like --format={name}"
  if any(k.startswith("s1.pathway0_stem") for k in state_dict):
    return ("; its keys look like a PySlowFast-native checkpoint (s1.pathway0_stem...), which "
            "is not supported: use the pytorchvideo model-zoo file (blocks.0.conv...)")
  return ""


def load_state_dict(path: str, allow_pickle: bool = False) -> dict[str, np.ndarray]:
  """{key: float32 numpy array} from a .pt/.pth/.pyth file holding a state_dict or a wrapper.

  Wrappers: {'model_state': ...} (PySlowFast, pytorchvideo hub), {'state_dict': ...}
  (Lightning), {'model': ...}; a 'module.' prefix (DataParallel) is stripped.
  `allow_pickle` lets torch unpickle arbitrary objects: only for files you trust.
  """
  if not os.path.isfile(path):
    raise ConversionError(f"--input={path}: " +
                          ("not a file" if os.path.exists(path) else "no such file"))
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ConversionError(f"PyTorch is not installed ({e}); pip install 'cmpl_jax[torch]'") from e
  try:
    obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
  except Exception as e:  # torch raises many types for corrupt or non-torch files
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()  # torch bolds parts of its messages
    refused = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if refused and not allow_pickle:
      raise ConversionError(
          f"--input={path}: holds Python objects besides tensors ({refused.group(1)}), which "
          "torch.load(weights_only=True) refuses; re-run with --allow_pickle if you trust the "
          "file") from e
    detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    message = (detail.group(1).strip() if detail else
               text.splitlines()[0] if text else type(e).__name__)
    raise ConversionError(f"--input={path}: not a readable PyTorch file: {message}") from e
  for _ in range(3):  # nested wrappers, e.g. {'model': {'state_dict': ...}}
    if isinstance(obj, Mapping) and not any(torch.is_tensor(v) for v in obj.values()):
      inner = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
      if inner is None:
        break
      obj = inner
  if not isinstance(obj, Mapping) or not any(torch.is_tensor(v) for v in obj.values()):
    keys = list(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
    raise ConversionError(f"--input={path}: no state_dict found (top level: {keys}); expected "
                          f"a state_dict or a dict with one of {list(_CONTAINER_KEYS)}")
  others = [str(k) for k, v in obj.items() if not torch.is_tensor(v)]
  if others:  # silently skipping them could hide weights stored in an unexpected form
    raise ConversionError(f"--input={path}: the state_dict has non-tensor entries: "
                          f"{others[:8]}{' ...' if len(others) > 8 else ''}")
  state = {str(k): v for k, v in obj.items()}
  if state and all(k.startswith("module.") for k in state):
    state = {k[len("module."):]: v for k, v in state.items()}
  return {k: (v.detach().cpu().float().numpy() if v.is_floating_point()
              else v.detach().cpu().numpy()) for k, v in state.items()}


@functools.lru_cache(maxsize=None)
def _template(model_name: str, num_classes: int) -> dict[str, Any]:
  """Shapes of our width-1 model's variables (traced, not computed)."""
  model = resnet3d.create_model(model_name, num_classes)
  return jax.eval_shape(functools.partial(resnet3d.init_variables, model, num_frames=8,
                                          size=32), jax.random.key(0))


def _torch_key(fmt: Format, path: Path) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
  """The state_dict key feeding a Flax leaf ('params'|'batch_stats', module..., leaf)."""
  _, *modules, leaf = path
  if modules == ["head"]:
    return fmt.head[0 if leaf == "kernel" else 1], (np.transpose if leaf == "kernel" else _same)
  block, layer = modules[0], "/".join(modules[1:])
  torch_module = fmt.module(block, layer)
  if leaf == "kernel":                       # [out, in, kt, kh, kw] -> [kt, kh, kw, in, out]
    return f"{torch_module}.weight", lambda w: np.transpose(w, (2, 3, 4, 1, 0))
  return f"{torch_module}.{_BN[leaf]}", _same


def _same(x: np.ndarray) -> np.ndarray:
  return x


def convert_state_dict(state_dict: Mapping[str, np.ndarray], format_name: str,
                       drop_head: bool = False, source: str = "state_dict"
                       ) -> tuple[dict[str, Any], dict[str, Any]]:
  """(variables {'params', 'batch_stats'}, info) for our model; raises ConversionError."""
  if format_name not in FORMATS:
    raise ConversionError(f"unknown --format={format_name!r}; allowed: {sorted(FORMATS)}")
  fmt = FORMATS[format_name]
  head_weight = state_dict.get(fmt.head[0])
  if fmt.signature not in state_dict:
    raise ConversionError(f"{source} is not a {format_name} state_dict: no key "
                          f"{fmt.signature!r}{_fail_hint(state_dict)}")
  if head_weight is None and not drop_head:
    raise ConversionError(f"{source}: no head {fmt.head[0]!r} (a backbone-only checkpoint?); "
                          "pass --drop_head to convert the backbone alone")
  num_classes = int(head_weight.shape[0]) if getattr(head_weight, "ndim", 0) >= 1 else 1
  template = traverse_util.flatten_dict(_template(fmt.model, num_classes))
  head_keys = set(fmt.head)
  flat, consumed, missing, bad_shapes = {}, set(), [], []
  for path, spec in template.items():
    if drop_head and path[1] == "head":
      continue
    key, transform = _torch_key(fmt, path)
    if key not in state_dict:
      missing.append(f"{key} (for {'/'.join(path)})")
      continue
    consumed.add(key)
    value = transform(np.asarray(state_dict[key]))
    if value.shape != tuple(spec.shape):
      bad_shapes.append(f"{key}: shape {tuple(state_dict[key].shape)} -> {value.shape}, but "
                        f"{'/'.join(path)} needs {tuple(spec.shape)}")
      continue
    flat[path] = np.ascontiguousarray(value, dtype=np.float32)
  ignored = {k for k in state_dict if k.endswith(".num_batches_tracked")}
  if drop_head:
    ignored |= head_keys
  unconsumed = sorted(set(state_dict) - consumed - ignored)
  problems = []
  if missing:
    problems.append(f"{len(missing)} Flax leaves have no state_dict key: " +
                    ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
  if unconsumed:
    problems.append(f"{len(unconsumed)} state_dict keys were not consumed: " +
                    ", ".join(unconsumed[:10]) + (" ..." if len(unconsumed) > 10 else ""))
  if bad_shapes:
    problems.append(f"{len(bad_shapes)} shape mismatches: " + "; ".join(bad_shapes[:5]) +
                    (" ..." if len(bad_shapes) > 5 else ""))
  if problems:
    raise ConversionError(f"{source} does not match {format_name} ({fmt.model} at width 1): " +
                          " | ".join(problems) + _fail_hint(state_dict))
  variables = traverse_util.unflatten_dict(flat)
  info = {"format": format_name, "source": source, "model": fmt.model, "width_multiplier": 1.0,
          "num_classes": None if drop_head else num_classes, "head_dropped": bool(drop_head)}
  return variables, info


def convert_file(input_path: str, format_name: str, output_dir: str, drop_head: bool = False,
                 allow_pickle: bool = False) -> dict[str, Any]:
  """Reads, converts and writes `output_dir` (see `pretrained.save`).

  Returns the saved info plus `num_params` and `num_tensors` for the summary line.
  """
  if format_name not in FORMATS:  # before loading a possibly large file
    raise ConversionError(f"unknown --format={format_name!r}; allowed: {sorted(FORMATS)}")
  state_dict = load_state_dict(input_path, allow_pickle=allow_pickle)
  variables, info = convert_state_dict(state_dict, format_name, drop_head,
                                       source=os.path.abspath(input_path))
  try:
    pretrained.save(output_dir, variables, info)
  except OSError as e:
    raise ConversionError(f"--output={output_dir}: cannot write there ({e})") from e
  info["num_params"] = int(sum(v.size for v in jax.tree_util.tree_leaves(variables["params"])))
  info["num_tensors"] = len(state_dict)
  return info


def _define_flags() -> None:
  """Only when run as a program: importing this module (tests do) must not claim flag names."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  # A string, not an enum: an unknown value gets our one-line error and exit code 2.
  flags.DEFINE_string("format", None, f"Layout of the input state_dict: {' | '.join(FORMATS)}.")
  flags.DEFINE_string("input", None, "PyTorch file (.pt/.pth/.pyth): a state_dict, or a dict "
                      "with 'model_state' / 'state_dict' / 'model'.")
  flags.DEFINE_string("output", None, "Output directory (variables/ + import_info.json).")
  flags.DEFINE_bool("drop_head", False, "Convert the backbone only (e.g. to fine-tune on "
                    "another label set); the head is then initialised fresh when training.")
  flags.DEFINE_bool("allow_pickle", False, "Let torch unpickle arbitrary objects in --input "
                    "(needed by some checkpoints holding more than tensors). Trusted files only.")


def _fail(message: str) -> None:
  print(f"import_torch: error: {message}", file=sys.stderr)
  sys.exit(2)


def main(argv: list[str]) -> None:
  from absl import flags  # pylint: disable=import-outside-toplevel
  if len(argv) > 1:
    _fail(f"unexpected arguments: {argv[1:]}")
  flag_values = flags.FLAGS
  if not flag_values.format or not flag_values.input or not flag_values.output:
    _fail("--format, --input and --output are required")
  try:
    info = convert_file(flag_values.input, flag_values.format, flag_values.output,
                        flag_values.drop_head, flag_values.allow_pickle)
  except (ConversionError, OSError) as e:
    _fail(str(e).replace("\n", " "))
  classes = ("head dropped (fresh head when training)" if info["head_dropped"]
             else f"{info['num_classes']} classes")
  print(f"import_torch: {info['format']} -> {info['model']}: {info['num_params']:,} params from "
        f"{info['num_tensors']} tensors, {classes}; wrote {os.path.abspath(flag_values.output)}")


if __name__ == "__main__":
  from absl import app, logging  # pylint: disable=import-outside-toplevel
  _define_flags()
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
  app.run(main)
