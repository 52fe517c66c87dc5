"""--dataset=folder end to end: a tree of mixed real videos -> one unlabeled split.

The tree mixes what a user's folder holds: H.264 with B-frames, VP9 (or VP8) in webm, a
variable-frame-rate .MP4, a rotation-tagged phone .MOV in a nested folder, an MPEG-4 .avi, and
files that must be skipped with a reason (0-byte, text named .mp4, corrupt .mkv, a broken link,
a .3gp) or ignored (notes, hidden files). Frames are checked by content (tests/test_video_io.py).
"""
import io
import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cmpl_jax.data import convert, folder, records, video_io
import test_video_io as tv  # tests/ is on sys.path under pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIDEOS = {"a/bframes.mp4", "b/c/nested.webm", "vfr.MP4", "phone/2024/IMG_0001.MOV", "clip.avi"}
NOISE = ("oneDNN", "cpu_feature_guard", "absl::InitializeLog", "E0000", "I0000", "W0000")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
  root = tmp_path_factory.mktemp("videos")
  tv.write_b_frames(str(root / "a" / "bframes.mp4"))
  webm = "libvpx-vp9" if "libvpx-vp9" in av.codecs_available else "libvpx"
  tv.encode(str(root / "b" / "c" / "nested.webm"), tv.frames(), webm, {"deadline": "realtime"})
  tv.write_vfr(str(root / "vfr.MP4"))
  tv.write_rotated(str(root / "phone" / "2024" / "IMG_0001.MOV"), -90)
  tv.write_b_frames(str(root / "clip.avi"), "mpeg4_avi")
  (root / "empty.mp4").write_bytes(b"")
  (root / "x.mp4").write_text("this is a text file, not a video\n" * 20)
  (root / "b" / "corrupt.mkv").write_bytes(np.random.default_rng(0).bytes(3000))
  (root / "old.3gp").write_bytes(b"\x00" * 100)
  (root / "notes.txt").write_text("ignored")
  (root / ".DS_Store").write_bytes(b"ignored")
  (root / "a" / "._bframes.mp4").write_bytes(b"macOS resource fork, ignored")
  os.symlink(str(root / "deleted.mp4"), str(root / "gone.mp4"))
  return str(root)


def _convert(tree, out, **kwargs):
  return convert.convert(dataset="folder", input_dir=tree, output_dir=out, fps=25,
                         short_side=16, videos_per_shard=2, **kwargs)


@pytest.fixture(scope="module")
def converted(tree, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("folder_out"))
  return out, _convert(tree, out)


def test_listing(tree, tmp_path):
  classes, videos, skipped = folder.list_videos(tree)
  assert classes == [] and list(videos) == ["unlabeled"]
  assert {v["media_id"] for v in videos["unlabeled"]} == VIDEOS | {"empty.mp4", "x.mp4",
                                                                    "b/corrupt.mkv"}
  assert {(v["label"], v["label_string"]) for v in videos["unlabeled"]} == {(-1, "")}
  reasons = {os.path.basename(s["path"]): s["reason"] for s in skipped}
  assert set(reasons) == {"gone.mp4", "old.3gp"}
  assert reasons["gone.mp4"].startswith("missing") and "not converted" in reasons["old.3gp"]
  # How the converter keeps an output folder inside the input out of the listing:
  kept = folder.list_videos(tree, exclude=[os.path.join(tree, "b")])[1]["unlabeled"]
  assert not any(v["media_id"].startswith("b/") for v in kept)
  (tmp_path / "notes.txt").write_text("no video here")
  with pytest.raises(FileNotFoundError, match="no video files"):
    folder.list_videos(str(tmp_path))


def test_metadata(converted):
  out, metadata = converted
  assert metadata == records.read_metadata(out)
  assert metadata["dataset"] == "folder" and metadata["classes"] == []
  assert metadata["frame_rate"] == 25.0 and metadata["short_side"] == 16
  info = metadata["splits"]["unlabeled"]
  assert list(metadata["splits"]) == ["unlabeled"]
  assert sorted(info["media_ids"]) == sorted(VIDEOS)
  assert info["labels"] == [-1] * len(VIDEOS) and set(info["frame_rates"]) == {25.0}
  assert info["files"] == [records.shard_filename("unlabeled", i, 4) for i in range(4)]
  reasons = {os.path.relpath(s["path"], metadata["conversion"]["input_dir"]): s["reason"]
             for s in metadata["skipped"]}
  assert set(reasons) == {"empty.mp4", "x.mp4", "b/corrupt.mkv", "gone.mp4", "old.3gp"}
  assert reasons["empty.mp4"] == "empty file (0 bytes)"
  assert reasons["x.mp4"].startswith("cannot open as a video")
  assert reasons["gone.mp4"].startswith("missing")
  assert {s["split"] for s in metadata["skipped"]} == {"unlabeled"}


