"""Short real runs: synthetic .avi files -> converter -> tf.data -> pmapped steps -> Orbax,
TensorBoard and eval_results.json, for every method; resuming; --mode=eval and predict CLIs."""
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from cmpl_jax import loop
from cmpl_jax import workdir as workdir_lib
from cmpl_jax.data import convert, synthetic
from configs import default

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow
FINISHED = {}   # method -> (workdir, results) of the 4-step runs below, reused by later tests


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  """3 classes x 4 videos of 16 frames at 32x40, through the real converter."""
  root = tmp_path_factory.mktemp("synthetic")
  raw = str(root / "raw")
  synthetic.generate(raw, num_classes=3, videos_per_class=4, num_frames=16, size=(32, 40),
                     num_workers=0, progress=False)
  out = str(root / "tfrecords")
  convert.convert(dataset="ucf101", input_dir=os.path.join(raw, synthetic.VIDEOS_DIRNAME),
                  splits_dir=os.path.join(raw, synthetic.SPLITS_DIRNAME), output_dir=out,
                  short_side=0, num_workers=1)
  return raw, out


def tiny_config(method, data_dir, steps=4):
  config = default.get_config()
  config.method = method
  config.data.dir = data_dir
  config.data.labeled_percent = 50.0
  config.data.crop_size = 16
  config.data.num_parallel_calls = 2
  for name, frames, stride in (("primary", 2, 4), ("auxiliary", 4, 2)):
    config.model[name].update(name="r3d_10", width_multiplier=1 / 16, num_frames=frames,
                              frame_stride=stride)
  if method != "cmpl":
    config.model.auxiliary.name = ""
  config.model.conv_impl = "native"   # quicker to compile; sum-of-2D is checked in test_models
  # FixMatch runs with labeled / weak / strong clips normalised apart (the demo's setting).
  config.bn_batches = "separate" if method == "fixmatch" else "joint"
  config.batch_size, config.mu, config.tau = 8, 1, 0.3
  config.optim.warmup_steps = 1
  config.num_train_steps = steps
  config.log_every_steps = config.checkpoint_every_steps = 2
  config.eval_every_steps = 100
  config.eval.num_clips, config.eval.num_crops, config.eval.batch_size = 2, 3, 8
  return config


def tensorboard_scalars(workdir):
  """{tag: [(step, value), ...]} over all of the workdir's event files, in step order."""
  return {tag: list(zip(steps.tolist(), values.tolist()))
          for tag, (steps, values) in workdir_lib.read_scalars(workdir).items()}


@pytest.mark.parametrize("method", ["cmpl", "fixmatch", "supervised"])
def test_each_method_trains_checkpoints_logs_and_evaluates(dataset, tmp_path, method):
  _, data_dir = dataset
  workdir = str(tmp_path / method)
  results = loop.train_and_evaluate(tiny_config(method, data_dir), workdir)
  FINISHED[method] = workdir, results

  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  with open(os.path.join(workdir, "eval_results.json")) as f:
    on_disk = json.load(f)
  assert on_disk == json.loads(json.dumps(results))
  assert on_disk["step"] == 4 and on_disk["split"] == "test"
  assert on_disk["num_examples"] == 3   # 3 classes x 1 test video of split 1
  assert on_disk["views"] == {"clips": 2, "crops": 3}
  assert 0.0 <= on_disk["primary"]["top1"] <= on_disk["primary"]["top5"] <= 1.0
  assert ("auxiliary" in on_disk) == (method == "cmpl")
  assert set(on_disk["per_class"]["primary"]) == set(synthetic.class_names(3))

  scalars = tensorboard_scalars(workdir)
  assert [s for s, _ in scalars["train/loss"]] == [2, 4]
  assert "train/learning_rate" in scalars and "eval/primary/top1" in scalars
  if method != "supervised":
    assert "train/primary/mask_rate" in scalars and "train/primary/pseudo_label_acc" in scalars
  if method == "cmpl":
    assert "train/auxiliary/unsup_loss" in scalars and "train/agreement" in scalars
    assert "train/complementarity/only_auxiliary" in scalars
    assert "train/auxiliary/received_rate" in scalars
  # The per-class figures, as PNGs and TensorBoard images, and the per-class numbers.
  figures = os.listdir(os.path.join(workdir, "figures"))
  images = workdir_lib.read_images(workdir)
  assert "per_class_accuracy_0000004.png" in figures
  assert [s for s, _ in images["diagnostics/per_class_accuracy"]] == [4]
  teaching = method != "supervised"
  assert ("pseudo_labels_0000004.png" in figures) == teaching
  assert ("pseudo_labels" in on_disk) == teaching
  if teaching:
    assert set(on_disk["pseudo_labels"]["primary"]["coverage"]) == set(synthetic.class_names(3))

  with open(os.path.join(workdir, "labeled_ids.txt")) as f:
    labeled = f.read().split()
  assert len(labeled) == 6   # 50% of 3 train videos per class, rounded: 2 per class
  for name in ("config.json", "data_info.json"):
    assert os.path.exists(os.path.join(workdir, name))


