"""Probe: does the synthetic dataset need motion to be solved? Prints the figures.

Generates a dataset with `cmpl_jax.data.synthetic` (the real .avi files, decoded back with
PyAV), then trains two small models from scratch on split 1 with the demo's kind of input
(scale-jitter crops down to `--min_area` of the frame, horizontal flips, `--crop`-pixel crops):

  (a) frame model: the clip model's layers applied to each frame alone, logits averaged over
      the frames. It can learn the appearance, never the motion, so it should stay at the
      appearance ceiling (1 / number of motions), however well it learns appearances.
  (b) clip model: a tiny R(2+1)D CNN on `--clip_frames` frames with stride `--clip_stride`.
      It should clearly exceed the ceiling.

Both see the same kind of clips for the same number of steps; at test, softmax averaged over
3 clips. `--leak_check` adds (c): the frame model trained on the motion labels alone, which
must stay at chance (1 / number of motions) if single frames hide the motion.

For each it prints top-1 on the split-1 test list, and how often the predicted class has the
right shape and the right motion, next to chance and the appearance ceiling. About 4 minutes
on 2 CPU cores with the defaults:

  cd /work/main && python benchmarks/probe_synthetic.py [--data_dir=/tmp/probe_raw --leak_check
      --pass_frames=20,32]
"""
from __future__ import annotations

import argparse
from concurrent import futures
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root

import av  # pylint: disable=g-import-not-at-top
import numpy as np

from cmpl_jax.data import synthetic
from cmpl_jax.data import synthetic_scene


def decode(path: str) -> np.ndarray:
  with av.open(path) as container:
    return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def load_split(raw_dir: str, split_id: int = 1, num_workers: int = 2
               ) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
  """Reads classInd/trainlist/testlist like the UCF-101 converter does and decodes every video."""
  splits_dir = os.path.join(raw_dir, synthetic.SPLITS_DIRNAME)
  with open(os.path.join(splits_dir, "classInd.txt"), encoding="ascii") as f:
    classes = [line.split()[1] for line in f.read().splitlines() if line.strip()]
  out = {}
  with futures.ThreadPoolExecutor(num_workers) as pool:  # PyAV decodes without the GIL
    for name, file in (("train", f"trainlist{split_id:02d}.txt"),
                       ("test", f"testlist{split_id:02d}.txt")):
      with open(os.path.join(splits_dir, file), encoding="ascii") as f:
        relpaths = [line.split()[0] for line in f.read().splitlines() if line.strip()]
      labels = np.array([classes.index(p.split("/")[0]) for p in relpaths], np.int32)
      paths = [os.path.join(raw_dir, synthetic.VIDEOS_DIRNAME, p) for p in relpaths]
      out[name] = (np.stack(list(pool.map(decode, paths))), labels)
  return classes, out


