"""Multi-view evaluation: the eval step's per-video softmax average, predict_split's placement
and coverage checks over hand-built device batches, and summarize's numbers.

Real tiny models (r3d_10 at 1/16 width, native convs: quick to compile) with random, confident
parameters, so that views, videos and models all get different probabilities.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmpl_jax import evaluate, train, views
from cmpl_jax.models import resnet3d
from model_fixtures import variables_of_a_net_in_training

K, U, J, CROPS, S = 5, 4, 2, 3, 16   # classes, union frames, windows, crops, crop size
V = J * CROPS
CANVAS_HW = (16, 24)
# The primary model reads union frames 0 and 2, the auxiliary all four (as union_offsets lays
# out a 2-frame stride-2 model beside a 4-frame stride-1 one).
SPEC = train.EvalSpec(positions=(("primary", (0, 2)), ("auxiliary", (0, 1, 2, 3))),
                      crop_size=S, num_crops=CROPS, dtype="float32")
MODELS = {name: resnet3d.create_model("r3d_10", K, width_multiplier=1 / 16, conv_impl="native")
          for name, _ in SPEC.positions}


def _variables():
  out = {}
  for seed, (name, positions) in enumerate(SPEC.positions):
    v = variables_of_a_net_in_training(MODELS[name], (1, len(positions), S, S, 3), seed,
                                       random_stats=True)
    v["params"]["head"]["kernel"] *= 10   # confident: softmax far from uniform and from linear
    out[name] = v
  return out


VARIABLES = _variables()
PARAMS = {name: v["params"] for name, v in VARIABLES.items()}
BATCH_STATS = {name: v["batch_stats"] for name, v in VARIABLES.items()}
EVAL_STEP = jax.jit(functools.partial(train.eval_step, models=MODELS, spec=SPEC))


def _videos(num, seed):
  """`num` eval videos as the pipeline decodes them: J windows of U frames on a canvas; every
  third one a portrait frame (24 x 16 upright, stored transposed), the rest landscape."""
  rng = np.random.default_rng(seed)
  frames = rng.integers(0, 256, (num, J, U, *CANVAS_HW, 3), dtype=np.uint8)
  transposed = np.arange(num) % 3 == 1
  size = np.where(transposed[:, None], [24, 16], [16, 24]).astype(np.int32)
  return {"frames": frames, "size": size, "transposed": transposed}


def _per_view_probs(video):
  """{model: probs_K} of one video, view by view: views.eval_views (view v = window j x CROPS +
  crop), each model's frames, one model.apply per view, softmax, mean over the V views."""
  all_views = views.eval_views(video["frames"], jnp.asarray(video["size"]),
                               jnp.asarray(video["transposed"]), crop_size=S, num_crops=CROPS)
  assert all_views.shape == (V, U, S, S, 3)
  out = {}
  for name, positions in SPEC.positions:
    probs = [jax.nn.softmax(APPLY[name](VARIABLES[name], resnet3d.normalize(
        all_views[v][jnp.asarray(positions)][None]))[0]) for v in range(V)]
    out[name] = np.mean(probs, axis=0)
    assert np.abs(np.asarray(probs) - out[name]).max() > 0.05  # the views do disagree
  return out


APPLY = {name: jax.jit(functools.partial(m.apply, train=False)) for name, m in MODELS.items()}


def test_eval_step_averages_each_videos_softmax_over_its_views():
  batch = _videos(3, seed=0)
  out = EVAL_STEP(PARAMS, BATCH_STATS, batch)
  assert set(out) == {"primary", "auxiliary"}
  for b in range(3):
    expected = _per_view_probs(jax.tree.map(lambda x: x[b], batch))
    for name in out:
      assert out[name].shape == (3, K)
      np.testing.assert_allclose(out[name][b], expected[name], rtol=1e-5, atol=1e-6,
                                 err_msg=f"video {b}, {name}")
  # Different videos and models score differently (nothing above compares constants).
  for name in out:
    assert np.abs(out[name] - out[name][:1]).max() > 0.05
  assert np.abs(out["primary"] - out["auxiliary"]).max() > 0.05


