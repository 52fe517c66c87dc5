"""The synthetic dataset: UCF-101 layout, split-list formats, decodable videos, determinism."""
import json
import os
import re
import subprocess
import sys

import av
import numpy as np
import pytest

from cmpl_jax.data import synthetic, synthetic_scene, video_io

SMALL = dict(num_classes=6, videos_per_class=5, num_frames=6, size=(32, 40), fps=25.0)


def _lines(path):
  with open(path, "rb") as f:
    data = f.read()
  assert data.endswith(b"\r\n") and data.count(b"\n") == data.count(b"\r\n"), path
  return data.decode("ascii").split("\r\n")[:-1]


def _decode(path):
  with av.open(path) as container:
    return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("raw"))
  summary = synthetic.generate(out, seed=3, num_workers=0, progress=False, **SMALL)
  return out, summary


def test_layout_and_split_lists(raw):
  out, summary = raw
  classes = synthetic.class_names(6)
  assert sorted(os.listdir(out)) == ["UCF-101", "synthetic.json", "ucfTrainTestlist"]
  assert sorted(os.listdir(os.path.join(out, "UCF-101"))) == sorted(classes)
  assert sorted(os.listdir(os.path.join(out, "ucfTrainTestlist"))) == sorted(
      ["classInd.txt"] + [f"{k}list0{i}.txt" for k in ("train", "test") for i in (1, 2, 3)])
  class_ind = _lines(os.path.join(out, "ucfTrainTestlist", "classInd.txt"))
  assert class_ind == [f"{i + 1} {name}" for i, name in enumerate(classes)]
  assert classes == sorted(classes)  # alphabetical, as in the real release
  for name in classes:
    assert re.fullmatch(r"(?:[A-Z][a-z]+)+", name), name

  all_videos = {f"{c}/{f}" for c in classes for f in os.listdir(os.path.join(out, "UCF-101", c))}
  assert len(all_videos) == 6 * 5 == summary["num_videos"]
  pattern = re.compile(r"([A-Za-z]+)/v_\1_g(\d\d)_c(\d\d)\.avi")
  for split in (1, 2, 3):
    train = [line.split(" ") for line in _lines(os.path.join(out, "ucfTrainTestlist",
                                                              f"trainlist0{split}.txt"))]
    test = _lines(os.path.join(out, "ucfTrainTestlist", f"testlist0{split}.txt"))
    test_groups = set(range(7 * split - 6, 7 * split + 1))
    for path, label in train:
      match = pattern.fullmatch(path)
      assert match, path
      assert classes[int(label) - 1] == match.group(1)  # 1-based, classInd order
      assert int(match.group(2)) not in test_groups
    for path in test:
      match = pattern.fullmatch(path)
      assert match and " " not in path, path
      assert int(match.group(2)) in test_groups
    assert {p for p, _ in train} | set(test) == all_videos
    assert not {p for p, _ in train} & set(test)
    # Every class in both train and test of every split.
    assert {p.split("/")[0] for p, _ in train} == set(classes)
    assert {p.split("/")[0] for p in test} == set(classes)
    assert summary["splits"][split] == {"train": len(train), "test": len(test)}
  with open(os.path.join(out, "synthetic.json")) as f:
    assert json.load(f)["complete"] is True


def test_videos_decode_to_expected_frames(raw):
  out, _ = raw
  path = os.path.join(out, "UCF-101", "RisingDisc", "v_RisingDisc_g01_c01.avi")
  with av.open(path) as container:
    stream = container.streams.video[0]
    assert stream.codec_context.name == "mpeg4"
    assert float(stream.average_rate) == 25.0
  for name in synthetic.class_names(6):
    folder = os.path.join(out, "UCF-101", name)
    for file in sorted(os.listdir(folder))[:2]:
      frames = _decode(os.path.join(folder, file))
      assert frames.shape == (6, 32, 40, 3)
      assert frames.std() > 5  # not blank


def test_same_seed_same_frames_and_bytes(raw, tmp_path):
  out, _ = raw
  again = synthetic.generate(str(tmp_path / "a"), seed=3, num_workers=2, progress=False, **SMALL)
  other = synthetic.generate(str(tmp_path / "b"), seed=4, num_workers=0, progress=False, **SMALL)
  rel = "FallingTriangle/v_FallingTriangle_g08_c01.avi"
  first = _decode(os.path.join(out, "UCF-101", rel))
  np.testing.assert_array_equal(first, _decode(os.path.join(again["videos_dir"], rel)))
  with open(os.path.join(out, "UCF-101", rel), "rb") as f1, \
       open(os.path.join(again["videos_dir"], rel), "rb") as f2:
    assert f1.read() == f2.read()
  assert np.abs(first.astype(int) - _decode(os.path.join(other["videos_dir"], rel))).mean() > 20
  # A video's frames do not depend on how many classes were asked for.
  frames = synthetic_scene.render_video(
      "Triangle", "Falling", np.random.default_rng(synthetic.video_seed(
          3, synthetic.ClassSpec("FallingTriangle", "Triangle", "Falling"), 1)), 6, 32, 40)
  assert np.abs(frames.astype(int) - first).mean() < 8  # only 4:2:0 chroma + codec loss


