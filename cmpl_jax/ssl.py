"""The three training objectives as pure functions of logits: supervised, FixMatch and CMPL.

Notation (the paper's): F = primary model, A = auxiliary model; B_l labeled and B_u = mu * B_l
unlabeled clips. Each unlabeled clip has a weakly and a strongly augmented view.

  supervised: L = Ls_F (+ Ls_A when an auxiliary is trained)
  fixmatch:   L = Ls_F + lambda * Lu(F <- F)
  cmpl:       L = (Ls_F + Ls_A) + lambda * (Lu(F <- A) + Lu(A <- F))

  Lu(S <- T) = 1/B_u * sum_i 1[max p_i >= tau] * CE(argmax p_i, S(strong_i)),
  p_i = softmax(T(weak_i)) under stop-gradient: the teacher T is never trained through its own
  pseudo-labels, and masked-out clips still count in the 1/B_u (FixMatch's normalisation).

Metrics are `(total, count)` pairs so that sums over devices and steps stay exact (a ratio of
sums, not a mean of ratios): the train step `psum`s both and the host divides at log time.
Per model M the names are
  `M/sup_loss`, `M/sup_top1`;
  as student: `M/unsup_loss`, `M/received_rate` (share of M's unlabeled clips that got a
    pseudo-label from M's teacher: the sibling in CMPL, M itself in FixMatch);
  as teacher: `M/mask_rate` (share of its weak-view predictions that clear tau) and
    `M/pseudo_label_acc` (how many of those are right by the hidden true label), and per class
    (vectors of K, under `per_class/`): `per_class/M/precision` (of the confident clips M labels
    k, the share whose true class is k) and `per_class/M/coverage` (of the unlabeled clips of
    true class k, the share M labels confidently and correctly).
CMPL also reports `agreement` (share of unlabeled clips where F and A predict the same class on
their weak views) and `complementarity/{only_primary,only_auxiliary,both,neither}`: the share of
unlabeled clips with a hidden label where only F, only A, both or neither is confident-and-right.
Everything that needs the hidden label counts only clips that have one (label -1: a pool without
labels), so over a pool without labels its count is 0 and the host reports it absent, not 0.
K is the number of classes.

Two optional refinements of a teacher's pseudo-labels (`TeacherOptions`, both off by default),
each driven by running statistics of that teacher's weak-view predictions (`TeacherStats`, kept
in the TrainState and updated once per step over the global batch, see `teacher_batch_stats`):
  distribution alignment (ReMixMatch): p~ = normalize(p * u / mean(p)), u uniform (the labeled
    subsets are class-balanced) and mean(p) the running mean of the teacher's predictions, so a
    teacher that over-predicts some classes is pulled back before its argmax and mask are taken;
  class-wise thresholds (FlexMatch): class k's threshold is tau * M(beta_k), M(x) = x / (2 - x),
    beta_k = sigma_k / max(max_j sigma_j, unused), with sigma_k the share of unlabeled clips
    the teacher labels k at the fixed tau and `unused` the share below it. FlexMatch counts each
    unlabeled clip's latest prediction; here both shares are running means over steps (the
    stream carries no clip identity), which makes the same warm-up: every threshold starts at 0
    and rises as the teacher becomes confident, fastest for the classes it has learned best.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from cmpl_jax import methods

Metric = tuple[jax.Array, jax.Array]  # (total, count)


def _mean_metric(values: jax.Array) -> Metric:
  values = values.astype(jnp.float32)
  return jnp.sum(values), jnp.asarray(values.size, jnp.float32)


def _scalar_metric(value: jax.Array) -> Metric:
  return jnp.asarray(value, jnp.float32), jnp.asarray(1.0, jnp.float32)


def supervised_loss(logits_BxK: jax.Array, labels_B: jax.Array) -> jax.Array:
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits_BxK, labels_B))


class PseudoLabels(NamedTuple):
  labels_B: jax.Array   # argmax of the teacher's weak-view prediction
  mask_B: jax.Array     # float 1.0 where its max probability >= the threshold of that class
  thresholds_K: jax.Array | None = None   # class-wise thresholds, when they are on


class TeacherOptions(NamedTuple):
  """Optional refinements of pseudo-labels (module docstring); the defaults are plain FixMatch."""
  distribution_alignment: bool = False
  class_thresholds: bool = False
  momentum: float = 0.99   # of the running statistics (~100 steps)

  @property
  def enabled(self) -> bool:
    return self.distribution_alignment or self.class_thresholds


TeacherStats = dict[str, jax.Array]   # {'prob_mean_K', 'confident_K', 'unconfident'}


def init_teacher_stats(num_classes: int) -> TeacherStats:
  """Before any prediction: uniform mean prediction, every clip unused (all thresholds 0)."""
  return {"prob_mean_K": jnp.full((num_classes,), 1.0 / num_classes, jnp.float32),
          "confident_K": jnp.zeros((num_classes,), jnp.float32),
          "unconfident": jnp.ones((), jnp.float32)}


def _teacher_probs(teacher_weak_logits_BxK: jax.Array, stats: TeacherStats | None,
                   options: TeacherOptions) -> tuple[jax.Array, jax.Array]:
  """(raw, used) probabilities: `used` is distribution-aligned when that option is on."""
  raw_BxK = jax.nn.softmax(jax.lax.stop_gradient(teacher_weak_logits_BxK).astype(jnp.float32))
  if not (options.distribution_alignment and stats is not None):
    return raw_BxK, raw_BxK
  aligned_BxK = raw_BxK / jnp.maximum(stats["prob_mean_K"], 1e-6)  # the uniform target cancels
  return raw_BxK, aligned_BxK / jnp.sum(aligned_BxK, axis=-1, keepdims=True)


def class_thresholds(stats: TeacherStats, tau: float) -> jax.Array:
  """FlexMatch's thresholds [K] from the running shares (module docstring)."""
  beta_K = stats["confident_K"] / jnp.maximum(
      jnp.maximum(jnp.max(stats["confident_K"]), stats["unconfident"]), 1e-12)
  return tau * beta_K / (2.0 - beta_K)


