"""Entry point: train (with periodic evaluation) or evaluate a checkpoint.

  python -m cmpl_jax.main --config=configs/demo.py --workdir=/tmp/cmpl_demo
  python -m cmpl_jax.main --config=configs/ucf101.py:cmpl_1pct --workdir=DIR --mode=eval
  python -m cmpl_jax.main --config=configs/ucf101.py:cmpl_1pct --workdir=DIR \\
      --config.data.dir=/data/ucf101_tfrecords --config.batch_size=16

Any config field can be overridden with --config.KEY=VALUE (ml_collections config_flags).
"""
import sys

from cmpl_jax import console

console.quiet_tensorflow()  # before anything imports TensorFlow (the input pipeline does)

from absl import app, flags, logging  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training configuration file (configs/*.py[:ARG]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard logs and results.")
flags.DEFINE_enum("mode", "train", ["train", "eval"],
                  "train: train with periodic evaluation, resuming from the latest checkpoint; "
                  "eval: evaluate the checkpoint config.eval.step (latest if -1).")
flags.DEFINE_string("coordinator_address", None,
                    "Multi-process runs: host:port of process 0, e.g. 10.0.0.2:1234 (with "
                    "--num_processes and --process_id). Not needed on Cloud TPU VMs or SLURM, "
                    "where --multiprocess detects everything.")
flags.DEFINE_integer("num_processes", None, "Multi-process runs: how many processes in total.")
flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's rank.")
flags.DEFINE_bool("multiprocess", False, "Call jax.distributed.initialize() with its automatic "
                  "cluster detection (Cloud TPU pod slices, SLURM, ...).")
flags.DEFINE_string("compilation_cache_dir", None,
                    "Persistent XLA compilation cache (JAX's; same as the env variable "
                    "JAX_COMPILATION_CACHE_DIR): a restarted or re-evaluating process loads the "
                    "compiled train/eval steps from here instead of compiling them again.")
flags.mark_flags_as_required(["config", "workdir"])


def _initialize_distributed() -> None:
  """Joins the processes of a multi-host run before any other JAX call."""
  import jax  # pylint: disable=g-import-not-at-top
  explicit = [FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id]
  if any(v is not None for v in explicit):
    if any(v is None for v in explicit):
      raise app.UsageError("--coordinator_address, --num_processes and --process_id go together")
    # CPU hosts exchange collectives over gloo (GPU/TPU backends ignore this setting).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(FLAGS.coordinator_address, num_processes=FLAGS.num_processes,
                               process_id=FLAGS.process_id)
  elif FLAGS.multiprocess:
    jax.distributed.initialize()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:  # Orbax and clu log every save at INFO; --verbosity=0 shows
    logging.set_verbosity(logging.WARNING)
  if FLAGS.compilation_cache_dir:
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update("jax_compilation_cache_dir", FLAGS.compilation_cache_dir)
  _initialize_distributed()
  from cmpl_jax import loop  # pylint: disable=g-import-not-at-top  (after the env setup above)
  import jax  # pylint: disable=g-import-not-at-top
  logging.info("JAX process %d/%d, local devices: %s", jax.process_index(), jax.process_count(),
               jax.local_devices())
  from cmpl_jax import checkpointing, config_checks  # pylint: disable=g-import-not-at-top
  config = FLAGS.config
  try:
    if FLAGS.mode == "train":
      loop.train_and_evaluate(config, FLAGS.workdir)
    else:
      loop.evaluate_checkpoint(config, FLAGS.workdir)
  except config_checks.ConfigError as e:   # a user error: the message says it all
    print(f"cmpl_jax.main: {e}", file=sys.stderr)
    sys.exit(2)
  except checkpointing.DamagedCheckpointError as e:   # names the step, the cause and the way out
    print(f"cmpl_jax.main: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
