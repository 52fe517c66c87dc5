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
  mask_B: jax.Array     # float 1.0 where its max probability >= tau


def pseudo_labels(teacher_weak_logits_BxK: jax.Array, tau: float) -> PseudoLabels:
  probs_BxK = jax.nn.softmax(jax.lax.stop_gradient(teacher_weak_logits_BxK).astype(jnp.float32))
  mask_B = (jnp.max(probs_BxK, axis=-1) >= tau).astype(jnp.float32)
  return PseudoLabels(jnp.argmax(probs_BxK, axis=-1), mask_B)


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
  return {f"{name}/mask_rate": _mean_metric(targets.mask_B),
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
             tau: float, lambda_u: float):
  """Ls_F + lambda * Lu(F <- F): the primary model teaches itself."""
  primary = logits["primary"]
  sup, metrics = _supervised_terms("primary", primary, labels_B)
  targets = pseudo_labels(primary.weak_BxK, tau)
  unsup = unsupervised_loss(primary.strong_BxK, targets)
  total = sup + lambda_u * unsup
  metrics.update(_teacher_metrics("primary", targets, unlabeled_labels_B,
                                  primary.weak_BxK.shape[-1]))
  metrics["primary/received_rate"] = _mean_metric(targets.mask_B)
  metrics["primary/unsup_loss"] = _scalar_metric(unsup)
  metrics["loss"] = _scalar_metric(total)
  return total, metrics


def cmpl(logits: dict[str, Logits], labels_B: jax.Array, unlabeled_labels_B: jax.Array, *,
         tau: float, lambda_u: float):
  """(Ls_F + Ls_A) + lambda * (Lu(F <- A) + Lu(A <- F)): each model teaches its sibling."""
  primary, auxiliary = logits["primary"], logits["auxiliary"]
  sup_f, metrics = _supervised_terms("primary", primary, labels_B)
  sup_a, aux_metrics = _supervised_terms("auxiliary", auxiliary, labels_B)
  metrics.update(aux_metrics)
  from_f = pseudo_labels(primary.weak_BxK, tau)     # F's pseudo-labels train A
  from_a = pseudo_labels(auxiliary.weak_BxK, tau)   # A's pseudo-labels train F
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

