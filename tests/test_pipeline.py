"""tf.data pipeline end to end on real tiny TFRecords (and a real tiny TFDS dataset)."""
import itertools

import numpy as np
import pytest
import tensorflow as tf

import jax
import tensorflow.experimental.numpy as tnp

from cmpl_jax import train
from cmpl_jax.data import pipeline, records, sampling, splits, streams, tfds_source
from configs import default
import data_fixtures as fixtures

PRIMARY, AUXILIARY = sampling.FrameSpec(3, 4), sampling.FrameSpec(8, 2)  # window 16, offsets 2, 0
WINDOW = 16
SPECS = {"primary": PRIMARY, "auxiliary": AUXILIARY}
OFFSETS_U, POSITIONS = sampling.union_offsets(SPECS)   # the auxiliary's 8 frames; primary 1, 3, 5
CANVAS = (40, 54)  # 40x48 frames, crop 32: no DCT scaling (20 < 32), width ceil(40 * 4/3)


def small_config(data_dir="", **data):
  config = default.get_config()
  config.model.primary.num_frames, config.model.primary.frame_stride = PRIMARY
  config.model.auxiliary.num_frames, config.model.auxiliary.frame_stride = AUXILIARY
  config.data.dir = data_dir
  config.data.crop_size = 32
  config.data.num_parallel_calls = 2
  config.data.update(data)
  config.batch_size, config.mu = 4, 2
  config.eval.num_clips, config.eval.num_crops, config.eval.batch_size = 2, 3, 4
  return config


def flat(x):
  """[D, b, ...] -> [D * b, ...]: the host's elements in stream order."""
  return x.reshape((-1,) + x.shape[2:])


def leaves(tree, prefix=""):
  for key, value in sorted(tree.items()):
    if isinstance(value, dict):
      yield from leaves(value, prefix + key + "/")
    else:
      yield prefix + key, value


def assert_same_batches(a, b):
  a, b = dict(leaves(a)), dict(leaves(b))
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def train_iterator(config, labeled, start_step=0, process_index=0, process_count=1, devices=2):
  return pipeline.make_train_iterator(
      config, None, labeled, start_step=start_step, process_index=process_index,
      process_count=process_count, num_local_devices=devices)


def canvas_indices(frames_UxHxWx3, size):
  """int[U]: stored frame index of each canvas frame (its valid region, padding excluded)."""
  return fixtures.frame_indices_of(frames_UxHxWx3[:, :size[0], :size[1]])


def window_start_of(primary_T, auxiliary_T, frame_counts):
  """The window start explaining both models' frames (for some video length), else None."""
  for n in frame_counts:
    for start in range(sampling.max_window_start(n, WINDOW) + 1):
      if (np.array_equal(primary_T, sampling.clip_indices(start, *PRIMARY, WINDOW, n)) and
          np.array_equal(auxiliary_T, sampling.clip_indices(start, *AUXILIARY, WINDOW, n))):
        return start
  return None


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("records"))
  fixtures.write_dataset(path)
  return path


@pytest.fixture(scope="module")
def labeled(data_dir):
  media_ids, labels, classes = pipeline.train_split_labels(small_config(data_dir))
  return splits.class_balanced_subset(labels, len(classes), 50, seed=0)


@pytest.fixture(scope="module")
def train_batches(data_dir, labeled):
  """The first 3 global batches (process_count=1, 2 devices)."""
  iterator = train_iterator(small_config(data_dir), labeled)
  return [next(iterator) for _ in range(3)]


# --------------------------------------------------------------------------- sampling


def test_sampling_maths_runs_unchanged_in_numpy_and_tf():
  for n, num_clips in itertools.product([1, 7, 16, 63, 64, 65, 301], [1, 2, 3, 10]):
    starts = sampling.eval_window_starts(n, 64, num_clips)
    np.testing.assert_array_equal(
        sampling.eval_window_starts(tf.constant(n), 64, num_clips, xp=tnp), starts)
    np.testing.assert_array_equal(
        sampling.window_frames(tf.constant(starts), OFFSETS_U, tf.constant(n)),
        sampling.window_frames(starts, OFFSETS_U, n))
  for start, n in itertools.product(range(40), [5, 12, 64]):  # the union holds every model's
    union = sampling.window_frames(np.array([start], np.int32), OFFSETS_U, n)[0]
    for name, spec in SPECS.items():
      np.testing.assert_array_equal(union[list(POSITIONS[name])],
                                    sampling.clip_indices(start, *spec, WINDOW, n))


