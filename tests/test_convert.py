"""Converters: UCF-101 / Kinetics layouts -> sharded TFRecords + metadata.json.

Tiny real videos (16 frames of 48x64, PyAV-encoded) laid out like the releases, with the
quirks real copies have: CRLF split lists, the HandstandPushups/HandStandPushups case
mismatch, missing, corrupt and empty files, quoted CSV labels, nested folders.
"""
import csv
import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cmpl_jax.data import beam_convert, convert, records, video_io
import video_fixtures as vf  # tests/ is on sys.path under pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------- fixtures


def _write_lines(path, lines):
  with open(path, "wb") as f:  # CRLF, as shipped in ucfTrainTestlist
    f.write("".join(line + "\r\n" for line in lines).encode())


@pytest.fixture(scope="module")
def ucf(tmp_path_factory):
  """UCF-101 layout: 3 classes; train 4 on disk + 1 missing; test 2 good + 1 corrupt."""
  root = tmp_path_factory.mktemp("ucf")
  videos, splits = root / "UCF-101", root / "ucfTrainTestlist"
  splits.mkdir()
  files = {  # relative path -> frames (None = corrupt)
      "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi": 16,
      "ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi": 12,
      "ApplyEyeMakeup/v_ApplyEyeMakeup_g03_c01.avi": 16,
      "HandstandPushups/v_HandStandPushups_g01_c01.avi": 16,
      "HandstandPushups/v_HandStandPushups_g02_c01.avi": 16,
      "YoYo/v_YoYo_g01_c01.avi": 16,
      "YoYo/v_YoYo_g02_c01.avi": None,
  }
  for i, (rel, frames) in enumerate(files.items()):
    if frames is None:
      vf.write_corrupt_video(str(videos / rel))
    else:
      vf.write_test_video(str(videos / rel), num_frames=frames, seed=i)
  _write_lines(splits / "classInd.txt", ["1 ApplyEyeMakeup", "2 HandstandPushups", "3 YoYo"])
  _write_lines(splits / "trainlist01.txt", [
      "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1",
      "ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi 1",
      "HandstandPushups/v_HandStandPushups_g01_c01.avi 2",
      "YoYo/v_YoYo_g01_c01.avi 3",
      "YoYo/v_YoYo_g03_c01.avi 3",  # listed, not on disk
  ])
  _write_lines(splits / "testlist01.txt", [
      "ApplyEyeMakeup/v_ApplyEyeMakeup_g03_c01.avi",
      "HandStandPushups/v_HandStandPushups_g02_c01.avi",  # folder case differs from disk
      "YoYo/v_YoYo_g02_c01.avi",  # corrupt
      "",
  ])
  return {"input_dir": str(videos), "splits_dir": str(splits)}


@pytest.fixture(scope="module")
def ucf_out(ucf, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("ucf_out"))
  metadata = convert.convert(dataset="ucf101", output_dir=out, short_side=32,
                             videos_per_shard=2, **ucf)
  return out, metadata


LABELS = ["passing American football (in game)", "drinking, shots", 'saying "hi"', "abseiling"]