def _pass_frames(text: str) -> tuple[float, ...]:
  return tuple(float(v) for v in text.split(","))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir", default="", help="raw dataset folder ('' = a temp folder)")
  parser.add_argument("--classes", type=int, default=12)
  parser.add_argument("--videos_per_class", type=int, default=56)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--pass_frames", type=_pass_frames, default=synthetic_scene.PERIOD_FRAMES,
                      help="MIN,MAX stored frames per crossing of the frame (the speed)")
  parser.add_argument("--crop", type=int, default=32, help="training/eval crop side (pixels)")
  parser.add_argument("--min_area", type=float, default=0.25, help="scale-jitter minimum area")
  parser.add_argument("--clip_frames", type=int, default=8)
  parser.add_argument("--clip_stride", type=int, default=4)
  parser.add_argument("--steps", type=int, default=1200, help="training steps of each model")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--leak_check", action="store_true",
                      help="also train the frame model on motion labels alone (about +100 s): "
                           "it must stay at chance, or single frames leak the motion")
  args = parser.parse_args()

  t0 = time.time()
  scratch = None if args.data_dir else tempfile.TemporaryDirectory(prefix="probe_synthetic_")
  raw_dir = args.data_dir or scratch.name
  summary = synthetic.generate(raw_dir, num_classes=args.classes,
                               videos_per_class=args.videos_per_class, seed=args.seed,
                               pass_frames=args.pass_frames, progress=False)
  t_gen = time.time() - t0
  classes, data = load_split(raw_dir)
  if scratch is not None:
    scratch.cleanup()  # everything is in memory now
  t_dec = time.time() - t0 - t_gen
  factors = [synthetic.class_factors(c) for c in classes]
  shapes = sorted({s for s, _ in factors})
  motions = sorted({m for _, m in factors})
  print(f"data: {args.data_dir or 'temporary folder'}, {len(classes)} classes ({len(shapes)} shapes x {len(motions)} "
        f"motions), train {data['train'][0].shape}, test {data['test'][0].shape}; "
        f"generate {t_gen:.1f}s, decode {t_dec:.1f}s", flush=True)

  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  num_classes = len(classes)
  crop = args.crop

  def augment(key, video):  # video [T, H, W, 3] float; one crop + flip for the whole clip
    _, height, width, _ = video.shape
    k_area, k_ratio, k_y, k_x, k_flip = jax.random.split(key, 5)
    area = jax.random.uniform(k_area, (), minval=args.min_area, maxval=1.0) * height * width
    ratio = jnp.exp(jax.random.uniform(k_ratio, (), minval=np.log(3 / 4), maxval=np.log(4 / 3)))
    ch = jnp.minimum(jnp.sqrt(area / ratio), height)
    cw = jnp.minimum(jnp.sqrt(area * ratio), width)
    y = jax.random.uniform(k_y, ()) * (height - ch)
    x = jax.random.uniform(k_x, ()) * (width - cw)
    scale = jnp.array([crop / ch, crop / cw])
    out = jax.image.scale_and_translate(video, (video.shape[0], crop, crop, 3), (1, 2), scale,
                                        -jnp.array([y, x]) * scale, "linear")
    return jnp.where(jax.random.bernoulli(k_flip), out[:, :, ::-1], out)

  def center(video):  # full-height centre square, resized to crop
    _, height, width, _ = video.shape
    side = min(height, width)
    y, x = (height - side) // 2, (width - side) // 2
    return jax.image.resize(video[:, y:y + side, x:x + side], (video.shape[0], crop, crop, 3),
                            "linear", antialias=True)

  def normalize(x):
    return x.astype(jnp.float32) / 127.5 - 1.0

  class Net(nn.Module):
    """A tiny R(2+1)D net (2D spatial + 1D temporal convs; XLA's CPU conv3d is ~5x slower).

    With temporal=False the same layers run on each frame alone (1x1 convs in place of the
    temporal ones, per-frame normalisation, no pooling over time) and the per-frame logits are
    averaged: the frame-averaging model, blind to the order and set of positions over time.
    """
    temporal: bool
    num_outputs: int

    @nn.compact
    def __call__(self, x):  # [B, T, H, W, 3] -> [B, classes]
      b, t = x.shape[:2]
      if not self.temporal:  # frames are independent examples until the final average
        x = x.reshape((b * t, 1) + x.shape[2:])

      def spatial(x, ch, k, stride=1):
        y = nn.Conv(ch, (k, k), (stride, stride))(x.reshape((-1,) + x.shape[2:]))
        return y.reshape(x.shape[:2] + y.shape[1:])

      def temporal(x, ch):
        n, tt, h, w, c = x.shape
        y = nn.Conv(ch, (3,))(x.transpose(0, 2, 3, 1, 4).reshape(n * h * w, tt, c))
        return y.reshape(n, h, w, tt, ch).transpose(0, 3, 1, 2, 4)

      x = nn.relu(spatial(x, 16, 5, 2))
      for ch, pool in ((32, (1, 2, 2)), (64, (2, 2, 2) if self.temporal else (1, 2, 2)),
                       (128, None)):
        if pool:
          x = nn.max_pool(x, pool, pool)
        x = nn.relu(spatial(x, ch, 3))
        x = temporal(x, ch) if self.temporal else nn.Dense(ch)(x)
        x = nn.relu(nn.GroupNorm(8)(x))
      logits = nn.Dense(self.num_outputs)(x.mean((1, 2, 3)))
      return logits if self.temporal else logits.reshape(b, t, -1).mean(1)

  rng = np.random.default_rng(args.seed)
  train_x, train_y = data["train"]
  test_x, test_y = data["test"]
  num_stored = train_x.shape[1]

  num_frames, stride = args.clip_frames, args.clip_stride
  span = (num_frames - 1) * stride + 1
  eval_starts = np.linspace(0, num_stored - span, 3).astype(int)  # 3 clips per test video

  def run(name, temporal, target=None):
    """Trains on random clips; evaluates by averaging softmax over the clips at eval_starts.

    `target` maps class index -> training target (default: the class itself).
    """
    target = np.arange(num_classes) if target is None else np.asarray(target)
    model = Net(temporal=temporal, num_outputs=int(target.max()) + 1)
    steps = args.steps
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, num_frames, crop, crop, 3)))
    schedule = optax.cosine_decay_schedule(2e-3, steps)
    tx = optax.adamw(schedule, weight_decay=1e-4)
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, opt_state, key, clips, labels):
      keys = jax.random.split(key, clips.shape[0])
      x = normalize(jax.vmap(augment)(keys, clips.astype(jnp.float32)))

      def loss_fn(p):
        logits = model.apply(p, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      loss, grads = jax.value_and_grad(loss_fn)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def predict(params, clips):
      x = normalize(jax.vmap(center)(clips.astype(jnp.float32)))
      return jax.nn.softmax(model.apply(params, x))

    t = time.time()
    key = jax.random.PRNGKey(1)
    for step in range(steps):
      idx = rng.integers(0, len(train_x), args.batch_size)
      starts = rng.integers(0, num_stored - span + 1, args.batch_size)
      frames = starts[:, None] + stride * np.arange(num_frames)
      clips = train_x[idx[:, None], frames]
      key, sub = jax.random.split(key)
      params, opt_state, loss = train_step(params, opt_state, sub, clips,
                                           target[train_y[idx]])
      if step % 300 == 0 or step == steps - 1:
        print(f"  {name} step {step} loss {float(loss):.3f} ({time.time() - t:.0f}s)", flush=True)
    train_seconds = time.time() - t
    probs = 0.0
    for start in eval_starts:
      frames = start + stride * np.arange(num_frames)
      probs = probs + np.concatenate([predict(params, test_x[i:i + 64][:, frames])
                                      for i in range(0, len(test_x), 64)])
    pred = np.argmax(probs, -1)
    if target.max() + 1 != num_classes:
      return dict(top1=float(np.mean(pred == target[test_y])),
                  train_seconds=round(train_seconds, 1))
    return dict(
        top1=float(np.mean(pred == test_y)),
        shape_acc=float(np.mean([factors[p][0] == factors[y][0] for p, y in zip(pred, test_y)])),
        motion_acc=float(np.mean([factors[p][1] == factors[y][1] for p, y in zip(pred, test_y)])),
        train_seconds=round(train_seconds, 1))

  results = {
      "chance": 1.0 / num_classes,
      "appearance_ceiling": 1.0 / len(motions),
      "frame_model": run("frame", temporal=False),
      "clip_model": run("clip", temporal=True),
  }
  if args.leak_check:  # a frame model trained on the motion alone must stay at chance
    results["frame_model_motion_only"] = run(
        "frame(motion)", temporal=False, target=[motions.index(m) for _, m in factors])
  results["settings"] = dict(vars(args), num_test=int(len(test_y)),
                             num_train=int(len(train_y)),
                             frames=int(num_stored), height=summary["height"],
                             width=summary["width"], total_seconds=round(time.time() - t0, 1))
  print(f"chance {results['chance']:.3f}  appearance ceiling {results['appearance_ceiling']:.3f}")
  for name in ("frame_model", "clip_model"):
    r = results[name]
    print(f"{name:12s} top1 {r['top1']:.3f}  (shape right {r['shape_acc']:.3f}, "
          f"motion right {r['motion_acc']:.3f}; trained {r['train_seconds']}s)")
  if args.leak_check:
    print(f"frame model trained on motion labels only: motion top1 "
          f"{results['frame_model_motion_only']['top1']:.3f} (chance {1 / len(motions):.3f})")
  print(json.dumps(results))


if __name__ == "__main__":
  main()
