"""One shard of a conversion: the task (which videos, which frame settings), and the work.

`convert_shard` decodes a shard's videos, writes the shard under a hidden temporary name, renames
it when complete, then writes its sidecar `.shard_index/<shard>.json` (records.py), all through
tf.io.gfile. Every executor runs this same function on the same planned tasks: the local process
pool (`convert.run_tasks`) and Apache Beam (`beam_convert.run_tasks`), so they write the same
records. `finished_sidecar` is what lets any of them skip a shard a previous run completed.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
from typing import Any, Callable, Sequence

import tensorflow as tf

from cmpl_jax import fileio
from cmpl_jax.data import records, video_io


@dataclasses.dataclass(frozen=True)
class ShardTask:
  output_dir: str
  split: str
  index: int
  count: int
  videos: tuple[dict[str, Any], ...]
  options: video_io.DecodeOptions

  @property
  def path(self) -> str:
    return os.path.join(self.output_dir, records.shard_filename(self.split, self.index, self.count))

  @property
  def sidecar_path(self) -> str:
    return records.sidecar_path(self.output_dir, os.path.basename(self.path))

  def to_json(self) -> str:
    """One line of a plan file (what a distributed job reads instead of a pickled plan)."""
    return json.dumps({**dataclasses.asdict(self), "videos": list(self.videos)})

  @classmethod
  def from_json(cls, line: str) -> "ShardTask":
    fields = json.loads(line)
    return cls(**{**fields, "videos": tuple(fields["videos"]),
                  "options": video_io.DecodeOptions(**fields["options"])})

  def identity(self) -> dict[str, Any]:
    """What a finished shard must match to be reused: same videos and labels, same frame
    settings (decoder threads do not change the frames, so they are left out)."""
    options = dataclasses.asdict(self.options)
    del options["threads"]
    return {"plan": [[v["media_id"], v["label"]] for v in self.videos], "options": options}


def finished_sidecar(task: ShardTask) -> dict[str, Any] | None:
  """The sidecar of `task` if its shard is complete and matches the current plan, else None."""
  sidecar_path = task.sidecar_path
  if not (tf.io.gfile.exists(task.path) and tf.io.gfile.exists(sidecar_path)):
    return None
  try:
    with tf.io.gfile.GFile(sidecar_path) as f:
      sidecar = json.load(f)
  except (ValueError, tf.errors.OpError):
    return None
  if {k: sidecar.get(k) for k in ("plan", "options")} != task.identity():
    return None
  if sidecar.get("file_size") != tf.io.gfile.stat(task.path).length:
    return None
  return sidecar


def convert_shard(task: ShardTask, progress: Callable[[int], None] = lambda n: None
                  ) -> dict[str, Any]:
  """Decodes the videos of one shard, writes the shard then its sidecar; returns the sidecar."""
  kept: dict[str, list[Any]] = {k: [] for k in
                                ("media_ids", "labels", "lengths", "num_frames", "frame_rates")}
  skipped, warnings = [], []
  with tf.io.TFRecordWriter(records.temporary_shard_path(task.path)) as writer:
    for video in task.videos:
      entry = {"path": video["path"], "media_id": video["media_id"], "split": task.split}
      try:
        decoded = video_io.decode_to_jpeg(video["path"], task.options)
        payload = records.encode_example(
            media_id=video["media_id"], label_index=video["label"],
            label_string=video["label_string"], frame_rate=decoded.frame_rate,
            height=decoded.height, width=decoded.width, jpeg_frames=decoded.frames)
      except video_io.VideoDecodeError as e:
        skipped.append({**entry, "reason": str(e)})
      except Exception as e:  # pylint: disable=broad-except  # one odd file must not stop a run
        skipped.append({**entry, "reason": f"{type(e).__name__}: {e}"})
      else:
        writer.write(payload)
        for key, value in zip(kept, (video["media_id"], video["label"], len(payload),
                                     len(decoded.frames), decoded.frame_rate)):
          kept[key].append(value)
        if decoded.warning:
          warnings.append({**entry, "reason": decoded.warning})
      progress(1)
  tf.io.gfile.rename(records.temporary_shard_path(task.path), task.path, overwrite=True)
  sidecar = {"shard": os.path.basename(task.path), "split": task.split, **task.identity(),
             "file_size": tf.io.gfile.stat(task.path).length, "records": kept,
             "skipped": skipped, "warnings": warnings}
  fileio.write_json(task.sidecar_path, sidecar, indent=None)
  return sidecar


def plan_shards(output_dir: str, split: str, videos: Sequence[dict[str, Any]],
                videos_per_shard: int, seed: int, options: video_io.DecodeOptions
                ) -> list[ShardTask]:
  """Shuffles a split's videos with a fixed seed (so every shard mixes classes), then cuts
  them into shards. Sorting first makes the plan independent of listing order, so a re-run
  finds the same shards."""
  ordered = sorted(videos, key=lambda v: v["media_id"])
  random.Random(f"{seed}/{split}").shuffle(ordered)
  count = -(-len(ordered) // videos_per_shard)
  return [ShardTask(output_dir, split, i, count,
                    tuple(ordered[i * videos_per_shard:(i + 1) * videos_per_shard]), options)
          for i in range(count)]
