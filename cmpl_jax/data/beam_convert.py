r"""The converter's shard tasks as an Apache Beam pipeline (the optional `.[beam]` extra).

  python -m cmpl_jax.data.convert --dataset=ucf101 ... --runner=DirectRunner \
      [--direct_num_workers=N]                       # N local processes
  python -m cmpl_jax.data.convert --dataset=kinetics400 ... --output_dir=gs://BUCKET/k400 \
      --runner=DataflowRunner --beam_pipeline_options="project=P,region=R,\
temp_location=gs://BUCKET/tmp,setup_file=./setup.py"   # or FlinkRunner, SparkRunner, ...

Only the execution differs from the process pool (`convert.run_tasks`). The launcher plans as
always (`convert.prepare`: listing, skip list, shard assignment fixed by the video list) and
leaves out shards already complete; it writes the remaining shards' tasks to a plan file
(OUT/.beam/plan-*.jsonl, one line per shard, so the job graph stays small for millions of videos),
each line becomes one Beam element, and a worker runs
`shards.convert_shard` on it, the function the pool runs: it writes the shard under a temporary
name, renames it, then writes its sidecar, all through tf.io.gfile. When the pipeline is done the
launcher reads the sidecars back and writes metadata.json as the pool path does, so both paths
give the same records, metadata and skip list. A failed or cancelled job keeps its finished shards
for the next run.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Sequence

import tensorflow as tf
import tqdm

from cmpl_jax.data import records, shards

PLAN_DIRNAME = ".beam"   # OUT/.beam/plan-*.jsonl: out of reach of the {split}.tfrecord-* glob


def pipeline_options(runner: str, direct_num_workers: int, extra: str) -> list[str]:
  """Beam's argv: the runner, multi-process direct running when asked, then `extra`
  ('key=value,key=value', as TFDS's --beam_pipeline_options takes them)."""
  argv = [f"--runner={runner}"]
  if direct_num_workers > 1:
    argv += [f"--direct_num_workers={direct_num_workers}",
             "--direct_running_mode=multi_processing"]
  for item in filter(None, (part.strip() for part in extra.split(","))):
    if "=" not in item:
      raise ValueError(f"--beam_pipeline_options: {item!r} is not key=value")
    argv.append("--" + item.lstrip("-"))
  return argv


def _import_beam():
  try:
    import apache_beam as beam  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("--runner needs Apache Beam: pip install -e '.[beam]'") from e
  return beam


def _sidecar_names(output_dir: str) -> set[str]:
  index_dir = os.path.join(output_dir, records.SHARD_INDEX_DIRNAME)
  return set(tf.io.gfile.listdir(index_dir)) if tf.io.gfile.isdir(index_dir) else set()


def _count_sidecars(tasks: Sequence[shards.ShardTask], bar: tqdm.tqdm,
                    done: threading.Event, every_s: float = 5.0) -> None:
  """Progress for the launcher: workers report nothing back until the end, but each finished
  shard writes its sidecar, so list the sidecar folder now and then (one listing, not one
  request per shard, so it stays cheap on GCS for 100,000 shards)."""
  videos = {os.path.basename(t.sidecar_path): len(t.videos) for t in tasks}
  while videos:
    finished = done.is_set()
    for name in _sidecar_names(tasks[0].output_dir) & set(videos):
      bar.update(videos.pop(name))
    if finished:
      return
    done.wait(every_s)


def _convert_line(line: str) -> str:  # module-level, so every runner can pickle it
  task = shards.ShardTask.from_json(line)
  shards.convert_shard(task)
  return task.sidecar_path


def write_plan(tasks: Sequence[shards.ShardTask]) -> str:
  """The tasks as JSON lines in OUT/.beam/ (one file per job), for the job to read: the plan
  of millions of videos would not fit in a job graph as pickled `Create` data."""
  directory = os.path.join(tasks[0].output_dir, PLAN_DIRNAME)
  tf.io.gfile.makedirs(directory)
  path = os.path.join(directory, f"plan-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.jsonl")
  with tf.io.gfile.GFile(path, "w") as f:
    for task in tasks:
      f.write(task.to_json() + "\n")
  return path


def run_tasks(tasks: Sequence[shards.ShardTask], runner: str, direct_num_workers: int = 0,
              extra_options: str = "") -> list[dict[str, Any]]:
  """Runs the shard tasks as a Beam job and returns their sidecars in task order."""
  beam = _import_beam()
  from apache_beam.options import pipeline_options as beam_options  # pylint: disable=g-import-not-at-top
  if not tasks:
    return []
  options = beam_options.PipelineOptions(
      pipeline_options(runner, direct_num_workers, extra_options))
  # Sidecars of shards about to be redone no longer match the plan (finished_sidecar said so):
  # gone now, so that a sidecar appearing means a shard of this job finished.
  stale = _sidecar_names(tasks[0].output_dir) & {os.path.basename(t.sidecar_path) for t in tasks}
  for task in tasks:
    if os.path.basename(task.sidecar_path) in stale:
      tf.io.gfile.remove(task.sidecar_path)
  plan_path = write_plan(tasks)
  bar = tqdm.tqdm(total=sum(len(t.videos) for t in tasks), unit="video", desc="converting",
                  dynamic_ncols=True, mininterval=0.5)
  done = threading.Event()
  watcher = threading.Thread(target=_count_sidecars, args=(tasks, bar, done), daemon=True)
  watcher.start()
  try:
    with beam.Pipeline(options=options) as pipeline:
      _ = (pipeline
           | "read the plan" >> beam.io.ReadFromText(plan_path)
           | "spread" >> beam.Reshuffle()   # one shard per worker at a time, not all on one
           | "convert" >> beam.Map(_convert_line))
  finally:
    done.set()
    watcher.join()
    bar.close()
  sidecars = []
  for task in tasks:
    sidecar = shards.finished_sidecar(task)
    if sidecar is None:
      raise RuntimeError(f"the Beam job ended but {task.path} or its sidecar "
                         f"{task.sidecar_path} is missing or does not match the plan; run the "
                         "same command again")
    sidecars.append(sidecar)
  tf.io.gfile.remove(plan_path)   # kept only when the job failed, to show what it was given
  return sidecars
