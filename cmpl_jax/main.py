"""Entry point: train (with periodic evaluation) or evaluate a checkpoint.

  python -m cmpl_jax.main --config=configs/demo.py --workdir=/tmp/cmpl_demo
  python -m cmpl_jax.main --config=configs/ucf101.py:cmpl_1pct --workdir=DIR --mode=eval
  python -m cmpl_jax.main --config=configs/ucf101.py:cmpl_1pct --workdir=DIR \\
      --config.data.dir=/data/ucf101_tfrecords --config.batch_size=16

Any config field can be overridden with --config.KEY=VALUE (ml_collections config_flags).
"""
import os

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training configuration file (configs/*.py[:ARG]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard logs and results.")
flags.DEFINE_enum("mode", "train", ["train", "eval"],
                  "train: train with periodic evaluation, resuming from the latest checkpoint; "
                  "eval: evaluate the checkpoint config.eval.step (latest if -1).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # TensorFlow (input pipeline only) must not take accelerator memory from JAX.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  if not FLAGS["verbosity"].present:  # Orbax and clu log every save at INFO; --verbosity=0 shows
    logging.set_verbosity(logging.WARNING)
  from cmpl_jax import loop  # pylint: disable=g-import-not-at-top  (after the env setup above)
  import jax  # pylint: disable=g-import-not-at-top
  logging.info("JAX process %d/%d, local devices: %s", jax.process_index(), jax.process_count(),
               jax.local_devices())
  config = FLAGS.config
  if FLAGS.mode == "train":
    loop.train_and_evaluate(config, FLAGS.workdir)
  else:
    loop.evaluate_checkpoint(config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
