"""Labeled subsets of the train split: class-balanced sampling, or an external list.

Indices refer to the order of the train split in metadata.json (`splits.train.media_ids`), so a
subset is chosen without reading the records. The unlabeled stream is the whole train split
(labeled videos included, as in FixMatch); its labels are only used for diagnostics.
No TensorFlow here: only plain files and numpy.
"""
from __future__ import annotations

import os
import re
from typing import IO, Any, Sequence

import numpy as np

from cmpl_jax import fileio

LABELED_IDS_FILENAME = "labeled_ids.txt"
_KINETICS_ID = re.compile(r"^(?P<youtube_id>[\w-]{11})_(?P<start>\d+)_(?P<end>\d+)$")


def _open(path: str, mode: str) -> IO[str]:
  """Local files with `open`; URLs (gs://...) through tf.io.gfile, imported only then."""
  if "://" in path:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.io.gfile.GFile(path, mode)
  return open(path, mode, encoding="utf-8-sig" if "r" in mode else "utf-8", newline=None)


def class_balanced_subset(labels: Sequence[int], num_classes: int, percent: float, seed: int,
                          class_names: Sequence[str] | None = None) -> list[int]:
  """Sorted indices of `percent`% of each class's videos (rounded, at least one per class).

  Deterministic from `seed`: each class's videos are permuted by a generator seeded with
  (seed, class index), so a class's pick does not change when other classes change.
  """
  if not 0 < percent <= 100:
    raise ValueError(f"config.data.labeled_percent must be in (0, 100], got {percent}")
  labels_E = np.asarray(labels, dtype=np.int64)
  if labels_E.size and (labels_E.min() < 0 or labels_E.max() >= num_classes):
    raise ValueError(f"labels must be in [0, {num_classes}), got range "
                     f"[{labels_E.min()}, {labels_E.max()}]")
  chosen = []
  for c in range(num_classes):
    members = np.flatnonzero(labels_E == c)
    if members.size == 0:
      name = f" ({class_names[c]!r})" if class_names is not None else ""
      raise ValueError(f"class {c}{name} has no videos in the train split, so a class-balanced "
                       f"labeled subset cannot include it")
    count = min(max(int(round(members.size * percent / 100.0)), 1), members.size)
    rng = np.random.default_rng([int(seed), c])
    chosen.extend(rng.permutation(members)[:count].tolist())
  return sorted(chosen)


def normalize_id(entry: str) -> str:
  """Canonical lower-case key of a list entry or media id.

  `Class/v_Class_gGG_cCC.avi 12` -> `class/v_class_ggg_ccc`; Kinetics `id_84_94.mp4` ->
  `id_000084_000094` (times zero-padded to 6 digits as in our media ids); a Kinetics CSV row
  `label,youtube_id,time_start,time_end,...` -> `youtube_id_SSSSSS_EEEEEE`.
  """
  entry = entry.strip().lstrip("\ufeff")
  fields = [f.strip() for f in entry.split(",")]
  if len(fields) >= 4 and fields[2].isdigit() and fields[3].isdigit():
    return f"{fields[1]}_{int(fields[2]):06d}_{int(fields[3]):06d}".lower()
  key = entry.split()[0].replace("\\", "/")
  key = os.path.splitext(key)[0] if re.search(r"\.\w{2,4}$", key) else key
  folder, _, name = key.rpartition("/")
  match = _KINETICS_ID.match(name)
  if match:
    name = f"{match['youtube_id']}_{int(match['start']):06d}_{int(match['end']):06d}"
  return (f"{folder}/{name}" if folder else name).lower()


def read_labeled_list(path: str, media_ids: Sequence[str]) -> list[int]:
  """Sorted train-split indices of the videos listed in `path` (VideoSSL / LTG style lists).

  One video per line: `Class/v_Class_gGG_cCC.avi [label]`, a bare `v_Class_gGG_cCC.avi`,
  a Kinetics id `youtubeid_SSSSSS_EEEEEE` (extension and class folder optional) or a Kinetics
  CSV row. Matching ignores case (the UCF-101 release mixes `HandstandPushups` and
  `HandStandPushups`), CRLF, blank lines and `#` comments. Raises naming up to 10 unmatched ids.
  """
  full: dict[str, int] = {}
  by_name: dict[str, list[int]] = {}
  for i, media_id in enumerate(media_ids):
    key = normalize_id(media_id)
    full.setdefault(key, i)
    by_name.setdefault(key.rpartition("/")[2], []).append(i)
  with _open(path, "r") as f:
    lines = [line.strip() for line in f.read().splitlines()]
  chosen, missing, ambiguous = set(), [], []
  for line in lines:
    if not line or line.startswith("#") or line.lower().startswith("label,"):
      continue
    key = normalize_id(line)
    if key in full:
      chosen.add(full[key])
      continue
    candidates = by_name.get(key.rpartition("/")[2], [])
    if len(candidates) == 1:
      chosen.add(candidates[0])
    elif candidates:
      ambiguous.append(line)
    else:
      missing.append(line)
  if missing or ambiguous:
    parts = []
    if missing:
      parts.append(f"{len(missing)} listed videos are not in the train split of the data "
                   f"(first {min(len(missing), 10)}: {missing[:10]})")
    if ambiguous:
      parts.append(f"{len(ambiguous)} entries match several videos; give the class folder "
                   f"(first {min(len(ambiguous), 10)}: {ambiguous[:10]})")
    raise ValueError(f"config.data.labeled_list={path}: " + "; ".join(parts)
                     + ". Check that the list and the converted data use the same split.")
  if not chosen:
    raise ValueError(f"config.data.labeled_list={path} lists no videos")
  return sorted(chosen)


def labeled_indices(config: Any, media_ids: Sequence[str], labels: Sequence[int],
                    class_names: Sequence[str]) -> list[int]:
  """The labeled subset a config asks for: `data.labeled_list` if set, else `labeled_percent`."""
  if config.data.get("labeled_list"):
    chosen = read_labeled_list(config.data.labeled_list, media_ids)
    uncovered = sorted(set(range(len(class_names))) - {int(labels[i]) for i in chosen})
    if uncovered:
      names = [class_names[c] for c in uncovered[:10]]
      raise ValueError(f"config.data.labeled_list={config.data.labeled_list} leaves "
                       f"{len(uncovered)} of {len(class_names)} classes without a labeled video "
                       f"(first: {names}); every class needs at least one")
    return chosen
  return class_balanced_subset(labels, len(class_names), float(config.data.labeled_percent),
                               int(config.data.labeled_seed), class_names)


def write_labeled_ids(workdir: str, media_ids: Sequence[str]) -> str:
  """Writes `workdir/labeled_ids.txt` (one media id per line): the subset actually used.

  The file is itself a valid `config.data.labeled_list`, so a run can be repeated exactly.
  """
  return fileio.write_atomic(os.path.join(workdir, LABELED_IDS_FILENAME),
                             "".join(f"{media_id}\n" for media_id in media_ids))
