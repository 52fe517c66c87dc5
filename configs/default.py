"""Every configuration field, with its meaning. Other configs start from `get_config()` here.

Run (the paper's UCF-101 setting lives in ucf101.py; this file alone is not meant to be run):
  python -m cmpl_jax.main --config=configs/ucf101.py:cmpl_1pct --workdir=/tmp/cmpl

Assumptions not verified against the paper (its body and code are not public here) are marked
ASSUMPTION; they follow FixMatch and the usual SlowOnly recipes (see README, "What is known").
"""
import ml_collections


def model_config(name: str, width_multiplier: float, num_frames: int, frame_stride: int
                 ) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name=name,                        # 'slowonly_r50' | 'r3d_18' (see cmpl_jax/models/resnet3d.py)
      width_multiplier=width_multiplier,  # channels scale; 0.25 gives "3D-ResNet50 x1/4"
      num_frames=num_frames,            # frames per clip seen by this model
      frame_stride=frame_stride,        # stored frames between two sampled frames
      dropout_rate=0.5,                 # before the linear head
      init_from="",                     # folder of converted pretrained params ('' = random init)
  ))


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.method = "cmpl"          # 'cmpl' | 'fixmatch' | 'supervised'
  config.seed = 0
  config.dtype = "float32"        # compute dtype: 'float32' | 'bfloat16' (params stay float32)

  config.model = ml_collections.ConfigDict()
  # Primary F: 3D-ResNet50 SlowOnly, 8 frames x stride 8. ASSUMPTION: frame rates.
  config.model.primary = model_config("slowonly_r50", 1.0, num_frames=8, frame_stride=8)
  # Auxiliary A: the same net with 1/4 channels, 4x the frame rate over the same window.
  config.model.auxiliary = model_config("slowonly_r50", 0.25, num_frames=32, frame_stride=2)
  config.model.sync_batch_norm = True   # BatchNorm statistics averaged over all devices
  # How XLA runs 3D convolutions, all the same function and parameters (models/resnet3d.py):
  # 'native', 'sum_of_2d' (frames as 2D convolutions), 'matmul' (patches x kernel) or 'hybrid'
  # (matmul for 1x1 spatial kernels, sum_of_2d otherwise); 'auto' = the backend's fastest
  # (BENCHMARKS.md).
  config.model.conv_impl = "auto"

  config.data = ml_collections.ConfigDict()
  config.data.source = "tfrecord"       # 'tfrecord' (our converter) | 'tfds'
  config.data.dir = ""                  # folder with metadata.json and shards (tfrecord source)
  config.data.tfds_name = ""            # e.g. 'ucf101/ucf101_1_256' (tfds source)
  config.data.tfds_data_dir = ""        # TFDS data_dir ('' = TFDS default)
  config.data.train_split = "train"
  config.data.eval_split = "test"       # 'test' for UCF-101, 'validation' for Kinetics-400
  config.data.labeled_percent = 1.0     # class-balanced labeled subset of the train split, in %
  config.data.labeled_list = ""         # file of labeled videos (VideoSSL/LTG style); overrides percent
  config.data.labeled_seed = 0          # which class-balanced subset
  # Extra unlabeled video for the unlabeled stream: comma-separated DIR[:SPLIT][*WEIGHT], each
  # a converted folder (`convert --dataset=folder`, split 'unlabeled') or dataset split; clips
  # are drawn from each pool with probability WEIGHT / total (default weight 1).
  config.data.unlabeled_sources = ""
  config.data.unlabeled_train_weight = 1.0  # weight of the train split itself (0 = leave it out)
  config.data.crop_size = 112           # training / eval crop (pixels, square)
  config.data.min_area = 0.25           # scale jitter: crop area in [min_area, 1] of the frame
  # Host decode (cmpl_jax/data/clips.py): frames go to the device at this short side (0 = the
  # smallest JPEG DCT scale of the stored frames that still covers crop_size), on a canvas
  # max_aspect_ratio times as wide (wider frames are centre-cropped along the long side).
  config.data.decode_short_side = 0
  config.data.jpeg_dct_scaling = True   # decode JPEGs at 1/2, 1/4, 1/8 scale where that suffices
  config.data.max_aspect_ratio = 4 / 3  # UCF-101 is 4:3; Kinetics-400 (mostly 16:9) sets 16/9
  config.data.randaugment_layers = 2    # strong view: RandAugment ops per clip
  config.data.randaugment_magnitude = 10  # strong view: op strength in [0, 30]
  config.data.cutout_fraction = 0.5     # strong view: cutout square side, fraction of crop_size
  config.data.num_parallel_calls = -1   # tf.data parallelism (-1 = AUTOTUNE)
  config.data.skip_bad_records = False  # skip (and count) undecodable records instead of failing
  # Generate + convert the embedded synthetic dataset into data.dir when it is missing
  # (configs/demo.py); empty = never generate.
  config.data.synthetic = ml_collections.ConfigDict(dict(
      enabled=False,        # build the dataset on first use (cmpl_jax/data/demo_data.py)
      classes=12, videos_per_class=56, seed=0,   # see `python -m cmpl_jax.data.synthetic`
      num_frames=64, height=64, width=80,        # stored videos
      short_side=0,                              # converter --short_side (0 = keep)
      pass_frames=(20.0, 32.0),                  # motion speed: frames per crossing
      num_workers=2))
  config.data.shuffle_buffer = 256      # tfds source only: shuffle buffer of the unlabeled stream
                                        # (encoded videos held in memory; the tfrecord source
                                        # shuffles by index and needs none)

  config.batch_size = 8       # labeled clips per step, global (all devices, all hosts)
  config.mu = 7               # unlabeled clips per labeled clip. ASSUMPTION: FixMatch's mu=7.
  config.tau = 0.95           # pseudo-label confidence threshold. ASSUMPTION: FixMatch's 0.95.
  config.lambda_u = 1.0       # weight of the unlabeled losses. ASSUMPTION: FixMatch's 1.
  # Dropout on the teacher's weak-view pass. Off: pseudo-labels and the tau mask come from the
  # model's own prediction rather than a dropout-perturbed one (BatchNorm still in training
  # mode). ASSUMPTION; measured on the demo in README, "The demo".
  config.teacher_dropout = False
  # Optional pseudo-label refinements, off: plain FixMatch-style pseudo-labels as in the paper
  # (cmpl_jax/ssl.py; README "Pseudo-label options"). distribution_alignment: ReMixMatch's
  # alignment of each teacher's predictions to a uniform class distribution; class_thresholds:
  # FlexMatch's class-wise thresholds below tau; both from running statistics of each teacher's
  # weak-view predictions with this momentum per step.
  config.distribution_alignment = False
  config.class_thresholds = False
  config.teacher_stats_momentum = 0.99
  # Moving average of both models' weights (and BatchNorm statistics) with this decay per step,
  # 0 = off: evaluation, prediction and the checkpoint's model item then use the average
  # (README "Pseudo-label options and weight averaging"). FixMatch evaluates such an average
  # (decay 0.999); the pseudo-labels still come from the trained weights. Costs one more copy
  # of the weights.
  config.ema_decay = 0.0
  # BatchNorm batches of a step: 'joint' (labeled + weak + strong in one forward pass, as
  # FixMatch) or 'separate' (one pass each; running statistics from the labeled clips).
  # ASSUMPTION: joint, as FixMatch. On the CPU demo 'separate' trained the primary much better
  # (configs/demo.py); untested at the paper's scale.
  config.bn_batches = "joint"

  config.optim = ml_collections.ConfigDict()
  # ASSUMPTION: SGD momentum 0.9 nesterov, linear warm-up + cosine decay, weight decay 1e-4.
  config.optim.name = "sgd"             # 'sgd' (momentum, nesterov below) | 'adamw'
  config.optim.learning_rate = 0.1      # peak, for the global labeled batch_size above
  config.optim.warmup_steps = 1000
  config.optim.momentum = 0.9           # sgd only
  config.optim.nesterov = True          # sgd only
  config.optim.weight_decay = 1e-4      # decoupled for adamw; on kernels only either way
  config.optim.grad_clip_norm = 0.0     # 0 = no clipping

  config.num_train_steps = 100_000
  config.log_every_steps = 50
  config.eval_every_steps = 5_000
  config.checkpoint_every_steps = 1_000
  config.keep_checkpoints = 3

  config.eval = ml_collections.ConfigDict()
  config.eval.num_clips = 10        # uniformly spaced temporal windows per video
  config.eval.num_crops = 3         # 1 (centre) or 3 (left/centre/right along the long side)
  config.eval.batch_size = 8        # videos per eval batch, global
  config.eval.step = -1             # checkpoint step for --mode=eval (-1 = latest)
  return config


