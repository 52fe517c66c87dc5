"""UCF-101 (split 1) with the paper's model pair: SlowOnly-R50 primary + SlowOnly-R50 x1/4 auxiliary.

  python -m cmpl_jax.data.convert --dataset=ucf101 --input_dir=UCF-101 \\
      --splits_dir=ucfTrainTestlist --split_id=1 --output_dir=/data/ucf101_tfr
  python -m cmpl_jax.main --config=configs/ucf101.py:cmpl_1pct --workdir=/tmp/ucf101_cmpl_1pct \\
      --config.data.dir=/data/ucf101_tfr

Arguments: {cmpl,fixmatch,supervised}_{1,10}pct, optionally `,tpu` or `,gpu` (bfloat16 compute),
e.g. `configs/ucf101.py:fixmatch_10pct,gpu`. Paper (arXiv 2112.09690) top-1: CMPL 25.1 (1%) /
79.1 (10%, reported by later papers); FixMatch 14.8 / 49.8. Training from scratch, RGB only.

ASSUMPTIONS (the paper's body is not available here): batch sizes, steps and learning rate
below are ours: 56 unlabeled clips per step over the unlabeled train split (9,537 videos) make
35k steps ~205 epochs at 1% and 50k steps ~295 epochs at 10%; tau/lambda/mu are FixMatch's;
frame rates 8x8 (F) and 32x2 (A).
"""
from configs import default


def get_config(arg: str = "cmpl_1pct"):
  config = default.get_config()
  config.data.eval_split = "test"
  config.data.crop_size = 224
  config.batch_size = 8             # labeled clips per step (global); + 7x unlabeled
  config.mu = 7
  config.optim.learning_rate = 0.1
  config.optim.warmup_steps = 2_000
  config.num_train_steps = 35_000   # ~205 unlabeled epochs at 56 unlabeled clips per step
  config.eval_every_steps = 5_000
  config.checkpoint_every_steps = 1_000
  config.eval.num_clips = 10
  config.eval.num_crops = 3
  config.eval.batch_size = 8
  default.apply_variant(config, arg)
  if config.data.labeled_percent >= 10:
    config.num_train_steps = 50_000   # ~295 unlabeled epochs
  return config
