"""Which models each training method trains: one answer for the pipeline, the step and the tools.

Pure Python (no JAX, no TensorFlow) so every layer can import it.
"""
from __future__ import annotations

from typing import Any

METHODS = ("cmpl", "fixmatch", "supervised")


def has_auxiliary(config: Any) -> bool:
  """An auxiliary model is configured when `config.model.auxiliary.name` is non-empty."""
  auxiliary = config.model.get("auxiliary")
  return auxiliary is not None and bool(auxiliary.get("name"))


def model_names(config: Any) -> tuple[str, ...]:
  """('primary',) or ('primary', 'auxiliary'), by `config.method`.

  CMPL needs both models; FixMatch trains the primary alone whatever else is configured;
  supervised-only trains every configured model on the labeled clips.
  """
  method = config.method
  if method not in METHODS:
    raise ValueError(f"config.method={method!r} is not one of {list(METHODS)}")
  if method == "cmpl" and not has_auxiliary(config):
    raise ValueError("config.method='cmpl' needs config.model.auxiliary.name (a model name); "
                     "use method 'fixmatch' or 'supervised' for a single model")
  return selected_models(config)


def selected_models(config: Any) -> tuple[str, ...]:
  """The rule of `model_names` without its checks (config_checks reports those itself)."""
  if config.method == "fixmatch" or not has_auxiliary(config):
    return ("primary",)
  return ("primary", "auxiliary")


def uses_unlabeled(method: str) -> bool:
  return method != "supervised"


def teacher_options_on(config: Any) -> bool:
  """Whether `config.distribution_alignment` or `config.class_thresholds` refines pseudo-labels
  (README, "Pseudo-label options"); neither applies to supervised-only."""
  return uses_unlabeled(config.method) and bool(
      config.get("distribution_alignment", False) or config.get("class_thresholds", False))


def teacher_stats_models(config: Any) -> tuple[str, ...]:
  """The models whose running teacher statistics the TrainState keeps (none when no option
  needs them): every model that makes pseudo-labels, i.e. every model of FixMatch and CMPL."""
  return selected_models(config) if teacher_options_on(config) else ()
