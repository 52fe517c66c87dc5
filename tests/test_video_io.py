"""video_io on real encodings: B-frames, VP9, variable frame rate, rotation-tagged phone video.

Every file is encoded here with PyAV (no downloads), tiny (<= 20 frames of 32x48). Each frame's
content names it: a uniform grey level 15 + 10 * index (read back from the bottom-right
quadrant), plus an orientation mark in the upright picture: a bright top-left quadrant and a
dark top-right corner (which a transpose or a mirror would move). So the checks are on
content: the frames come out in presentation order, at the right instants, and upright.
"""
from __future__ import annotations

import fractions
import os
from types import SimpleNamespace

import av
import numpy as np
import pytest
from av.video.frame import PictureType

from cmpl_jax.data import video_io

NUM_FRAMES, HEIGHT, WIDTH, FPS = 20, 32, 48, 25
LEVEL0, STEP = 15, 10  # > MPEG-4's intra DC step (8), so a level never reads as its neighbour
_FORMATS = {".mp4": "mp4", ".webm": "webm", ".avi": "avi", ".mkv": "matroska", ".mov": "mov"}
# (extension, codec, options) of the B-frame cases: H.264 as phones and downloads have it, and
# MPEG-4 Part 2 in AVI (packed B-frames, as some UCF-101-era xvid files).
B_FRAME_CASES = {"h264_mp4": (".mp4", "libx264", {"bf": "2", "x264-params": "b-adapt=0",
                                                    "crf": "16"}),
                 "mpeg4_avi": (".avi", "mpeg4", {"bf": "2"})}
# Irregular presentation times (ms) of the variable-frame-rate file.
VFR_PTS_MS = (0, 40, 60, 150, 160, 300, 310, 320, 400, 480, 500, 620, 700, 710, 800, 860, 900,
              1000, 1010, 1100)