def finished_cmpl_run(data_dir, tmp_path):
  """(workdir, results) of an uninterrupted 4-step CMPL run: the one the test above made, when
  it ran in this session (saves a run), else a new one."""
  if "cmpl" not in FINISHED:
    workdir = str(tmp_path / "straight")
    FINISHED["cmpl"] = workdir, loop.train_and_evaluate(tiny_config("cmpl", data_dir), workdir)
  return FINISHED["cmpl"]


def test_resume_continues_from_the_saved_step(dataset, tmp_path):
  _, data_dir = dataset
  interrupted = str(tmp_path / "interrupted")
  loop.train_and_evaluate(tiny_config("cmpl", data_dir, steps=2), interrupted)
  resumed = loop.train_and_evaluate(tiny_config("cmpl", data_dir, steps=4), interrupted)
  straight, reference = finished_cmpl_run(data_dir, tmp_path)
  assert resumed["step"] == 4
  assert [s for s, _ in tensorboard_scalars(interrupted)["train/loss"]] == [2, 4]
  # Losses logged after the restart are those of an uninterrupted run: same parameters,
  # optimizer state and data stream position at step 2.
  np.testing.assert_allclose(tensorboard_scalars(interrupted)["train/loss"][-1][1],
                             tensorboard_scalars(straight)["train/loss"][-1][1], rtol=1e-5)
  assert resumed["primary"] == reference["primary"]


def test_eval_mode_and_predict_cli(dataset, tmp_path):
  raw, data_dir = dataset
  workdir = str(tmp_path / "run")
  shutil.copytree(finished_cmpl_run(data_dir, tmp_path)[0], workdir)
  os.remove(os.path.join(workdir, "eval_results.json"))
  # Trained on 8 (fake) devices above; evaluated and served here on 1.
  # JAX caches only programs that took >= 1 s to compile; these tiny ones can take less.
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  env.pop("XLA_FLAGS", None)
  overrides = [f"--config.data.dir={data_dir}", "--config.method=cmpl",
               "--config.data.crop_size=16", "--config.model.primary.name=r3d_10",
               "--config.model.primary.width_multiplier=0.0625",
               "--config.model.primary.num_frames=2", "--config.model.primary.frame_stride=4",
               "--config.model.auxiliary.name=r3d_10",
               "--config.model.auxiliary.width_multiplier=0.0625",
               "--config.model.auxiliary.num_frames=4", "--config.model.auxiliary.frame_stride=2",
               "--config.eval.num_clips=2", "--config.eval.num_crops=3",
               "--config.eval.batch_size=1"]
  evaluation = subprocess.run([sys.executable, "-m", "cmpl_jax.main",
                               "--config=configs/default.py", f"--workdir={workdir}",
                               "--mode=eval", *overrides,
                               f"--compilation_cache_dir={tmp_path / 'xla_cache'}"],
                              cwd=REPO, env=env, capture_output=True, text=True)
  assert evaluation.returncode == 0, evaluation.stdout + evaluation.stderr
  assert os.listdir(tmp_path / "xla_cache"), "--compilation_cache_dir: nothing cached"
  assert "eval step 4 on test (3 videos x 2 clips x 3 crops)" in evaluation.stdout
  with open(os.path.join(workdir, "eval_results.json")) as f:
    assert json.load(f)["step"] == 4

  video = os.path.join(raw, synthetic.VIDEOS_DIRNAME, synthetic.class_names(3)[0])
  video = os.path.join(video, sorted(os.listdir(video))[0])
  out = subprocess.run([sys.executable, "-m", "cmpl_jax.predict", f"--workdir={workdir}",
                        f"--video={video}", "--top_k=2", "--json"], cwd=REPO, env=env,
                       check=True, capture_output=True, text=True)
  prediction = json.loads(out.stdout)
  assert [p["label"] in synthetic.class_names(3) for p in prediction["top_k"]] == [True, True]
  assert sum(p["probability"] for p in prediction["top_k"]) <= 1.0 + 1e-6

  bad = subprocess.run([sys.executable, "-m", "cmpl_jax.predict", f"--workdir={workdir}",
                        f"--video={os.path.join(data_dir, 'metadata.json')}"], cwd=REPO,
                       env=env, capture_output=True, text=True)
  assert bad.returncode == 2 and "not a readable video" in bad.stderr
  assert len(bad.stderr.strip().splitlines()) == 1