@pytest.fixture(scope="module")
def k400(tmp_path_factory):
  """Kinetics layout: nested folders, mp4/webm/avi, and every kind of bad file."""
  root = tmp_path_factory.mktemp("k400")
  videos, csvs = root / "videos", root / "csvs"
  csvs.mkdir()
  train = [  # (youtube_id, start, label, how it is on disk)
      ("aaaaaaaaaaa", 10, LABELS[0], "a/b/x.mp4"), ("b-b_bbbbbbb", 0, LABELS[1], "c/x.webm"),
      ("ccccccccccc", 5, LABELS[2], "x.avi"), ("ddddddddddd", 7, LABELS[3], "d/x.mp4"),
      ("eeeeeeeeeee", 1, LABELS[0], "missing"), ("fffffffffff", 2, LABELS[1], "corrupt"),
      ("ggggggggggg", 3, LABELS[2], "empty"), ("hhhhhhhhhhh", 4, LABELS[3], "text"),
      ("iiiiiiiiiii", 9, LABELS[3], "bare/x.mp4"),
  ]
  val = [("jjjjjjjjjjj", 20, LABELS[2], "val/x.mp4"), ("kkkkkkkkkkk", 0, "unseen label", "x.mp4"),
         ("lllllllllll", 30, LABELS[0], "val/deeper/x.webm")]
  for i, (yid, start, _, where) in enumerate(train + val):
    key = f"{yid}_{start:06d}_{start + 10:06d}"
    if where == "corrupt":
      vf.write_corrupt_video(str(videos / "z" / f"{key}.mp4"))
    elif where == "empty":
      (videos / f"{key}.mp4").write_bytes(b"")
    elif where == "text":
      (videos / f"{key}.txt").write_text("not a video")
    elif where.startswith("bare"):  # some download scripts name clips <youtube_id>.mp4
      vf.write_test_video(str(videos / "bare" / f"{yid}.mp4"), seed=i)
    elif where != "missing":
      folder, ext = os.path.split(where)[0], os.path.splitext(where)[1]
      vf.write_test_video(str(videos / folder / f"{key}{ext}"), seed=i)
  (videos / "unreferenced_000000_000010.mp4").write_bytes(b"")  # ignored: not in any CSV
  (videos / "README.txt").write_text("ignored")
  (videos / "notes.mp4.part").write_text("ignored")
  for name, rows in (("kinetics_400_train.csv", train), ("validate.csv", val)):
    with open(csvs / name, "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(["label", "youtube_id", "time_start", "time_end", "split", "is_cc"])
      split = "train" if "train" in name else "val"
      writer.writerows([label, yid, start, start + 10, split, 0]
                       for yid, start, label, _ in rows)
  return {"input_dir": str(videos), "annotations_dir": str(csvs)}


@pytest.fixture(scope="module")
def k400_out(k400, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("k400_out"))
  metadata = convert.convert(dataset="kinetics400", output_dir=out, short_side=0,
                             videos_per_shard=2, **k400)
  return out, metadata


def _read_every_record(out, info):
  """Reads each record alone, exactly as the training pipeline does, from offset/length."""
  parsed = []
  for i in range(info["num_examples"]):
    path, offset, length = (x[0] for x in records.record_locations(out, info, [i]))
    footer = os.path.getsize(path) - offset - length
    ds = tf.data.FixedLengthRecordDataset(path, record_bytes=length, header_bytes=offset,
                                          footer_bytes=footer)
    (payload,) = list(ds.take(2))
    parsed.append(records.parse_example(payload))
  return parsed


def _check_split_records(out, info, expect_hw=None):
  """Offsets, order, schema fields and JPEG contents of every record of a split."""
  sequential = [records.parse_example(p) for p in tf.data.TFRecordDataset(
      [os.path.join(out, f) for f in info["files"]])]
  singles = _read_every_record(out, info)
  assert len(sequential) == len(singles) == info["num_examples"]
  for i, (seq, one) in enumerate(zip(sequential, singles)):
    assert seq["media_id"].numpy().decode() == one["media_id"].numpy().decode()
    assert one["media_id"].numpy().decode() == info["media_ids"][i]
    assert int(one["label"]) == info["labels"][i]
    assert float(one["frame_rate"]) == pytest.approx(info["frame_rates"][i])
    frames = one["frames_N"].numpy()
    assert len(frames) == info["num_frames"][i]
    image = np.asarray(Image.open(io.BytesIO(frames[0])))
    assert image.shape == (int(one["height"]), int(one["width"]), 3)
    if expect_hw:
      assert image.shape[:2] == expect_hw
  return singles


# ---------------------------------------------------------------------------- UCF-101


def test_ucf_metadata(ucf_out):
  out, metadata = ucf_out
  assert metadata == records.read_metadata(out)
  assert metadata["dataset"] == "ucf101"
  assert metadata["classes"] == ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]
  assert metadata["frame_rate"] == 0.0 and metadata["short_side"] == 32
  train, test = metadata["splits"]["train"], metadata["splits"]["test"]
  assert sorted(zip(train["media_ids"], train["labels"])) == [
      ("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01", 0),
      ("ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01", 0),
      ("HandstandPushups/v_HandStandPushups_g01_c01", 1), ("YoYo/v_YoYo_g01_c01", 2)]
  assert sorted(zip(test["media_ids"], test["labels"])) == [
      ("ApplyEyeMakeup/v_ApplyEyeMakeup_g03_c01", 0),
      ("HandstandPushups/v_HandStandPushups_g02_c01", 1)]  # folder spelled as classInd
  assert train["files"] == [records.shard_filename("train", i, 2) for i in range(2)]
  assert test["files"] == [records.shard_filename("test", i, 2) for i in range(2)]
  for info in (train, test):
    n = info["num_examples"]
    assert all(len(info[k]) == n for k in ("media_ids", "labels", "file_index", "offsets",
                                           "lengths", "num_frames", "frame_rates"))
    assert info["file_index"] == sorted(info["file_index"])
  frames = dict(zip(train["media_ids"], train["num_frames"]))
  assert frames["ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01"] == 12
  assert set(train["num_frames"] + test["num_frames"]) == {12, 16}
  skipped = {(os.path.basename(s["path"]), s["split"]): s["reason"] for s in metadata["skipped"]}
  assert set(skipped) == {("v_YoYo_g03_c01.avi", "train"), ("v_YoYo_g02_c01.avi", "test")}
  assert skipped[("v_YoYo_g03_c01.avi", "train")].startswith("missing")
  assert "video" in skipped[("v_YoYo_g02_c01.avi", "test")]
  assert all(os.path.exists(records.sidecar_path(out, f))
             for info in (train, test) for f in info["files"])
  assert sorted(os.listdir(out)) == sorted(
      [records.METADATA_FILENAME, records.SHARD_INDEX_DIRNAME] + train["files"] + test["files"])
  for split, info in metadata["splits"].items():  # what DMVR/Scenic/TFDS-style readers do
    plain = tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(f"{out}/{split}.tfrecord-*")))
    assert sorted(records.parse_example(r)["media_id"].numpy().decode() for r in plain) == \
        sorted(info["media_ids"])