# --------------------------------------------------------------------------- predict_split

N = 11                                     # videos of the split
D = jax.local_device_count()               # 8 under tests/conftest.py
VIDEOS = _videos(N, seed=1)
LABELS = np.random.default_rng(2).integers(0, K, N)
PADDING = _videos(1, seed=3)               # what padded entries hold: never scored


@functools.lru_cache(maxsize=1)
def _expected_probs():
  """{model: [N, K]} from the eval step on the videos in index order (checked above)."""
  out = EVAL_STEP(PARAMS, BATCH_STATS, VIDEOS)
  return {name: np.asarray(p) for name, p in out.items()}


def _batches(indices, masks=None):
  """Device batches [D, 1, ...] holding video `indices[k]` in slot k (-1: padding, mask 0,
  index -1 as the pipeline pads), D slots per batch."""
  masks = [i >= 0 for i in indices] if masks is None else masks
  batches = []
  for start in range(0, len(indices), D):
    slots = list(indices[start:start + D])
    mask = list(masks[start:start + D])
    slots, mask = slots + [-1] * (D - len(slots)), mask + [False] * (D - len(mask))
    pick = lambda i, tree: jax.tree.map(lambda x: x[i], tree)  # noqa: E731
    entries = [pick(i, VIDEOS) if i >= 0 else pick(0, PADDING) for i in slots]
    batch = {key: np.stack([e[key] for e in entries])[:, None] for key in VIDEOS}
    batch["index"] = np.asarray(slots, np.int32)[:, None]
    batch["mask"] = np.asarray(mask)[:, None]
    batch["label"] = np.asarray([LABELS[i] if i >= 0 else 0 for i in slots], np.int32)[:, None]
    batches.append(batch)
  return batches


def _predict(batches, num_skipped=0):
  return evaluate.predict_split(MODELS, train.replicate(PARAMS), train.replicate(BATCH_STATS),
                                batches, N, K, SPEC, num_skipped=lambda: num_skipped)


# Slots 0..15 over two batches: the videos out of order, padding in the middle and at the end.
ORDER = [7, 2, 10, 0, -1, 5, 9, 1, 4, 8, 3, 6, -1, -1, -1, -1]


