"""The objectives against an independent float64 numpy computation on random logits."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmpl_jax import methods, ssl

K, B_L, B_U = 6, 4, 12


def _np_softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _np_ce(logits, labels):
  return -np.log(_np_softmax(logits)[np.arange(len(labels)), labels])


def _np_unsup(student_strong, teacher_weak, tau):
  p = _np_softmax(teacher_weak)
  mask = (p.max(-1) >= tau).astype(np.float64)
  pl = p.argmax(-1)
  return (mask * _np_ce(student_strong, pl)).sum() / len(pl), mask, pl


def _random_case(seed, scale=3.0):
  rng = np.random.default_rng(seed)
  logits = {m: {v: rng.normal(size=(B_L if v == "labeled" else B_U, K)) * scale
                for v in ("labeled", "weak", "strong")} for m in ("primary", "auxiliary")}
  labels = rng.integers(0, K, B_L)
  unlabeled_labels = rng.integers(0, K, B_U)
  return logits, labels, unlabeled_labels


def _jax_logits(logits, models):
  return {m: ssl.Logits(*(jnp.asarray(logits[m][v], jnp.float32)
                          for v in ("labeled", "weak", "strong"))) for m in models}


def _value(metric):
  total, count = metric
  return float(total) / float(count)


# tau=0.0: every clip is confident (all masked in); 1.0 + eps: none is; 0.6: a mix.
@pytest.mark.parametrize("tau", [0.0, 0.6, 1.0 + 1e-6])
def test_cmpl_matches_numpy(tau):
  logits, labels, ulabels = _random_case(0)
  total, metrics = ssl.cmpl(_jax_logits(logits, ("primary", "auxiliary")), jnp.asarray(labels),
                            jnp.asarray(ulabels), tau=tau, lambda_u=0.7)
  f, a = logits["primary"], logits["auxiliary"]
  ls_f = _np_ce(f["labeled"], labels).mean()
  ls_a = _np_ce(a["labeled"], labels).mean()
  lu_f, mask_from_a, pl_from_a = _np_unsup(f["strong"], a["weak"], tau)   # F learns from A
  lu_a, mask_from_f, pl_from_f = _np_unsup(a["strong"], f["weak"], tau)   # A learns from F
  expected = (ls_f + ls_a) + 0.7 * (lu_f + lu_a)
  np.testing.assert_allclose(float(total), expected, rtol=1e-5)
  np.testing.assert_allclose(_value(metrics["loss"]), expected, rtol=1e-5)
  np.testing.assert_allclose(_value(metrics["primary/sup_loss"]), ls_f, rtol=1e-5)
  np.testing.assert_allclose(_value(metrics["auxiliary/sup_loss"]), ls_a, rtol=1e-5)
  np.testing.assert_allclose(_value(metrics["primary/unsup_loss"]), lu_f, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(_value(metrics["auxiliary/unsup_loss"]), lu_a, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(_value(metrics["primary/mask_rate"]), mask_from_f.mean())
  np.testing.assert_allclose(_value(metrics["auxiliary/mask_rate"]), mask_from_a.mean())
  correct_f = ((pl_from_f == ulabels) * mask_from_f).sum()
  assert tuple(map(float, metrics["primary/pseudo_label_acc"])) == (correct_f, mask_from_f.sum())
  np.testing.assert_allclose(_value(metrics["agreement"]), (pl_from_f == pl_from_a).mean())
  np.testing.assert_allclose(_value(metrics["primary/sup_top1"]),
                             (f["labeled"].argmax(-1) == labels).mean())
  if tau == 0.0:
    assert mask_from_f.all() and lu_f > 0
  if tau > 1.0:
    assert not mask_from_f.any() and float(metrics["primary/unsup_loss"][0]) == 0.0


@pytest.mark.parametrize("tau", [0.0, 0.6, 1.0 + 1e-6])
def test_fixmatch_matches_numpy(tau):
  logits, labels, ulabels = _random_case(1)
  total, metrics = ssl.fixmatch(_jax_logits(logits, ("primary",)), jnp.asarray(labels),
                                jnp.asarray(ulabels), tau=tau, lambda_u=1.3)
  f = logits["primary"]
  lu, mask, _ = _np_unsup(f["strong"], f["weak"], tau)
  expected = _np_ce(f["labeled"], labels).mean() + 1.3 * lu
  np.testing.assert_allclose(float(total), expected, rtol=1e-5)
  np.testing.assert_allclose(_value(metrics["primary/mask_rate"]), mask.mean())
  assert "auxiliary/sup_loss" not in metrics


def test_supervised_matches_numpy_for_one_and_two_models():
  logits, labels, _ = _random_case(2)
  one, _ = ssl.supervised(_jax_logits(logits, ("primary",)), jnp.asarray(labels))
  two, metrics = ssl.supervised(_jax_logits(logits, ("primary", "auxiliary")), jnp.asarray(labels))
  ls_f = _np_ce(logits["primary"]["labeled"], labels).mean()
  ls_a = _np_ce(logits["auxiliary"]["labeled"], labels).mean()
  np.testing.assert_allclose(float(one), ls_f, rtol=1e-5)
  np.testing.assert_allclose(float(two), ls_f + ls_a, rtol=1e-5)
  assert "primary/mask_rate" not in metrics


def _np_pseudo_ce_grad(student_strong, teacher_weak, tau):
  """d/d(student strong logits) of sum_i mask_i * CE(argmax p_i, student_i): the pseudo-label
  is a constant, so each confident row gets softmax - onehot, every other row exactly 0."""
  _, mask, pl = _np_unsup(student_strong, teacher_weak, tau)
  onehot = np.eye(K)[pl]
  return mask[:, None] * (_np_softmax(student_strong) - onehot), mask


@pytest.mark.parametrize("method", ["cmpl", "fixmatch"])
@pytest.mark.parametrize("tau", [0.0, 0.6])
def test_no_gradient_reaches_teacher_weak_logits(method, tau):
  """jax.grad of the whole objective w.r.t. every logit: exactly 0 on every weak (teacher) view,
  and on each strong (student) view exactly lambda / B_u times the pseudo-label CE gradient
  (0 on masked-out clips); labeled views get the supervised CE gradient.

  With hard thresholded pseudo-labels the stop_gradient in ssl.pseudo_labels is redundant
  (argmax and `>= tau` already have zero derivative), so this is the property it exists for:
  it fails as soon as targets become differentiable without it (soft probability targets, a
  confidence-weighted mask), which would train each teacher towards its student's view.
  """
  models = ("primary", "auxiliary") if method == "cmpl" else ("primary",)
  logits, labels, ulabels = _random_case(3)
  lambda_u = 0.7
  objective = ssl.OBJECTIVES[method]
  grads = jax.grad(lambda jl: objective(jl, jnp.asarray(labels), jnp.asarray(ulabels), tau=tau,
                                        lambda_u=lambda_u)[0])(_jax_logits(logits, models))
  # cmpl: each model is taught by its sibling; fixmatch: the primary teaches itself.
  teacher = {"primary": "auxiliary", "auxiliary": "primary"} if method == "cmpl" else {
      "primary": "primary"}
  for m in models:
    assert float(jnp.abs(grads[m].weak_BxK).max()) == 0.0, m
    expected, mask = _np_pseudo_ce_grad(logits[m]["strong"], logits[teacher[m]]["weak"], tau)
    np.testing.assert_allclose(grads[m].strong_BxK, lambda_u / B_U * expected, rtol=1e-4,
                               atol=1e-7, err_msg=m)
    assert np.all(np.asarray(grads[m].strong_BxK)[mask == 0] == 0.0), m
    assert np.abs(expected).max() > 0.01  # the student side does learn
    if tau == 0.6:
      assert 0 < mask.sum() < B_U  # a mix of confident and masked-out clips
    sup = (_np_softmax(logits[m]["labeled"]) - np.eye(K)[labels]) / B_L
    np.testing.assert_allclose(grads[m].labeled_BxK, sup, rtol=1e-4, atol=1e-7, err_msg=m)


def test_models_trained_per_method():
  from configs import default
  config = default.get_config()
  expected = {"cmpl": ("primary", "auxiliary"), "fixmatch": ("primary",),
              "supervised": ("primary", "auxiliary")}
  for method, names in expected.items():
    config.method = method
    assert methods.model_names(config) == names
  config.model.auxiliary.name = ""
  config.method = "supervised"
  assert methods.model_names(config) == ("primary",)
  config.method = "cmpl"
  with pytest.raises(ValueError, match="auxiliary"):
    methods.model_names(config)
  config.method = "mixmatch"
  with pytest.raises(ValueError, match="fixmatch"):
    methods.model_names(config)


def test_pseudo_label_accuracy_counts_only_clips_with_hidden_labels():
  """Clips from an unlabeled pool carry label -1: they count for the mask rate and the loss,
  never for pseudo-label accuracy (a 0/0 ratio there is reported as absent, not 0)."""
  logits, labels, ulabels = _random_case(1)
  hidden = ulabels.copy()
  hidden[::2] = -1
  _, metrics = ssl.cmpl(_jax_logits(logits, ("primary", "auxiliary")), jnp.asarray(labels),
                        jnp.asarray(hidden), tau=0.0, lambda_u=1.0)
  pseudo = logits["primary"]["weak"].argmax(-1)
  known = hidden >= 0
  assert tuple(map(float, metrics["primary/pseudo_label_acc"])) == (
      float(((pseudo == hidden) & known).sum()), float(known.sum()))
  np.testing.assert_allclose(_value(metrics["primary/mask_rate"]), 1.0)
  _, metrics = ssl.cmpl(_jax_logits(logits, ("primary", "auxiliary")), jnp.asarray(labels),
                        jnp.full_like(jnp.asarray(hidden), -1), tau=0.0, lambda_u=1.0)
  assert float(metrics["primary/pseudo_label_acc"][1]) == 0.0


# --- Pseudo-label options: distribution alignment and class-wise thresholds -------------------

def _np_aligned(teacher_weak, prob_mean):
  q = _np_softmax(teacher_weak) * (1.0 / K) / prob_mean
  return q / q.sum(-1, keepdims=True)


def _np_flexmatch_thresholds(confident, unconfident, tau):
  beta = confident / max(confident.max(), unconfident)
  return tau * beta / (2.0 - beta)


def _stats(seed):
  rng = np.random.default_rng(seed)
  prob_mean = rng.dirichlet(np.ones(K))
  shares = rng.dirichlet(np.ones(K + 1))   # K confident classes + the unconfident share
  return {"prob_mean_K": prob_mean, "confident_K": shares[:K], "unconfident": shares[K]}


def _jax_stats(stats):
  return {k: jnp.asarray(v, jnp.float32) for k, v in stats.items()}


@pytest.mark.parametrize("align,thresholds", [(True, False), (False, True), (True, True)])
def test_pseudo_label_options_match_numpy(align, thresholds):
  logits, labels, ulabels = _random_case(4, scale=2.0)
  stats = {m: _stats(i) for i, m in enumerate(("primary", "auxiliary"))}
  options = ssl.TeacherOptions(distribution_alignment=align, class_thresholds=thresholds)
  tau = 0.6
  total, metrics = ssl.cmpl(_jax_logits(logits, ("primary", "auxiliary")), jnp.asarray(labels),
                            jnp.asarray(ulabels), tau=tau, lambda_u=1.0,
                            teacher_stats={m: _jax_stats(s) for m, s in stats.items()},
                            options=options)
  expected = 0.0
  plain_masks = []
  for student, teacher in (("primary", "auxiliary"), ("auxiliary", "primary")):
    s = stats[teacher]
    p = (_np_aligned(logits[teacher]["weak"], s["prob_mean_K"]) if align
         else _np_softmax(logits[teacher]["weak"]))
    pl = p.argmax(-1)
    limit = (_np_flexmatch_thresholds(s["confident_K"], s["unconfident"], tau)[pl]
             if thresholds else tau)
    mask = (p.max(-1) >= limit).astype(np.float64)
    plain_masks.append(_np_softmax(logits[teacher]["weak"]).max(-1) >= tau)
    expected += _np_ce(logits[student]["labeled"], labels).mean()
    expected += (mask * _np_ce(logits[student]["strong"], pl)).sum() / B_U
    np.testing.assert_allclose(_value(metrics[f"{teacher}/mask_rate"]), mask.mean(), atol=1e-7)
    if thresholds:
      np.testing.assert_allclose(
          _value(metrics[f"{teacher}/threshold_mean"]),
          _np_flexmatch_thresholds(s["confident_K"], s["unconfident"], tau).mean(), rtol=1e-5)
    else:
      assert f"{teacher}/threshold_mean" not in metrics
    if align:   # the alignment really moves some argmaxes
      assert (pl != logits[teacher]["weak"].argmax(-1)).any()
  np.testing.assert_allclose(float(total), expected, rtol=1e-5)


def test_class_thresholds_start_at_zero_and_rise_with_confidence():
  """FlexMatch's warm-up: before the teacher is confident anywhere every threshold is 0 (every
  pseudo-label passes); a class the teacher labels as often as the others reaches tau, one it
  never labels stays at 0."""
  fresh = ssl.init_teacher_stats(K)
  np.testing.assert_array_equal(ssl.class_thresholds(fresh, 0.9), np.zeros(K))
  learned = {"prob_mean_K": fresh["prob_mean_K"],
             "confident_K": jnp.asarray([0.25, 0.25, 0.1, 0.05, 0.0, 0.25], jnp.float32),
             "unconfident": jnp.asarray(0.1, jnp.float32)}
  thresholds = np.asarray(ssl.class_thresholds(learned, 0.9))
  np.testing.assert_allclose(thresholds[[0, 1, 5]], 0.9, rtol=1e-6)
  assert thresholds[4] == 0.0 and 0 < thresholds[3] < thresholds[2] < 0.9
  # Warm-up: while most clips are still unused, they set the scale instead of the top class.
  early = dict(learned, unconfident=jnp.asarray(0.5, jnp.float32))
  np.testing.assert_allclose(ssl.class_thresholds(early, 0.9)[0], 0.9 * 0.5 / 1.5, rtol=1e-6)


def test_teacher_statistics_are_running_means_of_the_batch():
  logits, _, _ = _random_case(5)
  weak = jnp.asarray(logits["primary"]["weak"], jnp.float32)
  stats = _jax_stats(_stats(7))
  for align in (False, True):
    options = ssl.TeacherOptions(distribution_alignment=align, class_thresholds=True,
                                 momentum=0.9)
    batch = ssl.teacher_batch_stats(weak, 0.5, stats, options)
    raw = _np_softmax(logits["primary"]["weak"])
    used = _np_aligned(logits["primary"]["weak"], _stats(7)["prob_mean_K"]) if align else raw
    confident = used.max(-1) >= 0.5
    np.testing.assert_allclose(batch["prob_mean_K"], raw.mean(0), rtol=1e-5)  # before alignment
    np.testing.assert_allclose(
        batch["confident_K"], (np.eye(K)[used.argmax(-1)] * confident[:, None]).mean(0),
        rtol=1e-5)
    np.testing.assert_allclose(batch["unconfident"], 1 - confident.mean(), rtol=1e-5)
    new = ssl.update_teacher_stats(stats, batch, options.momentum)
    for key in stats:
      np.testing.assert_allclose(new[key], 0.9 * stats[key] + 0.1 * batch[key], rtol=1e-5)
