"""Keeps TensorFlow's C++ start-up logging off a command-line tool's console.

The command-line tools call `quiet_tensorflow()` first thing, before anything imports
TensorFlow (only the input pipeline and the converters use it). Measured with TF 2.21 on Linux:

- `I... cpu_feature_guard.cc] This TensorFlow binary is optimized ...` (+ "To enable the
  following instructions ...") obeys TF_CPP_MIN_LOG_LEVEL >= 1.
- `E0000 ... util.cc] oneDNN supports DT_UINT8 only on platforms with AVX-512 ...` is logged
  at ERROR the first time a tf.data function with a uint8 op (the pipeline's decoded frames) is
  optimised, wherever oneDNN is on (uint8 is simply not a oneDNN type; nothing is wrong;
  TensorFlow left oneDNN off on an AMD EPYC without AVX-512, which prints no oneDNN line), so only
  TF_CPP_MIN_LOG_LEVEL=3 hides it. TensorFlow reads that variable once, while it is imported,
  and jaxlib's XLA reads the same variable for its own C++ logs, whose errors matter on
  accelerators: so the variable is 3 only during `import tensorflow`, and 2 otherwise (INFO
  and WARNING hidden, as the tools did before). Real TensorFlow errors still reach Python as
  exceptions.
- `I0000 ... port.cc] oneDNN custom operations are on ...`, twice, each after `WARNING: All log
  messages before absl::InitializeLog() is called are written to STDERR`: logged while the
  shared libraries load, before TF_CPP_MIN_LOG_LEVEL is read, so no setting hides them except
  TF_ENABLE_ONEDNN_OPTS=0, which also turns off oneDNN's kernels (other numerics, other speed):
  not used here. Instead `import tensorflow` runs with the process's stderr (file descriptor 2)
  sent to a temporary file, and every line of it except log lines below the chosen level and
  that absl notice is written back to stderr when the import ends (Python warnings and
  tracebacks pass through).

A user who wants TensorFlow's logs sets CMPL_JAX_TF_LOGS=1 (nothing is changed then), or their
own TF_CPP_MIN_LOG_LEVEL, which is kept for every library and also decides which start-up lines
are dropped (0 drops none). Child processes (the converter's spawned workers) inherit the
setting and call `quiet_tensorflow()` again when they import the converter. No TensorFlow
import here: model-side tools import this module too.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
from typing import Iterator

ENV_SHOW_LOGS = "CMPL_JAX_TF_LOGS"
_LEVEL_VAR = "TF_CPP_MIN_LOG_LEVEL"
_OURS_VAR = "_CMPL_JAX_TF_LEVEL_SET"  # marks a level set here, not by the user (children too)
_QUIET_LEVEL, _TENSORFLOW_LEVEL = "2", "3"
_SEVERITIES = "IWEF"  # absl/TF severity letters, in TF_CPP_MIN_LOG_LEVEL order
# absl: "I0000 00:00:1796150963.874425    3087 port.cc:153] ..."; TF's own:
# "2025-09-17 14:44:05.157831: I tensorflow/core/...] ...".
_LOG_LINE = re.compile(rb"^(?:([IWEF])\d{4} [\d:.]+\s+\d+ \S+:\d+\]"
                       rb"|\d{4}-\d\d-\d\d [\d:.]+: ([IWEF]) \S+:\d+\])")
_NOISE = (b"WARNING: All log messages before absl::InitializeLog() is called",
          b"To enable the following instructions:")  # cpu_feature_guard's second line


def quiet_tensorflow() -> None:
  """Hides TensorFlow's C++ start-up logging in this process and the processes it starts
  (see the module docstring); idempotent, and a no-op if the user asked for the logs."""
  if os.environ.get(ENV_SHOW_LOGS, "").strip() not in ("", "0"):
    return
  if _LEVEL_VAR not in os.environ or os.environ.get(_OURS_VAR) == "1":
    os.environ[_LEVEL_VAR], os.environ[_OURS_VAR] = _QUIET_LEVEL, "1"
    tensorflow_level = _TENSORFLOW_LEVEL
  else:  # the user's own level, for TensorFlow too
    tensorflow_level = os.environ[_LEVEL_VAR]
  if "tensorflow" not in sys.modules and not any(
      isinstance(f, _QuietImportFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _QuietImportFinder(tensorflow_level))


def _as_level(value: str) -> int:
  try:
    return int(value)
  except ValueError:
    return 0


def is_dropped(line: bytes, level: int) -> bool:
  """Whether a line TensorFlow printed while loading is below `level` (or the absl notice)."""
  stripped = line.strip()
  if any(stripped.startswith(noise) for noise in _NOISE):
    return True
  match = _LOG_LINE.match(stripped)
  return bool(match) and _SEVERITIES.index((match.group(1) or match.group(2)).decode()) < level


@contextlib.contextmanager
def filtered_stderr(level: int) -> Iterator[None]:
  """Captures file descriptor 2 (C++ and Python writes alike) and writes back the lines that
  `is_dropped` keeps when the block ends, even if it raises."""
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, ValueError, AttributeError):  # no usable stderr (a daemon): nothing to filter
    yield
    return
  with tempfile.TemporaryFile() as capture:
    os.dup2(capture.fileno(), 2)
    try:
      yield
    finally:
      try:
        sys.stderr.flush()
      finally:
        os.dup2(saved, 2)
        os.close(saved)
      capture.seek(0)
      kept = [line for line in capture.read().splitlines(keepends=True)
              if not is_dropped(line, level)]
      if kept:
        os.write(2, b"".join(kept))


class _QuietImportFinder(importlib.abc.MetaPathFinder):
  """Runs the first `import tensorflow` with TF_CPP_MIN_LOG_LEVEL=`level` (TensorFlow reads it
  then, once) and inside `filtered_stderr`, then steps aside."""

  def __init__(self, level: str):
    self._level = level

  def find_spec(self, fullname, path=None, target=None):
    if fullname != "tensorflow":
      return None
    sys.meta_path.remove(self)
    spec = importlib.util.find_spec(fullname)  # the finders after this one decide
    if spec is not None and spec.loader is not None:
      spec.loader = _QuietLoader(spec.loader, self._level)
    return spec


class _QuietLoader(importlib.abc.Loader):
  """The real loader, with its module's execution inside `filtered_stderr`."""

  def __init__(self, loader: importlib.abc.Loader, level: str):
    self._loader, self._level = loader, level

  def __getattr__(self, name):  # get_resource_reader, is_package, ... of the real loader
    return getattr(self._loader, name)

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module) -> None:
    outside = os.environ.get(_LEVEL_VAR)
    os.environ[_LEVEL_VAR] = self._level
    try:
      if _as_level(self._level) > 0:
        with filtered_stderr(_as_level(self._level)):
          self._loader.exec_module(module)
      else:
        self._loader.exec_module(module)
    finally:  # the other libraries' level back; the module looks as if imported normally
      if outside is None:
        os.environ.pop(_LEVEL_VAR, None)
      else:
        os.environ[_LEVEL_VAR] = outside
      module.__loader__ = self._loader
      if getattr(module, "__spec__", None) is not None:
        module.__spec__.loader = self._loader


def format_duration(seconds: float) -> str:
  """'1h05m' from an hour on, else '4m07s' (progress lines and ETAs)."""
  seconds = int(seconds)
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
      f"{seconds // 60}m{seconds % 60:02d}s"
