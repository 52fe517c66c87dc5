"""Listing and opening input files on any file system: local paths, or URLs (gs://, s3://, ...).

Local paths go through `os` exactly as before (symlinks followed, cycles detected by the
callers); a path with a scheme goes through tf.io.gfile, imported only then, so
`video_io`/`predict` stay TensorFlow-free for local files. Output already goes through
tf.io.gfile (records.py, shards.py).
"""
from __future__ import annotations

import contextlib
import os
from typing import IO, Iterator


def is_url(path: str) -> bool:
  """gs://bucket/x, s3://..., ram://... (anything with a scheme) rather than a local path."""
  return "://" in str(path)


def _gfile():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (only for URLs)
  return tf.io.gfile


def isdir(path: str) -> bool:
  return _gfile().isdir(path) if is_url(path) else os.path.isdir(path)


def isfile(path: str) -> bool:
  if is_url(path):
    return _gfile().exists(path) and not _gfile().isdir(path)
  return os.path.isfile(path)


def exists(path: str) -> bool:
  return _gfile().exists(path) if is_url(path) else os.path.exists(path)


def listdir(path: str) -> list[str]:
  """Entry names (object stores mark folders with a trailing '/', dropped here)."""
  if is_url(path):
    return [name.rstrip("/") for name in _gfile().listdir(path)]
  return os.listdir(path)


def getsize(path: str) -> int:
  """Size in bytes; raises OSError (as os.path.getsize) when the file cannot be read."""
  if not is_url(path):
    return os.path.getsize(path)
  try:
    return _gfile().stat(path).length
  except Exception as e:  # tf.errors.OpError and subclasses
    raise OSError(str(e)) from e


def walk(top: str) -> Iterator[tuple[str, list[str], list[str]]]:
  """os.walk (following symlinks) for local paths, tf.io.gfile.walk for URLs. As with os.walk,
  callers may prune the subfolder list in place."""
  if not is_url(top):
    yield from os.walk(top, followlinks=True)
    return
  for root, dirs, files in _gfile().walk(top):
    dirs[:] = [d.rstrip("/") for d in dirs]
    yield root, dirs, files


def read_text(path: str) -> str:
  """A text file's contents (UTF-8, a leading BOM dropped; newlines as stored)."""
  if is_url(path):
    with _gfile().GFile(path, "rb") as f:
      data = f.read()
  else:
    with open(path, "rb") as f:
      data = f.read()
  return data.decode("utf-8-sig")


@contextlib.contextmanager
def open_binary(path: str) -> Iterator[str | IO[bytes]]:
  """What PyAV should open: the local path itself, or a seekable stream of a URL's bytes."""
  if not is_url(path):
    yield path
    return
  with _gfile().GFile(path, "rb") as f:
    yield f
