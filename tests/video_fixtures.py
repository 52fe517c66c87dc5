"""Tiny real video files for converter tests, encoded with PyAV.

Kept separate from `cmpl_jax.data.synthetic` so the converter tests do not depend on the
synthetic-dataset generator (written in parallel); only what the tests need: a few frames,
a moving square so consecutive frames differ, and a choice of container/codec.
"""
from __future__ import annotations

import os

import av
import numpy as np

# Container extension -> (codec, pixel format). mpeg4 in .avi is what UCF-101 ships (xvid).
_CODECS = {
    ".avi": ("mpeg4", "yuv420p"),
    ".mp4": ("libx264", "yuv420p"),
    ".mkv": ("mpeg4", "yuv420p"),
    ".webm": ("libvpx", "yuv420p"),
}


def moving_square_frames(num_frames: int = 16, height: int = 48, width: int = 64,
                         seed: int = 0) -> np.ndarray:
  """[T, H, W, 3] uint8: a bright square sliding right over a fixed textured background."""
  rng = np.random.default_rng(seed)
  background = rng.integers(40, 120, size=(height, width, 3), dtype=np.uint8)
  frames = np.repeat(background[None], num_frames, axis=0)
  side = max(4, height // 4)
  for t in range(num_frames):
    x = (t * 3) % max(1, width - side)
    frames[t, height // 3:height // 3 + side, x:x + side] = (250, 200, 30)
  return frames


def write_video(path: str, frames_THWC: np.ndarray, fps: int = 25) -> str:
  """Encodes `frames_THWC` (uint8 RGB, even H and W) into `path`; codec chosen by extension."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  codec, pix_fmt = _CODECS[os.path.splitext(path)[1].lower()]
  with av.open(path, "w") as container:
    stream = container.add_stream(codec, rate=fps)
    stream.height, stream.width = frames_THWC.shape[1:3]
    stream.pix_fmt = pix_fmt
    for rgb in frames_THWC:
      frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  return path


def write_test_video(path: str, num_frames: int = 16, height: int = 48, width: int = 64,
                     fps: int = 25, seed: int = 0) -> str:
  return write_video(path, moving_square_frames(num_frames, height, width, seed), fps)


def write_video_without_frames(path: str) -> str:
  """A valid container with a video stream that holds no frame (seen in failed downloads)."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with av.open(path, "w") as container:
    stream = container.add_stream(_CODECS[os.path.splitext(path)[1].lower()][0], rate=25)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    container.start_encoding()
    container.mux(stream.encode())
  return path


def write_corrupt_video(path: str, seed: int = 0) -> str:
  """A file with a video extension whose bytes are not a decodable video."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  rng = np.random.default_rng(seed)
  with open(path, "wb") as f:
    f.write(b"RIFF\x00\x00\x00\x00AVI LIST" + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
  return path
