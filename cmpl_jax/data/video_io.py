"""Video file -> frames: PyAV decode, fps resampling, resize, upright, then JPEG or arrays.

The way back, frames -> file (`write_video`), is here too: the synthetic generator and the
tests write the files this module then reads.

One decoding path, so every converter stores frames identically and prediction on a single file
(`decode_to_array`) sees what training saw. Free of TensorFlow, so
TF-free tools (predict.py) can use it. Its cost bounds conversion speed: per kept
frame, decode + scale to RGB (FFmpeg swscale) + JPEG (Pillow, via PyAV's `to_image`).

What real files need, each covered by tests/test_video_io.py:
- Timestamps: frames are timed by their presentation timestamps (H.264/HEVC with B-frames
  come out of the decoder already in presentation order; packets are not), relative to the
  first frame, so variable frame rate files (phones, screen captures) resample by time, not by
  frame count: `--fps` keeps the frame nearest each instant k/fps.
- Rotation: phones store portrait video as landscape frames plus a display-matrix rotation
  (side data; older FFmpeg builds exposed it as the stream tag `rotate`). The frames are turned
  upright, so the stored height/width are those of the upright picture. A mirror in the matrix
  (rare) is not applied.
"""
from __future__ import annotations

import dataclasses
import fractions
import io
import os
from typing import Any, Callable, Iterator

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image

from cmpl_jax.data import sampling, storage

# Container extensions looked for when walking an input folder (compared lower-cased).
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov")

# Rates outside this range are treated as "unknown" (some containers report 90000 or 0).
_MIN_PLAUSIBLE_FPS, _MAX_PLAUSIBLE_FPS = 1.0, 240.0
_FALLBACK_FPS = 25.0
_EPS = 1e-6


class VideoDecodeError(Exception):
  """The file cannot give even one frame; the message is the `skipped` reason."""


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
  """How frames are stored. Part of the converted data's identity (kept in the shard sidecars).

  short_side: resize so the shorter side has this many pixels (0 = keep the decoded size).
  fps: resample to this rate by picking the frame nearest each k/fps instant (0 = keep all).
  jpeg_quality: Pillow JPEG quality, 1..100 (Pillow advises <= 95).
  max_frames: keep at most this many frames per video, from its start (0 = all).
  threads: FFmpeg decode and scaling threads per video (1 suits one worker process per core;
    0 = FFmpeg's choice).
  """
  short_side: int = 256
  fps: float = 0.0
  jpeg_quality: int = 90
  max_frames: int = 0
  threads: int = 1


@dataclasses.dataclass
class DecodedVideo:
  frames: list[Any]  # JPEG bytes (decode_to_jpeg) or uint8 [H, W, 3] arrays (decode_to_array)
  height: int
  width: int
  frame_rate: float  # of the stored frames: options.fps, or the file's native rate
  warning: str | None = None  # e.g. decoding stopped early on a damaged packet


def resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
  """(height, width) with the shorter side scaled to `short_side` (0 keeps the size)."""
  if short_side <= 0:
    return height, width
  if height < 1 or width < 1:
    raise ValueError(f"bad frame size {height}x{width}")
  new_height, new_width = sampling.resized_shape(height, width, short_side)
  return int(new_height), int(new_width)


def _native_rate(stream: av.video.stream.VideoStream) -> float | None:
  for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
    if rate and _MIN_PLAUSIBLE_FPS <= float(rate) <= _MAX_PLAUSIBLE_FPS:
      return float(rate)
  return None


def _timed_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                  rate: float) -> Iterator[tuple[float, av.VideoFrame]]:
  """Yields (seconds since the first frame, frame); falls back to index/rate when a file's
  timestamps are missing or go backwards (seen in damaged AVIs), so selection never stalls."""
  start, previous = None, None
  for frame in container.decode(stream):
    t = frame.time
    if t is not None and start is None:
      start = t
    t = None if t is None else t - start
    if t is None or (previous is not None and t <= previous):
      t = 0.0 if previous is None else previous + 1.0 / rate
    previous = t
    yield t, frame


def _select(timed: Iterator[tuple[float, av.VideoFrame]], fps: float, rate: float
            ) -> Iterator[av.VideoFrame]:
  """Frames nearest to the instants 0, 1/fps, 2/fps, ... (all frames when fps <= 0).

  Streaming (one frame of look-behind) so a long video never sits decoded in memory. The last
  instant kept is the last one before the end of the last frame's display (t_last + 1/rate), so
  a clip of duration D yields about D*fps frames, as `ffmpeg -r` would.
  """
  if fps <= 0:
    for _, frame in timed:
      yield frame
    return
  k, prev_t, prev = 0, None, None
  for t, frame in timed:
    while k / fps <= t + _EPS:
      target = k / fps
      use_prev = prev is not None and target - prev_t <= t - target + _EPS  # ties: earlier
      yield prev if use_prev else frame
      k += 1
    prev_t, prev = t, frame
  if prev is not None:
    while k / fps < prev_t + 1.0 / rate - _EPS:
      yield prev
      k += 1


