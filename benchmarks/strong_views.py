"""What the strong view leaves of a class: a trained model's accuracy on weak and strong views.

For each test video of split 1 (UCF-101 layout, e.g. a synthetic dataset's raw/ folder) it
decodes the first eval window like `cmpl_jax.predict`, draws `--views` random views of each
kind with the training code's own view functions (cmpl_jax/views.py), and prints the primary
model's top-1, and how often the predicted class has the right shape and the right motion
(synthetic class names), for:

  weak: the scale-jitter crop and flip of labeled clips and of the teacher's view;
  strong: the student's view (RandAugment and Cutout at the run's settings);
  RandAugment only / Cutout only: the strong view with the other part switched off;
  --also=LAYERS,MAGNITUDE,CUTOUT (repeatable): a strong view at other settings, e.g. a milder
  one, to see what a change of config.data.randaugment_* / cutout_fraction would leave.

A student trained on pseudo-labels of strong views can only learn what survives in them. About
1 minute per run on 2 CPU cores for the 252 test videos of the 9-class dataset:

  python benchmarks/strong_views.py --raw_dir=/tmp/synth9_s1_ring/raw RUN_DIR [RUN_DIR ...] \
      [--also=2,5,0.25 ...]
"""
from __future__ import annotations

import argparse
import collections
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from cmpl_jax import predict, train, views
from cmpl_jax.data import synthetic
from cmpl_jax.models import resnet3d


def parse_also(text: str) -> tuple[int, float, float]:
  """'LAYERS,MAGNITUDE,CUTOUT' -> (RandAugment layers, magnitude, Cutout fraction of the crop)."""
  try:
    layers, magnitude, cutout = text.split(",")
    parsed = int(layers), float(magnitude), float(cutout)
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"--also={text}: expected LAYERS,MAGNITUDE,CUTOUT, e.g. 2,5,0.25") from None
  if parsed[0] < 0 or not 0 <= parsed[1] <= 30 or not 0 <= parsed[2] <= 1:
    raise argparse.ArgumentTypeError(
        f"--also={text}: need LAYERS >= 0, MAGNITUDE in [0, 30], CUTOUT in [0, 1]")
  return parsed


def measure(run_dir: str, raw_dir: str, num_views: int,
            also: tuple[tuple[int, float, float], ...] = ()) -> dict[str, np.ndarray]:
  predictor = predict.Predictor(run_dir)
  config, data_info, classes = predictor.config, predictor.data_info, predictor.classes
  model = predictor.models["primary"]
  variables = {kind: v["primary"] for kind, v in predictor.variables.items()}
  positions = np.asarray(dict(train.eval_spec(config).positions)["primary"])
  base = views.ViewConfig.from_config(config)
  kinds = {"weak": None, "strong": base, "RandAugment only": base._replace(cutout_size=0),
           "Cutout only": base._replace(num_layers=0)}
  for layers, magnitude, cutout in also:
    kinds[f"l{layers} m{magnitude:g} c{cutout:g}"] = base._replace(
        num_layers=layers, magnitude=magnitude, cutout_size=int(round(cutout * base.crop_size)))

  @functools.partial(jax.jit, static_argnums=(4,))
  def predict_views(keys_B, frames_UxHxWx3, size_2, transposed, cfg):
    b = keys_B.shape[0]
    frames = jnp.broadcast_to(frames_UxHxWx3, (b,) + frames_UxHxWx3.shape)
    size, flags = jnp.broadcast_to(size_2, (b, 2)), jnp.broadcast_to(transposed, (b,))
    make = views.weak_views if cfg is None else views.strong_views
    clips = make(keys_B, frames, size, flags, base if cfg is None else cfg)
    return jnp.argmax(model.apply(variables, resnet3d.normalize(clips), train=False), -1)

  with open(os.path.join(raw_dir, "ucfTrainTestlist", "testlist01.txt")) as f:
    videos = [line.split()[0] for line in f if line.strip()]
  counts = collections.defaultdict(lambda: np.zeros(3))  # right class, shape, motion
  for index, relative in enumerate(videos):
    name = relative.split("/")[0]
    shape, motion = synthetic.class_factors(name)
    frames = predict.decode(os.path.join(raw_dir, "UCF-101", relative), data_info)
    window = predict.eval_windows(frames, config, int(data_info.get("short_side", 0)))
    keys = jax.random.split(jax.random.key(index), num_views)
    for kind, cfg in kinds.items():
      predicted = predict_views(keys, window["frames"][0, 0][positions], window["size"][0],
                                window["transposed"][0], cfg)
      for k in np.asarray(predicted):
        p_shape, p_motion = synthetic.class_factors(classes[k])
        counts[kind] += [classes[k] == name, p_shape == shape, p_motion == motion]
  return {kind: 100 * c / (len(videos) * num_views) for kind, c in counts.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("run_dirs", nargs="+", help="training workdirs (checkpoints/ inside)")
  parser.add_argument("--raw_dir", required=True,
                      help="the dataset's UCF-101 layout folder (UCF-101/, ucfTrainTestlist/)")
  parser.add_argument("--views", type=int, default=4, help="random views of each kind per video")
  parser.add_argument("--also", type=parse_also, action="append", default=[],
                      metavar="LAYERS,MAGNITUDE,CUTOUT",
                      help="an extra strong view: RandAugment layers and magnitude, Cutout side "
                           "as a fraction of the crop (repeatable)")
  args = parser.parse_args()
  if not os.path.isfile(os.path.join(args.raw_dir, "ucfTrainTestlist", "testlist01.txt")):
    parser.error(f"--raw_dir={args.raw_dir}: no ucfTrainTestlist/testlist01.txt inside")
  print(f"{'run':32s} {'view':17s} {'top-1':>6s} {'shape':>6s} {'motion':>6s}  (% of views)")
  for run_dir in args.run_dirs:
    for kind, (top1, shape, motion) in measure(run_dir, args.raw_dir, args.views, tuple(args.also)).items():
      name = os.path.join(*os.path.normpath(run_dir).split(os.sep)[-2:])
      print(f"{name:32s} {kind:17s} {top1:6.1f} {shape:6.1f} "
            f"{motion:6.1f}")


if __name__ == "__main__":
  main()