def test_canvas_uses_the_jpeg_scale_the_crop_needs():
  config = small_config()
  config.data.crop_size = 112
  assert sampling.canvas_for(config, 256) == (128, 171, 2)
  config.data.crop_size = 224
  assert sampling.canvas_for(config, 256) == (256, 342, 1)
  config.data.jpeg_dct_scaling = False
  config.data.crop_size = 112
  assert sampling.canvas_for(config, 256) == (256, 342, 1)
  config.data.jpeg_dct_scaling, config.data.decode_short_side = True, 64
  assert sampling.canvas_for(config, 256) == (64, 86, 4)


def test_models_share_one_centred_window():
  assert sampling.window_length([PRIMARY, AUXILIARY]) == WINDOW
  primary = sampling.clip_indices(5, *PRIMARY, WINDOW)
  auxiliary = sampling.clip_indices(5, *AUXILIARY, WINDOW)
  assert primary.tolist() == [7, 11, 15] and auxiliary.tolist() == list(range(5, 21, 2))
  # The default pair: primary 8 x 8 frames are a subset of auxiliary 32 x 2 frames.
  assert set(sampling.clip_indices(0, 8, 8, 64)) <= set(sampling.clip_indices(0, 32, 2, 64))
  # Short videos loop.
  assert sampling.clip_indices(0, *AUXILIARY, WINDOW, 12).tolist() == [0, 2, 4, 6, 8, 10, 0, 2]


def test_frame_specs_follow_the_models_the_method_trains():
  config = small_config()
  assert sampling.frame_specs(config) == {"primary": PRIMARY, "auxiliary": AUXILIARY}
  config.method = "fixmatch"   # single-model, whatever auxiliary is configured
  assert sampling.frame_specs(config) == {"primary": PRIMARY}
  config.method = "supervised"
  config.model.auxiliary.name = ""
  assert sampling.frame_specs(config) == {"primary": PRIMARY}


def test_stream_epochs_are_permutations_of_the_index_set():
  index_set = tf.constant([3, 5, 8, 13, 21], tf.int64)
  def epoch(e, seed=0):
    return [int(streams.stream_video(index_set, k, seed, 1)) for k in range(5 * e, 5 * e + 5)]
  assert sorted(epoch(0)) == sorted(epoch(1)) == [3, 5, 8, 13, 21]
  assert epoch(0) == epoch(0) and len({tuple(epoch(e)) for e in range(4)}) > 1


# --------------------------------------------------------------------------- training


def test_train_batch_shapes_and_dtypes(train_batches, labeled, data_dir):
  assert pipeline.class_names(small_config(data_dir)) == list(fixtures.CLASSES)
  batch = train_batches[0]
  assert set(batch) == {"labeled", "unlabeled"}
  for stream, b in (("labeled", 2), ("unlabeled", 4)):
    part = batch[stream]
    assert set(part) == {"frames", "size", "transposed", "position", "label"}
    assert part["frames"].shape == (2, b, len(OFFSETS_U)) + CANVAS + (3,)
    assert part["frames"].dtype == np.uint8 and part["label"].dtype == np.int32
    assert np.all(part["size"] == [40, 48]) and not part["transposed"].any()
    assert np.all(part["frames"][..., 48:, :] == 0)  # padding
  np.testing.assert_array_equal(flat(batch["labeled"]["position"]), np.arange(4))
  np.testing.assert_array_equal(flat(batch["unlabeled"]["position"]), np.arange(8))
  np.testing.assert_array_equal(flat(train_batches[1]["unlabeled"]["position"]), 8 + np.arange(8))
  labels = records.read_metadata(data_dir)["splits"]["train"]["labels"]
  assert set(flat(batch["labeled"]["label"])) <= {labels[i] for i in labeled}


def test_both_models_frames_lie_in_one_window(train_batches, data_dir):
  counts = set(records.read_metadata(data_dir)["splits"]["train"]["num_frames"])
  starts = []
  for batch in train_batches:
    for part in (batch["labeled"], batch["unlabeled"]):
      for frames, size in zip(flat(part["frames"]), flat(part["size"])):
        union = canvas_indices(frames, size)
        start = window_start_of(union[list(POSITIONS["primary"])],
                                union[list(POSITIONS["auxiliary"])], counts)
        assert start is not None
        starts.append(start)
  assert len(set(starts)) > 3  # Window starts are random.


