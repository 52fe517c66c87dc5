"""Top-k action labels for one video file, from a training workdir. No TensorFlow needed.

  python -m cmpl_jax.predict --workdir=/tmp/cmpl_demo --video=clip.mp4 [--top_k=5] [--json]

The video is decoded like the training data was converted (PyAV, same short side and frame
rate, from workdir/data_info.json), then preprocessed like evaluation: `eval.num_clips`
uniformly spaced windows (cmpl_jax/data/sampling.py) x `eval.num_crops` crops of the
short-side-resized frames, taken by the device code evaluation uses (cmpl_jax/views.py),
softmax averaged over views.
Exit code 2 with a one-line error for anything that is not a readable video.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from PIL import Image

from cmpl_jax import checkpointing, train
from cmpl_jax import workdir as workdir_lib
from cmpl_jax.data import sampling, video_io


def decode(video_path: str, data_info: dict[str, Any]) -> np.ndarray:
  """uint8 [N, H, W, 3] frames at the stored short side and frame rate of the training data,
  upright (a phone video's rotation tag applied) and timed by presentation timestamps, through
  the converters' own decoding (video_io).

  Raises video_io.VideoDecodeError for anything that is not a readable video.
  """
  options = video_io.DecodeOptions(short_side=int(data_info.get("short_side", 0)),
                                   fps=float(data_info.get("frame_rate", 0.0)), threads=0)
  return video_io.decode_to_array(video_path, options)[0]


def canvas_frames(frames_NxHxWx3: np.ndarray, canvas: sampling.Canvas
                  ) -> tuple[np.ndarray, np.ndarray, bool]:
  """(frames on the canvas, upright size int32[2], transposed): what the pipeline's host
  decode makes of stored frames (clips.decode_canvas), in numpy. Long side along the width;
  resized (antialiased bilinear) to short side Hc when it differs, as a DCT-scaled decode
  would; centre-cropped along the long side to Wc."""
  transposed = frames_NxHxWx3.shape[1] > frames_NxHxWx3.shape[2]
  frames = np.swapaxes(frames_NxHxWx3, 1, 2) if transposed else frames_NxHxWx3
  short, long = frames.shape[1], frames.shape[2]
  if short != canvas.height:
    new_long = max((long * canvas.height + short // 2) // short, canvas.height)
    frames = np.stack([np.asarray(Image.fromarray(f).resize((new_long, canvas.height),
                                                            Image.BILINEAR)) for f in frames])
  kept = min(frames.shape[2], canvas.width)
  begin = (frames.shape[2] - kept) // 2
  frames = frames[:, :, begin:begin + kept]
  size = (kept, canvas.height) if transposed else (canvas.height, kept)
  return frames, np.array(size, np.int32), transposed


def eval_windows(frames_NxHxWx3: np.ndarray, config: ml_collections.ConfigDict,
                 stored_short_side: int = 0) -> dict[str, np.ndarray]:
  """One video's eval windows as the pipeline ships them to the device (a batch of one):
  {'frames': uint8[1, J, U, H, W, 3], 'size': int32[1, 2], 'transposed': bool[1]}.

  The crops are then taken by the same device code as in evaluation (views.eval_views).
  """
  num_frames = frames_NxHxWx3.shape[0]
  specs = sampling.frame_specs(config)
  offsets_U, _ = sampling.union_offsets(specs)
  starts_J = sampling.eval_window_starts(num_frames, sampling.window_length(specs),
                                         int(config.eval.num_clips))
  indices_JxU = sampling.window_frames(starts_J, offsets_U, num_frames)
  unique, positions = np.unique(indices_JxU, return_inverse=True)
  frames, size, transposed = canvas_frames(frames_NxHxWx3[unique],
                                           sampling.canvas_for(config, stored_short_side))
  windows = frames[positions.reshape(indices_JxU.shape)]
  return {"frames": windows[None], "size": size[None], "transposed": np.array([transposed])}


class Predictor:
  """Restores a workdir's checkpoint once; `probabilities(path)` per video.

  `variables` = {'params': {model: ...}, 'batch_stats': {model: ...}} of the restored step.
  """

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
    self.variables = jax.device_put(variables)
    self._forward = jax.jit(functools.partial(train.eval_step, models=self.models,
                                              spec=train.eval_spec(self.config)),
                            compiler_options=train.compiler_options())

  def probabilities(self, frames_NxHxWx3: np.ndarray) -> dict[str, np.ndarray]:
    """{model: probs_K} (and 'average' for two models) of decoded frames (`decode`)."""
    windows = eval_windows(frames_NxHxWx3, self.config, int(self.data_info.get("short_side", 0)))
    probs = self._forward(self.variables["params"], self.variables["batch_stats"], windows)
    probs = {name: np.asarray(p[0]) for name, p in probs.items()}
    if len(probs) > 1:
      probs["average"] = np.mean(list(probs.values()), axis=0)
    return probs

  def top_k(self, frames_NxHxWx3: np.ndarray, k: int = 5, model: str = "primary"
            ) -> list[tuple[str, float]]:
    probs = self.probabilities(frames_NxHxWx3)
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
  except checkpointing.DamagedCheckpointError as e:   # never another step without being asked
    _fail(f"{e}; pass --step=STEP to use another checkpoint")
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
  from cmpl_jax import console  # pylint: disable=g-import-not-at-top
  console.quiet_tensorflow()
  _define_flags()
  app.run(main)
