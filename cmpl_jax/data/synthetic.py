"""A procedurally generated action-recognition dataset, written in the official UCF-101 layout.

The demo and the tests run the real UCF-101 converter on it, so the demo path is the real path
(README, "The demo"):

  RAW/UCF-101/<ClassName>/v_<ClassName>_gGG_cCC.avi     MPEG-4 Part 2 (XVID tag), like UCF-101
  RAW/ucfTrainTestlist/classInd.txt                    "1 ClassName" (1-based, CRLF)
  RAW/ucfTrainTestlist/trainlist0{1,2,3}.txt           "ClassName/v_..._gGG_cCC.avi <label>"
  RAW/ucfTrainTestlist/testlist0{1,2,3}.txt            "ClassName/v_..._gGG_cCC.avi"
  RAW/synthetic.json                                   generation settings + "complete" flag

Each class is a (motion, appearance) pair, named "<Motion><Shape>" (e.g. "RisingTriangle"; each
shape has its own fill pattern): neither a single frame nor the motion alone names it. See
`synthetic_scene` for the content design and `benchmarks/probe_synthetic.py` for the check that
a frame-averaging model stays at the appearance-only ceiling (1 / number of motions) while a
clip model exceeds it.

Splits follow the official rule (split k tests groups 7(k-1)+1 .. 7k; train is the rest). Clips
are dealt to groups in the order 1, 8, 15, 22, 2, 9, ... so that from 4 videos per class on,
every split has every class in both train and test.

Determinism: a video's frames depend only on (seed, shape, motion, clip number, num_frames,
size), not on --classes, --num_workers or the run order. The encoder is single-threaded with a
fixed quantiser, so the files are byte-identical on the same PyAV/FFmpeg build.

Resumable: each video is written under a temporary name and renamed, existing videos are
kept, and the split lists and the "complete" flag are written last, so re-running an
interrupted command finishes the dataset.

  python -m cmpl_jax.data.synthetic --output_dir=/tmp/synth_raw [--classes=12
      --videos_per_class=56 --seed=0 --num_frames=64 --height=64 --width=80 --num_workers=2
      --pass_frames=20,32]
"""
from __future__ import annotations

import dataclasses
import glob
import json
import multiprocessing
import os
import time
from typing import Any, Sequence

import numpy as np
import tqdm

from cmpl_jax import fileio
from cmpl_jax.data import synthetic_scene, video_io
from cmpl_jax.data.synthetic_scene import MOTIONS, SHAPES

VIDEOS_DIRNAME = "UCF-101"
SPLITS_DIRNAME = "ucfTrainTestlist"
CONFIG_FILENAME = "synthetic.json"
NUM_GROUPS = 25
MAX_CLIPS_PER_GROUP = 99
# Clips are dealt to groups in this order: the first four land in the test groups of splits
# 1, 2, 3 and in groups 22-25 (train in every split), and so on round-robin.
GROUP_ORDER = tuple(g for block in zip(range(1, 8), range(8, 15), range(15, 22),
                                       (22, 23, 24, 25, None, None, None))
                    for g in block if g is not None)
MIN_VIDEOS_PER_CLASS = 4
FORMAT_VERSION = 2  # bump when the rendered content changes: old folders then fail loudly


@dataclasses.dataclass(frozen=True)
class ClassSpec:
  """One class: the (shape, motion) pair it is made of, and its UCF-101-style name."""
  name: str
  shape: str
  motion: str


def max_classes() -> int:
  return len(SHAPES) * len(MOTIONS)


def class_specs(num_classes: int) -> list[ClassSpec]:
  """The first `num_classes` (shape, motion) pairs, shape-major, sorted by name like classInd.

  Taking whole shapes first keeps the label set a full shape x motion grid whenever
  num_classes is a multiple of len(MOTIONS).
  """
  if not 1 <= num_classes <= max_classes():
    raise ValueError(f"--classes={num_classes}: must be in [1, {max_classes()}] "
                     f"({len(SHAPES)} shapes x {len(MOTIONS)} motions)")
  pairs = [(s, m) for s in SHAPES for m in MOTIONS][:num_classes]
  return sorted((ClassSpec(m + s, s, m) for s, m in pairs), key=lambda c: c.name)


