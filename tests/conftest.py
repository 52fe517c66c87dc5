"""Every test sees 8 fake CPU devices; TensorFlow stays off accelerators and quiet.

Compiled XLA programs go to one persistent compilation cache per test session (JAX's own, the
one README recommends for preemptible machines): the suite starts ~10 real trainer processes and
notebook kernels that compile the same tiny train and eval steps, and on 2 CPU cores compiling
them, not running them, is most of a test's time. Every program is still compiled once and runs
for real; what repeats is loaded from disk, as a restarted trainer does in production.
"""
import os
import shutil
import tempfile

import pytest

# Must happen before jax is imported anywhere.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# Inherited by the trainer subprocesses and notebook kernels the tests start.
_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix="cmpl_jax_tests_xla_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE


def pytest_sessionfinish(session, exitstatus):
  if _CACHE:
    shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def smoke_cache(tmp_path_factory):
  """A CMPL_JAX_CACHE folder holding the `demo.py:*,smoke` dataset, generated and converted once
  per session (the trainer processes and notebook kernels of several modules read it)."""
  root = str(tmp_path_factory.mktemp("smoke_cache"))
  previous = os.environ.get("CMPL_JAX_CACHE")
  os.environ["CMPL_JAX_CACHE"] = root
  try:
    from cmpl_jax.data import demo_data  # pylint: disable=g-import-not-at-top
    from configs import demo  # pylint: disable=g-import-not-at-top
    demo_data.ensure(demo.get_config("cmpl,smoke"))
  finally:
    if previous is None:
      os.environ.pop("CMPL_JAX_CACHE")
    else:
      os.environ["CMPL_JAX_CACHE"] = previous
  return root
