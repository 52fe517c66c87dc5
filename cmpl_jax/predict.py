"""Top-k action labels for one video file, from a training workdir. No TensorFlow needed.

  python -m cmpl_jax.predict --workdir=/tmp/cmpl_demo --video=clip.mp4 [--top_k=5] [--json]

The video is decoded like the training data was converted (PyAV, same short side and frame
rate, from workdir/data_info.json), then preprocessed like evaluation: `eval.num_clips`
uniformly spaced windows x `eval.num_crops` crops of the short-side-resized frames (the same
integer maths as the tf.data pipeline, cmpl_jax/data/sampling.py), softmax averaged over views.
Exit code 2 with a one-line error for anything that is not a readable video.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging

from cmpl_jax import checkpointing, train
from cmpl_jax import workdir as workdir_lib
from cmpl_jax.data import sampling, video_io


def decode(video_path: str, data_info: dict[str, Any]) -> np.ndarray:
  """uint8 [T, H, W, 3] frames at the stored short side and frame rate of the training data.

  Raises video_io.VideoDecodeError for anything that is not a readable video.
  """
  options = video_io.DecodeOptions(short_side=int(data_info.get("short_side", 0)),
                                   fps=float(data_info.get("frame_rate", 0.0)), threads=0)
  return video_io.decode_to_array(video_path, options)[0]


def eval_views(frames_TxHxWx3: np.ndarray, config: ml_collections.ConfigDict
               ) -> dict[str, np.ndarray]:
  """{model: uint8[V, T_m, S, S, 3]}, views ordered clip-major like the pipeline's."""
  num_frames, height, width = frames_TxHxWx3.shape[:3]
  size = int(config.data.crop_size)
  indices = sampling.eval_clip_indices(num_frames, sampling.frame_specs(config),
                                       int(config.eval.num_clips))
  needed = np.unique(np.concatenate([i.reshape(-1) for i in indices.values()]))
  new_h, new_w = sampling.resized_shape(height, width, size)
  # Bilinear without antialiasing, as tf.image.resize in the pipeline.
  resized = jax.image.resize(jnp.asarray(frames_TxHxWx3[needed], jnp.float32),
                             (len(needed), new_h, new_w, 3), "bilinear", antialias=False)
  resized = np.clip(np.round(np.asarray(resized)), 0, 255).astype(np.uint8)
  position = {int(frame): i for i, frame in enumerate(needed)}
  offsets = sampling.eval_crop_offsets(new_h, new_w, size, int(config.eval.num_crops))
  views = {}
  for name, clip_indices_CxT in indices.items():
    views[name] = np.stack([
        resized[[position[int(t)] for t in clip], y:y + size, x:x + size]
        for clip in clip_indices_CxT for (y, x) in offsets])
  return views


class Predictor:
  """Restores a workdir's checkpoint once; `probabilities(path)` per video."""

  def __init__(self, run_dir: str, step: int | None = None):
    self.config, self.data_info = workdir_lib.load_run(run_dir)
    self.classes = list(self.data_info["classes"])
    self.models = train.create_models(self.config, len(self.classes))
    template = jax.eval_shape(functools.partial(train.init_model_variables, self.config,
                                                self.models), jax.random.key(0))
    template = {"params": {n: v["params"] for n, v in template.items()},
                "batch_stats": {n: v["batch_stats"] for n, v in template.items()}}
    checkpoints = checkpointing.Checkpoints(run_dir, read_only=True)
    self.step, variables = checkpoints.restore_model(
        template, step, expected_meta=checkpointing.describe(self.config, self.classes))
    self._variables = jax.device_put(variables)
    self._forward = jax.jit(functools.partial(train.eval_step, models=self.models,
                                              dtype=train.compute_dtype(self.config)))

  def probabilities(self, frames_TxHxWx3: np.ndarray) -> dict[str, np.ndarray]:
    """{model: probs_K} (and 'average' for two models) of decoded frames (`decode`)."""
    views = eval_views(frames_TxHxWx3, self.config)
    probs = self._forward(self._variables["params"], self._variables["batch_stats"],
                          {name: v[None] for name, v in views.items()})
    probs = {name: np.asarray(p[0]) for name, p in probs.items()}
    if len(probs) > 1:
      probs["average"] = np.mean(list(probs.values()), axis=0)
    return probs

  def top_k(self, frames_TxHxWx3: np.ndarray, k: int = 5, model: str = "primary"
            ) -> list[tuple[str, float]]:
    probs = self.probabilities(frames_TxHxWx3)
    if model not in probs:
      raise ValueError(f"--model={model!r}: this run has {sorted(probs)}")
    order = np.argsort(-probs[model])[:k]
    return [(self.classes[i], float(probs[model][i])) for i in order]


FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Only when run as a program: importing this module (tests do) must not claim flag names."""
  flags.DEFINE_string("workdir", None, "Training workdir (checkpoints/, config.json, "
                      "data_info.json).")
  flags.DEFINE_string("video", None, "Video file to classify (anything PyAV/FFmpeg decodes).")
  flags.DEFINE_integer("top_k", 5, "How many classes to print.")
  flags.DEFINE_bool("json", False, "Print one JSON object instead of a table.")
  flags.DEFINE_enum("model", "primary", ["primary", "auxiliary", "average"],
                    "Whose scores: the primary model (the paper's reported one), the auxiliary, "
                    "or their average (two-model runs only).")
  flags.DEFINE_integer("step", -1, "Checkpoint step (-1 = latest).")


def _fail(message: str) -> None:
  print(f"predict: error: {message}", file=sys.stderr)
  sys.exit(2)


def main(argv):
  del argv
  if not FLAGS.workdir or not FLAGS.video:
    _fail("--workdir and --video are required")
  if not os.path.isfile(FLAGS.video):
    _fail(f"--video={FLAGS.video}: no such file")
  logging.set_verbosity(logging.ERROR)  # Orbax logs every restore (and read-only opens)
  try:
    _, data_info = workdir_lib.load_run(FLAGS.workdir)
    frames = decode(FLAGS.video, data_info)   # fail fast, before restoring the models
    predictor = Predictor(FLAGS.workdir, FLAGS.step)
    ranked = predictor.top_k(frames, FLAGS.top_k, FLAGS.model)
  except video_io.VideoDecodeError as e:
    _fail(f"{FLAGS.video}: not a readable video ({e})")
  except (FileNotFoundError, ValueError) as e:
    _fail(str(e).replace("\n", " "))
  if FLAGS.json:
    print(json.dumps({"video": FLAGS.video, "workdir": FLAGS.workdir, "step": predictor.step,
                      "model": FLAGS.model,
                      "top_k": [{"label": c, "probability": p} for c, p in ranked]}))
  else:
    print(f"{FLAGS.video} ({FLAGS.model} model, checkpoint step {predictor.step}):")
    for rank, (label, prob) in enumerate(ranked, 1):
      print(f"  {rank}. {label:<30s} {prob:.4f}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