def test_labels_are_shape_times_motion():
  specs = synthetic.class_specs(12)
  pairs = {(s.shape, s.motion) for s in specs}
  assert pairs == {(s, m) for s in synthetic_scene.SHAPES[:4] for m in synthetic_scene.MOTIONS}
  for spec in specs:
    assert spec.name == spec.motion + spec.shape
    assert synthetic.class_factors(spec.name) == (spec.shape, spec.motion)
  assert synthetic.class_names(12) == [s.name for s in specs]
  assert set(synthetic_scene.PATTERNS) == set(synthetic_scene.SHAPES)
  assert len(synthetic.class_specs(synthetic.max_classes())) == synthetic.max_classes()
  with pytest.raises(ValueError, match="not a synthetic class"):
    synthetic.class_factors("ApplyEyeMakeup")


def test_motion_factor_is_flip_invariant_and_hidden_in_single_frames():
  """Rising/Falling move vertically, Sliding horizontally either way; positions are uniform."""
  directions = {m: set() for m in synthetic_scene.MOTIONS}
  starts = []
  for i in range(60):
    motion = synthetic_scene.MOTIONS[i % 3]
    scene = synthetic_scene.sample_scene("Disc", motion, np.random.default_rng(i), 64, 80)
    vy, vx = scene.velocity
    assert 1.5 < np.hypot(vy, vx) < 3.5  # a large, unambiguous step per frame
    directions[motion].add((np.sign(vy), np.sign(vx)))
    starts.append(scene.position)
  assert directions == {"Rising": {(-1, 0)}, "Falling": {(1, 0)}, "Sliding": {(0, -1), (0, 1)}}
  starts = np.array(starts)
  assert starts[:, 0].min() < 16 and starts[:, 0].max() > 48  # whole frame, not a band
  assert starts[:, 1].min() < 20 and starts[:, 1].max() > 60


def test_pass_frames_sets_the_speed_and_guards_the_cache(tmp_path):
  """--pass_frames changes the speed only; a folder of another speed is refused, never reused."""
  for frames in (12.0, 40.0):
    scene = synthetic_scene.sample_scene("Disc", "Rising", np.random.default_rng(0), 64, 80,
                                         pass_frames=(frames, frames))
    assert scene.velocity == pytest.approx((-64 / frames, 0.0))
  default = synthetic_scene.sample_scene("Disc", "Rising", np.random.default_rng(0), 64, 80)
  same_range = synthetic_scene.sample_scene("Disc", "Rising", np.random.default_rng(0), 64, 80,
                                            synthetic_scene.PERIOD_FRAMES)
  assert default.velocity == same_range.velocity and default.position == same_range.position

  from cmpl_jax.data import demo_data  # pylint: disable=g-import-not-at-top
  from configs import demo  # pylint: disable=g-import-not-at-top
  config = demo.get_config("cmpl,smoke")
  config.data.dir = str(tmp_path / "tfrecords")
  config.data.synthetic.update(num_frames=4, pass_frames=(10.0, 12.0))
  raw = demo_data.raw_dir(config.data.dir)
  s = config.data.synthetic
  synthetic.generate(raw, num_classes=s.classes, videos_per_class=s.videos_per_class,
                     seed=s.seed, num_frames=4, size=(s.height, s.width), num_workers=0,
                     progress=False, pass_frames=(10, 12))
  with open(os.path.join(raw, synthetic.CONFIG_FILENAME), encoding="utf-8") as f:
    assert json.load(f)["pass_frames"] == [10.0, 12.0]
  # Even once converted (a metadata.json in data.dir), the cache is checked, not trusted.
  os.makedirs(config.data.dir)
  with open(os.path.join(config.data.dir, "metadata.json"), "w", encoding="utf-8") as f:
    f.write("{}")
  config.data.synthetic.pass_frames = (20.0, 32.0)
  with pytest.raises(ValueError, match=r"config.data.dir=.*pass_frames.*own config.data.dir"):
    demo_data.ensure(config)
  config.data.synthetic.pass_frames = (10.0, 12.0)
  assert demo_data.ensure(config) == config.data.dir
  # A folder from before the flag existed (no pass_frames recorded) was made at the default.
  path = os.path.join(raw, synthetic.CONFIG_FILENAME)
  with open(path, encoding="utf-8") as f:
    recorded = json.load(f)
  del recorded["pass_frames"]
  with open(path, "w", encoding="utf-8") as f:
    json.dump(recorded, f)
  assert synthetic.check_settings(raw, synthetic.dataset_settings(
      s.classes, s.videos_per_class, s.seed, 4, (s.height, s.width)))
  with pytest.raises(ValueError, match="pass_frames"):
    synthetic.check_settings(raw, synthetic.dataset_settings(
        s.classes, s.videos_per_class, s.seed, 4, (s.height, s.width), pass_frames=(10, 12)))