def upright_frame(index: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
  frame = np.full((height, width, 3), LEVEL0 + STEP * index, np.uint8)
  frame[:height // 2, :width // 2] = 250
  frame[:height // 4, width - width // 4:] = 0
  return frame


def frame_index(rgb: np.ndarray) -> int:
  height, width = rgb.shape[:2]
  level = rgb[height // 2 + 2:height - 2, width // 2 + 2:width - 2].mean()
  return int(round((level - LEVEL0) / STEP))


def assert_upright(rgb: np.ndarray, where: str) -> None:
  height, width = rgb.shape[:2]
  top_left = rgb[1:height // 2 - 1, 1:width // 2 - 1].mean()
  top_right_corner = rgb[:height // 4 - 1, width - width // 4 + 1:].mean()
  bottom_left = rgb[height // 2 + 1:, :width // 2 - 1].mean()
  assert top_left > 225 and top_right_corner < 40 and bottom_left < top_left - 30, \
      (where, top_left, top_right_corner, bottom_left)


def encode(path: str, frames_THW3: np.ndarray, codec: str, options: dict | None = None,
           pts_ms: tuple[int, ...] | None = None, rotation: int | None = None) -> str:
  """Encodes RGB frames; `pts_ms` sets irregular timestamps, `rotation` a display matrix."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  ext = os.path.splitext(path)[1].lower()
  with av.open(path, "w", format=_FORMATS[ext]) as container:
    stream = container.add_stream(codec, rate=FPS)
    stream.height, stream.width = frames_THW3.shape[1:3]
    stream.pix_fmt = "yuv420p"
    stream.codec_context.options = dict(options or {})
    if codec == "mpeg4":  # fixed quantiser 2, as cmpl_jax.data.synthetic writes its .avi files
      stream.codec_context.qscale = True
      stream.codec_context.global_quality = 2 * 118  # 118 = FF_QP2LAMBDA
    millisecond = fractions.Fraction(1, 1000)
    if pts_ms is not None:
      stream.codec_context.time_base = stream.time_base = millisecond
    if rotation is not None:
      stream.set_display_rotation(rotation)  # counter-clockwise degrees, as frame.rotation
    for i, rgb in enumerate(frames_THW3):
      frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
      if pts_ms is not None:
        frame.pts, frame.time_base = pts_ms[i], millisecond
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  return path


def frames(num_frames: int = NUM_FRAMES, height: int = HEIGHT, width: int = WIDTH):
  return np.stack([upright_frame(i, height, width) for i in range(num_frames)])


def write_b_frames(path: str, case: str = "h264_mp4") -> str:
  _, codec, options = B_FRAME_CASES[case]
  return encode(path, frames(), codec, options)


def write_vp9(path: str) -> str:
  return encode(path, frames(), "libvpx-vp9", {"deadline": "realtime", "cpu-used": "8",
                                               "crf": "10", "b": "0"})


def write_vfr(path: str) -> str:
  return encode(path, frames(), "libx264", {"crf": "16"}, pts_ms=VFR_PTS_MS)


def write_rotated(path: str, rotation: int = -90) -> str:
  """A phone-style file: coded frames turned so that applying `rotation` (frame.rotation,
  counter-clockwise degrees; a portrait phone video reads -90) shows the upright portrait
  pictures (HEIGHT x WIDTH swapped: 48 high, 32 wide)."""
  upright = frames(height=WIDTH, width=HEIGHT) if rotation % 180 else frames()
  coded = np.stack([np.rot90(f, -(rotation // 90)) for f in upright])
  return encode(path, coded, "libx264", {"crf": "16"}, rotation=rotation)


def decode(path: str, **options) -> tuple[np.ndarray, float]:
  return video_io.decode_to_array(path, video_io.DecodeOptions(**{"short_side": 0, **options}))


def read_with_pyav(path: str) -> tuple[list[int], list[float], list[int], list[int]]:
  """(demuxed packet pts in file order, decoded frame times, pict types, frame rotations)."""
  with av.open(path) as container:
    packets = [p.pts for p in container.demux(video=0) if p.size]
  with av.open(path) as container:
    decoded = list(container.decode(video=0))
  return (packets, [f.time for f in decoded], [f.pict_type for f in decoded],
          [f.rotation for f in decoded])


def nearest(times: list[float], fps: float, end: float) -> list[int]:
  """Reference: for each instant k/fps before `end`, the index of the nearest frame time
  (ties to the earlier frame)."""
  out, k = [], 0
  while k / fps < end - 1e-9:
    distances = [abs(t - k / fps) for t in times]
    out.append(min(range(len(times)), key=lambda i: (round(distances[i], 9), i)))
    k += 1
  return out


# ---------------------------------------------------------------------------- tests


@pytest.mark.parametrize("case", sorted(B_FRAME_CASES))
def test_b_frames_decode_in_presentation_order(tmp_path, case):
  path = write_b_frames(str(tmp_path / f"b{B_FRAME_CASES[case][0]}"), case)
  packets, times, types, _ = read_with_pyav(path)
  assert PictureType.B in types, f"{case}: the encoder wrote no B-frames ({types})"
  assert packets != sorted(packets), "packets should be stored out of presentation order"
  assert times == sorted(times)
  decoded, rate = decode(path)
  assert rate == FPS and decoded.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3)
  assert [frame_index(f) for f in decoded] == list(range(NUM_FRAMES))
  half, _ = decode(path, fps=12.5)  # every other frame: 0, 2, ..., 18
  assert [frame_index(f) for f in half] == list(range(0, NUM_FRAMES, 2))
  assert_upright(decoded[0], case)


def test_vp9_webm(tmp_path):
  if "libvpx-vp9" not in av.codecs_available:
    pytest.skip("this PyAV's FFmpeg has no libvpx-vp9 encoder, so no VP9 file can be made")
  path = write_vp9(str(tmp_path / "clip.webm"))
  with av.open(path) as container:
    assert container.streams.video[0].codec_context.name in ("vp9", "libvpx-vp9")
  decoded, rate = decode(path)
  assert rate == FPS
  assert [frame_index(f) for f in decoded] == list(range(NUM_FRAMES))
  ten, _ = decode(path, fps=10)  # instants 0, 0.1, ... -> frames 0, 2 (tie: earlier), 5, ...
  assert [frame_index(f) for f in ten] == nearest([i / FPS for i in range(NUM_FRAMES)], 10,
                                                   NUM_FRAMES / FPS)
  assert_upright(decoded[-1], "vp9")


def test_variable_frame_rate_resamples_by_timestamp(tmp_path):
  path = write_vfr(str(tmp_path / "vfr.mp4"))
  _, times, _, _ = read_with_pyav(path)
  assert times == pytest.approx([t / 1000 for t in VFR_PTS_MS])  # really irregular
  native, _ = decode(path)
  assert [frame_index(f) for f in native] == list(range(NUM_FRAMES))
  with av.open(path) as container:
    rate = float(container.streams.video[0].average_rate)
  for fps in (25, 10):
    resampled, stored_rate = decode(path, fps=fps)
    expected = nearest(list(times), fps, times[-1] + 1 / rate)
    assert stored_rate == fps
    assert [frame_index(f) for f in resampled] == expected, fps
  # By hand, at 10 fps: 0 ms -> frame 0 (0 ms), 100 -> 2 (60), 200 -> 4 (160), 300 -> 5,
  # 400 -> 8, 500 -> 10. Counting frames as if at 25 fps would give 0, 2, 5, 7, 10, 12.
  assert expected[:6] == [0, 2, 4, 5, 8, 10]


@pytest.mark.parametrize("rotation", [-90, 90, 180])
def test_rotation_tag_gives_upright_frames(tmp_path, rotation):
  path = write_rotated(str(tmp_path / f"phone{rotation}.mp4"), rotation)
  _, _, _, rotations = read_with_pyav(path)
  assert {r % 360 for r in rotations} == {rotation % 360}  # the tag was written, reads back
  upright_hw = (WIDTH, HEIGHT) if rotation % 180 else (HEIGHT, WIDTH)
  decoded, _ = decode(path)
  assert decoded.shape == (NUM_FRAMES, *upright_hw, 3)
  for i, frame in enumerate(decoded):
    assert frame_index(frame) == i
    assert_upright(frame, f"rotation {rotation}, frame {i}")
  video = video_io.decode_to_jpeg(path, video_io.DecodeOptions(short_side=16, fps=12.5))
  expected_hw = video_io.resized_size(*upright_hw, 16)
  assert (video.height, video.width) == expected_hw and len(video.frames) == NUM_FRAMES // 2
  from PIL import Image  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  first = np.asarray(Image.open(io.BytesIO(video.frames[0])).convert("RGB"))
  assert first.shape[:2] == expected_hw
  height, width = expected_hw
  assert first[:height // 2 - 1, :width // 2 - 1].mean() > first[height // 2 + 1:].mean() + 60


def test_quarter_turns_reads_frame_rotation_then_the_legacy_tag():
  stream = SimpleNamespace(metadata={})
  for degrees, turns in ((0, 0), (-90, 3), (90, 1), (180, 2), (-180, 2), (-89, 3)):
    assert video_io.quarter_turns(stream, SimpleNamespace(rotation=degrees)) == turns
  legacy = SimpleNamespace(metadata={"rotate": "90"})  # clockwise, as old FFmpeg exported it
  assert video_io.quarter_turns(legacy, SimpleNamespace()) == 3
  assert video_io.quarter_turns(legacy, SimpleNamespace(rotation=0)) == 3
  assert video_io.quarter_turns(SimpleNamespace(metadata={"rotate": "x"}), object()) == 0