def test_ucf_records_exact_offsets_and_contents(ucf_out):
  out, metadata = ucf_out
  for info in metadata["splits"].values():
    parsed = _check_split_records(out, info, expect_hw=(32, 43))  # 48x64 -> short side 32
    for example in parsed:
      assert example["label_string"].numpy().decode() == \
          metadata["classes"][int(example["label"])]
      assert float(example["frame_rate"]) == 25.0


def test_fps_resampling_and_max_frames(ucf, tmp_path):
  metadata = convert.convert(dataset="ucf101", output_dir=str(tmp_path / "a"), short_side=0,
                             fps=12.5, **ucf)
  train = metadata["splits"]["train"]
  frames = dict(zip(train["media_ids"], train["num_frames"]))
  assert frames["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01"] == 8  # 16 frames @25 -> 0.64 s
  assert frames["ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01"] == 6  # 12 frames @25 -> 0.48 s
  assert metadata["frame_rate"] == 12.5 and set(train["frame_rates"]) == {12.5}
  parsed = _check_split_records(str(tmp_path / "a"), train, expect_hw=(48, 64))
  assert {float(p["frame_rate"]) for p in parsed} == {12.5}
  metadata = convert.convert(dataset="ucf101", output_dir=str(tmp_path / "b"), short_side=0,
                             fps=10, max_frames=5, **ucf)
  assert set(metadata["splits"]["train"]["num_frames"]) == {5}