def pseudo_labels(teacher_weak_logits_BxK: jax.Array, tau: float,
                  stats: TeacherStats | None = None,
                  options: TeacherOptions = TeacherOptions()) -> PseudoLabels:
  """Argmax and confidence mask of a teacher's weak-view prediction, under stop-gradient.

  Without `stats` (or with the default options) this is FixMatch's fixed threshold tau.
  """
  _, probs_BxK = _teacher_probs(teacher_weak_logits_BxK, stats, options)
  labels_B = jnp.argmax(probs_BxK, axis=-1)
  confidence_B = jnp.max(probs_BxK, axis=-1)
  if options.class_thresholds and stats is not None:
    thresholds_K = class_thresholds(stats, tau)
    return PseudoLabels(labels_B, (confidence_B >= thresholds_K[labels_B]).astype(jnp.float32),
                        thresholds_K)
  return PseudoLabels(labels_B, (confidence_B >= tau).astype(jnp.float32))


def teacher_batch_stats(teacher_weak_logits_BxK: jax.Array, tau: float, stats: TeacherStats,
                        options: TeacherOptions) -> TeacherStats:
  """This batch's contribution to the running statistics: means over its clips (the train step
  averages them over devices, then `update_teacher_stats` folds them in)."""
  raw_BxK, probs_BxK = _teacher_probs(teacher_weak_logits_BxK, stats, options)
  confident_B = (jnp.max(probs_BxK, axis=-1) >= tau).astype(jnp.float32)
  labels_BxK = jax.nn.one_hot(jnp.argmax(probs_BxK, axis=-1), probs_BxK.shape[-1])
  return {"prob_mean_K": jnp.mean(raw_BxK, axis=0),
          "confident_K": jnp.mean(labels_BxK * confident_B[:, None], axis=0),
          "unconfident": jnp.mean(1.0 - confident_B)}


def update_teacher_stats(stats: TeacherStats, batch_stats: TeacherStats, momentum: float
                         ) -> TeacherStats:
  return jax.tree.map(lambda old, new: momentum * old + (1.0 - momentum) * new, stats,
                      batch_stats)


def unsupervised_loss(student_strong_logits_BxK: jax.Array, targets: PseudoLabels) -> jax.Array:
  """Masked pseudo-label cross-entropy, averaged over all B_u clips."""
  ce_B = optax.softmax_cross_entropy_with_integer_labels(student_strong_logits_BxK,
                                                         targets.labels_B)
  return jnp.sum(ce_B * targets.mask_B) / ce_B.shape[0]


class Logits(NamedTuple):
  """One model's logits on the three kinds of input of a step (weak/strong may be None)."""
  labeled_BxK: jax.Array
  weak_BxK: jax.Array | None = None
  strong_BxK: jax.Array | None = None


def _supervised_terms(name: str, logits: Logits, labels_B: jax.Array):
  loss = supervised_loss(logits.labeled_BxK, labels_B)
  top1_B = jnp.argmax(logits.labeled_BxK, axis=-1) == labels_B
  return loss, {f"{name}/sup_loss": _scalar_metric(loss), f"{name}/sup_top1": _mean_metric(top1_B)}


def confident_and_right(targets: PseudoLabels, true_labels_B: jax.Array) -> jax.Array:
  """float 1.0 where the teacher is confident and its pseudo-label is the hidden true label."""
  return targets.mask_B * (targets.labels_B == true_labels_B)


def _teacher_metrics(name: str, targets: PseudoLabels, true_labels_B: jax.Array,
                     num_classes: int):
  """Mask rate over every unlabeled clip; the rest over the clips whose hidden label is known
  (see the module docstring)."""
  known_B = (true_labels_B >= 0).astype(jnp.float32)
  right_B = confident_and_right(targets, true_labels_B)
  known_mask_B = targets.mask_B * known_B
  # one_hot of -1 is all zeros: clips without a hidden label drop out of the class counts.
  true_BxK = jax.nn.one_hot(true_labels_B, num_classes)
  predicted_BxK = jax.nn.one_hot(targets.labels_B, num_classes) * known_mask_B[:, None]
  extra = {}
  if targets.thresholds_K is not None:
    extra[f"{name}/threshold_mean"] = _scalar_metric(jnp.mean(targets.thresholds_K))
  return {**extra, f"{name}/mask_rate": _mean_metric(targets.mask_B),
          f"{name}/pseudo_label_acc": (jnp.sum(right_B), jnp.sum(known_mask_B)),
          f"per_class/{name}/precision": (jnp.sum(predicted_BxK * right_B[:, None], axis=0),
                                          jnp.sum(predicted_BxK, axis=0)),
          f"per_class/{name}/coverage": (jnp.sum(true_BxK * right_B[:, None], axis=0),
                                         jnp.sum(true_BxK, axis=0))}


