"""cmpl_jax.console: the command-line tools' console shows none of TensorFlow's start-up logs."""
import os
import subprocess
import sys

import pytest

from cmpl_jax import console

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The lines TF 2.21 prints on a start-up that uses the input pipeline (see console.py).
NOISE = ("oneDNN custom operations are on", "cpu_feature_guard", "absl::InitializeLog()",
         "oneDNN supports DT_UINT8")
# A tf.data function with a uint8 op (as the pipeline's decoded frames): the DT_UINT8 line.
PIPELINE_LIKE = (
    "import sys; from cmpl_jax import console; console.quiet_tensorflow(); "
    "import tensorflow as tf; "
    "ds = tf.data.Dataset.from_tensor_slices(tf.zeros([2, 8, 8, 3], tf.uint8)); "
    "list(ds.map(lambda f: tf.image.resize(tf.transpose(f, [1, 0, 2]), [4, 4]))); "
    "import os; print('our own line', os.environ['TF_CPP_MIN_LOG_LEVEL'], file=sys.stderr)")


def _run(args, **env_changes):
  env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL",
                                                          console.ENV_SHOW_LOGS)}
  env.update(env_changes)
  return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                        timeout=180, env=env)


def _noise(stderr):
  return [line for line in stderr.splitlines() if any(n in line for n in NOISE)]


def test_startup_and_pipeline_lines_are_silenced():
  result = _run(["-c", PIPELINE_LIKE])
  assert result.returncode == 0, result.stderr
  assert _noise(result.stderr) == []
  # 3 only while TensorFlow was imported; 2 for the others (jaxlib's XLA reads it too).
  assert "our own line 2" in result.stderr


def test_the_lines_come_back_on_request():
  """Shows the test above is not vacuous (where this CPU and TF build print them at all)."""
  shown = _run(["-c", PIPELINE_LIKE], CMPL_JAX_TF_LOGS="1")
  assert shown.returncode == 0, shown.stderr
  if not _noise(shown.stderr):
    pytest.skip("this machine's TensorFlow prints none of these lines")
  noise = _noise(shown.stderr)
  # The oneDNN lines come only where TensorFlow turns oneDNN on (not on an AMD EPYC without
  # AVX-512, for one); where it does, the pipeline's uint8 op logs the DT_UINT8 error too.
  if any("oneDNN custom operations are on" in line for line in noise):
    assert any("oneDNN supports DT_UINT8" in line for line in noise)
  # A user's own TF_CPP_MIN_LOG_LEVEL is kept: 2 hides INFO (start-up) but shows ERROR.
  user = _run(["-c", PIPELINE_LIKE], TF_CPP_MIN_LOG_LEVEL="2")
  assert [line for line in _noise(user.stderr) if "DT_UINT8" not in line] == []


def test_convert_cli_help_is_quiet():
  result = _run(["-m", "cmpl_jax.data.convert", "--help"])  # absl exits 1 after --help
  assert "--dataset" in result.stdout and _noise(result.stderr) == []


def test_filter_keeps_everything_but_low_severity_log_lines(capfd):
  with console.filtered_stderr(level=3):
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written "
                b"to STDERR\n"
                b"I0000 00:00:1796150963.874425    3087 port.cc:153] oneDNN custom operations\n"
                b"E0000 00:00:1796150966.364747    3243 util.cc:131] oneDNN supports DT_UINT8\n"
                b"2025-09-17 14:44:05.157831: W tensorflow/core/foo.cc:12] a warning\n"
                b"/x/y.py:3: UserWarning: a Python warning\n"
                b"F0000 00:00:1.0 1 check.cc:1] a fatal error\n")
    print("from python", file=sys.stderr)
  assert sorted(capfd.readouterr().err.splitlines()) == [  # (pytest reorders sys.stderr writes)
      "/x/y.py:3: UserWarning: a Python warning", "F0000 00:00:1.0 1 check.cc:1] a fatal error",
      "from python"]
  assert not console.is_dropped(b"E0000 00:00:1.0 1 util.cc:131] x", level=2)
