"""Any folder tree of videos -> one unlabeled split, for `convert.py --dataset=folder`.

The unlabeled pool of semi-supervised training does not have to come from the labeled dataset:
phone clips, downloads, another dataset's videos. Every file under `--input_dir` (subfolders
included, symlinks followed) whose extension is one of `video_io.VIDEO_EXTENSIONS`, in any case
(`.MOV` from phones), becomes one record of the split `unlabeled` with label index -1, no label
string, and as media id its path relative to `--input_dir` with forward slashes
(`trip/IMG_0042.MOV`), so ids stay unique and readable. The codec does not matter: whatever
PyAV decodes (H.264/HEVC, VP8/VP9, AV1, MPEG-4, MJPEG ...).

Hidden files and folders (`.DS_Store`, macOS `._clip.mp4` resource forks, `.git`) and the output
folder, if it lies inside the input, are not looked at. Files with another video extension
(`.3gp`, `.m4v`, ...) are listed under `skipped` so they are not silently missed; other files
(notes, thumbnails) are ignored. Missing (broken link), empty, corrupt and non-video files with
a video extension are skipped with the reason, like in the other datasets.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from cmpl_jax.data import storage, video_io

SPLIT = "unlabeled"
LABEL = -1  # clip/label/index of every record; clip/label/string is empty
# Video extensions not converted (to rename or re-mux): reported instead of silently ignored.
OTHER_VIDEO_EXTENSIONS = (".3gp", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts", ".mts",
                          ".m2ts", ".ogv", ".vob", ".asf", ".rm")


def _real(path: str) -> str:
  return path.rstrip("/") if storage.is_url(path) else os.path.realpath(path)  # URLs: no links


def _walk(input_dir: str, exclude: set[str]):
  """Yields file paths under `input_dir` in sorted order, following symlinks without looping."""
  seen: set[str] = set()
  for root, dirs, files in storage.walk(input_dir):
    real = _real(root)
    if real in seen:  # a link back up the tree
      dirs[:] = []
      continue
    seen.add(real)
    dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                     and _real(os.path.join(root, d)) not in exclude)
    for name in sorted(files):
      if not name.startswith("."):
        yield os.path.join(root, name)


def media_id(input_dir: str, path: str) -> str:
  return os.path.relpath(path, input_dir).replace(os.sep, "/")


def list_videos(input_dir: str, exclude: Sequence[str] = ()
                ) -> tuple[list[str], dict[str, list[dict[str, Any]]], list[dict[str, str]]]:
  """Returns ([], {"unlabeled": [video]}, skipped), in the shape of the other datasets.

  A video is {"path", "media_id", "label": -1, "label_string": ""}. `exclude`: folders not to
  walk into (the converter passes its output folder).
  """
  if not storage.isdir(input_dir):
    raise FileNotFoundError(f"--input_dir={input_dir!r} is not a directory")
  excluded = {_real(p) for p in exclude if p}
  videos: list[dict[str, Any]] = []
  skipped: list[dict[str, str]] = []
  for path in _walk(input_dir, excluded):
    ext = os.path.splitext(path)[1].lower()
    if ext in video_io.VIDEO_EXTENSIONS:
      if not storage.exists(path):
        skipped.append({"path": path, "split": SPLIT, "reason": "missing: broken symbolic link"})
      else:
        videos.append({"path": path, "media_id": media_id(input_dir, path), "label": LABEL,
                       "label_string": ""})
    elif ext in OTHER_VIDEO_EXTENSIONS:
      skipped.append({"path": path, "split": SPLIT, "reason":
                      f"extension {ext} is not converted (only "
                      f"{', '.join(video_io.VIDEO_EXTENSIONS)}); rename it to .mkv (the format is "
                      f"read from the content)"})
  if not videos:
    raise FileNotFoundError(
        f"no video files ({', '.join(video_io.VIDEO_EXTENSIONS)}, any case) under "
        f"--input_dir={input_dir!r} or its subfolders")
  return [], {SPLIT: videos}, skipped
