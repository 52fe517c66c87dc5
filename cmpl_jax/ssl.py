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
Per model M the names are `M/sup_loss`, `M/sup_top1`, `M/unsup_loss` (M as student),
`M/mask_rate`, `M/pseudo_label_acc` (M as teacher: how many of its weak-view predictions clear
tau, and how many of those are right by the hidden true label); `agreement` is the fraction of
unlabeled clips where F and A predict the same class on their weak views.
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


def _teacher_metrics(name: str, targets: PseudoLabels, true_labels_B: jax.Array):
  """Mask rate over every unlabeled clip; pseudo-label accuracy over the confident clips whose
  hidden label is known (label -1: a pool without labels), so it is a ratio over nothing, and
  reported as absent, when no such clip exists."""
  correct_B = (targets.labels_B == true_labels_B).astype(jnp.float32)
  known_mask_B = targets.mask_B * (true_labels_B >= 0)
  return {f"{name}/mask_rate": _mean_metric(targets.mask_B),
          f"{name}/pseudo_label_acc": (jnp.sum(correct_B * known_mask_B),
                                       jnp.sum(known_mask_B))}


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
  metrics.update(_teacher_metrics("primary", targets, unlabeled_labels_B))
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
  metrics.update(_teacher_metrics("primary", from_f, unlabeled_labels_B))
  metrics.update(_teacher_metrics("auxiliary", from_a, unlabeled_labels_B))
  metrics["primary/unsup_loss"] = _scalar_metric(unsup_f)
  metrics["auxiliary/unsup_loss"] = _scalar_metric(unsup_a)
  metrics["agreement"] = _mean_metric(from_f.labels_B == from_a.labels_B)
  metrics["loss"] = _scalar_metric(total)
  return total, metrics


OBJECTIVES = {"supervised": supervised, "fixmatch": fixmatch, "cmpl": cmpl}
assert set(OBJECTIVES) == set(methods.METHODS)

