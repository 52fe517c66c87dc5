"""Atomic file writes, local or on gs://, without TensorFlow.

Every JSON or text file the project writes for other tools to read (metadata.json, shard
sidecars, config.json, eval_results.json, labeled_ids.txt, import_info.json, the synthetic
dataset's split lists) goes through `write_atomic`, so a crash or a full disk never leaves a
truncated file under the real name: a reader sees the old content or the new, never half.

Paths go through `etils.epath` (installed with orbax-checkpoint): local paths use `os` calls,
gs:// (and s3://) its own backends, so model-side code that writes into a workdir runs on
machines without TensorFlow (README, "Repository layout"). The data is written to a temporary name
in the same folder, then renamed over the target: a POSIX rename is atomic; on GCS a rename is a
copy then a delete, and the target object only ever appears complete (object writes are whole).
The temporary name starts with a dot and ends in `.tmp`, so globs over the real names (such as
`{split}.tfrecord-*`) never pick it up.
"""
from __future__ import annotations

import json
import os
import uuid
from typing import Any

from etils import epath


def temporary_name(name: str) -> str:
  """A hidden sibling name for writing `name`: unique per process and call, so two writers
  (a stray worker of a killed run, say) never share one."""
  return f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"


def write_atomic(path: str | os.PathLike, data: str | bytes, encoding: str = "utf-8") -> str:
  """Writes `data` (text is encoded with `encoding`, bytes as given) to `path` atomically,
  creating missing parent folders; returns `path` as a string.

  On any failure the temporary file is removed and the previous content of `path`, if any, is
  left untouched.
  """
  target = epath.Path(path)
  payload = data.encode(encoding) if isinstance(data, str) else bytes(data)
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = target.parent / temporary_name(target.name)
  try:
    with tmp.open("wb") as f:
      f.write(payload)
    tmp.replace(target)
  except BaseException:
    try:
      tmp.unlink(missing_ok=True)
    except Exception:  # pylint: disable=broad-except  # keep the original error
      pass
    raise
  return os.fspath(path)


def write_json(path: str | os.PathLike, value: Any, indent: int | None = 1) -> str:
  """`write_atomic` of `json.dumps(value)`. The value is serialised before anything is opened,
  so a value JSON cannot represent raises without touching the file system."""
  return write_atomic(path, json.dumps(value, indent=indent))