def test_predict_split_places_each_video_at_its_index_and_ignores_padding():
  probs, labels = _predict(_batches(ORDER))
  expected = _expected_probs()
  assert set(probs) == {"primary", "auxiliary"}
  for name in probs:
    assert probs[name].shape == (N, K)
    np.testing.assert_allclose(probs[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
  np.testing.assert_array_equal(labels, LABELS)
  # A masked-out entry may even carry a real video's index: it is not scored, not counted.
  masked_repeat = _batches(ORDER[:12] + [3, 7], masks=[i >= 0 for i in ORDER[:12]] + [False] * 2)
  probs_again, _ = _predict(masked_repeat)
  np.testing.assert_array_equal(probs_again["primary"], probs["primary"])


@pytest.mark.parametrize("case", ["repeat", "gap", "repeat_and_gap"])
def test_predict_split_raises_on_a_repeated_or_missing_video(case):
  order = list(ORDER)
  if case in ("repeat", "repeat_and_gap"):
    order[4] = 9                       # video 9 a second time, in a real slot
  if case in ("gap", "repeat_and_gap"):
    order[order.index(5)] = -1         # video 5 never comes
  with pytest.raises(RuntimeError, match="inconsistent"):
    _predict(_batches(order))


def test_predict_split_leaves_out_videos_skipped_as_bad_records():
  order = [-1 if i == 5 else i for i in ORDER]
  with pytest.raises(RuntimeError, match="inconsistent"):   # more missing than skipped
    _predict(_batches([-1 if i == 6 else i for i in order]), num_skipped=1)
  probs, labels = _predict(_batches(order), num_skipped=1)
  keep = np.arange(N) != 5
  np.testing.assert_allclose(probs["auxiliary"], _expected_probs()["auxiliary"][keep],
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(labels, LABELS[keep])


# --------------------------------------------------------------------------- summarize

CLASSES = ["a", "b", "c", "d", "e", "f"]   # e and f: no video of theirs in the split
TRUE = np.array([0, 0, 1, 2, 2, 3])
PRIMARY = np.array([[0.60, 0.10, 0.10, 0.10, 0.05, 0.05],    # a: right
                    [0.00, 0.50, 0.20, 0.10, 0.10, 0.10],    # a: wrong, true class last
                    [0.10, 0.70, 0.10, 0.05, 0.05, 0.00],    # b: right
                    [0.10, 0.10, 0.50, 0.20, 0.05, 0.05],    # c: right
                    [0.05, 0.05, 0.30, 0.40, 0.10, 0.10],    # c: wrong (d), true class 2nd
                    [0.10, 0.10, 0.10, 0.45, 0.05, 0.20]])   # d: right
AUXILIARY = np.array([[0.20, 0.10, 0.10, 0.10, 0.50, 0.00],  # a: wrong (e)
                      [0.90, 0.02, 0.02, 0.02, 0.02, 0.02],  # a: right, confident
                      [0.10, 0.60, 0.10, 0.10, 0.10, 0.00],  # b: right
                      [0.00, 0.10, 0.10, 0.60, 0.10, 0.10],  # c: wrong (d)
                      [0.05, 0.05, 0.70, 0.10, 0.10, 0.00],  # c: right
                      [0.00, 0.00, 0.05, 0.40, 0.55, 0.00]]) # d: wrong (e), d 2nd


def test_summarize_top1_top5_per_class_and_the_average_of_two_models():
  results, confusion = evaluate.summarize({"primary": PRIMARY, "auxiliary": AUXILIARY}, TRUE,
                                          CLASSES, step=120, split="test", num_clips=J,
                                          num_crops=CROPS)
  assert {k: results[k] for k in ("step", "split", "num_examples", "views")} == {
      "step": 120, "split": "test", "num_examples": 6, "views": {"clips": J, "crops": CROPS}}
  # By hand from the tables above. The average of the probabilities is right on videos 0, 1,
  # 2, 4 and 5 (one model wrong on 0, 1, 5, outvoted by the other): better than either model.
  # On video 5 it takes the mean, not the max: the auxiliary's 0.55 on e beats either d alone.
  assert results["primary"] == pytest.approx({"top1": 4 / 6, "top5": 5 / 6})
  assert results["auxiliary"] == pytest.approx({"top1": 3 / 6, "top5": 1.0})
  assert results["average"] == pytest.approx({"top1": 5 / 6, "top5": 1.0})
  none = {"e": None, "f": None}
  assert results["per_class"] == {
      "primary": {"a": 0.5, "b": 1.0, "c": 0.5, "d": 1.0, **none},
      "auxiliary": {"a": 0.5, "b": 1.0, "c": 0.5, "d": 0.0, **none},
      "average": {"a": 1.0, "b": 1.0, "c": 0.5, "d": 1.0, **none}}
  zeros = [0] * 6
  assert confusion["primary"] == [[1, 1, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0],
                                  [0, 0, 0, 1, 0, 0], zeros, zeros]
  assert confusion["auxiliary"] == [[1, 0, 0, 0, 1, 0], [0, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0],
                                    [0, 0, 0, 0, 1, 0], zeros, zeros]


def test_summarize_one_model_and_fewer_than_five_classes():
  """No 'average' for one model; with K < 5 classes 'top5' is top-K, so always 1."""
  probs = np.array([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.5, 0.4, 0.1]])
  results, confusion = evaluate.summarize({"primary": probs}, np.array([0, 0, 2, 1]),
                                          ["x", "y", "z"], step=0, split="val", num_clips=1,
                                          num_crops=1)
  assert "average" not in results and set(confusion) == {"primary"}
  assert results["primary"] == pytest.approx({"top1": 0.5, "top5": 1.0})
  assert results["per_class"]["primary"] == {"x": 0.5, "y": 0.0, "z": 1.0}
  assert confusion["primary"] == [[1, 1, 0], [1, 0, 0], [0, 0, 1]]