def quarter_turns(stream: av.video.stream.VideoStream, frame: av.VideoFrame) -> int:
  """Counter-clockwise quarter turns (np.rot90's k, in 0..3) that make `frame` upright.

  PyAV gives the display matrix's rotation as `frame.rotation`, degrees counter-clockwise (a
  phone's portrait video reads -90: turn it 90 degrees clockwise); older builds only had the
  stream tag `rotate`, degrees clockwise. Angles are rounded to the nearest quarter turn.
  """
  degrees = float(getattr(frame, "rotation", 0) or 0)
  if not degrees:
    try:
      degrees = -float(stream.metadata.get("rotate", 0))
    except (TypeError, ValueError):
      degrees = 0.0
  return int(round(degrees / 90.0)) % 4


def _to_jpeg(reformatter: VideoReformatter, frame: av.VideoFrame, height: int, width: int,
             turns: int, options: DecodeOptions) -> bytes:
  buffer = io.BytesIO()
  if turns:
    image = Image.fromarray(_to_rgb_array(reformatter, frame, height, width, turns, options))
  else:  # PyAV builds the Pillow image straight from the RGB plane
    image = _to_rgb(reformatter, frame, height, width, options).to_image()
  image.save(buffer, format="JPEG", quality=options.jpeg_quality)
  return buffer.getvalue()


def _to_rgb(reformatter: VideoReformatter, frame: av.VideoFrame, height: int, width: int,
            options: DecodeOptions) -> av.VideoFrame:
  # One reformatter per video keeps FFmpeg's scaler context: 3-4x faster than frame.reformat,
  # which builds a new one per frame (measured: 0.6 vs 2.6 ms for 320x240 -> 341x256).
  return reformatter.reformat(frame, width=width, height=height, format="rgb24",
                              interpolation="BILINEAR", threads=options.threads)


def _to_rgb_array(reformatter: VideoReformatter, frame: av.VideoFrame, height: int, width: int,
                  turns: int, options: DecodeOptions) -> np.ndarray:
  """uint8 [H, W, 3] upright RGB. (height, width) is the size to scale the coded frame to,
  i.e. the stored size with the axes swapped for an odd number of turns: scaling before the
  turn gives the same picture as turning first (the scaler filters both axes alike) at a
  fraction of the cost on full-size phone frames."""
  rgb = _to_rgb(reformatter, frame, height, width, options).to_ndarray()
  return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def decode_to_jpeg(path: str, options: DecodeOptions) -> DecodedVideo:
  """Decodes the first video stream of `path` into JPEG frames per `options` (the converter).

  Raises VideoDecodeError (message = reason to record) when no frame can be had. A decoding
  error after some frames keeps those frames and sets `warning`: real downloads often end in
  a damaged packet, and the frames before it are good.
  """
  return _decode(path, options, _to_jpeg)


def decode_to_array(path: str, options: DecodeOptions) -> tuple[np.ndarray, float]:
  """uint8 [T, H, W, 3] RGB frames and their frame rate, resized/resampled like the converter
  does (predict.py: a new video goes through the same decoding as the training data)."""
  video = _decode(path, options, _to_rgb_array)
  return np.stack(video.frames), video.frame_rate


def _decode(path: str, options: DecodeOptions,
            convert: Callable[[VideoReformatter, av.VideoFrame, int, int, int, DecodeOptions],
                              Any]) -> DecodedVideo:
  try:
    size = storage.getsize(path)
  except OSError as e:
    raise VideoDecodeError(f"cannot read file: {e.strerror or e}") from None
  if size == 0:
    raise VideoDecodeError("empty file (0 bytes)")
  with storage.open_binary(path) as source:   # a local path, or a stream of a URL's bytes
    return _decode_container(source, options, convert)


