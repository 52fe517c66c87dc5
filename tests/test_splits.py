"""Labeled subsets: class balance, determinism, external lists (VideoSSL / LTG style)."""
import collections
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from cmpl_jax.data import splits


def _labels(counts):
  return [c for c, n in enumerate(counts) for _ in range(n)]


def test_class_balanced_subset_is_balanced_sorted_and_deterministic():
  labels = _labels([100, 37, 5, 260])
  picked = splits.class_balanced_subset(labels, 4, percent=10, seed=3)
  assert picked == sorted(picked) and len(set(picked)) == len(picked)
  per_class = collections.Counter(labels[i] for i in picked)
  assert per_class == {0: 10, 1: 4, 2: 1, 3: 26}  # round(p% of n), at least one
  assert splits.class_balanced_subset(labels, 4, percent=10, seed=3) == picked
  assert splits.class_balanced_subset(labels, 4, percent=10, seed=4) != picked
  one_pct = splits.class_balanced_subset(labels, 4, percent=1, seed=0)
  assert collections.Counter(labels[i] for i in one_pct) == {0: 1, 1: 1, 2: 1, 3: 3}


def test_class_balanced_subset_names_an_empty_class():
  with pytest.raises(ValueError, match=r"class 1 \('Biking'\) has no videos"):
    splits.class_balanced_subset([0, 0, 2], 3, 10, 0, class_names=["A", "Biking", "C"])
  with pytest.raises(ValueError, match="labeled_percent"):
    splits.class_balanced_subset([0], 1, 0, 0)


UCF_IDS = ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01", "ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c02",
           "HandstandPushups/v_HandStandPushups_g08_c01", "Biking/v_Biking_g10_c03"]


def test_read_labeled_list_ucf_style(tmp_path):
  path = tmp_path / "ucf101_labeled_1.txt"
  # VideoSSL-style lines with labels, CRLF, blank lines, a case quirk and a bare file name.
  path.write_bytes(b"ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c02.avi 1\r\n\r\n"
                   b"handstandpushups/v_HandstandPushups_g08_c01.avi 37\r\n"
                   b"v_Biking_g10_c03.avi\r\n")
  assert splits.read_labeled_list(str(path), UCF_IDS) == [1, 2, 3]


def test_read_labeled_list_kinetics_forms(tmp_path):
  ids = ["-abcdefghij_000010_000020", "0123456789a_000084_000094", "zyxwvutsrq__000001_000011"]
  path = tmp_path / "k400.txt"
  path.write_text("abseiling/-abcdefghij_000010_000020.mp4\n"
                  "0123456789a_84_94\n"
                  "label,youtube_id,time_start,time_end,split\n"
                  "zumba,zyxwvutsrq_,1,11,train\n")
  assert splits.read_labeled_list(str(path), ids) == [0, 1, 2]


def test_read_labeled_list_reports_missing_ids(tmp_path):
  path = tmp_path / "list.txt"
  missing = [f"Fencing/v_Fencing_g{g:02d}_c01.avi" for g in range(1, 13)]
  path.write_text("\n".join([UCF_IDS[0] + ".avi"] + missing) + "\n")
  with pytest.raises(ValueError) as error:
    splits.read_labeled_list(str(path), UCF_IDS)
  message = str(error.value)
  assert "12 listed videos are not in the train split" in message
  assert "v_Fencing_g01_c01" in message and "v_Fencing_g10_c01" in message
  assert "v_Fencing_g11_c01" not in message  # only the first 10
  assert str(path) in message


def test_write_labeled_ids_round_trips(tmp_path):
  chosen = [0, 3]
  path = splits.write_labeled_ids(str(tmp_path / "workdir"), [UCF_IDS[i] for i in chosen])
  assert open(path).read().splitlines() == [UCF_IDS[0], UCF_IDS[3]]
  assert splits.read_labeled_list(path, UCF_IDS) == chosen


def test_labeled_indices_prefers_the_list(tmp_path):
  config = ml_collections.ConfigDict({"data": {"labeled_list": "", "labeled_percent": 50.0,
                                               "labeled_seed": 0}})
  labels = [0, 0, 1, 1]
  by_percent = splits.labeled_indices(config, UCF_IDS, labels, ["a", "b"])
  assert len(by_percent) == 2 and {labels[i] for i in by_percent} == {0, 1}
  path = tmp_path / "list.txt"
  path.write_text(UCF_IDS[1] + "\n" + UCF_IDS[2] + "\n")
  config.data.labeled_list = str(path)
  assert splits.labeled_indices(config, UCF_IDS, labels, ["a", "b"]) == [1, 2]
  path.write_text(UCF_IDS[2] + "\n")   # class 'a' left without a labeled video
  with pytest.raises(ValueError, match=r"leaves 1 of 2 classes without a labeled video.*'a'"):
    splits.labeled_indices(config, UCF_IDS, labels, ["a", "b"])
  assert np.all(np.diff(by_percent) > 0)


def test_splits_and_sampling_import_without_tensorflow():
  code = ("import sys, cmpl_jax.data, cmpl_jax.data.splits, cmpl_jax.data.sampling; "
          "assert 'tensorflow' not in sys.modules, 'TF imported'")
  subprocess.run([sys.executable, "-c", code], check=True)