def _complementarity(from_f: PseudoLabels, from_a: PseudoLabels, true_labels_B: jax.Array):
  """Which of the two teachers is confident-and-right on each clip with a hidden label."""
  known_B = (true_labels_B >= 0).astype(jnp.float32)
  f_B, a_B = confident_and_right(from_f, true_labels_B), confident_and_right(from_a,
                                                                            true_labels_B)
  count = jnp.sum(known_B)
  shares = {"only_primary": f_B * (1 - a_B), "only_auxiliary": (1 - f_B) * a_B,
            "both": f_B * a_B, "neither": known_B * (1 - f_B) * (1 - a_B)}
  return {f"complementarity/{k}": (jnp.sum(v * known_B), count) for k, v in shares.items()}


def supervised(logits: dict[str, Logits], labels_B: jax.Array, **unused):
  """Ls over every model present (`primary`, and `auxiliary` when trained)."""
  del unused
  total, metrics = 0.0, {}
  for name, model_logits in logits.items():
    loss, model_metrics = _supervised_terms(name, model_logits, labels_B)
    total += loss
    metrics.update(model_metrics)
  metrics["loss"] = _scalar_metric(total)
  return total, metrics


def fixmatch(logits: dict[str, Logits], labels_B: jax.Array, unlabeled_labels_B: jax.Array, *,
             tau: float, lambda_u: float, teacher_stats: dict[str, TeacherStats] | None = None,
             options: TeacherOptions = TeacherOptions()):
  """Ls_F + lambda * Lu(F <- F): the primary model teaches itself."""
  primary = logits["primary"]
  sup, metrics = _supervised_terms("primary", primary, labels_B)
  stats = teacher_stats or {}
  targets = pseudo_labels(primary.weak_BxK, tau, stats.get("primary"), options)
  unsup = unsupervised_loss(primary.strong_BxK, targets)
  total = sup + lambda_u * unsup
  metrics.update(_teacher_metrics("primary", targets, unlabeled_labels_B,
                                  primary.weak_BxK.shape[-1]))
  metrics["primary/received_rate"] = _mean_metric(targets.mask_B)
  metrics["primary/unsup_loss"] = _scalar_metric(unsup)
  metrics["loss"] = _scalar_metric(total)
  return total, metrics


def cmpl(logits: dict[str, Logits], labels_B: jax.Array, unlabeled_labels_B: jax.Array, *,
         tau: float, lambda_u: float, teacher_stats: dict[str, TeacherStats] | None = None,
         options: TeacherOptions = TeacherOptions()):
  """(Ls_F + Ls_A) + lambda * (Lu(F <- A) + Lu(A <- F)): each model teaches its sibling."""
  primary, auxiliary = logits["primary"], logits["auxiliary"]
  sup_f, metrics = _supervised_terms("primary", primary, labels_B)
  sup_a, aux_metrics = _supervised_terms("auxiliary", auxiliary, labels_B)
  metrics.update(aux_metrics)
  stats = teacher_stats or {}
  from_f = pseudo_labels(primary.weak_BxK, tau, stats.get("primary"), options)  # F's train A
  from_a = pseudo_labels(auxiliary.weak_BxK, tau, stats.get("auxiliary"), options)  # A's train F
  unsup_f = unsupervised_loss(primary.strong_BxK, from_a)
  unsup_a = unsupervised_loss(auxiliary.strong_BxK, from_f)
  total = (sup_f + sup_a) + lambda_u * (unsup_f + unsup_a)
  num_classes = primary.weak_BxK.shape[-1]
  metrics.update(_teacher_metrics("primary", from_f, unlabeled_labels_B, num_classes))
  metrics.update(_teacher_metrics("auxiliary", from_a, unlabeled_labels_B, num_classes))
  metrics["primary/unsup_loss"] = _scalar_metric(unsup_f)
  metrics["auxiliary/unsup_loss"] = _scalar_metric(unsup_a)
  metrics["primary/received_rate"] = _mean_metric(from_a.mask_B)
  metrics["auxiliary/received_rate"] = _mean_metric(from_f.mask_B)
  metrics["agreement"] = _mean_metric(from_f.labels_B == from_a.labels_B)
  metrics.update(_complementarity(from_f, from_a, unlabeled_labels_B))
  metrics["loss"] = _scalar_metric(total)
  return total, metrics


OBJECTIVES = {"supervised": supervised, "fixmatch": fixmatch, "cmpl": cmpl}
assert set(OBJECTIVES) == set(methods.METHODS)

