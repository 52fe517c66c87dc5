"""Renders one synthetic action clip: a textured shape (appearance) moving in a class-specific way.

Why the scene looks the way it does (see README, "The demo"): the class is the pair
(appearance, motion), and a model must see both to name it.

* Appearance factor: the target's kind (`SHAPES`), each with its own outline and fill pattern
  (`PATTERNS`: solid, horizontal stripes, vertical stripes or checks; all flip-invariant).
  The pattern is there because small CNNs trained from scratch on a few hundred videos learn
  outlines alone slowly (measured with a frame CNN on 480 videos, 32-pixel scale-jitter crops:
  65% shape accuracy after 1000 steps with outlines alone, 98% after 600 with patterns).
  Colours (two per target, both contrasting with the background), size (44-56% of the frame's
  short side across) and a small tilt are random per video.
* Motion factor: `MOTIONS`, all invariant to horizontal flips and scale-jitter crops (training
  applies both): rising and falling (vertical flips are never applied) and sliding sideways, whose
  left/right direction is random per video, so a flip maps a sliding video to another sliding one.
  The speed is large: one pass across the frame height takes 20-32 stored frames by default
  (`pass_frames`), so an 8-frame clip with stride 2 sees the target travel 45-70% of the frame
  height (stride 4: 90-145%), and the direction stays unambiguous (a step between sampled
  frames is under half the frame up to stride 8; with passes under 16 frames a stride-8 step
  exceeds half the frame and its direction aliases).
* A single frame must not reveal the motion: the scene lives on a torus. Every coordinate of
  every object wraps around the frame edges (drawn split across opposite edges when it crosses
  one), the background is a tileable texture, and the target's position is uniform over the
  frame for every motion, so the distribution of one frame is the same for all motions.
* Nothing else correlates with the class: background colours, textures and drift (slow, random
  direction), target colours and speed, a few small distractor dots moving in random directions,
  and pixel noise are all drawn per video, independently of the label.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

# Appearances in the order classes use them (a dataset of N classes uses the first
# ceil(N / 3)). The third is Ring because it differs from Disc and Triangle at a coarse scale
# (a hole; a solid fill): checks and stripes are 2-4 pixels wide in the demo's 32-pixel crops,
# which the small nets learn slowly (README, "Why Ring is the third shape").
SHAPES = ("Disc", "Triangle", "Ring", "Square", "Cross", "Star", "Hourglass", "Diamond")
# The order before 2026-12-03, which folders without a recorded "shapes" were made with.
SHAPES_BEFORE_RING = ("Disc", "Triangle", "Cross", "Ring", "Square", "Star", "Hourglass",
                      "Diamond")
PATTERNS = {"Disc": "solid", "Triangle": "hstripes", "Cross": "checks", "Ring": "solid",
            "Square": "vstripes", "Star": "solid", "Hourglass": "checks", "Diamond": "hstripes"}
MOTIONS = ("Rising", "Falling", "Sliding")

# One pass of the target across the frame takes this many stored frames (uniform per video);
# the default of `pass_frames` below and of the generator's --pass_frames.
PERIOD_FRAMES = (20.0, 32.0)
# Target radius as a fraction of the frame's short side (large: crops keep it recognisable).
RADIUS_FRACTION = (0.22, 0.28)
# Stripe/check period as a fraction of the target radius (about four stripes across it).
PATTERN_PERIOD = 0.5
_SUPERSAMPLE = 4


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Membership test in unit coordinates (u right, v down, the shape fits in [-1, 1]^2)."""
  au, av = np.abs(u), np.abs(v)
  rho = np.hypot(u, v)
  if shape == "Disc":
    return rho <= 0.95
  if shape == "Square":
    return np.maximum(au, av) <= 0.78
  if shape == "Diamond":
    return au + av <= 1.05
  if shape == "Triangle":  # pointing up: flip-invariant
    return (v <= 0.75) & (au <= 0.55 * (v + 1.0))
  if shape == "Ring":
    return (rho <= 1.0) & (rho >= 0.55)
  if shape == "Cross":
    return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
  if shape == "Star":  # five points, one pointing up
    angle = np.mod(np.arctan2(u, -v), 2 * math.pi / 5) - math.pi / 5
    radius = 0.42 + 0.58 * (np.abs(angle) / (math.pi / 5)) ** 1.6
    return rho <= radius
  if shape == "Hourglass":  # two triangles tip to tip
    return (av <= 0.9) & (au <= 0.1 + 0.8 * av)
  raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _pattern(name: str, x: np.ndarray, y: np.ndarray, period: float) -> np.ndarray:
  """Fill in {0, 1} (1 = main colour) at object pixel coordinates (x right, y down)."""
  half_y, half_x = np.floor(y / (period / 2)), np.floor(x / (period / 2))
  if name == "solid":
    return np.ones_like(x)
  if name == "hstripes":
    return (half_y % 2 == 0).astype(np.float32)
  if name == "vstripes":
    return (half_x % 2 == 0).astype(np.float32)
  if name == "checks":
    return ((half_y + half_x) % 2 == 0).astype(np.float32)
  raise ValueError(f"unknown pattern {name!r}")