def test_records_parse_and_plain_glob_reads_exactly_the_videos(converted):
  out, metadata = converted
  info = metadata["splits"]["unlabeled"]
  files = sorted(tf.io.gfile.glob(os.path.join(out, "unlabeled.tfrecord-*")))
  assert [os.path.basename(f) for f in files] == info["files"]  # no sidecar, no temporary
  parsed = {}
  for serialized in tf.data.TFRecordDataset(files):
    example = records.parse_example(serialized)
    parsed[example["media_id"].numpy().decode()] = example
  assert sorted(parsed) == sorted(VIDEOS)
  for media_id, example in parsed.items():
    assert int(example["label"]) == -1 and example["label_string"].numpy() == b""
    assert float(example["frame_rate"]) == 25.0
    frames = [np.asarray(Image.open(io.BytesIO(f))) for f in example["frames_N"].numpy()]
    assert frames[0].shape[:2] == (int(example["height"]), int(example["width"])), media_id
  phone = parsed["phone/2024/IMG_0001.MOV"]
  # Coded 48 wide x 32 high, tagged -90: stored upright, 24 high x 16 wide at short side 16.
  assert (int(phone["height"]), int(phone["width"])) == (24, 16)
  assert (int(parsed["vfr.MP4"]["height"]), int(parsed["vfr.MP4"]["width"])) == (16, 24)
  with av.open(os.path.join(metadata["conversion"]["input_dir"], "vfr.MP4")) as container:
    last_frame_lasts = 1 / float(container.streams.video[0].average_rate)
  vfr_frames = len(parsed["vfr.MP4"]["frames_N"])  # 1.1 s of irregular frames, at 25 fps
  assert vfr_frames == len(tv.nearest([t / 1000 for t in tv.VFR_PTS_MS], 25,
                                      1.1 + last_frame_lasts))


def test_record_table_reads_an_unlabeled_split(converted):
  out, metadata = converted
  table = records.RecordTable(out, "unlabeled")  # no classes: the label range check is off
  assert table.num_classes is None and table.num_examples == len(VIDEOS)
  example = table.parse_checked(next(iter(table.read(tf.constant(0, tf.int64)))))
  assert int(example["label"]) == -1
  assert example["media_id"].numpy().decode() == metadata["splits"]["unlabeled"]["media_ids"][0]


def test_temporary_and_side_files_never_match_the_glob(converted, tmp_path):
  out, metadata = converted
  shard = os.path.join(str(tmp_path), records.shard_filename("unlabeled", 0, 4))
  temporary = records.temporary_shard_path(shard)
  assert os.path.dirname(temporary) == str(tmp_path)
  assert os.path.basename(temporary).startswith(".")
  for path in (temporary, records.sidecar_path(str(tmp_path), os.path.basename(shard))):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(b"not a record")
  assert tf.io.gfile.glob(os.path.join(str(tmp_path), "unlabeled.tfrecord-*")) == []
  assert all(os.path.exists(records.sidecar_path(out, f))
             for f in metadata["splits"]["unlabeled"]["files"])


def test_rerun_keeps_finished_shards(tree, converted, monkeypatch):
  out, metadata = converted
  names = metadata["splits"]["unlabeled"]["files"]
  mtimes = {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in names}
  decoded = []
  monkeypatch.setattr(video_io, "decode_to_jpeg", lambda p, o: decoded.append(p))
  assert _convert(tree, out)["splits"] == metadata["splits"]
  assert not decoded
  assert {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in names} == mtimes


def test_cli_two_workers_same_output_and_a_quiet_console(tree, converted, tmp_path):
  out, metadata = converted
  cli_out = str(tmp_path / "cli")
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_CPP_MIN_LOG_LEVEL", "CMPL_JAX_TF_LOGS")}
  result = subprocess.run(
      [sys.executable, "-m", "cmpl_jax.data.convert", "--dataset=folder", f"--input_dir={tree}",
       f"--output_dir={cli_out}", "--fps=25", "--short_side=16", "--videos_per_shard=2",
       "--num_workers=2"], cwd=REPO, capture_output=True, text=True, timeout=180, env=env)
  assert result.returncode == 0, result.stderr
  assert f"total: {len(VIDEOS)} videos written, 5 skipped" in result.stdout
  assert [line for line in result.stderr.splitlines() if any(n in line for n in NOISE)] == []
  with open(os.path.join(cli_out, records.METADATA_FILENAME)) as f:
    assert json.load(f)["splits"] == metadata["splits"]