def test_labeled_dataset_plus_an_unlabeled_folder(dataset, tmp_path):
  """10% style run: labeled clips from the dataset, unlabeled clips from a folder of videos
  converted with --dataset=folder (no labels): the folder's clips reach the step, and the
  pseudo-label accuracy, which needs hidden labels, is absent rather than 0."""
  raw, data_dir = dataset
  folder = str(tmp_path / "phone_videos")
  shutil.copytree(os.path.join(raw, synthetic.VIDEOS_DIRNAME), os.path.join(folder, "clips"))
  pool = str(tmp_path / "pool_records")
  convert.convert(dataset="folder", input_dir=folder, output_dir=pool, short_side=0,
                  num_workers=1)
  with open(os.path.join(pool, "metadata.json")) as f:
    assert json.load(f)["splits"]["unlabeled"]["num_examples"] == 12
  config = tiny_config("cmpl", data_dir, steps=2)
  config.data.unlabeled_sources = pool
  config.data.unlabeled_train_weight = 0.0   # every unlabeled clip from the folder
  workdir = str(tmp_path / "run")
  results = loop.train_and_evaluate(config, workdir)
  assert results["step"] == 2
  scalars = tensorboard_scalars(workdir)
  assert "train/primary/mask_rate" in scalars
  assert not any(tag.endswith("pseudo_label_acc") for tag in scalars)
  # Half from the folder: hidden labels exist for the train split's clips only.
  config.data.unlabeled_train_weight = 1.0
  from cmpl_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  batches = pipeline.make_train_iterator(config, None, [0, 1, 2], start_step=0, process_index=0,
                                         process_count=1, num_local_devices=1)
  labels = np.concatenate([next(batches)["unlabeled"]["label"].ravel() for _ in range(8)])
  assert 0.2 < np.mean(labels == -1) < 0.8 and np.all(labels[labels >= 0] < 3)


def test_weight_average_is_what_training_evaluates_and_mode_eval_restores(dataset, tmp_path,
                                                                            monkeypatch):
  """With config.ema_decay, the evaluation during training runs on the moving average (the
  weights the checkpoint serves), not on the trained weights, and --mode=eval agrees."""
  from cmpl_jax import checkpointing, train  # pylint: disable=g-import-not-at-top
  _, data_dir = dataset
  config = tiny_config("supervised", data_dir)
  config.ema_decay = 0.9
  evaluated = []
  real = loop.run_evaluation

  def recording(config, models, params, batch_stats, *args, **kwargs):
    evaluated.append(jax.tree.map(lambda x: np.asarray(x[0]), (params, batch_stats)))
    return real(config, models, params, batch_stats, *args, **kwargs)
  monkeypatch.setattr(loop, "run_evaluation", recording)
  workdir = str(tmp_path / "run")
  results = loop.train_and_evaluate(config, workdir)
  reader = checkpointing.Checkpoints(workdir, read_only=True)
  _, served = reader.restore_arrays()
  models = train.create_models(config, 3)
  state = reader.restore_state(
      train.create_train_state(config, models, jax.random.key(0), train.create_optimizer(config)),
      expected_meta=reader.restore_meta())
  (params, batch_stats), = evaluated   # one evaluation, at the last step
  for a, b in zip(jax.tree.leaves((params, batch_stats)),
                  jax.tree.leaves((served["params"], served["batch_stats"]))):
    np.testing.assert_array_equal(a, b)
  assert max(np.abs(a - b).max() for a, b in zip(jax.tree.leaves(params),
                                                  jax.tree.leaves(state.params))) > 1e-4
  assert loop.evaluate_checkpoint(config, workdir)["primary"] == results["primary"]
