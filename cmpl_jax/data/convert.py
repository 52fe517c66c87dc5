r"""Converts a video dataset to sharded TFRecords (JPEG frames) + metadata.json.

  python -m cmpl_jax.data.convert --dataset=ucf101 --input_dir=UCF-101 \
      --splits_dir=ucfTrainTestlist --split_id=1 --output_dir=OUT [--short_side=256 --fps=0]
  python -m cmpl_jax.data.convert --dataset=kinetics400 --input_dir=VIDEOS \
      --annotations_dir=CSVS --output_dir=OUT [--num_workers=N]
  python -m cmpl_jax.data.convert --dataset=folder --input_dir=DIR --output_dir=OUT [--fps=25]

  ... [--runner=DirectRunner --direct_num_workers=N]   # the same on Apache Beam (beam_convert.py)

Each shard is one task (shards.py) for a pool of worker processes, or for a Beam job. A shard
is written under a hidden temporary name, renamed when complete, then described by a sidecar
`.shard_index/<shard>.json` (records.py: nothing but shards matches the `{split}.tfrecord-*`
glob); re-running the same command after an interruption keeps every shard whose sidecar
matches and redoes the rest, and metadata.json is rebuilt from the sidecars. Videos that are
missing or cannot be decoded are listed under `skipped` in metadata.json and never stop the run.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import queue
import time
from typing import Any, Sequence

from cmpl_jax import console

console.quiet_tensorflow()  # here, not under __main__: spawned workers import this module too

from absl import app, flags  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top
import tqdm  # pylint: disable=g-import-not-at-top

# pylint: disable=g-import-not-at-top
from cmpl_jax.data import folder, kinetics, records, storage, ucf101, video_io
from cmpl_jax.data.shards import ShardTask, convert_shard, finished_sidecar, plan_shards
# pylint: enable=g-import-not-at-top

DATASETS = ("ucf101", "kinetics400", "folder")
# At short side 256 a 7 s UCF-101-like clip takes <= 6.2 MB (benchmarks/convert_speed.py, on
# noisy synthetic frames that compress worse than real ones): shards of a few hundred MB,
# ~100 shards for UCF-101 and ~2,400 for Kinetics-400: enough files to spread over hosts and
# workers, few enough to keep file handles and GCS requests cheap.
DEFAULT_VIDEOS_PER_SHARD = 100


_progress_queue = None


def _init_worker(progress_queue) -> None:
  global _progress_queue
  _progress_queue = progress_queue


def _convert_in_worker(task: ShardTask) -> dict[str, Any]:
  return convert_shard(task, _progress_queue.put)


def run_tasks(tasks: Sequence[ShardTask], num_workers: int) -> list[dict[str, Any]]:
  """Runs the shard tasks (in-process, or over `num_workers` spawned processes) with a
  progress bar counting videos; returns the sidecars in task order.

  Spawned, not forked, workers: the parent has TensorFlow loaded, which is not fork-safe.
  """
  total = sum(len(t.videos) for t in tasks)
  bar = tqdm.tqdm(total=total, unit="video", desc="converting", smoothing=0.1, mininterval=0.5,
                  dynamic_ncols=True)
  with bar:
    if num_workers <= 1 or len(tasks) <= 1:
      return [convert_shard(task, bar.update) for task in tasks]
    ctx = multiprocessing.get_context("spawn")
    progress_queue = ctx.Queue()
    with ctx.Pool(min(num_workers, len(tasks)), _init_worker, (progress_queue,)) as pool:
      pending = [pool.apply_async(_convert_in_worker, (task,)) for task in tasks]
      while True:
        try:
          bar.update(progress_queue.get(timeout=0.2))
        except queue.Empty:
          pass
        failed = [r for r in pending if r.ready() and not r.successful()]
        if failed:
          failed[0].get()  # re-raises the worker's exception; finished shards stay reusable
        if all(r.ready() for r in pending):
          break
      while not progress_queue.empty():
        bar.update(progress_queue.get())
      return [r.get() for r in pending]


def list_dataset(dataset: str, input_dir: str, splits_dir: str | None, split_id: int,
                 annotations_dir: str | None, output_dir: str | None = None):
  """(classes, {split: [video]}, skipped) from the dataset's own release files (folder: the
  videos found, one unlabeled split)."""
  if dataset == "folder":
    return folder.list_videos(input_dir, exclude=[output_dir] if output_dir else [])
  if dataset == "ucf101":
    if not splits_dir:
      raise ValueError("--splits_dir is required for --dataset=ucf101 (the ucfTrainTestlist "
                       "folder with classInd.txt, trainlist0N.txt, testlist0N.txt)")
    return ucf101.list_videos(input_dir, splits_dir, split_id)
  if dataset == "kinetics400":
    if not annotations_dir:
      raise ValueError("--annotations_dir is required for --dataset=kinetics400 (the folder "
                       "with train.csv and validate.csv)")
    return kinetics.list_videos(input_dir, annotations_dir)
  raise ValueError(f"unknown --dataset={dataset!r}; expected one of {', '.join(DATASETS)}")


def _check_options(**values: float) -> None:
  rules = {"short_side": (0, ">= 0 (0 = keep the size)"), "fps": (0, ">= 0 (0 = native)"),
           "jpeg_quality": (1, "in 1..100"), "max_frames": (0, ">= 0 (0 = all)"),
           "videos_per_shard": (1, ">= 1"), "num_workers": (1, ">= 1"),
           "decode_threads": (0, ">= 0 (0 = FFmpeg's choice)")}
  for name, value in values.items():
    minimum, expected = rules[name]
    if value < minimum or (name == "jpeg_quality" and value > 100):
      raise ValueError(f"--{name} must be {expected}, got {value}")


@dataclasses.dataclass
class Plan:
  """Everything decided before any video is decoded."""
  dataset: str
  classes: list[str]
  tasks: dict[str, list[ShardTask]]  # per split, in shard order
  listing_skipped: list[dict[str, str]]
  options: video_io.DecodeOptions
  output_dir: str
  extra: dict[str, Any]  # recorded under metadata["conversion"]


def prepare(*, dataset: str, input_dir: str, output_dir: str, splits_dir: str | None = None,
            split_id: int = 1, annotations_dir: str | None = None, short_side: int = 256,
            fps: float = 0.0, jpeg_quality: int = 90, max_frames: int = 0,
            videos_per_shard: int = DEFAULT_VIDEOS_PER_SHARD, decode_threads: int = 1,
            seed: int = 0) -> Plan:
  """Checks the flags, lists the dataset and plans the shards.

  Raises ValueError/FileNotFoundError naming the flag or file for unusable inputs, before
  any work starts (the CLI turns them into a usage error).
  """
  _check_options(short_side=short_side, fps=fps, jpeg_quality=jpeg_quality,
                 max_frames=max_frames, videos_per_shard=videos_per_shard,
                 decode_threads=decode_threads)
  if dataset not in DATASETS:
    raise ValueError(f"unknown --dataset={dataset!r}; expected one of {', '.join(DATASETS)}")
  if not input_dir or not storage.isdir(input_dir):
    raise FileNotFoundError(f"--input_dir={input_dir!r} is not a directory")
  if not output_dir:
    raise ValueError("--output_dir is required")
  classes, videos, listing_skipped = list_dataset(dataset, input_dir, splits_dir, split_id,
                                                  annotations_dir, output_dir)
  options = video_io.DecodeOptions(short_side=short_side, fps=float(fps),
                                   jpeg_quality=jpeg_quality, max_frames=max_frames,
                                   threads=decode_threads)
  tasks = {split: plan_shards(output_dir, split, split_videos, videos_per_shard, seed, options)
           for split, split_videos in videos.items()}
  extra = {"input_dir": _absolute(input_dir), "videos_per_shard": videos_per_shard,
           "seed": seed}
  if dataset == "ucf101":
    extra.update(splits_dir=_absolute(splits_dir), split_id=split_id)
  elif dataset == "kinetics400":
    extra.update(annotations_dir=_absolute(annotations_dir))
  return Plan(dataset, classes, tasks, listing_skipped, options, output_dir, extra)


def _absolute(path: str) -> str:
  return path if storage.is_url(path) else os.path.abspath(path)


def execute(plan: Plan, num_workers: int = 1, runner: str = "", direct_num_workers: int = 0,
            beam_pipeline_options: str = "") -> dict[str, Any]:
  """Writes the shards not already complete, then metadata.json; returns the metadata.

  The shards are written by the local process pool (`num_workers`), or, with `runner`, as an
  Apache Beam job on that runner (beam_convert.py); the records are the same either way.
  """
  _check_options(num_workers=num_workers)
  started = time.time()
  tf.io.gfile.makedirs(plan.output_dir)
  done: dict[tuple[str, int], dict[str, Any]] = {}
  for split, tasks in plan.tasks.items():
    records.remove_stale_files(plan.output_dir, split, [os.path.basename(t.path) for t in tasks])
    for task in tasks:
      sidecar = finished_sidecar(task)
      if sidecar is not None:
        done[(split, task.index)] = sidecar
  todo = [t for tasks in plan.tasks.values() for t in tasks if (t.split, t.index) not in done]
  total_shards = sum(len(tasks) for tasks in plan.tasks.values())
  print(f"{plan.dataset}: {len(plan.classes) or 'no'} classes, "
        + ", ".join(f"{s}: {sum(len(t.videos) for t in ts)} videos"
                    for s, ts in plan.tasks.items())
        + f", {len(plan.listing_skipped)} listed but not usable (see skipped); "
        f"{total_shards} shards, "
        f"{total_shards - len(todo)} already complete, {len(todo)} to write "
        + (f"on Beam's {runner}" if runner else
           f"with {min(num_workers, max(1, len(todo)))} worker(s)"), flush=True)
  if runner:
    from cmpl_jax.data import beam_convert  # pylint: disable=g-import-not-at-top  (optional)
    written = beam_convert.run_tasks(todo, runner, direct_num_workers, beam_pipeline_options)
  else:
    written = run_tasks(todo, num_workers)
  for task, sidecar in zip(todo, written):
    done[(task.split, task.index)] = sidecar
  sidecars = {split: [done[(split, t.index)] for t in tasks] for split, tasks in plan.tasks.items()}
  metadata = records.build_metadata(
      plan.dataset, plan.classes, sidecars, plan.listing_skipped,
      frame_rate=plan.options.fps, short_side=plan.options.short_side,
      conversion={**dataclasses.asdict(plan.options), **plan.extra})
  path = records.write_metadata(plan.output_dir, metadata)
  print(summary(metadata, plan.output_dir, time.time() - started) + f"\nmetadata: {path}",
        flush=True)
  return metadata


def convert(*, num_workers: int = 1, runner: str = "", direct_num_workers: int = 0,
            beam_pipeline_options: str = "", **kwargs: Any) -> dict[str, Any]:
  """prepare() + execute(): converts, or finishes converting, a dataset (see `prepare`)."""
  return execute(prepare(**kwargs), num_workers, runner, direct_num_workers,
                 beam_pipeline_options)


def _size(num_bytes: float) -> str:
  for unit in ("B", "KB", "MB", "GB"):
    if num_bytes < 1000:
      return f"{num_bytes:.1f} {unit}"
    num_bytes /= 1000
  return f"{num_bytes:.1f} TB"


def summary(metadata: dict[str, Any], output_dir: str, seconds: float) -> str:
  """Per split: videos written, skipped, bytes; then totals and the first skip reasons."""
  lines = [f"{'split':<12}{'written':>9}{'skipped':>9}{'size':>12}"]
  total_bytes = 0
  for split, info in metadata["splits"].items():
    size = sum(tf.io.gfile.stat(os.path.join(output_dir, f)).length for f in info["files"])
    total_bytes += size
    skipped = sum(1 for s in metadata["skipped"] if s.get("split") == split)
    lines.append(f"{split:<12}{info['num_examples']:>9}{skipped:>9}{_size(size):>12}")
  written = sum(info["num_examples"] for info in metadata["splits"].values())
  lines.append(f"total: {written} videos written, {len(metadata['skipped'])} skipped, "
               f"{_size(total_bytes)} in {output_dir} ({seconds:.0f} s)")
  for entry in metadata["skipped"][:5]:
    lines.append(f"  skipped {entry['path']}: {entry['reason']}")
  if len(metadata["skipped"]) > 5:
    lines.append(f"  ... {len(metadata['skipped']) - 5} more under 'skipped' in metadata.json")
  return "\n".join(lines)


def _define_flags() -> None:
  """Defined only when run as a program, so importing this module (tests, notebooks, other
  CLIs with their own --seed or --dataset) never collides with other flag definitions."""
  flags.DEFINE_enum("dataset", None, DATASETS, "Which release layout --input_dir holds.")
  flags.DEFINE_string("input_dir", None, "UCF-101: the folder of class folders (UCF-101/). "
                      "Kinetics: the folder holding the clips, in any subfolders. Folder: any "
                      "tree of videos (one unlabeled split).")
  flags.DEFINE_string("output_dir", None, "Where the shards and metadata.json are written.")
  flags.DEFINE_string("splits_dir", None, "UCF-101 only: ucfTrainTestlist/ (classInd.txt, "
                      "trainlist0N.txt, testlist0N.txt).")
  flags.DEFINE_integer("split_id", 1, "UCF-101 only: which official split, 1, 2 or 3.")
  flags.DEFINE_string("annotations_dir", None, "Kinetics only: folder with train.csv and "
                      "validate.csv (or kinetics_400_train.csv, kinetics_val.csv, ...).")
  flags.DEFINE_integer("short_side", 256, "Resize frames so the shorter side is this (0 = keep).")
  flags.DEFINE_float("fps", 0.0, "Resample to this frame rate (nearest frames); 0 = native.")
  flags.DEFINE_integer("jpeg_quality", 90, "JPEG quality of the stored frames (1..100).")
  flags.DEFINE_integer("max_frames", 0, "Keep at most this many frames per video (0 = all).")
  flags.DEFINE_integer("videos_per_shard", DEFAULT_VIDEOS_PER_SHARD,
                       "Videos per TFRecord shard (a UCF-101 video takes up to ~6 MB at short "
                       "side 256, a Kinetics one ~1.5x that).")
  flags.DEFINE_integer("num_workers", os.cpu_count() or 1,
                       "Worker processes (one shard at a time each); 1 = in this process.")
  flags.DEFINE_integer("decode_threads", 1, "FFmpeg threads per decoded video (0 = FFmpeg's "
                       "choice; 1 is best when --num_workers matches the cores).")
  flags.DEFINE_integer("seed", 0, "Seed of the shuffle that assigns videos to shards.")
  flags.DEFINE_string("runner", "", "Run the shard tasks as an Apache Beam job on this runner "
                      "(DirectRunner, DataflowRunner, FlinkRunner, SparkRunner, ...; needs the "
                      ".[beam] extra). '' = the local process pool of --num_workers.")
  flags.DEFINE_integer("direct_num_workers", 0, "DirectRunner only: local worker processes "
                       "(multi-processing direct running); 0 or 1 = Beam's single process.")
  flags.DEFINE_string("beam_pipeline_options", "", "More Beam pipeline options, comma-separated "
                      "key=value (e.g. project=P,region=R,temp_location=gs://B/tmp,"
                      "setup_file=./setup.py for Dataflow).")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  f = flags.FLAGS
  for name in ("dataset", "input_dir", "output_dir"):
    if not getattr(f, name):
      raise app.UsageError(f"--{name} is required")
  try:
    _check_options(num_workers=f.num_workers)
    plan = prepare(dataset=f.dataset, input_dir=f.input_dir, output_dir=f.output_dir,
                   splits_dir=f.splits_dir, split_id=f.split_id,
                   annotations_dir=f.annotations_dir, short_side=f.short_side, fps=f.fps,
                   jpeg_quality=f.jpeg_quality, max_frames=f.max_frames,
                   videos_per_shard=f.videos_per_shard, decode_threads=f.decode_threads,
                   seed=f.seed)
    if f.runner:
      from cmpl_jax.data import beam_convert  # pylint: disable=g-import-not-at-top  (optional)
      beam_convert.pipeline_options(f.runner, f.direct_num_workers, f.beam_pipeline_options)
    elif f.direct_num_workers or f.beam_pipeline_options:
      raise ValueError("--direct_num_workers and --beam_pipeline_options need --runner")
  except (ValueError, FileNotFoundError, ImportError) as e:  # bad input, not a bug: no traceback
    raise app.UsageError(str(e)) from e
  execute(plan, f.num_workers, f.runner, f.direct_num_workers, f.beam_pipeline_options)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