def test_device_views_of_a_batch_come_from_its_window(train_batches, data_dir):
  """Weak and strong views of both models (RandAugment and Cutout off, so flat frames stay
  flat) show the frames of the clip's one window, each model at its own frame rate."""
  config = small_config(data_dir, randaugment_layers=0, cutout_fraction=0.0)
  host = jax.tree.map(lambda x: x[0], train_batches[0])  # device 0
  inputs = jax.jit(lambda b, k: train.model_inputs(b, k, config))(host, jax.random.key(0))
  for name in SPECS:
    assert inputs["labeled"][name].shape == (2, SPECS[name].num_frames, 32, 32, 3)
    for i, frames in enumerate(host["unlabeled"]["frames"]):
      window = canvas_indices(frames, host["unlabeled"]["size"][i])[list(POSITIONS[name])]
      for kind in ("weak", "strong"):
        np.testing.assert_array_equal(
            fixtures.frame_indices_of(np.asarray(inputs["unlabeled"][kind][name][i])), window)


def test_same_seed_and_resume_give_identical_batches(train_batches, data_dir, labeled):
  resumed = train_iterator(small_config(data_dir), labeled, start_step=1)
  assert resumed.step == 1
  assert_same_batches(next(resumed), train_batches[1])
  assert_same_batches(next(resumed), train_batches[2])
  assert resumed.step == 3


def test_host_slices_concatenate_to_the_global_batch(train_batches, data_dir, labeled):
  hosts = [train_iterator(small_config(data_dir), labeled, process_index=p, process_count=2)
           for p in range(2)]
  for step in range(2):
    parts = [next(host) for host in hosts]
    assert parts[0]["labeled"]["frames"].shape[:2] == (2, 1)  # 2 devices x 1 clip per host
    glob = dict(leaves(train_batches[step]))
    for key, value in glob.items():
      joined = np.concatenate([flat(dict(leaves(part))[key]) for part in parts])
      np.testing.assert_array_equal(joined, flat(value), err_msg=key)


def test_single_model_supervised_batches(data_dir, labeled):
  config = small_config(data_dir)
  config.method = "supervised"
  config.model.auxiliary = None
  batch = next(train_iterator(config, labeled, devices=4))
  assert set(batch) == {"labeled"}
  assert batch["labeled"]["frames"].shape == (4, 1, 3) + CANVAS + (3,)  # the primary's 3 frames
  with pytest.raises(ValueError, match=r"config.batch_size=4 .* 2 \* 4 = 8"):
    train_iterator(config, labeled, process_count=2, devices=4)


# --------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize("process_count,devices,batch_size",
                         [(1, 1, 4), (1, 8, 8), (2, 1, 4), (2, 2, 8)])
def test_eval_covers_the_split_exactly_once(data_dir, process_count, devices, batch_size):
  config = small_config(data_dir)
  config.eval.num_clips, config.eval.num_crops, config.eval.batch_size = 1, 1, batch_size
  seen, padding = [], 0
  for p in range(process_count):
    iterator = pipeline.make_eval_iterator(config, None, process_index=p,
                                           process_count=process_count,
                                           num_local_devices=devices)
    assert len(iterator) == -(-6 // batch_size)
    batches = list(iterator)
    assert len(batches) == len(iterator)
    for batch in batches:
      b = batch_size // (process_count * devices)
      assert batch["frames"].shape == (devices, b, 1, len(OFFSETS_U)) + CANVAS + (3,)
      assert batch["mask"].dtype == bool and batch["index"].dtype == np.int32
      index, mask = flat(batch["index"]), flat(batch["mask"])
      seen.extend(index[mask].tolist())
      assert np.all(index[~mask] == -1)
      padding += int((~mask).sum())
  assert sorted(seen) == list(range(6))
  assert padding == len(iterator) * batch_size - 6


def test_eval_windows_are_uniform_and_cover_each_video(data_dir):
  info = records.read_metadata(data_dir)["splits"]["test"]
  iterator = pipeline.make_eval_iterator(small_config(data_dir), None, process_index=0,
                                         process_count=1, num_local_devices=2)
  for batch in iterator:
    for i, (index, mask) in enumerate(zip(flat(batch["index"]), flat(batch["mask"]))):
      if not mask:
        continue
      assert flat(batch["label"])[i] == info["labels"][index]
      expected = sampling.eval_clip_indices(info["num_frames"][index], SPECS, 2)
      windows = flat(batch["frames"])[i]
      assert windows.shape[0] == 2  # clips; the 3 crops are taken on the device
      for c, window in enumerate(windows):
        union = canvas_indices(window, flat(batch["size"])[i])
        for name in SPECS:
          np.testing.assert_array_equal(union[list(POSITIONS[name])], expected[name][c])


# --------------------------------------------------------------------------- bad records


@pytest.fixture(scope="module")
def corrupt_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("corrupt"))
  videos = fixtures.default_videos()
  bad_test, bad_train = videos["test"][0][0], videos["train"][0][0]  # 12 frames: frame 0 used
  fixtures.write_dataset(path, videos, corrupt={bad_test: 0, bad_train: 0})
  return path, bad_test, bad_train


