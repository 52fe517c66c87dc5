"""UCF-101 release layout -> the videos of each split, for `convert.py`.

Reads the official files as shipped (`UCF-101/<Class>/v_<Class>_gGG_cCC.avi` and
`ucfTrainTestlist/{classInd,trainlistNN,testlistNN}.txt`) and tolerates what the real release
contains: CRLF line endings, and file names whose class part differs in case from the folder
and `classInd.txt` (`HandstandPushups/v_HandStandPushups_g01_c01.avi`). Files on disk are
matched case-insensitively for the same reason (and for copies made on case-folding disks).
"""
from __future__ import annotations

import os
from typing import Any

from cmpl_jax.data import storage

SPLITS = ("train", "test")
_SPLIT_FILES = {"train": "trainlist{:02d}.txt", "test": "testlist{:02d}.txt"}
VALID_SPLIT_IDS = (1, 2, 3)


def _find_file(directory: str, name: str, flag: str) -> str:
  """Path of `name` in `directory`, matched case-insensitively; clear error naming the flag."""
  exact = os.path.join(directory, name)
  if storage.isfile(exact):
    return exact
  for entry in sorted(storage.listdir(directory)):
    if entry.lower() == name.lower() and storage.isfile(os.path.join(directory, entry)):
      return os.path.join(directory, entry)
  raise FileNotFoundError(
      f"{name} not found in {flag}={directory!r} (expected the official UCF-101 split lists: "
      f"classInd.txt, trainlist0N.txt, testlist0N.txt)")


def _lines(path: str) -> list[tuple[int, str]]:
  """(1-based line number, stripped text) of non-blank lines; CRLF and a BOM are tolerated."""
  lines = storage.read_text(path).splitlines()
  return [(n, line.strip()) for n, line in enumerate(lines, 1) if line.strip()]


def read_class_index(path: str) -> list[str]:
  """Class names in `classInd.txt` order (line `7 BabyCrawling` -> index 6)."""
  by_number: dict[int, str] = {}
  for n, line in _lines(path):
    parts = line.split(maxsplit=1)
    if len(parts) != 2 or not parts[0].isdigit():
      raise ValueError(f"{path}:{n}: expected '<number> <ClassName>', got {line!r}")
    number, name = int(parts[0]), parts[1].strip()
    if number in by_number:
      raise ValueError(f"{path}:{n}: class number {number} appears twice")
    by_number[number] = name
  if sorted(by_number) != list(range(1, len(by_number) + 1)):
    raise ValueError(f"{path}: class numbers must be 1..N without gaps, got {sorted(by_number)}")
  if not by_number:
    raise ValueError(f"{path}: no classes listed")
  return [by_number[i] for i in range(1, len(by_number) + 1)]


def _index_videos(input_dir: str) -> dict[str, str]:
  """lower-cased 'Class/file.avi' -> absolute path, for every file one folder below input_dir."""
  index: dict[str, str] = {}
  for class_dir in sorted(storage.listdir(input_dir)):
    class_path = os.path.join(input_dir, class_dir)
    if not storage.isdir(class_path):
      continue
    for name in sorted(storage.listdir(class_path)):
      index.setdefault(f"{class_dir}/{name}".lower(), os.path.join(class_path, name))
  return index


def list_videos(input_dir: str, splits_dir: str, split_id: int
                ) -> tuple[list[str], dict[str, list[dict[str, Any]]], list[dict[str, str]]]:
  """Returns (classes, {split: [video]}, skipped).

  A video is {"path", "media_id", "label", "label_string"}; media_id is the split-list entry
  without its extension (`ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01`; folder part spelled as in
  classInd.txt). Videos listed but absent from disk are not returned; they are in `skipped`
  ({"path", "reason", "split"}).
  """
  if split_id not in VALID_SPLIT_IDS:
    raise ValueError(f"--split_id must be one of {VALID_SPLIT_IDS} for UCF-101, got {split_id}")
  for flag, path in (("--input_dir", input_dir), ("--splits_dir", splits_dir)):
    if not storage.isdir(path):
      raise FileNotFoundError(f"{flag}={path!r} is not a directory")
  classes = read_class_index(_find_file(splits_dir, "classInd.txt", "--splits_dir"))
  class_by_lower = {name.lower(): i for i, name in enumerate(classes)}
  on_disk = _index_videos(input_dir)
  videos: dict[str, list[dict[str, Any]]] = {}
  skipped: list[dict[str, str]] = []
  for split in SPLITS:
    list_path = _find_file(splits_dir, _SPLIT_FILES[split].format(split_id), "--splits_dir")
    videos[split] = []
    seen: set[str] = set()
    for n, line in _lines(list_path):
      parts = line.split()
      rel_path = parts[0].replace("\\", "/")
      if "/" not in rel_path:
        raise ValueError(f"{list_path}:{n}: expected 'ClassName/v_....avi', got {line!r}")
      folder = rel_path.split("/", 1)[0]
      if len(parts) > 1:  # trainlist: explicit 1-based label, authoritative
        if not parts[1].isdigit() or not 1 <= int(parts[1]) <= len(classes):
          raise ValueError(f"{list_path}:{n}: label {parts[1]!r} is not in 1..{len(classes)} "
                           f"(classInd.txt)")
        label = int(parts[1]) - 1
      elif folder.lower() in class_by_lower:  # testlist: the class is the folder
        label = class_by_lower[folder.lower()]
      else:
        raise ValueError(f"{list_path}:{n}: class folder {folder!r} is not in classInd.txt")
      # The folder part spelled as in classInd.txt, the file part as listed (and as on disk):
      # the id other UCF-101 tools and published labeled-subset lists use.
      if folder.lower() in class_by_lower:
        folder = classes[class_by_lower[folder.lower()]]
      media_id = folder + "/" + os.path.splitext(rel_path.split("/", 1)[1])[0]
      if media_id.lower() in seen:
        continue
      seen.add(media_id.lower())
      path = on_disk.get(rel_path.lower())
      if path is None:
        skipped.append({"path": os.path.join(input_dir, rel_path), "split": split,
                        "reason": "missing: listed in " + os.path.basename(list_path)
                                  + " but not found under --input_dir"})
        continue
      videos[split].append({"path": path, "media_id": media_id, "label": label,
                            "label_string": classes[label]})
  if not any(videos.values()):
    raise FileNotFoundError(
        f"none of the videos listed in {splits_dir} were found under --input_dir={input_dir!r}; "
        f"it should hold the class folders (UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi)")
  return classes, videos, skipped
