"""Cross-Model Pseudo-Labeling (CMPL) for semi-supervised action recognition in JAX/Flax.

Tensor names carry their shapes (`logits_BxK`, `frames_UxHxWx3`); each letter means one thing
everywhere in the package:
  B  clips (or videos) in a batch      D  local devices        K  classes
  N  stored frames of a video          T  frames a model sees  U  a window's union frames
  J  eval windows of a video           V  eval views (J x crops)
  H, W  height and width of a frame or the canvas              S  crop side
  C  channels                          E  examples of a split  L  RandAugment layers
"""

__version__ = "0.1.0"