def test_select_nearest_frames():
  timed = [(i / 25, i) for i in range(16)]  # stand-ins for frames
  assert list(video_io._select(iter(timed), 12.5, 25.0)) == list(range(0, 16, 2))
  # 0.1 s is as near to frame 2 (0.08 s) as to frame 3 (0.12 s): ties go to the earlier one.
  assert list(video_io._select(iter(timed), 10, 25.0)) == [0, 2, 5, 7, 10, 12, 15]
  assert list(video_io._select(iter(timed), 50, 25.0)) == [i // 2 for i in range(32)]
  assert list(video_io._select(iter(timed), 0, 25.0)) == list(range(16))
  assert video_io.resized_size(240, 320, 256) == (256, 341)
  assert video_io.resized_size(320, 240, 128) == (171, 128)
  assert video_io.resized_size(240, 320, 0) == (240, 320)


def test_decode_failures_give_reasons(tmp_path):
  options = video_io.DecodeOptions()
  cases = {
      vf.write_video_without_frames(str(tmp_path / "no_frames.avi")): "no frames",
      vf.write_corrupt_video(str(tmp_path / "garbage.avi")): "no video stream",
      str(tmp_path / "absent.mp4"): "cannot read file",
  }
  (tmp_path / "empty.mp4").write_bytes(b"")
  cases[str(tmp_path / "empty.mp4")] = "empty file (0 bytes)"
  (tmp_path / "text.mp4").write_text("hello, not a video\n" * 10)
  cases[str(tmp_path / "text.mp4")] = "cannot open as a video"
  for path, reason in cases.items():
    with pytest.raises(video_io.VideoDecodeError, match=re.escape(reason)):
      video_io.decode_to_jpeg(path, options)


# ---------------------------------------------------------------------------- resume


def test_resume_redoes_only_missing_or_unfinished_shards(ucf, tmp_path, monkeypatch):
  out = str(tmp_path)
  kwargs = dict(dataset="ucf101", output_dir=out, short_side=24, videos_per_shard=1, **ucf)
  first = convert.convert(**kwargs)
  names = first["splits"]["train"]["files"] + first["splits"]["test"]["files"]
  mtimes = {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in names}
  os.remove(os.path.join(out, names[0]))  # shard and sidecar gone
  os.remove(records.sidecar_path(out, names[0]))
  os.remove(records.sidecar_path(out, names[1]))  # crash before sidecar
  # A sidecar where versions before .shard_index/ wrote it is moved, its shard kept.
  os.rename(records.sidecar_path(out, names[3]), os.path.join(out, names[3] + ".index.json"))
  for name in (f".{names[2]}.incomplete.1", f"{names[2]}.incomplete.2",  # new, old temporaries
               "train.tfrecord-00000-of-00099", ".shard_index/train.tfrecord-00000-of-00099.json"):
    with open(os.path.join(out, name), "wb") as f:
      f.write(b"stale")
  decoded = []
  real_decode = video_io.decode_to_jpeg
  monkeypatch.setattr(video_io, "decode_to_jpeg", lambda p, o: decoded.append(p) or
                      real_decode(p, o))
  second = convert.convert(**kwargs)
  assert len(decoded) == 2
  assert second == first
  for n in names[2:]:
    assert os.stat(os.path.join(out, n)).st_mtime_ns == mtimes[n], n
  assert sorted(os.listdir(out)) == sorted(["metadata.json", records.SHARD_INDEX_DIRNAME] + names)
  assert sorted(os.listdir(os.path.join(out, records.SHARD_INDEX_DIRNAME))) == \
      sorted(n + ".json" for n in names)
  _check_split_records(out, second["splits"]["train"])

  # A crash mid-run keeps the shards finished before it; other settings redo everything.
  calls = []

  def crash_on_third(path, options):
    calls.append(path)
    if len(calls) == 3:
      raise KeyboardInterrupt
    return real_decode(path, options)
  monkeypatch.setattr(video_io, "decode_to_jpeg", crash_on_third)
  with pytest.raises(KeyboardInterrupt):
    convert.convert(**{**kwargs, "short_side": 16})
  decoded.clear()
  monkeypatch.setattr(video_io, "decode_to_jpeg", lambda p, o: decoded.append(p) or
                      real_decode(p, o))
  third = convert.convert(**{**kwargs, "short_side": 16})
  assert len(decoded) == len(names) - 2
  _check_split_records(out, third["splits"]["test"], expect_hw=(16, 21))
  decoded.clear()  # decoder threads do not change the frames: nothing to redo
  assert convert.convert(**{**kwargs, "short_side": 16, "decode_threads": 0})["splits"] == \
      third["splits"]
  assert not decoded


# ---------------------------------------------------------------------------- Kinetics


def test_kinetics_metadata_and_skips(k400_out):
  out, metadata = k400_out
  assert metadata["dataset"] == "kinetics400"
  assert metadata["classes"] == sorted(LABELS)
  train, val = metadata["splits"]["train"], metadata["splits"]["validation"]
  assert sorted(train["media_ids"]) == [
      "aaaaaaaaaaa_000010_000020", "b-b_bbbbbbb_000000_000010", "ccccccccccc_000005_000015",
      "ddddddddddd_000007_000017", "iiiiiiiiiii_000009_000019"]
  assert sorted(val["media_ids"]) == ["jjjjjjjjjjj_000020_000030", "lllllllllll_000030_000040"]
  labels = dict(zip(train["media_ids"] + val["media_ids"], train["labels"] + val["labels"]))
  classes = metadata["classes"]
  assert classes[labels["aaaaaaaaaaa_000010_000020"]] == LABELS[0]
  assert classes[labels["b-b_bbbbbbb_000000_000010"]] == "drinking, shots"
  assert classes[labels["ccccccccccc_000005_000015"]] == 'saying "hi"'
  assert classes[labels["lllllllllll_000030_000040"]] == LABELS[0]
  reasons = {os.path.basename(s["path"]).split(".")[0].split("_")[0]: s["reason"]
             for s in metadata["skipped"]}
  assert set(reasons) == {"eeeeeeeeeee", "fffffffffff", "ggggggggggg", "hhhhhhhhhhh",
                          "kkkkkkkkkkk"}
  assert reasons["eeeeeeeeeee"].startswith("missing")
  assert "no video stream" in reasons["fffffffffff"]
  assert reasons["ggggggggggg"] == "empty file (0 bytes)"
  assert "non-video file" in reasons["hhhhhhhhhhh"]
  assert "not a class of the train split" in reasons["kkkkkkkkkkk"]
  assert {s["split"] for s in metadata["skipped"]} == {"train", "validation"}


def test_kinetics_records(k400_out):
  out, metadata = k400_out
  for info in metadata["splits"].values():
    _check_split_records(out, info, expect_hw=(48, 64))  # short_side=0 keeps the size


def test_cli_with_two_workers_matches_in_process(k400, k400_out, tmp_path):
  out, metadata = k400_out
  cli_out = str(tmp_path / "cli")
  result = subprocess.run(
      [sys.executable, "-m", "cmpl_jax.data.convert", "--dataset=kinetics400",
       f"--input_dir={k400['input_dir']}", f"--annotations_dir={k400['annotations_dir']}",
       f"--output_dir={cli_out}", "--short_side=0", "--videos_per_shard=2", "--num_workers=2"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert "total: 7 videos written, 5 skipped" in result.stdout
  cli_metadata = records.read_metadata(cli_out)
  assert cli_metadata["splits"] == metadata["splits"]
  for name in metadata["splits"]["train"]["files"]:
    with open(os.path.join(out, name), "rb") as a, open(os.path.join(cli_out, name), "rb") as b:
      assert a.read() == b.read()


# ---------------------------------------------------------------------------- errors


def test_errors_name_the_flag_or_file(ucf, k400, tmp_path):
  out = str(tmp_path / "out")
  base = dict(dataset="ucf101", output_dir=out, **ucf)
  cases = [
      (dict(base, input_dir=str(tmp_path / "nope")), "--input_dir"),
      (dict(base, splits_dir=str(tmp_path / "nope")), "--splits_dir"),
      (dict(base, splits_dir=None), "--splits_dir is required"),
      (dict(base, split_id=2), "trainlist02.txt"),
      (dict(base, split_id=4), "--split_id"),
      (dict(base, dataset="hmdb51"), "--dataset"),
      (dict(base, short_side=-1), "--short_side"),
      (dict(base, jpeg_quality=0), "--jpeg_quality"),
      (dict(base, videos_per_shard=0), "--videos_per_shard"),
      (dict(dataset="kinetics400", output_dir=out, input_dir=k400["input_dir"]),
       "--annotations_dir"),
      (dict(dataset="kinetics400", output_dir=out, input_dir=k400["input_dir"],
            annotations_dir=ucf["splits_dir"]), "train annotation CSV"),
  ]
  for kwargs, message in cases:
    with pytest.raises((ValueError, FileNotFoundError), match=message):
      convert.prepare(**kwargs)
  bad_csvs = tmp_path / "bad_csvs"
  bad_csvs.mkdir()
  (bad_csvs / "train.csv").write_text("label,youtube_id,time_start\nabseiling,x,1\n")
  (bad_csvs / "val.csv").write_text("label,youtube_id,time_start,time_end\n")
  with pytest.raises(ValueError, match=r"train\.csv.*time_end"):
    convert.prepare(dataset="kinetics400", output_dir=out, input_dir=k400["input_dir"],
                    annotations_dir=str(bad_csvs))
  with pytest.raises(FileNotFoundError, match="none of the videos"):
    convert.prepare(**dict(base, input_dir=str(bad_csvs)))
  assert not os.path.exists(out)  # nothing written before the inputs are known good


def test_cli_reports_bad_flags_without_traceback(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "cmpl_jax.data.convert", "--dataset=ucf101",
       f"--input_dir={tmp_path / 'missing'}", f"--splits_dir={tmp_path}",
       f"--output_dir={tmp_path / 'out'}"],
      cwd=REPO, capture_output=True, text=True, timeout=60)
  assert result.returncode != 0
  assert "--input_dir" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------- Apache Beam


def _shard_bytes(out, metadata):
  contents = {}
  for info in metadata["splits"].values():
    for name in info["files"]:
      with open(os.path.join(out, name), "rb") as f:
        contents[name] = f.read()
  return contents


def test_beam_direct_runner_matches_the_process_pool_and_keeps_finished_shards(
    ucf, ucf_out, tmp_path):
  out, metadata = ucf_out   # the process pool's conversion (in this process)
  beam_out = str(tmp_path / "beam")
  kwargs = dict(dataset="ucf101", output_dir=beam_out, short_side=32, videos_per_shard=2, **ucf)
  beam_metadata = convert.convert(runner="DirectRunner", direct_num_workers=2, **kwargs)
  # Same media ids, labels, offsets, skip list and settings, and the same bytes in every shard.
  assert beam_metadata == metadata
  assert records.read_metadata(beam_out) == records.read_metadata(out)
  assert {s["reason"].split(":")[0] for s in beam_metadata["skipped"]} >= {"missing"}
  assert _shard_bytes(beam_out, beam_metadata) == _shard_bytes(out, metadata)
  # The job read its tasks from a plan file, removed once every shard checked out.
  assert os.listdir(os.path.join(beam_out, beam_convert.PLAN_DIRNAME)) == []

  # A job that lost one shard (and its sidecar) redoes that shard only.
  lost = beam_metadata["splits"]["train"]["files"][0]
  os.remove(os.path.join(beam_out, lost))
  kept = {name: os.stat(os.path.join(beam_out, name)).st_mtime_ns
          for name in _shard_bytes(out, metadata) if name != lost}
  again = convert.convert(runner="DirectRunner", **kwargs)
  assert again == metadata
  assert {name: os.stat(os.path.join(beam_out, name)).st_mtime_ns for name in kept} == kept
  assert _shard_bytes(beam_out, again) == _shard_bytes(out, metadata)


def test_beam_flags_are_checked_before_any_work(ucf, tmp_path):
  def run(*flags):
    return subprocess.run(
        [sys.executable, "-m", "cmpl_jax.data.convert", "--dataset=ucf101",
         f"--input_dir={ucf['input_dir']}", f"--splits_dir={ucf['splits_dir']}",
         f"--output_dir={tmp_path / 'out'}", *flags],
        cwd=REPO, capture_output=True, text=True, timeout=120)
  result = run("--direct_num_workers=2")
  assert result.returncode != 0 and "need --runner" in result.stderr
  result = run("--runner=DirectRunner", "--beam_pipeline_options=project")
  assert result.returncode != 0 and "'project' is not key=value" in result.stderr
  assert "Traceback" not in result.stderr and not os.path.exists(tmp_path / "out")


def test_inputs_on_another_file_system_give_the_same_records(ucf, ucf_out, tmp_path):
  """Listing, split lists and videos read through tf.io.gfile when the paths are URLs (here
  TensorFlow's in-memory ram:// file system, standing in for gs://)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  root = f"ram://ucf_{os.getpid()}"
  remote = {}
  for key, local in ucf.items():
    remote[key] = f"{root}/{os.path.basename(local)}"
    for folder, _, files in os.walk(local):
      target = remote[key] + folder[len(local):]
      tf.io.gfile.makedirs(target)
      for name in files:
        tf.io.gfile.copy(os.path.join(folder, name), f"{target}/{name}")
  out, metadata = ucf_out
  remote_out = str(tmp_path / "from_ram")
  remote_metadata = convert.convert(dataset="ucf101", output_dir=remote_out, short_side=32,
                                    videos_per_shard=2, **remote)
  assert remote_metadata["splits"] == metadata["splits"]
  assert remote_metadata["conversion"]["input_dir"] == remote["input_dir"]

  def skips(meta, prefix):
    return [{**s, "path": s["path"].replace(prefix, "INPUT")} for s in meta["skipped"]]
  assert skips(remote_metadata, remote["input_dir"]) == skips(metadata, ucf["input_dir"])
  assert _shard_bytes(remote_out, remote_metadata) == _shard_bytes(out, metadata)
