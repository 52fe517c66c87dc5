"""Bad data never hangs or gives silently wrong batches: truncated shards, non-JPEG frames, empty
videos, out-of-range labels (records), and zero-byte / non-video files (converter).

Run alone with `pytest -m reliability`.
"""
import json
import os

import pytest
import tensorflow as tf

from cmpl_jax.data import convert, pipeline, records
import data_fixtures as fixtures
import video_fixtures as vf
from test_pipeline import small_config, train_iterator

pytestmark = pytest.mark.reliability


def eval_all(data_dir, **data):
  iterator = pipeline.make_eval_iterator(small_config(data_dir, **data), None, process_index=0,
                                         process_count=1, num_local_devices=1)
  return iterator, list(iterator)


def rewrite_record(data_dir, split, position, **changes):
  """Re-encodes one record of `split` in place of the original (same shard, new offsets)."""
  metadata = records.read_metadata(data_dir)
  info = metadata["splits"][split]
  shard = info["file_index"][position]
  members = [i for i, f in enumerate(info["file_index"]) if f == shard]
  path = os.path.join(data_dir, info["files"][shard])
  serialized = [bytes(r) for r in tf.data.TFRecordDataset(path).as_numpy_iterator()]
  parsed = records.parse_example(tf.constant(serialized[members.index(position)]))
  fields = dict(media_id=info["media_ids"][position], label_index=int(parsed["label"]),
                label_string="x", frame_rate=25.0, height=fixtures.HEIGHT, width=fixtures.WIDTH,
                jpeg_frames=[bytes(f) for f in parsed["frames_N"].numpy()])
  empty = changes.get("jpeg_frames") == []
  fields.update(changes)
  if empty:   # our encoder refuses this; another writer might not
    fields["jpeg_frames"] = [b"placeholder"]
  payload = records.encode_example(**fields)
  if empty:
    example = tf.train.SequenceExample.FromString(payload)
    del example.feature_lists.feature_list[records.FRAMES_KEY].feature[:]
    payload = example.SerializeToString()
  serialized[members.index(position)] = payload
  with tf.io.TFRecordWriter(path) as writer:
    for payload in serialized:
      writer.write(payload)
  lengths = [len(p) for p in serialized]
  for i, length, offset in zip(members, lengths, records.payload_offsets(lengths)):
    info["lengths"][i], info["offsets"][i] = length, offset
  records.write_metadata(data_dir, metadata)
  return info["media_ids"][position], info["files"][shard]


@pytest.fixture
def data_dir(tmp_path):
  path = str(tmp_path / "data")
  fixtures.write_dataset(path)
  return path


def test_truncated_shard_names_file_and_record(data_dir):
  info = records.read_metadata(data_dir)["splits"]["test"]
  path = os.path.join(data_dir, info["files"][1])
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(size // 2)            # a copy cut short: the last records are gone
  with pytest.raises(pipeline.BadRecordError) as error:
    eval_all(data_dir)
  message = str(error.value)
  assert info["files"][1] in message and "record " in message and "media id" in message
  assert "reading failed" in message
  # Skipping is explicit and counted; the intact shard's videos are all evaluated.
  iterator, batches = eval_all(data_dir, skip_bad_records=True)
  assert iterator.num_skipped_records >= 1
  assert sum(int(b["mask"].sum()) for b in batches) == info["num_examples"] - \
      iterator.num_skipped_records


def test_frame_that_is_not_a_jpeg(data_dir):
  media_id, shard = rewrite_record(data_dir, "test", 0, jpeg_frames=[b"GIF89a not a jpeg"] * 12)
  with pytest.raises(pipeline.BadRecordError) as error:
    eval_all(data_dir)
  assert media_id in str(error.value) and shard in str(error.value)
  assert "frame 0" in str(error.value)


def test_empty_video(data_dir):
  media_id, shard = rewrite_record(data_dir, "test", 1, jpeg_frames=[])
  with pytest.raises(pipeline.BadRecordError) as error:
    eval_all(data_dir)
  assert media_id in str(error.value) and "no frames" in str(error.value)
  iterator, _ = eval_all(data_dir, skip_bad_records=True)
  assert iterator.num_skipped_records == 1 and media_id in iterator.skipped_media_ids


def test_label_outside_the_class_range(data_dir):
  # In the record only (metadata intact): caught when the record is read.
  media_id, _ = rewrite_record(data_dir, "train", 0, label_index=7)
  config = small_config(data_dir)
  config.method = "supervised"
  with pytest.raises(pipeline.BadRecordError) as error:
    train = train_iterator(config, [0])
    next(train)
  assert media_id in str(error.value) and "label 7 is outside [0, 3)" in str(error.value)
  # In metadata.json: refused before any reading, naming the video and the shard.
  metadata = records.read_metadata(data_dir)
  metadata["splits"]["test"]["labels"][2] = -1
  records.write_metadata(data_dir, metadata)
  with pytest.raises(ValueError, match=r"label\(s\) outside \[0, 3\).*label -1 of media id"):
    eval_all(data_dir)


def test_converter_lists_zero_byte_and_non_video_files_and_carries_on(tmp_path):
  videos, splits = tmp_path / "UCF-101", tmp_path / "ucfTrainTestlist"
  splits.mkdir()
  good = "Punch/v_Punch_g01_c01.avi"
  vf.write_test_video(str(videos / good), num_frames=8)
  (videos / "Punch" / "v_Punch_g02_c01.avi").write_bytes(b"")
  (videos / "Punch" / "v_Punch_g03_c01.avi").write_text("these are not the frames you want\n")
  (splits / "classInd.txt").write_text("1 Punch\n")
  (splits / "trainlist01.txt").write_text(
      "".join(f"Punch/v_Punch_g0{g}_c01.avi 1\n" for g in (1, 2, 3)))
  (splits / "testlist01.txt").write_text(f"{good}\n")
  out = str(tmp_path / "out")
  metadata = convert.convert(dataset="ucf101", input_dir=str(videos), splits_dir=str(splits),
                             output_dir=out, short_side=32, num_workers=1)
  assert metadata["splits"]["train"]["media_ids"] == ["Punch/v_Punch_g01_c01"]
  reasons = {os.path.basename(s["path"]): s["reason"] for s in metadata["skipped"]}
  assert reasons["v_Punch_g02_c01.avi"].startswith("empty file (0 bytes)")
  assert "cannot open as a video" in reasons["v_Punch_g03_c01.avi"]
  with open(os.path.join(out, records.METADATA_FILENAME)) as f:
    assert len(json.load(f)["skipped"]) == 2
