"""cmpl_jax.fileio: atomic writes that leave the old file whole on failure, without TensorFlow."""
import fnmatch
import json
import os
import subprocess
import sys

import pytest
from etils import epath

from cmpl_jax import fileio

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_writes_text_bytes_and_json_creating_folders(tmp_path):
  path = tmp_path / "a" / "b" / "info.json"
  assert fileio.write_json(path, {"x": [1, 2]}) == str(path)
  assert json.loads(path.read_text()) == {"x": [1, 2]}
  fileio.write_atomic(tmp_path / "crlf.txt", "1 Punch\r\n", encoding="ascii")
  assert (tmp_path / "crlf.txt").read_bytes() == b"1 Punch\r\n"
  fileio.write_atomic(str(tmp_path / "raw.bin"), b"\x00\xff")
  assert (tmp_path / "raw.bin").read_bytes() == b"\x00\xff"
  assert sorted(os.listdir(tmp_path)) == ["a", "crlf.txt", "raw.bin"]  # no temporaries left


def test_failed_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
  path = tmp_path / "metadata.json"
  fileio.write_json(path, {"version": 1})
  with pytest.raises(TypeError):  # not JSON: nothing is touched
    fileio.write_json(path, {"version": object()})

  def broken_replace(self, target):
    raise OSError("disk full")
  monkeypatch.setattr(type(epath.Path(path)), "replace", broken_replace)
  with pytest.raises(OSError, match="disk full"):
    fileio.write_json(path, {"version": 2})
  assert json.loads(path.read_text()) == {"version": 1}
  assert os.listdir(tmp_path) == ["metadata.json"]  # the temporary was removed


def test_temporary_names_are_hidden_unique_and_outside_shard_globs():
  names = {fileio.temporary_name("train.tfrecord-00000-of-00004.json") for _ in range(3)}
  assert len(names) == 3
  for name in names:
    assert name.startswith(".") and name.endswith(".tmp")
    assert not fnmatch.fnmatch(name, "train.tfrecord-*")


def test_importable_and_usable_without_tensorflow(tmp_path):
  code = ("import sys; from cmpl_jax import console, fileio, pretrained, workdir; "
          f"fileio.write_json({str(tmp_path / 'x.json')!r}, [1]); "
          "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 0, result.stderr