def _decode_container(source, options: DecodeOptions, convert) -> DecodedVideo:
  try:
    container = av.open(source, metadata_errors="ignore")
  except (av.FFmpegError, OSError, ValueError) as e:
    raise VideoDecodeError(f"cannot open as a video: {e}") from None
  with container:
    if not container.streams.video:
      raise VideoDecodeError("no video stream")
    stream = container.streams.video[0]
    stream.codec_context.thread_count = options.threads
    if options.threads != 1:
      stream.thread_type = "AUTO"
    rate = _native_rate(stream) or _FALLBACK_FPS
    frames: list[Any] = []
    warning, last_frame, last_converted, size_hw, coded_hw, turns = (None,) * 6
    reformatter = VideoReformatter()
    try:
      for frame in _select(_timed_frames(container, stream, rate), options.fps, rate):
        if options.max_frames and len(frames) >= options.max_frames:
          break
        if frame is not last_frame:  # a repeated frame (fps above native) is encoded once
          if size_hw is None:  # the first frame fixes orientation and stored size
            turns = quarter_turns(stream, frame)
            upright_hw = (frame.width, frame.height) if turns % 2 else (frame.height, frame.width)
            size_hw = resized_size(*upright_hw, options.short_side)
            coded_hw = size_hw[::-1] if turns % 2 else size_hw
          last_frame = frame
          last_converted = convert(reformatter, frame, *coded_hw, turns, options)
        frames.append(last_converted)
    except (av.FFmpegError, ValueError) as e:
      if not frames:
        raise VideoDecodeError(f"decode error: {e}") from None
      warning = f"decoding stopped after {len(frames)} frames: {e}"
  if not frames:
    raise VideoDecodeError("no frames")
  height, width = size_hw
  return DecodedVideo(frames, height, width, float(options.fps) if options.fps > 0 else rate,
                     warning)


# Encoders by container (first one available wins); quantiser / CRF tuned for small frames.
_CONTAINERS = {".avi": "avi", ".mp4": "mp4", ".mkv": "matroska", ".mov": "mov",
               ".webm": "webm"}
_CODECS = {".avi": ("mpeg4", "mjpeg"), ".mp4": ("libx264", "h264", "mpeg4"),
           ".mkv": ("libx264", "h264", "mpeg4"), ".mov": ("libx264", "h264", "mpeg4"),
           ".webm": ("libvpx-vp9", "libvpx")}


def _pick_codec(ext: str) -> str:
  if ext not in _CODECS:
    raise ValueError(f"cannot write {ext!r} videos; use one of {sorted(_CODECS)}")
  for codec in _CODECS[ext]:
    try:
      av.codec.Codec(codec, "w")  # an encoder, not only a decoder, of that name
      return codec
    except (av.codec.codec.UnknownCodecError, ValueError):
      continue
  raise RuntimeError(f"none of the encoders {_CODECS[ext]} for {ext} is in this PyAV build")


def write_video(path: str, frames: np.ndarray, fps: float, *, codec: str | None = None,
                container_format: str | None = None) -> None:
  """Encodes uint8 RGB frames [T, H, W, 3] into a video file with PyAV.

  The codec follows the extension (.avi: MPEG-4 with the XVID tag as in UCF-101; .mp4, .mkv,
  .mov: H.264; .webm: VP9) unless `codec` is given; `container_format` lets the caller write
  to a temporary name whose extension says nothing. Encoding is single-threaded with a fixed
  quality, so the same frames give the same bytes.
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
  num_frames, height, width, _ = frames.shape
  if num_frames == 0:
    raise ValueError(f"no frames to write to {path}")
  if height % 2 or width % 2:
    raise ValueError(f"frame size {height}x{width} must be even (4:2:0 chroma) for {path}")
  if fps <= 0:
    raise ValueError(f"fps={fps} must be positive")
  ext = os.path.splitext(path)[1].lower()
  if container_format is None:
    if ext not in _CONTAINERS:
      raise ValueError(f"cannot tell the container of {path!r}; use one of {sorted(_CONTAINERS)}")
    container_format = _CONTAINERS[ext]
  codec = codec or _pick_codec(ext)
  rate = fractions.Fraction(fps).limit_denominator(1001)
  with av.open(path, "w", format=container_format) as container:
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    if codec == "mjpeg":
      stream.pix_fmt = "yuvj420p"
    context = stream.codec_context
    context.thread_count = 1
    if codec in ("mpeg4", "mjpeg"):
      context.qscale = True  # fixed quantiser: near-lossless at these sizes
      context.global_quality = 2 * 118  # q=2 (118 = FF_QP2LAMBDA)
      if codec == "mpeg4" and container_format == "avi":
        context.codec_tag = "XVID"
    elif codec in ("libx264", "h264"):
      context.options = {"crf": "16", "preset": "veryfast"}
    elif codec.startswith("libvpx"):
      context.options = {"crf": "20", "b": "0", "deadline": "realtime", "cpu-used": "8"}
    for frame in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