METHODS = ("cmpl", "fixmatch", "supervised")


def apply_variant(config: ml_collections.ConfigDict, arg: str) -> ml_collections.ConfigDict:
  """Applies a `METHOD_PCTpct[,tpu|,gpu]` variant string, e.g. 'cmpl_1pct' or 'fixmatch_10pct,tpu'.

  FixMatch and supervised-only baselines train the primary model alone (auxiliary name '');
  `tpu`/`gpu` switch to bfloat16 compute and nothing else: the global batch stays the config's,
  split over however many devices run it.
  """
  head, _, hardware = arg.partition(",")
  method, _, percent = head.rpartition("_")
  if method not in METHODS or not percent.endswith("pct"):
    raise ValueError(f"config argument {arg!r}: expected METHOD_PCTpct[,tpu|,gpu] with METHOD in "
                     f"{METHODS}, e.g. 'cmpl_1pct' or 'supervised_10pct,gpu'")
  config.method = method
  config.data.labeled_percent = float(percent[:-3])
  if method != "cmpl":
    config.model.auxiliary.name = ""
  if hardware:
    if hardware not in ("tpu", "gpu"):
      raise ValueError(f"config argument {arg!r}: hardware suffix must be 'tpu' or 'gpu'")
    config.dtype = "bfloat16"
  return config