def sprite(shape: str, radius: float, tilt_deg: float = 0.0, pattern: str = "solid"
           ) -> tuple[np.ndarray, np.ndarray]:
  """Anti-aliased coverage and fill of a shape (float32 [h, w] in [0, 1]); radius in pixels."""
  half = int(math.ceil(radius)) + 1
  size = 2 * half + 1
  steps = (np.arange(size * _SUPERSAMPLE) + 0.5) / _SUPERSAMPLE - half - 0.5
  yy, xx = np.meshgrid(steps, steps, indexing="ij")
  c, s = math.cos(math.radians(tilt_deg)), math.sin(math.radians(tilt_deg))
  x, y = c * xx + s * yy, -s * xx + c * yy
  inside = _inside(shape, x / radius, y / radius).astype(np.float32)
  fill = _pattern(pattern, x, y, PATTERN_PERIOD * radius) * inside

  def pool(a: np.ndarray) -> np.ndarray:
    return a.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE).mean(axis=(1, 3))
  alpha = pool(inside)
  return alpha, pool(fill) / np.maximum(alpha, 1e-6)


def _blit(image: np.ndarray, alpha: np.ndarray, color: np.ndarray, cy: float, cx: float) -> None:
  """Alpha-composites a mask centred at (cy, cx), wrapping around the edges.

  `color` is one RGB colour [3] or one per mask pixel [h, w, 3].
  """
  height, width = image.shape[:2]
  h, w = alpha.shape
  ys = (int(round(cy)) - h // 2 + np.arange(h)) % height
  xs = (int(round(cx)) - w // 2 + np.arange(w)) % width
  index = np.ix_(ys, xs)
  a = alpha[..., None]
  image[index] = image[index] * (1.0 - a) + a * color


def _luma(rgb: np.ndarray) -> float:
  return float(rgb @ np.array([0.299, 0.587, 0.114]))


def _contrasting_color(rng: np.random.Generator, others: list[np.ndarray]) -> np.ndarray:
  """A random colour that stands out (luma and RGB distance) from each of `others`."""
  for _ in range(1000):
    color = rng.uniform(0.0, 1.0, 3)
    if all(abs(_luma(color) - _luma(o)) >= 0.25 and np.linalg.norm(color - o) >= 0.45
           for o in others):
      return color
  return np.where(others[0] > 0.5, 0.0, 1.0)  # not reached in practice; still deterministic


def _background(rng: np.random.Generator, height: int, width: int
                ) -> tuple[np.ndarray, np.ndarray]:
  """A low-contrast tileable texture (integer-frequency gratings wrap seamlessly on the torus).

  Returns the texture [height, width, 3] in [0, 1] and its base colour.
  """
  yy, xx = np.meshgrid(np.arange(height) / height, np.arange(width) / width, indexing="ij")
  texture = np.zeros((height, width))
  for _ in range(3):
    ky, kx = 0, 0
    while ky == 0 and kx == 0:
      ky, kx = rng.integers(-4, 5, size=2)
    phase = rng.uniform(0, 2 * math.pi)
    texture += rng.uniform(0.3, 1.0) * np.cos(2 * math.pi * (ky * yy + kx * xx) + phase)
  texture /= np.abs(texture).max() + 1e-6
  base = rng.uniform(0.15, 0.85, 3)
  tint = rng.normal(size=3)
  tint /= np.linalg.norm(tint) + 1e-6
  contrast = rng.uniform(0.04, 0.12)
  return np.clip(base + contrast * texture[..., None] * (0.5 + np.abs(tint)), 0, 1), base


@dataclasses.dataclass
class Scene:
  """Everything random about one video; `draw` turns it into frames. Velocities in pixels/frame."""
  height: int
  width: int
  background: np.ndarray        # [H, W, 3] tileable texture in [0, 1]
  background_velocity: tuple[float, float]
  alpha: np.ndarray             # target's coverage mask
  color: np.ndarray             # target's RGB colour per sprite pixel [h, w, 3]
  position: tuple[float, float]  # target's (y, x) at frame 0
  velocity: tuple[float, float]  # target's (vy, vx); vy < 0 is up
  distractors: list[tuple[np.ndarray, np.ndarray, float, float, float, float]]
  noise_std: float


def sample_scene(shape: str, motion: str, rng: np.random.Generator, height: int, width: int,
                 pass_frames: tuple[float, float] = PERIOD_FRAMES) -> Scene:
  """Draws one video's scene. All randomness comes from `rng`, in a fixed order.

  `pass_frames`: (min, max) stored frames the target takes to cross the frame height once,
  uniform per video: the motion's speed, and so how far it moves between sampled frames.
  """
  if shape not in SHAPES:
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
  if motion not in MOTIONS:
    raise ValueError(f"unknown motion {motion!r}; expected one of {MOTIONS}")
  background, base = _background(rng, height, width)
  bg_speed, bg_angle = rng.uniform(0.0, 0.5), rng.uniform(0, 2 * math.pi)

  radius = rng.uniform(*RADIUS_FRACTION) * min(height, width)
  alpha, fill = sprite(shape, radius, rng.uniform(-15.0, 15.0), PATTERNS[shape])
  main = _contrasting_color(rng, [base])
  second = _contrasting_color(rng, [base, main])  # the pattern's other colour
  color = fill[..., None] * main + (1 - fill[..., None]) * second
  speed = height / rng.uniform(*pass_frames)  # the same pixel speeds for every motion
  position = (rng.uniform(0, height), rng.uniform(0, width))  # uniform on the torus
  if motion == "Rising":
    velocity = (-speed, 0.0)
  elif motion == "Falling":
    velocity = (speed, 0.0)
  else:  # Sliding: left or right at random, so a horizontal flip keeps the label
    velocity = (0.0, speed * rng.choice([-1.0, 1.0]))

  distractors = []
  for _ in range(int(rng.integers(2, 5))):
    d_alpha = sprite("Disc", rng.uniform(1.2, 2.5))[0]
    d_color = rng.uniform(0.0, 1.0, 3)
    d_speed, d_angle = rng.uniform(0.2, 1.5), rng.uniform(0, 2 * math.pi)
    distractors.append((d_alpha, d_color, rng.uniform(0, height), rng.uniform(0, width),
                        d_speed * math.sin(d_angle), d_speed * math.cos(d_angle)))
  return Scene(height, width, background,
               (bg_speed * math.sin(bg_angle), bg_speed * math.cos(bg_angle)),
               alpha, color, position, velocity, distractors, rng.uniform(1.0, 5.0) / 255.0)


def draw(scene: Scene, num_frames: int, rng: np.random.Generator) -> np.ndarray:
  """Frames uint8 [num_frames, H, W, 3] (RGB) of a scene; `rng` only draws the pixel noise."""
  h, w = scene.height, scene.width
  noise = rng.standard_normal((num_frames, h, w, 3), dtype=np.float32) * scene.noise_std
  frames = np.empty((num_frames, h, w, 3), np.uint8)
  (bvy, bvx), (y0, x0), (vy, vx) = scene.background_velocity, scene.position, scene.velocity
  for t in range(num_frames):
    image = np.roll(scene.background, (int(round(t * bvy)), int(round(t * bvx))), axis=(0, 1))
    for d_alpha, d_color, dy, dx, dvy, dvx in scene.distractors:
      _blit(image, d_alpha, d_color, dy + t * dvy, dx + t * dvx)
    _blit(image, scene.alpha, scene.color, y0 + t * vy, x0 + t * vx)
    frames[t] = np.clip((image + noise[t]) * 255.0 + 0.5, 0, 255).astype(np.uint8)
  return frames


def render_video(shape: str, motion: str, rng: np.random.Generator, num_frames: int,
                 height: int, width: int, pass_frames: tuple[float, float] = PERIOD_FRAMES
                 ) -> np.ndarray:
  """Samples a scene and draws it: uint8 [num_frames, height, width, 3] (RGB).

  A seeded `rng` gives the same frames on every machine.
  """
  return draw(sample_scene(shape, motion, rng, height, width, pass_frames), num_frames, rng)
