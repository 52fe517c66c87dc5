"""Kinetics-400 annotation CSVs + a folder of downloaded clips -> the videos of each split.

The public CSVs (`train.csv`, `validate.csv`, as released by DeepMind/CVDF; older copies are
named `kinetics_400_train.csv`, `kinetics_val.csv`, ...) have the columns
`label,youtube_id,time_start,time_end,split[,is_cc]`. Downloaded clips are named
`<youtube_id>_<start:06d>_<end:06d>.<ext>` but sit in any folder structure (flat, per class,
per split), so the input folder is walked once and clips are found by name. Every real copy
misses some clips: those are reported in `skipped`, never fatal.
"""
from __future__ import annotations

import csv
import io
import os
from typing import Any

from cmpl_jax.data import storage, video_io

SPLITS = ("train", "validation")
_CSV_STEMS = {"train": ("train",), "validation": ("validate", "val", "validation")}
_CSV_PREFIXES = ("", "kinetics_400_", "kinetics400_", "kinetics-400_", "kinetics_", "k400_")
REQUIRED_COLUMNS = ("label", "youtube_id", "time_start", "time_end")


def find_csv(annotations_dir: str, split: str) -> str:
  """The annotation CSV of `split`, trying the names used by the public releases in order."""
  by_lower = {name.lower(): name for name in sorted(storage.listdir(annotations_dir))}
  tried = []
  for stem in _CSV_STEMS[split]:
    for prefix in _CSV_PREFIXES:
      name = f"{prefix}{stem}.csv"
      tried.append(name)
      if name in by_lower and storage.isfile(os.path.join(annotations_dir, by_lower[name])):
        return os.path.join(annotations_dir, by_lower[name])
  raise FileNotFoundError(
      f"no {split} annotation CSV in --annotations_dir={annotations_dir!r}; tried "
      f"{', '.join(tried)}")


def media_id(youtube_id: str, time_start: int, time_end: int) -> str:
  return f"{youtube_id}_{time_start:06d}_{time_end:06d}"


def read_csv(path: str) -> list[tuple[str, str, str]]:
  """[(media_id, youtube_id, label)] in file order, duplicates dropped.

  Errors name the file and line: a malformed CSV is a wrong input, unlike a missing clip.
  """
  with io.StringIO(storage.read_text(path), newline="") as f:
    reader = csv.DictReader(f)
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
      raise ValueError(f"{path}: missing required column(s) {missing}; header is {columns} "
                       f"(expected {','.join(REQUIRED_COLUMNS)},split[,is_cc])")
    reader.fieldnames = columns
    rows, seen = [], set()
    for row in reader:
      line = reader.line_num
      label = (row["label"] or "").strip()
      youtube_id = (row["youtube_id"] or "").strip()
      if not label or not youtube_id:
        raise ValueError(f"{path}:{line}: empty label or youtube_id in {row}")
      try:
        start, end = int(float(row["time_start"])), int(float(row["time_end"]))
      except (TypeError, ValueError):
        raise ValueError(f"{path}:{line}: time_start/time_end must be numbers, got "
                         f"{row['time_start']!r}, {row['time_end']!r}") from None
      key = media_id(youtube_id, start, end)
      if key not in seen:
        seen.add(key)
        rows.append((key, youtube_id, label))
  return rows


def index_clips(input_dir: str) -> tuple[dict[str, str], dict[str, str]]:
  """One walk of `input_dir`: ({name stem: video path}, {name stem: other file's path}).

  A clip is looked up by its full name, then by bare youtube id (some download scripts name
  clips `<id>.mp4`), never by another segment's name. Of two copies, the first in sorted
  order is kept unless it is empty. The second dict only serves to explain a miss (a `.part`
  left by an interrupted download).
  """
  videos: dict[str, str] = {}
  others: dict[str, str] = {}
  for root, dirs, files in storage.walk(input_dir):
    dirs.sort()
    for name in sorted(files):
      stem, ext = os.path.splitext(name)
      path = os.path.join(root, name)
      if ext.lower() in video_io.VIDEO_EXTENSIONS:
        if stem not in videos or storage.getsize(videos[stem]) == 0:  # a re-download wins
          videos[stem] = path
      else:
        others.setdefault(name.split(".", 1)[0], path)
  return videos, others


def list_videos(input_dir: str, annotations_dir: str
                ) -> tuple[list[str], dict[str, list[dict[str, Any]]], list[dict[str, str]]]:
  """Returns (classes, {split: [video]}, skipped); classes = sorted train labels.

  A video is {"path", "media_id", "label", "label_string"}. Rows whose clip is not on disk,
  and validation rows whose label is not a train class, are in `skipped`
  ({"path", "reason", "split"}).
  """
  for flag, path in (("--input_dir", input_dir), ("--annotations_dir", annotations_dir)):
    if not storage.isdir(path):
      raise FileNotFoundError(f"{flag}={path!r} is not a directory")
  rows = {split: read_csv(find_csv(annotations_dir, split)) for split in SPLITS}
  classes = sorted({label for _, _, label in rows["train"]})
  class_index = {name: i for i, name in enumerate(classes)}
  clips, others = index_clips(input_dir)
  videos: dict[str, list[dict[str, Any]]] = {}
  skipped: list[dict[str, str]] = []
  for split in SPLITS:
    videos[split] = []
    for key, youtube_id, label in rows[split]:
      expected = os.path.join(input_dir, key + ".mp4")
      if label not in class_index:
        skipped.append({"path": expected, "split": split,
                        "reason": f"label {label!r} is not a class of the train split"})
        continue
      path = clips.get(key) or clips.get(youtube_id)
      if path is None:
        other = others.get(key) or others.get(youtube_id)
        reason = (f"missing: only a non-video file found ({other})" if other else
                  f"missing: no {key}.{{{','.join(e[1:] for e in video_io.VIDEO_EXTENSIONS)}}} "
                  f"under --input_dir")
        skipped.append({"path": other or expected, "split": split, "reason": reason})
        continue
      videos[split].append({"path": path, "media_id": key, "label": class_index[label],
                            "label_string": label})
  if not any(videos.values()):
    raise FileNotFoundError(
        f"none of the clips in the annotation CSVs were found under --input_dir={input_dir!r} "
        f"(expected files named <youtube_id>_<start:06d>_<end:06d>.mp4 in any subfolder)")
  return classes, videos, skipped
