"""Kinetics-400 with the paper's model pair: SlowOnly-R50 primary + SlowOnly-R50 x1/4 auxiliary.

  python -m cmpl_jax.data.convert --dataset=kinetics400 --input_dir=/data/k400/videos \\
      --annotations_dir=/data/k400/annotations --output_dir=/data/k400_tfr --num_workers=32
  python -m cmpl_jax.main --config=configs/kinetics400.py:cmpl_1pct,tpu \\
      --workdir=/tmp/k400_cmpl_1pct --config.data.dir=/data/k400_tfr

Arguments: {cmpl,fixmatch,supervised}_{1,10}pct, optionally `,tpu` or `,gpu` (bfloat16).
Paper top-1: CMPL 17.6 (1%) / 58.4 (10%, reported by later papers); FixMatch 8.6 / 46.9.

ASSUMPTIONS: global batch 16 labeled + 112 unlabeled clips per step, ~60 epochs of the
unlabeled train split (~240k videos), peak learning rate 0.2; the rest as in default.py.
"""
from configs import default


def get_config(arg: str = "cmpl_1pct"):
  config = default.get_config()
  config.data.eval_split = "validation"
  config.data.crop_size = 224
  config.data.max_aspect_ratio = 16 / 9  # mostly 16:9 videos; wider ones are centre-cropped
  config.batch_size = 16
  config.mu = 7
  config.optim.learning_rate = 0.2
  config.optim.warmup_steps = 5_000
  config.num_train_steps = 130_000
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 2_000
  config.eval.num_clips = 10
  config.eval.num_crops = 3
  config.eval.batch_size = 16
  return default.apply_variant(config, arg)