def class_shapes(num_classes: int, order: Sequence[str] = SHAPES) -> list[str]:
  """The shapes a dataset of `num_classes` classes is made of, in `order`'s order."""
  return list(order[:-(-num_classes // len(MOTIONS))])


def class_names(num_classes: int) -> list[str]:
  """Class names in classInd.txt order (label index = position)."""
  return [c.name for c in class_specs(num_classes)]


def class_factors(name: str) -> tuple[str, str]:
  """(shape, motion) of a class name such as "RisingTriangle"."""
  for motion in MOTIONS:
    if name.startswith(motion) and name[len(motion):] in SHAPES:
      return name[len(motion):], motion
  raise ValueError(f"{name!r} is not a synthetic class name (<Motion><Shape>)")


def group_and_clip(index: int) -> tuple[int, int]:
  """(group, clip), both 1-based, of the index-th (0-based) video of a class."""
  return GROUP_ORDER[index % NUM_GROUPS], index // NUM_GROUPS + 1


def video_relpath(class_name: str, group: int, clip: int) -> str:
  """Path relative to UCF-101/, as written in the split lists."""
  return f"{class_name}/v_{class_name}_g{group:02d}_c{clip:02d}.avi"


def split_test_groups(split_id: int) -> range:
  """Groups in the test set of an official split (1, 2 or 3)."""
  if split_id not in (1, 2, 3):
    raise ValueError(f"split_id={split_id}: UCF-101 has splits 1, 2 and 3")
  return range(7 * (split_id - 1) + 1, 7 * split_id + 1)


def video_seed(seed: int, spec: ClassSpec, index: int) -> np.random.SeedSequence:
  """Per-video seed: independent of --classes, so a class's videos never change with it."""
  return np.random.SeedSequence(
      [seed, SHAPES.index(spec.shape), MOTIONS.index(spec.motion), index])


def _write_one(job: tuple[str, ClassSpec, int, int, int, int, int, float, tuple[float, float]]
               ) -> str:
  """Renders and writes one video (pool worker); skips it if it is already on disk."""
  path, spec, seed, index, num_frames, height, width, fps, pass_frames = job
  if os.path.exists(path):
    return "skipped"
  rng = np.random.default_rng(video_seed(seed, spec, index))
  frames = synthetic_scene.render_video(spec.shape, spec.motion, rng, num_frames, height, width,
                                        pass_frames)
  tmp_path = os.path.join(os.path.dirname(path),
                          f".{os.path.basename(path)}.{os.getpid()}.partial")
  video_io.write_video(tmp_path, frames, fps, codec="mpeg4", container_format="avi")
  os.replace(tmp_path, path)  # atomic: a video on disk under its final name is complete
  return "written"


def _write_text(path: str, lines: Sequence[str]) -> None:
  """Writes CRLF-terminated lines (as in the real ucfTrainTestlist) atomically."""
  fileio.write_atomic(path, "".join(line + "\r\n" for line in lines), encoding="ascii")


def _parse_pass_frames(pass_frames: Sequence[float]) -> tuple[float, float]:
  values = tuple(float(v) for v in pass_frames)
  if len(values) != 2 or not 2.0 < values[0] <= values[1]:
    raise ValueError(f"--pass_frames={','.join(map(str, pass_frames))}: must be MIN,MAX with "
                     f"2 < MIN <= MAX (stored frames per crossing of the frame)")
  return values


def _parse_size(size: int | Sequence[int]) -> tuple[int, int]:
  height, width = (size, size) if isinstance(size, int) else tuple(size)
  for flag, value in (("height", height), ("width", width)):
    if value < 16 or value % 2:
      raise ValueError(f"--{flag}={value}: must be an even number of pixels >= 16")
  return int(height), int(width)


def dataset_settings(num_classes: int, videos_per_class: int, seed: int, num_frames: int,
                     size: int | Sequence[int], fps: float = 25.0,
                     pass_frames: Sequence[float] = synthetic_scene.PERIOD_FRAMES
                     ) -> dict[str, Any]:
  """What synthetic.json records of the settings that decide the videos' content."""
  height, width = _parse_size(size)
  return dict(generator="cmpl_jax.data.synthetic", format_version=FORMAT_VERSION,
              num_classes=num_classes, videos_per_class=videos_per_class, seed=seed,
              num_frames=num_frames, height=height, width=width, fps=fps,
              pass_frames=list(_parse_pass_frames(pass_frames)),
              shapes=class_shapes(num_classes))


def check_settings(output_dir: str, settings: dict[str, Any]) -> bool:
  """Whether `output_dir` holds a dataset of this generator; raises if made with other settings.

  `settings` maps the keys of synthetic.json (those `generate` writes) to the wanted values.
  """
  config_path = os.path.join(output_dir, CONFIG_FILENAME)
  if not os.path.exists(config_path):
    return False
  with open(config_path, encoding="utf-8") as f:
    previous = json.load(f)
  # Folders written before the speed could be chosen used the default speed.
  previous.setdefault("pass_frames", list(synthetic_scene.PERIOD_FRAMES))
  # ... and the shape order of then: their 6-class datasets match today's, 9-class ones do not.
  if "shapes" not in previous and isinstance(previous.get("num_classes"), int):
    previous["shapes"] = class_shapes(previous["num_classes"],
                                      synthetic_scene.SHAPES_BEFORE_RING)
  differing = {k: previous.get(k) for k in settings if previous.get(k) != settings[k]}
  if differing:
    raise ValueError(
        f"{output_dir} holds a synthetic dataset made with other settings ({differing}, "
        f"asked for { {k: settings[k] for k in differing} }); pick another folder or delete it")
  return True


def generate(output_dir: str, num_classes: int = 12, videos_per_class: int = 56,
             seed: int = 0, num_frames: int = 64, size: int | Sequence[int] = (64, 80),
             fps: float = 25.0, num_workers: int = 2, progress: bool = True,
             pass_frames: Sequence[float] = synthetic_scene.PERIOD_FRAMES) -> dict[str, Any]:
  """Writes the dataset (see the module docstring) and returns a summary.

  `size` is (height, width) or one number for square frames. `pass_frames` is the (min, max)
  number of stored frames a moving target takes to cross the frame once (its speed). The
  default (12 classes x 56 videos) gives split 1 40 train and 16 test videos per class, 672
  videos in all.
  num_workers > 1 renders in "spawn" worker processes, so a calling script needs the usual
  `if __name__ == "__main__":` guard.
  """
  start = time.time()
  specs = class_specs(num_classes)
  if not MIN_VIDEOS_PER_CLASS <= videos_per_class <= NUM_GROUPS * MAX_CLIPS_PER_GROUP:
    raise ValueError(f"--videos_per_class={videos_per_class}: must be in "
                     f"[{MIN_VIDEOS_PER_CLASS}, {NUM_GROUPS * MAX_CLIPS_PER_GROUP}] so every "
                     f"split has every class in train and test")
  if seed < 0:
    raise ValueError(f"--seed={seed}: must be >= 0")
  if num_frames < 2:
    raise ValueError(f"--num_frames={num_frames}: must be at least 2")
  if fps <= 0:
    raise ValueError(f"--fps={fps}: must be positive")
  if num_workers < 0:
    raise ValueError(f"--num_workers={num_workers}: must be >= 0 (0 or 1 = in this process)")
  settings = dataset_settings(num_classes, videos_per_class, seed, num_frames, size, fps,
                              pass_frames)
  height, width = settings["height"], settings["width"]
  pass_frames = tuple(settings["pass_frames"])

  videos_dir = os.path.join(output_dir, VIDEOS_DIRNAME)
  splits_dir = os.path.join(output_dir, SPLITS_DIRNAME)
  config_path = os.path.join(output_dir, CONFIG_FILENAME)
  if not check_settings(output_dir, settings) and os.path.isdir(videos_dir) and os.listdir(
      videos_dir):
    raise ValueError(f"--output_dir={output_dir} already holds a UCF-101 folder that this "
                     f"generator did not write; pick another folder")
  os.makedirs(splits_dir, exist_ok=True)
  fileio.write_json(config_path, {**settings, "complete": False})

  jobs, entries = [], []  # entries: (label, relpath, group)
  for label, spec in enumerate(specs):
    os.makedirs(os.path.join(videos_dir, spec.name), exist_ok=True)
    for stale in glob.glob(os.path.join(videos_dir, spec.name, ".*.partial")):
      os.remove(stale)  # left by an interrupted run
    for index in range(videos_per_class):
      group, clip = group_and_clip(index)
      relpath = video_relpath(spec.name, group, clip)
      entries.append((label, relpath, group))
      jobs.append((os.path.join(videos_dir, relpath), spec, seed, index, num_frames, height,
                   width, fps, pass_frames))

  counts = {"written": 0, "skipped": 0}
  with tqdm.tqdm(total=len(jobs), desc="synthetic videos", unit="video",
                 disable=not progress) as bar:
    if num_workers <= 1:
      results = map(_write_one, jobs)
      pool = None
    else:
      # spawn, not fork: the caller may already run JAX/TF threads that fork would break.
      pool = multiprocessing.get_context("spawn").Pool(num_workers)
      results = pool.imap_unordered(_write_one, jobs, chunksize=8)
    try:
      for outcome in results:
        counts[outcome] += 1
        bar.update(1)
    finally:
      if pool is not None:
        pool.terminate()
        pool.join()

  entries.sort(key=lambda e: (e[0], e[1]))  # class order, then group, then clip
  _write_text(os.path.join(splits_dir, "classInd.txt"),
              [f"{label + 1} {spec.name}" for label, spec in enumerate(specs)])
  split_counts = {}
  for split_id in (1, 2, 3):
    tests = set(split_test_groups(split_id))
    train = [f"{path} {label + 1}" for label, path, group in entries if group not in tests]
    test = [path for _, path, group in entries if group in tests]
    _write_text(os.path.join(splits_dir, f"trainlist{split_id:02d}.txt"), train)
    _write_text(os.path.join(splits_dir, f"testlist{split_id:02d}.txt"), test)
    split_counts[split_id] = {"train": len(train), "test": len(test)}

  summary = dict(output_dir=output_dir, videos_dir=videos_dir, splits_dir=splits_dir,
                 classes=[s.name for s in specs],
                 factors={s.name: [s.shape, s.motion] for s in specs},
                 num_videos=len(jobs), num_written=counts["written"],
                 num_skipped=counts["skipped"], splits=split_counts,
                 seconds=round(time.time() - start, 2), **settings)
  fileio.write_json(config_path, {**summary, "complete": True})
  return summary


def _define_flags() -> None:
  """Flags live here, not at import, so importing this module (pool workers, tests) is free."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("output_dir", None, "Folder to write UCF-101/ and ucfTrainTestlist/ to.")
  flags.DEFINE_integer("classes", 12, f"Number of classes (shape x motion pairs, at most "
                       f"{max_classes()}); multiples of {len(MOTIONS)} give a full grid.")
  flags.DEFINE_integer("videos_per_class", 56, "Videos per class (>= 4); 56 gives split 1 "
                       "40 train + 16 test per class.")
  flags.DEFINE_integer("seed", 0, "Seed: the same seed gives the same frames.")
  flags.DEFINE_integer("num_frames", 64, "Frames per video.")
  flags.DEFINE_integer("height", 64, "Frame height in pixels (even).")
  flags.DEFINE_integer("width", 80, "Frame width in pixels (even).")
  flags.DEFINE_float("fps", 25.0, "Frame rate written into the files.")
  flags.DEFINE_integer("num_workers", 2, "Processes rendering videos (0 or 1: in-process).")
  flags.DEFINE_list("pass_frames", [str(v) for v in synthetic_scene.PERIOD_FRAMES],
                    "MIN,MAX stored frames a moving target takes to cross the frame once "
                    "(uniform per video): lower is faster.")
  flags.mark_flag_as_required("output_dir")


def main(argv: Sequence[str]) -> None:
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  try:
    summary = generate(f.output_dir, num_classes=f.classes, videos_per_class=f.videos_per_class,
                       seed=f.seed, num_frames=f.num_frames, size=(f.height, f.width),
                       fps=f.fps, num_workers=f.num_workers, pass_frames=f.pass_frames)
  except ValueError as e:  # a bad flag value: say which, without a traceback
    raise SystemExit(f"error: {e}") from e
  print(json.dumps({k: summary[k] for k in ("output_dir", "num_videos", "num_written",
                                            "num_skipped", "splits", "seconds")}))


if __name__ == "__main__":
  from cmpl_jax import console  # pylint: disable=g-import-not-at-top
  console.quiet_tensorflow()  # every CLI: a console with the project's own lines only
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)