def test_bad_record_error_names_shard_and_media_id(corrupt_dir):
  path, bad_test, _ = corrupt_dir
  iterator = pipeline.make_eval_iterator(small_config(path), None, process_index=0,
                                         process_count=1, num_local_devices=1)
  with pytest.raises(pipeline.BadRecordError) as error:
    list(iterator)
  message = str(error.value)
  assert "record 0 of" in message and "test.tfrecord-00000-of-00002" in message
  assert bad_test in message and "frame 0" in message and "skip_bad_records" in message


def test_skip_bad_records_masks_eval_and_replaces_training_videos(corrupt_dir):
  path, bad_test, bad_train = corrupt_dir
  config = small_config(path, skip_bad_records=True)
  iterator = pipeline.make_eval_iterator(config, None, process_index=0, process_count=1,
                                         num_local_devices=1)
  seen = [i for batch in iterator for i, m in zip(flat(batch["index"]), flat(batch["mask"]))
          if m]
  assert sorted(seen) == [1, 2, 3, 4, 5] and iterator.num_skipped_records == 1
  config.method = "supervised"
  train = train_iterator(config, [0, 5])  # Train video 0 is bad, video 5 is fine.
  labels = [flat(next(train)["labeled"]["label"]) for _ in range(3)]
  assert np.all(np.concatenate(labels) == 1)  # Only video 5 (class 1) is ever served.
  assert train.num_skipped_records > 0 and bad_train in train.skipped_media_ids
  config.data.skip_bad_records = False
  with pytest.raises(pipeline.BadRecordError, match=bad_train):
    train = train_iterator(config, [0, 5])
    for _ in range(3):
      next(train)


# --------------------------------------------------------------------------- TFDS source


def test_tfds_source_end_to_end(tmp_path):
  builder = fixtures.tiny_tfds_builder_class()(data_dir=str(tmp_path))
  builder.download_and_prepare()
  config = small_config(source="tfds", tfds_name=builder.name, tfds_data_dir=str(tmp_path))
  ids, labels, classes = pipeline.train_split_labels(config)
  assert ids[0] == "train[0]" and len(labels) == 12 and classes == list(fixtures.CLASSES)
  assert pipeline.class_names(config) == classes
  labeled = splits.class_balanced_subset(labels, len(classes), 50, seed=0)
  iterator = train_iterator(config, labeled)
  batches = [next(iterator) for _ in range(2)]
  assert batches[0]["unlabeled"]["frames"].shape == (2, 4, len(OFFSETS_U)) + CANVAS + (3,)
  assert set(flat(batches[0]["labeled"]["label"])) <= {labels[i] for i in labeled}
  for frames, size in zip(flat(batches[1]["labeled"]["frames"]),
                          flat(batches[1]["labeled"]["size"])):
    union = canvas_indices(frames, size)
    assert window_start_of(union[list(POSITIONS["primary"])], union[list(POSITIONS["auxiliary"])],
                           (12, 16, 24, 40)) is not None
  assert_same_batches(next(train_iterator(config, labeled)), batches[0])
  hosts = [next(train_iterator(config, labeled, process_index=p, process_count=2, devices=1))
           for p in range(2)]
  np.testing.assert_array_equal(
      np.concatenate([flat(h["unlabeled"]["frames"]) for h in hosts]),
      flat(batches[0]["unlabeled"]["frames"]))
  resumed = train_iterator(config, labeled, start_step=1)
  assert_same_batches(next(resumed), batches[1])
  evaluation = pipeline.make_eval_iterator(config, None, process_index=0, process_count=1,
                                           num_local_devices=2)
  seen = {}
  for batch in evaluation:
    for i, m, label in zip(flat(batch["index"]), flat(batch["mask"]), flat(batch["label"])):
      if m:
        seen[int(i)] = int(label)
  assert sorted(seen) == list(range(6))
  _, test_labels, _ = tfds_source.split_labels(config, "test", None)  # TFDS order
  assert [seen[i] for i in range(6)] == test_labels


def test_a_range_pool_streams_like_its_materialised_index_set():
  """Contiguous pools are drawn without materialising their indices, with the same videos."""
  as_range = streams.Pools([range(3, 40)], [1.0])
  as_list = streams.Pools([list(range(3, 40))], [1.0])
  for k in range(0, 120, 7):
    assert int(as_range.video(k, 5, 1)) == int(as_list.video(k, 5, 1))
  mixed = streams.Pools([range(0, 10), range(10, 1000)], [1.0, 3.0])
  picks = np.array([int(mixed.video(k, 0, 1)) for k in range(400)])
  assert 0.15 < np.mean(picks < 10) < 0.35 and picks.max() < 1000