def test_shape_order_is_recorded_and_old_folders_are_told_apart(tmp_path):
  """Folders from before Ring became the third shape: 6 classes still match, 9 are refused."""
  assert synthetic.class_shapes(6) == ["Disc", "Triangle"]
  assert synthetic.class_shapes(7) == synthetic.class_shapes(9) == ["Disc", "Triangle", "Ring"]
  assert [s.shape for s in synthetic.class_specs(9)].count("Ring") == 3
  path = tmp_path / synthetic.CONFIG_FILENAME
  for classes, still_valid in ((6, True), (9, False)):
    wanted = synthetic.dataset_settings(classes, 4, 1, 8, (32, 40))
    assert wanted["shapes"] == synthetic.class_shapes(classes)
    path.write_text(json.dumps({k: v for k, v in wanted.items() if k != "shapes"}))
    if still_valid:
      assert synthetic.check_settings(str(tmp_path), wanted)
    else:
      with pytest.raises(ValueError, match=r"'shapes': \['Disc', 'Triangle', 'Cross'\]"):
        synthetic.check_settings(str(tmp_path), wanted)
  path.write_text(json.dumps(wanted))  # recorded by today's generator
  assert synthetic.check_settings(str(tmp_path), wanted)


def test_resume_after_interruption(tmp_path):
  out = str(tmp_path / "raw")
  kwargs = dict(seed=1, num_workers=0, progress=False, num_classes=3, videos_per_class=4,
                num_frames=4, size=32)
  synthetic.generate(out, **kwargs)
  victim = os.path.join(out, "UCF-101", "RisingDisc", "v_RisingDisc_g08_c01.avi")
  with open(victim, "rb") as f:
    original = f.read()
  os.remove(victim)
  os.remove(os.path.join(out, "ucfTrainTestlist", "testlist02.txt"))
  stale = os.path.join(out, "UCF-101", "RisingDisc", ".v_RisingDisc_g08_c01.avi.123.partial")
  open(stale, "wb").close()
  summary = synthetic.generate(out, **kwargs)
  assert (summary["num_written"], summary["num_skipped"]) == (1, 11)
  with open(victim, "rb") as f:
    assert f.read() == original
  assert not os.path.exists(stale)
  assert len(_lines(os.path.join(out, "ucfTrainTestlist", "testlist02.txt"))) == 3
  with pytest.raises(ValueError, match="seed"):
    synthetic.generate(out, **{**kwargs, "seed": 2})


@pytest.mark.parametrize("kwargs, flag", [
    (dict(num_classes=0), "--classes"), (dict(num_classes=99), "--classes"),
    (dict(videos_per_class=3), "--videos_per_class"), (dict(size=(31, 40)), "--height"),
    (dict(num_frames=1), "--num_frames"), (dict(seed=-1), "--seed"),
    (dict(pass_frames=(2, 8)), "--pass_frames"), (dict(pass_frames=(30, 20)), "--pass_frames"),
    (dict(pass_frames=(20,)), "--pass_frames")])
def test_bad_values_name_the_flag(tmp_path, kwargs, flag):
  with pytest.raises(ValueError, match=flag):
    synthetic.generate(str(tmp_path), progress=False, **kwargs)


@pytest.mark.parametrize("ext", [".avi", ".mp4", ".mkv", ".webm"])
def test_write_video_round_trip(tmp_path, ext):
  frames = synthetic_scene.render_video("Ring", "Sliding", np.random.default_rng(0), 5, 32, 48)
  path = str(tmp_path / f"clip{ext}")
  video_io.write_video(path, frames, fps=30)
  decoded = _decode(path)
  assert decoded.shape == frames.shape
  assert np.abs(decoded.astype(int) - frames).mean() < 10  # lossy 4:2:0, small frames


def test_cli(tmp_path):
  out = str(tmp_path / "raw")
  cmd = [sys.executable, "-m", "cmpl_jax.data.synthetic", f"--output_dir={out}", "--classes=3",
         "--videos_per_class=4", "--num_frames=3", "--height=32", "--width=32", "--seed=5",
         "--pass_frames=10,14"]
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}
  result = subprocess.run(cmd, capture_output=True, text=True, cwd=repo, env=env, timeout=120)
  assert result.returncode == 0, result.stderr
  assert json.loads(result.stdout.strip().splitlines()[-1])["num_videos"] == 12
  assert len(_lines(os.path.join(out, "ucfTrainTestlist", "classInd.txt"))) == 3
  with open(os.path.join(out, synthetic.CONFIG_FILENAME), encoding="utf-8") as f:
    assert json.load(f)["pass_frames"] == [10.0, 14.0]
  bad = subprocess.run(cmd[:4] + ["--classes=100"], capture_output=True, text=True, cwd=repo,
                       env=env, timeout=120)
  assert bad.returncode != 0 and "--classes=100" in bad.stderr
