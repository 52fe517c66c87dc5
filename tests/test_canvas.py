"""The host's decode onto the canvas (clips.decode_canvas) and predict's numpy twin of it."""
import numpy as np
import pytest
import tensorflow as tf

from cmpl_jax import predict
from cmpl_jax.data import clips, pipeline, records, sampling
import data_fixtures as fixtures
from test_pipeline import small_config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("records"))
  fixtures.write_dataset(path)
  return path


def quadrant_jpeg(height, width):
  """A JPEG whose quadrants are red, green (top) / blue, white (bottom): shows orientation."""
  image = np.zeros((height, width, 3), np.uint8)
  image[:height // 2, :width // 2] = (255, 0, 0)
  image[:height // 2, width // 2:] = (0, 255, 0)
  image[height // 2:, :width // 2] = (0, 0, 255)
  image[height // 2:, width // 2:] = (255, 255, 255)
  return tf.io.encode_jpeg(image, quality=95)


def upright(frames_UxHxWx3, size, transposed):
  """The valid region of a canvas frame, turned back upright."""
  frames = np.swapaxes(frames_UxHxWx3, 1, 2) if transposed else frames_UxHxWx3
  return frames[:, :size[0], :size[1]]


@pytest.mark.parametrize("height,width,decode_short_side,canvas,ratio,size", [
    (48, 40, 0, (32, 43), 1, (38, 32)),       # portrait: stored transposed, resized to Hc 32
    (40, 120, 0, (32, 43), 1, (32, 43)),      # wider than 4:3: centre-cropped along the width
    (100, 128, 25, (25, 34), 4, (25, 32)),    # DCT 1/4 gives exactly Hc: no resize
    (90, 120, 40, (40, 54), 2, (40, 53)),     # DCT 1/2 gives 45, resized to 40
])
def test_decode_canvas_layout(height, width, decode_short_side, canvas, ratio, size):
  config = small_config(decode_short_side=decode_short_side)
  layout = sampling.canvas_for(config)  # sizes unknown: each video picks its own DCT scale
  assert (layout.height, layout.width) == canvas
  assert int(clips.jpeg_ratio(tf.constant(height), tf.constant(width), layout)) == ratio
  frames, got_size, transposed = clips.decode_canvas(
      tf.stack([quadrant_jpeg(height, width)] * 2), layout, jpeg=True)
  assert frames.shape == (2,) + canvas + (3,)
  assert tuple(got_size.numpy()) == size and bool(transposed) == (height > width)
  image = upright(frames.numpy(), size, bool(transposed))[0].astype(int)
  corners = [image[1, 1], image[1, -2], image[-2, 1], image[-2, -2]]
  for corner, colour in zip(corners, [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]):
    assert np.abs(corner - colour).max() < 40, (corner, colour)
  kept = size[0] if bool(transposed) else size[1]  # along the canvas width
  assert np.all(frames.numpy()[:, :, kept:] == 0)


def test_predict_builds_the_eval_windows_of_the_pipeline(data_dir):
  """predict.py's numpy host path (decoded frames -> canvas windows) equals the pipeline's."""
  config = small_config(data_dir)
  table = records.RecordTable(data_dir, "test")
  batch = next(iter(pipeline.make_eval_iterator(config, None, process_index=0, process_count=1,
                                                num_local_devices=1)))
  for i in range(2):
    parsed = records.parse_example(next(iter(table.read(tf.constant(i, tf.int64)))))
    frames = np.stack([tf.io.decode_jpeg(f).numpy() for f in parsed["frames_N"]])
    windows = predict.eval_windows(frames, config, table.stored_short_side())
    h, w = windows["size"][0]
    np.testing.assert_array_equal(windows["size"][0], batch["size"][0, i])
    np.testing.assert_array_equal(windows["frames"][0][..., :h, :w, :],
                                  batch["frames"][0, i][..., :h, :w, :])
