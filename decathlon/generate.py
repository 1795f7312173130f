"""The generated suite: small synthetic stand-ins of the Decathlon and extra datasets, in the real format.

``generate_suite(out)`` writes

```
<out>/decathlon-1.0/annotations/<d>_{train,val,test,test_stripped}.json   COCO-style, real id scheme
<out>/decathlon-1.0/data/<d>/{train,val,test}/NNNNNN.jpg
<out>/decathlon-1.0/decathlon_mean_std.pickle                              protocol 2, computed from train
<out>/extra/<name>/{train,test}/<NNN.class>/NNNNN.jpg                         class-per-folder trees
<out>/suite.json                                                            generator parameters, written last
```

Every domain keeps the real folder name and id numbers, so the readers, the scorer and the submission
writer run unchanged on it. Each stand-in has its own visual character (digits, glyphs, textures, signs,
pedestrians, flowers, silhouettes, small objects, motion streaks) built from the low-level pieces of the
source domain (coloured shapes, edges, strokes, textures), so that transfer from ``imagenet12`` helps.
Classes are learnable but jittered (position, scale, rotation, colour, noise).

Determinism: every image draws from its own ``numpy`` generator seeded by (seed, domain, split, position),
so the same seed gives byte-identical files. The suite is built in a temporary folder inside ``out`` and
renamed into place; ``suite.json`` is written last and marks a complete suite.
"""

from __future__ import annotations

import colorsys
import json
import math
import pickle
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from decathlon.domains import (
    DECATHLON_COLUMNS,
    DECATHLON_DOMAINS,
    EXTRA_COLUMNS,
    MINI_EXTRA_COUNTS,
    MINI_IMAGE_SIZE,
    MINI_SOURCE_COUNTS,
    MINI_TARGET_COUNTS,
    DomainSpec,
    mini_domains,
    mini_split_counts,
)
from decathlon.errors import ConfigError, DataError
from decathlon.io import atomic_write_json

GENERATOR_VERSION = 3  # bump when the drawing code changes: a suite of an older version is regenerated
MARKER = "suite.json"  # in <out>; written last, holds the generator parameters
OWNED = ".generated"  # in each generated folder: the folder may be replaced by the generator

# The default suite's parameters are data in decathlon.domains (the specs exist without this module).
DEFAULT_IMAGE_SIZE = MINI_IMAGE_SIZE
DEFAULT_SOURCE_COUNTS = MINI_SOURCE_COUNTS
DEFAULT_TARGET_COUNTS = MINI_TARGET_COUNTS
DEFAULT_EXTRA_COUNTS = MINI_EXTRA_COUNTS
JPEG_QUALITY = 90
SS = 2  # supersampling: draw at SS x the final size, then box-downsample for anti-aliased edges

DECATHLON_SPLITS = ("train", "val", "test")
EXTRA_SPLITS = ("train", "test")


class SuitePaths(NamedTuple):
    """Where a generated suite lives."""

    decathlon_root: Path  # <out>/decathlon-1.0 (annotations/, data/, decathlon_mean_std.pickle)
    extra_root: Path  # <out>/extra (one class-per-folder tree per extra stand-in)


# --------------------------------------------------------------------------------------- drawing kit

Points = list[tuple[float, float]]


@dataclass(frozen=True)
class _Frame:
    """Similarity transform from unit coordinates ([-1, 1], y down) to canvas pixels."""

    cx: float
    cy: float
    r: float  # pixels per unit
    rot: float  # radians

    def __call__(self, pts: Points) -> Points:
        c, s = math.cos(self.rot), math.sin(self.rot)
        return [(self.cx + self.r * (c * x - s * y), self.cy + self.r * (s * x + c * y)) for x, y in pts]


def _frame(rng: np.random.Generator, w: int, h: int, scale=(0.75, 0.95), shift=0.12, rot=15.0) -> _Frame:
    """A jittered frame centred in the canvas: scale of the half-side, shift as a fraction, rot in degrees."""
    half = min(w, h) / 2
    return _Frame(
        cx=w / 2 + rng.uniform(-shift, shift) * w,
        cy=h / 2 + rng.uniform(-shift, shift) * h,
        r=half * rng.uniform(*scale),
        rot=math.radians(rng.uniform(-rot, rot)),
    )


def _ellipse(
    cx: float, cy: float, rx: float, ry: float, n: int = 28, a0: float = 0.0, a1: float = 2 * math.pi
) -> Points:
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in np.linspace(a0, a1, n)]


def _regular(n: int, r: float = 1.0, rot: float = -math.pi / 2, cx: float = 0.0, cy: float = 0.0) -> Points:
    return [
        (cx + r * math.cos(rot + 2 * math.pi * i / n), cy + r * math.sin(rot + 2 * math.pi * i / n))
        for i in range(n)
    ]


def _star(n: int, r1: float, r2: float) -> Points:
    return [
        (r * math.cos(-math.pi / 2 + math.pi * i / n), r * math.sin(-math.pi / 2 + math.pi * i / n))
        for i, r in zip(range(2 * n), [r1, r2] * n, strict=True)
    ]


def _rect(x0: float, y0: float, x1: float, y1: float) -> Points:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _jitter(rng: np.random.Generator, rgb: Sequence[int], amount: float = 25) -> tuple[int, int, int]:
    noise = rng.normal(0, amount, size=3)
    return tuple(int(min(max(c + n, 0.0), 255.0)) for c, n in zip(rgb, noise, strict=True))  # type: ignore


def _random_colour(rng: np.random.Generator, s=(0.4, 1.0), v=(0.3, 1.0)) -> tuple[int, int, int]:
    return _hsv(rng.uniform(), rng.uniform(*s), rng.uniform(*v))


def _smooth_noise(rng: np.random.Generator, w: int, h: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1], shape (h, w): a cells x cells random grid, bicubically upsampled."""
    grid = (rng.uniform(size=(cells, cells)) * 255).astype(np.uint8)
    up = Image.fromarray(grid).resize((w, h), Image.BICUBIC)
    return np.asarray(up, dtype=np.float32) / 255.0


def _mix(t: np.ndarray, c0: Sequence[int], c1: Sequence[int]) -> np.ndarray:
    """Colour map: t in [0, 1] (h, w) -> (h, w, 3) floats between colours c0 and c1."""
    t = np.clip(t, 0, 1)[..., None]
    return (1 - t) * np.asarray(c0, np.float32) + t * np.asarray(c1, np.float32)


def _background(
    rng: np.random.Generator, w: int, h: int, c0=None, c1=None, kind: str | None = None
) -> Image.Image:
    """A textured background: solid, gradient, blotches or stripes between two colours."""
    c0 = c0 or _random_colour(rng)
    c1 = c1 or _jitter(rng, c0, 60)
    kind = kind or ("solid", "gradient", "blotch", "stripes")[int(rng.integers(4))]
    if kind == "solid":
        return Image.new("RGB", (w, h), tuple((a + b) // 2 for a, b in zip(c0, c1, strict=True)))
    yy, xx = np.ogrid[0:h, 0:w]  # broadcast (h, 1) and (1, w): cheaper than a full grid
    if kind == "gradient":
        a = rng.uniform(0, 2 * math.pi)
        t = (math.cos(a) * xx + math.sin(a) * yy) / max(w, h) + 0.5
    elif kind == "blotch":
        t = _smooth_noise(rng, w, h, int(rng.integers(3, 7)))
    else:
        a, f = rng.uniform(0, math.pi), rng.uniform(3, 8) * 2 * math.pi / max(w, h)
        t = 0.5 + 0.5 * np.sin(f * (math.cos(a) * xx + math.sin(a) * yy) + rng.uniform(0, 6.3))
    return Image.fromarray(_mix(t, c0, c1).astype(np.uint8), "RGB")


def _finish(
    canvas: Image.Image, w: int, h: int, rng: np.random.Generator, noise: float = 6.0, mode: str = "RGB"
) -> Image.Image:
    """Downsample the supersampled canvas to (w, h), add Gaussian pixel noise (sd in 0-255 units)."""
    img = canvas.convert(mode).resize((w, h), Image.BOX)
    a = np.asarray(img, dtype=np.float32)
    a = a + rng.normal(0, noise, size=a.shape)
    return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8), mode)


def _class_colour(rng: np.random.Generator, k: int, p: float) -> tuple[int, int, int]:
    """With probability p a saturated colour near the class's own hue (k / 10), else any colour."""
    hue = k / 10 + rng.normal(0, 0.03) if rng.uniform() < p else rng.uniform()
    return _hsv(hue, rng.uniform(0.6, 1.0), rng.uniform(0.5, 1.0))


def _chaikin(pts: Points, rounds: int = 2) -> Points:
    """Corner-cutting smoothing of an open polyline (strokes look hand-drawn)."""
    for _ in range(rounds):
        out = [pts[0]]
        for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:], strict=True):
            out += [
                (0.75 * x0 + 0.25 * x1, 0.75 * y0 + 0.25 * y1),
                (0.25 * x0 + 0.75 * x1, 0.25 * y0 + 0.75 * y1),
            ]
        pts = out + [pts[-1]]
    return pts


def _wobble(rng: np.random.Generator, pts: Points, sd: float) -> Points:
    return [(x + rng.normal(0, sd), y + rng.normal(0, sd)) for x, y in pts]


def _line(draw: ImageDraw.ImageDraw, pts: Points, fill, width: float) -> None:
    draw.line(pts, fill=fill, width=max(1, int(round(width))), joint="curve")


# Digits as polylines on a 2 x 4 grid (x 0..2, y 0..4); a list of strokes per digit. Drawn, not typeset,
# so the images do not depend on the fonts installed.
_DIGITS: tuple[tuple[Points, ...], ...] = (
    ([(1, 0), (0.2, 0.6), (0, 2), (0.2, 3.4), (1, 4), (1.8, 3.4), (2, 2), (1.8, 0.6), (1, 0)],),
    ([(0.5, 0.8), (1.2, 0), (1.2, 4)], [(0.5, 4), (1.9, 4)]),
    ([(0.1, 0.8), (0.7, 0), (1.5, 0), (2, 0.7), (1.9, 1.6), (0, 4), (2, 4)],),
    ([(0.1, 0.3), (1.8, 0), (0.9, 1.8), (1.9, 2.5), (1.9, 3.4), (1.2, 4), (0, 3.8)],),
    ([(1.5, 4), (1.5, 0), (0, 2.8), (2, 2.8)],),
    ([(1.9, 0), (0.2, 0), (0, 1.8), (1.3, 1.7), (2, 2.5), (1.9, 3.5), (1.1, 4), (0, 3.7)],),
    ([(1.8, 0.1), (0.6, 0.6), (0, 2.2), (0.2, 3.5), (1, 4), (1.8, 3.5), (1.9, 2.6), (1.2, 2), (0.4, 2.2),
      (0, 2.8)],),
    ([(0, 0), (2, 0), (0.8, 4)],),
    ([(1, 2), (0.2, 1.4), (0.3, 0.5), (1, 0), (1.7, 0.5), (1.8, 1.4), (1, 2), (0.1, 2.7), (0.2, 3.5),
      (1, 4), (1.8, 3.5), (1.9, 2.7), (1, 2)],),
    ([(0.3, 4), (1.4, 3.4), (2, 2), (1.9, 0.6), (1.2, 0), (0.5, 0.1), (0, 0.8), (0.2, 1.6), (0.9, 2),
      (2, 1.7)],),
)


def _digit_strokes(digit: int, x0: float, y0: float, scale: float) -> list[Points]:
    """Digit strokes placed with top-left (x0, y0) in unit coordinates; `scale` units per grid step."""
    return [[(x0 + scale * x, y0 + scale * y) for x, y in stroke] for stroke in _DIGITS[digit]]


# Objects as lists of parts (kind, points, role): kind "poly" (filled) or "line" (stroke of width
# part[3]); role picks the colour: "main", "accent" or "dark". Shared by cifar100 (filled, coloured)
# and sketches (outlines).
def _objects() -> dict[str, list[tuple]]:
    return {
        "ball": [
            ("poly", _ellipse(0, 0, 0.8, 0.8), "main"),
            ("poly", _ellipse(-0.3, -0.3, 0.2, 0.15), "accent"),
        ],
        "tree": [
            ("poly", _rect(-0.12, 0.2, 0.12, 0.95), "dark"),
            ("poly", _ellipse(0, -0.25, 0.6, 0.55), "main"),
        ],
        "house": [
            ("poly", _rect(-0.6, -0.1, 0.6, 0.9), "main"),
            ("poly", [(-0.8, -0.1), (0, -0.8), (0.8, -0.1)], "accent"),
            ("poly", _rect(-0.15, 0.4, 0.15, 0.9), "dark"),
        ],
        "car": [
            ("poly", [(-0.5, 0.1), (-0.3, -0.3), (0.35, -0.3), (0.55, 0.1)], "main"),
            ("poly", _rect(-0.95, 0.1, 0.95, 0.5), "main"),
            ("poly", _ellipse(-0.55, 0.55, 0.2, 0.2), "dark"),
            ("poly", _ellipse(0.55, 0.55, 0.2, 0.2), "dark"),
        ],
        "fish": [
            ("poly", _ellipse(-0.1, 0, 0.6, 0.35), "main"),
            ("poly", [(0.4, 0), (0.9, -0.4), (0.9, 0.4)], "accent"),
            ("poly", _ellipse(-0.4, -0.08, 0.07, 0.07), "dark"),
        ],
        "cup": [
            ("poly", [(-0.5, -0.6), (0.5, -0.6), (0.4, 0.7), (-0.4, 0.7)], "main"),
            ("line", _ellipse(0.55, 0.0, 0.3, 0.3, 16, -math.pi / 2, math.pi / 2), "accent", 0.12),
        ],
        "mushroom": [
            ("poly", _ellipse(0, 0, 0.8, 0.6, 20, math.pi, 2 * math.pi), "main"),
            ("poly", _rect(-0.18, 0, 0.18, 0.8), "accent"),
        ],
        "boat": [
            ("poly", [(-0.8, 0.3), (0.8, 0.3), (0.55, 0.65), (-0.55, 0.65)], "dark"),
            ("line", [(0.0, -0.85), (0.0, 0.3)], "dark", 0.06),
            ("poly", [(0.05, -0.8), (0.05, 0.25), (0.6, 0.25)], "main"),
        ],
        "bird": [
            ("poly", _ellipse(0, 0.1, 0.5, 0.3), "main"),
            ("poly", _ellipse(0.5, -0.25, 0.2, 0.2), "main"),
            ("poly", [(0.68, -0.3), (0.95, -0.2), (0.68, -0.15)], "accent"),
            ("poly", [(-0.45, 0.05), (-0.95, -0.2), (-0.9, 0.25)], "dark"),
        ],
        "bottle": [
            ("poly", _rect(-0.3, -0.1, 0.3, 0.85), "main"),
            ("poly", _rect(-0.1, -0.7, 0.1, -0.1), "main"),
            ("poly", _rect(-0.12, -0.85, 0.12, -0.7), "accent"),
        ],
        "star": [("poly", _star(5, 0.9, 0.4), "main")],
        "face": [
            ("poly", _ellipse(0, 0, 0.8, 0.85), "main"),
            ("poly", _ellipse(-0.3, -0.2, 0.1, 0.1), "dark"),
            ("poly", _ellipse(0.3, -0.2, 0.1, 0.1), "dark"),
            ("line", _ellipse(0, 0.15, 0.4, 0.35, 12, 0.3, math.pi - 0.3), "dark", 0.08),
        ],
        "umbrella": [
            ("poly", _ellipse(0, 0, 0.9, 0.6, 20, math.pi, 2 * math.pi), "main"),
            ("line", [(0, 0), (0, 0.75), (-0.1, 0.9), (-0.25, 0.8)], "dark", 0.08),
        ],
        "spiral": [
            (
                "line",
                [(0.08 * a * math.cos(a), 0.08 * a * math.sin(a)) for a in np.linspace(0, 11, 40)],
                "main",
                0.1,
            )
        ],
        "ladder": [
            ("line", [(-0.4, -0.9), (-0.4, 0.9)], "main", 0.1),
            ("line", [(0.4, -0.9), (0.4, 0.9)], "main", 0.1),
        ]
        + [("line", [(-0.4, y), (0.4, y)], "main", 0.08) for y in (-0.6, -0.2, 0.2, 0.6)],
    }


_OBJECTS = _objects()


# --------------------------------------------------------------------------------------- domains
# A drawer maps (rng, class index, class prototype, width, height) to the final image.
Drawer = Callable[[np.random.Generator, int, Any, int, int], Image.Image]

_SHAPES: tuple[Points, ...] = (
    _ellipse(0, 0, 0.8, 0.8),
    _rect(-0.7, -0.7, 0.7, 0.7),
    _regular(3, 0.9),
    _star(5, 0.9, 0.4),
    [
        (-0.25, -0.85),
        (0.25, -0.85),
        (0.25, -0.25),
        (0.85, -0.25),
        (0.85, 0.25),
        (0.25, 0.25),
        (0.25, 0.85),
        (-0.25, 0.85),
        (-0.25, 0.25),
        (-0.85, 0.25),
        (-0.85, -0.25),
        (-0.25, -0.25),
    ],
    _regular(6, 0.85),
    _regular(4, 0.9, 0.0),
    _ellipse(0, 0, 0.9, 0.45),
    [(-0.9, -0.2), (0.2, -0.2), (0.2, -0.6), (0.9, 0), (0.2, 0.6), (0.2, 0.2), (-0.9, 0.2)],
    _star(8, 0.9, 0.6),
)


def _draw_imagenet(rng, k, proto, w, h):
    # 20 classes: 10 shapes, each plain (k < 10) or as a composite with an inner shape and a satellite.
    W, H = w * SS, h * SS
    img = _background(rng, W, H)
    draw = ImageDraw.Draw(img)
    f = _frame(rng, W, H, scale=(0.55, 0.85), rot=25)
    colour = _hsv(proto + rng.normal(0, 0.05), rng.uniform(0.5, 1), rng.uniform(0.5, 1))
    shape = _SHAPES[k % 10]
    draw.polygon(f(shape), fill=colour, outline=_jitter(rng, (20, 20, 20), 10))
    if k >= 10:
        second = _SHAPES[(k + 3) % 10]
        draw.polygon(f([(0.45 * x, 0.45 * y) for x, y in second]), fill=_jitter(rng, (240, 240, 240), 15))
        draw.polygon(f([(0.85 + 0.25 * x, -0.85 + 0.25 * y) for x, y in second]), fill=_random_colour(rng))
    return _finish(img, w, h, rng, noise=8)


def _draw_svhn(rng, k, proto, w, h):
    # a centred digit with partly visible neighbours, like house-number crops
    W, H = w * SS, h * SS
    bg = _random_colour(rng, s=(0.1, 0.6), v=(0.3, 0.9))
    ink = (20, 20, 20) if sum(bg) > 380 else (235, 235, 235)
    img = _background(rng, W, H, bg, _jitter(rng, bg, 30), kind=("solid", "gradient")[int(rng.integers(2))])
    draw = ImageDraw.Draw(img)
    f = _frame(rng, W, H, scale=(0.8, 1.0), shift=0.06, rot=8)
    shear = rng.uniform(-0.15, 0.05)
    gap = rng.uniform(1.4, 1.8)
    for digit, dx in ((int(rng.integers(10)), -2 * gap), (k, 0.0), (int(rng.integers(10)), 2 * gap)):
        for stroke in _digit_strokes(digit, -0.45 + dx * 0.45, -0.9, 0.45):
            pts = [(x + shear * y, y) for x, y in _wobble(rng, stroke, 0.03)]
            _line(draw, f(pts), _jitter(rng, ink, 20), f.r * rng.uniform(0.14, 0.22))
    return _finish(img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2))), w, h, rng, noise=7)


def _omniglot_proto(rng: np.random.Generator) -> list[Points]:
    strokes = []
    for _ in range(int(rng.integers(2, 4))):
        n = int(rng.integers(3, 6))
        start = rng.uniform(-0.7, 0.7, size=2)
        steps = rng.normal(0, 0.45, size=(n - 1, 2))
        pts = np.clip(np.vstack([start, start + np.cumsum(steps, axis=0)]), -0.8, 0.8)
        strokes.append([tuple(p) for p in pts])
    return strokes


def _draw_omniglot(rng, k, proto, w, h):
    # white strokes on black, as in the real Decathlon omniglot (mean 0.08)
    W, H = w * SS, h * SS
    img = Image.new("L", (W, H), 0)
    draw = ImageDraw.Draw(img)
    f = _frame(rng, W, H, scale=(0.7, 0.95), shift=0.08, rot=15)
    width = f.r * rng.uniform(0.07, 0.12)
    for stroke in proto:
        _line(draw, f(_chaikin(_wobble(rng, stroke, 0.08))), 255, width)
    return _finish(img, w, h, rng, noise=3, mode="L")


def _draw_dtd(rng, k, proto, w, h):
    # ten texture families; orientation, frequency, phase and colours vary per image
    W, H = w * SS, h * SS
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32) / max(W, H)
    a = rng.uniform(0, math.pi)
    u, v = math.cos(a) * xx + math.sin(a) * yy, -math.sin(a) * xx + math.cos(a) * yy
    f = rng.uniform(4, 7) * 2 * math.pi
    ph = rng.uniform(0, 2 * math.pi)
    if k == 0:  # stripes
        t = 0.5 + 0.5 * np.sin(f * u + ph)
    elif k == 1:  # checkerboard
        t = (np.sin(f * u / 1.5 + ph) * np.sin(f * v / 1.5) > 0).astype(np.float32)
    elif k == 2:  # dots
        t = ((np.cos(f * u + ph) + np.cos(f * v)) > 1.2).astype(np.float32)
    elif k == 3:  # concentric rings
        cx, cy = rng.uniform(0.2, 0.8, size=2)
        t = 0.5 + 0.5 * np.sin(f * 1.3 * np.hypot(xx - cx, yy - cy) + ph)
    elif k == 4:  # zigzag
        saw = np.abs(((v * f / math.pi) % 2) - 1)
        t = 0.5 + 0.5 * np.sin(f * u + 3 * saw + ph)
    elif k == 5:  # crosshatch
        t = np.maximum(np.sin(f * (u + v) + ph), np.sin(f * (u - v))) > 0.7
        t = t.astype(np.float32)
    elif k == 6:  # blotches
        t = (_smooth_noise(rng, W, H, int(rng.integers(5, 9))) > 0.5).astype(np.float32)
    elif k == 7:  # speckle
        t = rng.uniform(size=(H, W)).astype(np.float32)
    elif k == 8:  # wavy stripes
        t = 0.5 + 0.5 * np.sin(f * u + 2.5 * np.sin(f * 0.5 * v) + ph)
    else:  # swirl
        cx, cy = rng.uniform(0.3, 0.7, size=2)
        t = 0.5 + 0.5 * np.sin(5 * np.arctan2(yy - cy, xx - cx) + f * np.hypot(xx - cx, yy - cy) + ph)
    c0 = _random_colour(rng)
    c1 = _jitter(rng, (255 - c0[0], 255 - c0[1], 255 - c0[2]), 50)
    img = Image.fromarray(_mix(t, c0, c1).astype(np.uint8), "RGB")
    return _finish(img, w, h, rng, noise=8)


_RED, _BLUE, _WHITE, _BLACK, _YELLOW = (
    (200, 30, 30),
    (30, 60, 190),
    (240, 240, 240),
    (20, 20, 20),
    (240, 200, 20),
)
# gtsrb classes: (outline shape, border colour, fill colour, symbol, symbol colour)
_SIGNS = (
    ("circle", _RED, _RED, "bar", _WHITE),
    ("circle", _RED, _WHITE, 3, _BLACK),
    ("circle", _RED, _WHITE, 8, _BLACK),
    ("triangle", _RED, _WHITE, "exclaim", _BLACK),
    ("triangle", _RED, _WHITE, "up", _BLACK),
    ("octagon", _WHITE, _RED, "bar", _WHITE),
    ("circle", _BLUE, _BLUE, "right", _WHITE),
    ("circle", _BLUE, _BLUE, "left", _WHITE),
    ("diamond", _WHITE, _YELLOW, None, None),
    ("yield", _RED, _WHITE, None, None),
)


def _draw_gtsrb(rng, k, proto, w, h):
    W, H = w * SS, h * SS
    img = _background(rng, W, H, _random_colour(rng, s=(0.1, 0.5), v=(0.2, 0.7)), kind="blotch")
    draw = ImageDraw.Draw(img)
    f = _frame(rng, W, H, scale=(0.6, 0.85), shift=0.07, rot=8)
    shape, border, fill, symbol, ink = _SIGNS[k]
    outline = {
        "circle": _ellipse(0, 0, 1, 1),
        "triangle": _regular(3, 1.1, -math.pi / 2, 0, 0.15),
        "octagon": _regular(8, 1, math.pi / 8),
        "diamond": _regular(4, 1, 0),
        "yield": _regular(3, 1.1, math.pi / 2, 0, -0.15),
    }[shape]
    draw.polygon(f(outline), fill=_jitter(rng, border, 15))
    draw.polygon(f([(0.75 * x, 0.75 * y) for x, y in outline]), fill=_jitter(rng, fill, 15))
    if symbol == "bar":
        draw.polygon(f(_rect(-0.55, -0.15, 0.55, 0.15)), fill=ink)
    elif isinstance(symbol, int):
        for stroke in _digit_strokes(symbol, -0.3, -0.55, 0.28):
            _line(draw, f(stroke), ink, f.r * 0.12)
    elif symbol == "exclaim":
        draw.polygon(f(_rect(-0.07, -0.3, 0.07, 0.25)), fill=ink)
        draw.polygon(f(_ellipse(0, 0.42, 0.08, 0.08)), fill=ink)
    elif symbol in ("up", "left", "right"):
        arrow = [(-0.1, 0.5), (-0.1, -0.1), (-0.3, -0.1), (0, -0.5), (0.3, -0.1), (0.1, -0.1), (0.1, 0.5)]
        turn = {"up": 0, "right": math.pi / 2, "left": -math.pi / 2}[symbol]
        c, s = math.cos(turn), math.sin(turn)
        draw.polygon(f([(c * x - s * y, s * x + c * y) for x, y in arrow]), fill=ink)
    img = Image.fromarray(
        (np.asarray(img, np.float32) * rng.uniform(0.45, 1.15)).clip(0, 255).astype(np.uint8)
    )
    return _finish(img.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 1.0))), w, h, rng, noise=6)


def _draw_daimler(rng, k, proto, w, h):
    # 0 = no pedestrian (clutter, poles: hard negatives), 1 = pedestrian; grayscale, twice as high as wide
    W, H = w * SS, h * SS
    t = 0.6 * _smooth_noise(rng, W, H, int(rng.integers(3, 6))) + 0.4 * np.linspace(0, 1, H)[:, None]
    g0 = rng.uniform(40, 200)
    img = Image.fromarray(np.clip(g0 + 70 * (t - 0.5), 0, 255).astype(np.uint8), "L")
    draw = ImageDraw.Draw(img)
    tone = int(np.clip(g0 + rng.choice([-1, 1]) * rng.uniform(40, 90), 0, 255))
    cx, s = W / 2 + rng.uniform(-0.08, 0.08) * W, H * rng.uniform(0.38, 0.46)  # s: half the body height
    top = H / 2 - s + rng.uniform(-0.04, 0.04) * H
    if k == 1:
        stride, arm = rng.uniform(0.0, 0.35), rng.uniform(0.05, 0.3)
        u = s / 4  # body proportions in quarter-heights
        draw.ellipse([cx - 0.32 * u, top, cx + 0.32 * u, top + 0.75 * u], fill=tone)
        draw.polygon(
            [
                (cx - 0.45 * u, top + 0.8 * u),
                (cx + 0.45 * u, top + 0.8 * u),
                (cx + 0.38 * u, top + 4.2 * u),
                (cx - 0.38 * u, top + 4.2 * u),
            ],
            fill=tone,
        )
        for side in (-1, 1):
            _line(
                draw,
                [(cx + side * 0.3 * u, top + 4 * u), (cx + side * stride * 4 * u, top + 8 * u)],
                tone,
                0.35 * u,
            )
            _line(
                draw,
                [(cx + side * 0.45 * u, top + u), (cx + side * (0.5 + arm * 3) * u, top + 3.3 * u)],
                tone,
                0.25 * u,
            )
    else:
        for _ in range(int(rng.integers(1, 4))):
            kind = int(rng.integers(3))
            x = rng.uniform(0.1, 0.9) * W
            shade = int(np.clip(g0 + rng.normal(0, 70), 0, 255))
            if kind == 0:  # pole, sometimes with a sign on top
                _line(draw, [(x, rng.uniform(0, 0.3) * H), (x, H)], shade, rng.uniform(0.05, 0.15) * W)
                if rng.uniform() < 0.5:
                    draw.ellipse([x - 0.15 * W, 0.15 * H, x + 0.15 * W, 0.3 * H], fill=shade)
            elif kind == 1:  # box (car, wall)
                y = rng.uniform(0.3, 0.8) * H
                draw.rectangle(
                    [x - rng.uniform(0.1, 0.4) * W, y, x + rng.uniform(0.1, 0.4) * W, H], fill=shade
                )
            else:  # blob (bush, tree)
                y, r = rng.uniform(0.2, 0.8) * H, rng.uniform(0.15, 0.35) * W
                draw.ellipse([x - r, y - 1.5 * r, x + r, y + 1.5 * r], fill=shade)
    return _finish(img.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.2))), w, h, rng, noise=9, mode="L")


# flower classes: (petal count, hue of the petals); pointy petals for odd class indices
_FLOWERS = (
    (5, 0.14),
    (5, 0.83),
    (6, 0.0),
    (6, 0.62),
    (8, 0.12),
    (8, 0.9),
    (12, 0.16),
    (12, 0.75),
    (4, 0.05),
    (3, 0.55),
)
_FLOWERS_EXTRA = (
    (3, 0.95),
    (4, 0.7),
    (5, 0.08),
    (6, 0.3),
    (7, 0.5),
    (7, 0.15),
    (9, 0.85),
    (10, 0.6),
    (14, 0.02),
    (16, 0.12),
)


def _draw_flower(rng, k, proto, w, h, table=_FLOWERS):
    W, H = w * SS, h * SS
    img = _background(
        rng,
        W,
        H,
        _hsv(0.3 + rng.normal(0, 0.05), 0.6, rng.uniform(0.2, 0.5)),
        _hsv(0.25, 0.5, rng.uniform(0.3, 0.7)),
        kind="blotch",
    )
    draw = ImageDraw.Draw(img)
    f = _frame(rng, W, H, scale=(0.7, 1.0), shift=0.1, rot=180)
    n, hue = table[k]
    colour = _hsv(hue + rng.normal(0, 0.03), rng.uniform(0.6, 1), rng.uniform(0.7, 1))
    pointy = k % 2 == 1
    for i in range(n):
        a = 2 * math.pi * i / n
        c, s = math.cos(a), math.sin(a)
        if pointy:
            petal = [(0.15, -0.12), (0.95, 0), (0.15, 0.12)]
        else:
            petal = _ellipse(0.55, 0, 0.42, min(0.3, 2.2 / n), 14)
        draw.polygon(
            f([(c * x - s * y, s * x + c * y) for x, y in petal]),
            fill=_jitter(rng, colour, 12),
            outline=_jitter(rng, colour, 40),
        )
    centre = _hsv(0.1, 0.8, rng.uniform(0.2, 0.6)) if k % 3 else _hsv(0.15, 0.9, 0.95)
    draw.polygon(f(_ellipse(0, 0, 0.2, 0.2, 16)), fill=centre)
    return _finish(img, w, h, rng, noise=6)


# aircraft classes (top view): (fuselage half-length, wing span, sweep, wing position, tail span, engines)
_PLANES = (
    (0.9, 0.9, 0.3, 0.0, 0.35, 2),
    (0.9, 0.9, 0.0, 0.0, 0.35, 2),
    (0.95, 0.6, 0.6, 0.1, 0.3, 0),
    (0.7, 1.0, 0.1, -0.1, 0.4, 4),
    (0.95, 1.0, 0.35, 0.0, 0.35, 4),
    (0.6, 0.95, 0.0, -0.2, 0.3, 0),
    (0.95, 0.5, 0.9, 0.3, 0.0, 0),
    (0.8, 0.75, 0.25, 0.05, 0.45, 2),
    (0.9, 0.8, 0.45, 0.1, 0.25, 3),
    (0.5, 0.7, 0.0, 0.0, 0.25, 1),
)


def _draw_aircraft(rng, k, proto, w, h):
    W, H = w * SS, h * SS
    sky = _hsv(0.58 + rng.normal(0, 0.03), rng.uniform(0.1, 0.6), rng.uniform(0.6, 0.95))
    img = _background(
        rng, W, H, sky, _jitter(rng, (235, 235, 240), 15), kind=("gradient", "blotch")[int(rng.integers(2))]
    )
    draw = ImageDraw.Draw(img)
    f = _frame(rng, W, H, scale=(0.8, 1.0), shift=0.08, rot=15)
    f = _Frame(f.cx, f.cy, f.r, f.rot + math.pi / 2 * rng.choice([-1, 1]))  # nose left or right
    length, span, sweep, pos, tail, engines = _PLANES[k]
    grey = _jitter(rng, (90, 90, 100), 35)
    livery = _class_colour(rng, k, 0.6)  # the tail colour: often typical of the model's operators
    draw.polygon(f(_ellipse(0, 0, 0.09, length, 20)), fill=grey)
    root, tip = pos - 0.15, pos + sweep * span
    for side in (-1, 1):
        draw.polygon(
            f([(0, root), (side * span, tip), (side * span, tip + 0.12), (0, root + 0.35)]), fill=grey
        )
        if tail:
            t0 = length - 0.25
            draw.polygon(
                f(
                    [
                        (0, t0),
                        (side * tail, t0 + 0.15 + sweep * 0.2),
                        (side * tail, t0 + 0.25),
                        (0, t0 + 0.22),
                    ]
                ),
                fill=livery,
            )
    for i in range(engines):
        x = (0.35 + 0.3 * (i // 2)) * span * (1 if i % 2 == 0 else -1)
        if engines == 1:
            x = 0.0
        y = root + 0.05 + abs(x) * sweep
        draw.polygon(f(_ellipse(x, y, 0.06, 0.14, 12)), fill=_jitter(rng, (40, 40, 45), 10))
    return _finish(img, w, h, rng, noise=5)


_CIFAR_OBJECTS = ("ball", "tree", "house", "car", "fish", "cup", "mushroom", "boat", "bird", "bottle")


def _draw_cifar(rng, k, proto, w, h):
    W, H = w * SS, h * SS
    img = _background(rng, W, H, _random_colour(rng, s=(0.05, 0.5), v=(0.2, 0.9)))
    draw = ImageDraw.Draw(img)
    f = _frame(rng, W, H, scale=(0.6, 0.9), shift=0.1, rot=15)
    colours = {
        # objects of a class usually share a hue (trees green, ...), sometimes not
        "main": _class_colour(rng, k, 0.7),
        "accent": _random_colour(rng),
        "dark": _jitter(rng, (50, 40, 30), 20),
    }
    for part in _OBJECTS[_CIFAR_OBJECTS[k]]:
        if part[0] == "poly":
            draw.polygon(f(part[1]), fill=colours[part[2]])
        else:
            _line(draw, f(part[1]), colours[part[2]], part[3] * f.r)
    return _finish(img, w, h, rng, noise=8)


def _trajectory(k: int, t: float, rng_phase: float) -> tuple[float, float, float]:
    """Position (x, y in unit coordinates) and size of the moving blob at time t in [0, 1] for class k."""
    if k == 0:
        return -0.7 + 1.4 * t, 0.0, 0.25  # horizontal
    if k == 1:
        return 0.0, -0.7 + 1.4 * t, 0.25  # falling
    if k == 2:
        return -0.6 + 1.2 * t, -0.6 + 1.2 * t, 0.25  # diagonal
    if k == 3:
        a = rng_phase + 2 * math.pi * 0.8 * t
        return 0.55 * math.cos(a), 0.55 * math.sin(a), 0.22  # circling
    if k == 4:
        return 0.0, 0.0, 0.1 + 0.6 * t  # zoom
    if k == 5:
        return -0.7 + 1.4 * t, 0.5 - 2.4 * t * (1 - t) * 1.2, 0.22  # jump
    if k == 6:
        return 0.6 * math.sin(4 * math.pi * t + rng_phase), 0.0, 0.25  # oscillation
    if k == 7:
        return 0.0, 0.6 * math.sin(4 * math.pi * t + rng_phase), 0.25  # bouncing
    if k == 8:
        return 0.7 * math.cos(math.pi * t), 0.4 * math.sin(2 * math.pi * t), 0.2  # figure of eight
    return (
        0.25 * math.cos(rng_phase + 9 * t),
        0.25 * math.sin(rng_phase + 9 * t),
        0.35 * (1 - t) + 0.1,
    )  # spin


def _draw_ucf(rng, k, proto, w, h):
    # dynamic-image-like: the moving blob stamped at several times, later stamps weigh more
    W, H = w * SS, h * SS
    base = rng.uniform(100, 150)
    acc = np.zeros((H, W), np.float32)
    f = _frame(rng, W, H, scale=(0.8, 1.0), shift=0.08, rot=20)
    phase = rng.uniform(0, 2 * math.pi)
    steps = 7
    for i in range(steps):
        x, y, r = _trajectory(k, i / (steps - 1), phase)
        stamp = Image.new("L", (W, H), 0)
        ImageDraw.Draw(stamp).polygon(f(_ellipse(x, y, r * 0.7, r, 16)), fill=255)
        acc += (i + 1) / steps * np.asarray(stamp, np.float32) / 255.0
    t = acc / acc.max() if acc.max() > 0 else acc
    tint = _hsv(rng.uniform(), rng.uniform(0, 0.3), 1.0)
    sign = rng.choice([-1.0, 1.0])  # bright or dark movers
    rgb = base + sign * np.asarray(tint, np.float32) / 255.0 * 100 * t[..., None]
    rgb += 15 * (_smooth_noise(rng, W, H, 4)[..., None] - 0.5)
    return _finish(Image.fromarray(rgb.clip(0, 255).astype(np.uint8), "RGB"), w, h, rng, noise=4)


# cubs classes: (body hue, head hue, wing hue, value of the body)
_BIRDS = (
    (0.0, 0.0, 0.0, 0.8),
    (0.6, 0.6, 0.0, 0.8),
    (0.15, 0.0, 0.15, 0.9),
    (0.08, 0.08, 0.6, 0.5),
    (0.33, 0.0, 0.33, 0.6),
    (0.6, 0.15, 0.6, 0.9),
    (0.0, 0.6, 0.08, 0.3),
    (0.08, 0.0, 0.0, 0.9),
    (0.75, 0.75, 0.15, 0.6),
    (0.5, 0.08, 0.5, 0.7),
)


def _draw_cub(rng, k, proto, w, h):
    W, H = w * SS, h * SS
    img = _background(
        rng,
        W,
        H,
        _hsv(0.28, 0.5, rng.uniform(0.3, 0.6)),
        _hsv(0.08, 0.5, rng.uniform(0.3, 0.7)),
        kind="blotch",
    )
    draw = ImageDraw.Draw(img)
    _line(draw, [(0, H * rng.uniform(0.7, 0.85)), (W, H * rng.uniform(0.7, 0.85))], (90, 60, 30), H * 0.05)
    f = _frame(rng, W, H, scale=(0.6, 0.85), shift=0.1, rot=15)
    body, head, wing, value = _BIRDS[k]
    c = {
        "body": _hsv(body + rng.normal(0, 0.04), rng.uniform(0.5, 0.9), value * rng.uniform(0.7, 1.1)),
        "head": _hsv(
            head + rng.normal(0, 0.04), rng.uniform(0.5, 0.9), (0.8 if k % 2 else 0.3) * rng.uniform(0.7, 1.2)
        ),
        "wing": _hsv(wing + rng.normal(0, 0.04), rng.uniform(0.4, 0.8), rng.uniform(0.3, 0.6)),
    }
    draw.polygon(f([(-0.45, 0.05), (-0.95, -0.2), (-0.9, 0.25)]), fill=c["wing"])
    draw.polygon(f(_ellipse(0, 0.1, 0.5, 0.32)), fill=c["body"])
    draw.polygon(f(_ellipse(-0.05, 0.05, 0.35, 0.16)), fill=c["wing"])
    draw.polygon(f(_ellipse(0.48, -0.25, 0.2, 0.2)), fill=c["head"])
    draw.polygon(f([(0.64, -0.3), (0.64 + 0.15 + 0.1 * (k % 3), -0.22), (0.64, -0.16)]), fill=(60, 50, 30))
    return _finish(img, w, h, rng, noise=6)


# stanford-cars classes: (body type, big wheels)
_CARS = tuple((body, big) for body in ("sedan", "hatch", "suv", "pickup", "van") for big in (False, True))


def _draw_car(rng, k, proto, w, h):
    W, H = w * SS, h * SS
    img = _background(
        rng, W, H, _jitter(rng, (170, 175, 185), 30), _jitter(rng, (90, 90, 90), 20), kind="gradient"
    )
    draw = ImageDraw.Draw(img)
    f = _frame(rng, W, H, scale=(0.85, 1.0), shift=0.05, rot=4)
    body, big = _CARS[k]
    sign = rng.choice([-1, 1])  # facing left or right
    roof = {
        "sedan": [(-0.5, 0.0), (-0.25, -0.35), (0.3, -0.35), (0.6, 0.0)],
        "hatch": [(-0.55, 0.0), (-0.3, -0.4), (0.55, -0.4), (0.7, 0.0)],
        "suv": [(-0.7, 0.0), (-0.55, -0.5), (0.8, -0.5), (0.85, 0.0)],
        "pickup": [(-0.75, 0.0), (-0.6, -0.45), (-0.1, -0.45), (0.0, 0.0)],
        "van": [(-0.9, 0.0), (-0.75, -0.65), (0.9, -0.65), (0.9, 0.0)],
    }[body]
    paint = _class_colour(rng, k, 0.5)
    lower = 0.35 if body in ("suv", "van") else 0.3
    draw.polygon(f([(sign * x, y) for x, y in roof]), fill=paint)
    draw.polygon(f(_rect(-0.95, 0.0, 0.95, lower)), fill=paint)
    glass = [(sign * (0.85 * x), 0.85 * y - 0.03) for x, y in roof]
    draw.polygon(f(glass), fill=_jitter(rng, (60, 80, 100), 15))
    r = 0.28 if big else 0.15
    for x in (-0.6, 0.6):
        draw.polygon(f(_ellipse(x, lower, r, r, 16)), fill=(25, 25, 25))
        draw.polygon(f(_ellipse(x, lower, r * 0.45, r * 0.45, 12)), fill=(150, 150, 150))
    return _finish(img, w, h, rng, noise=5)


def _draw_wikiart(rng, k, proto, w, h):
    # ten painting styles: palette family, stroke length, orientation spread, stroke count, stroke width
    W, H = w * SS, h * SS
    hue0, sat, length, spread, count, width = (
        (0.1, 0.6, 0.15, 3.1, 220, 0.05),
        (0.6, 0.5, 0.5, 0.2, 60, 0.04),
        (0.0, 0.9, 0.9, 3.1, 12, 0.2),
        (0.3, 0.7, 0.02, 3.1, 500, 0.035),
        (0.0, 0.0, 0.4, 1.0, 40, 0.08),
        (0.55, 0.6, 0.6, 0.1, 80, 0.03),
        (0.8, 0.6, 0.3, 3.1, 120, 0.06),
        (0.05, 0.3, 0.25, 0.6, 90, 0.09),
        (0.45, 0.8, 0.12, 0.4, 250, 0.04),
        (0.07, 0.8, 0.35, 3.1, 60, 0.12),
    )[k]
    dark = k == 9
    hue0 += rng.normal(0, 0.06)  # each painting shifts its palette a little
    count = int(count * rng.uniform(0.5, 1.5))
    bg = _hsv(hue0 + 0.5, sat * 0.3, 0.15 if dark else rng.uniform(0.6, 0.95))
    img = _background(rng, W, H, bg, _jitter(rng, bg, 20), kind="blotch")
    draw = ImageDraw.Draw(img)
    a0 = rng.uniform(0, math.pi)
    for _ in range(count):
        x, y = rng.uniform(0, W), rng.uniform(0, H)
        a = a0 + rng.uniform(-spread, spread) / 2
        L = length * W * rng.uniform(0.5, 1.5)
        colour = _hsv(hue0 + rng.normal(0, 0.08), sat * rng.uniform(0.6, 1.1), rng.uniform(0.3, 1.0))
        _line(draw, [(x, y), (x + L * math.cos(a), y + L * math.sin(a))], colour, max(1.0, width * W))
    return _finish(img.filter(ImageFilter.SMOOTH), w, h, rng, noise=4)


_SKETCHES = ("house", "star", "face", "tree", "car", "cup", "fish", "umbrella", "spiral", "ladder")


def _draw_sketch(rng, k, proto, w, h):
    # black outlines on white, wobbly as if hand-drawn
    W, H = w * SS, h * SS
    img = Image.new("L", (W, H), 255)
    draw = ImageDraw.Draw(img)
    f = _frame(rng, W, H, scale=(0.7, 0.95), shift=0.08, rot=15)
    width = f.r * rng.uniform(0.04, 0.07)
    for part in _OBJECTS[_SKETCHES[k]]:
        pts = list(part[1]) + ([part[1][0]] if part[0] == "poly" else [])
        dense = [pts[0]]
        for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:], strict=True):
            dense += [(x0 + (x1 - x0) * s, y0 + (y1 - y0) * s) for s in (0.33, 0.67, 1.0)]
        _line(draw, f(_wobble(rng, dense, 0.025)), int(rng.uniform(0, 60)), width)
    return _finish(img, w, h, rng, noise=3, mode="L")


def _names(prefix: Sequence[str]) -> tuple[str, ...]:
    # numbered so that name order, category-id order and class-index order agree
    return tuple(f"{i + 1:02d}-{n}" for i, n in enumerate(prefix))


@dataclass(frozen=True)
class _Recipe:
    drawer: Drawer
    classes: tuple[str, ...]
    aspect: str  # "square", "wide" (1.3-1.8 x), "free" (either side up to 1.4 x), "4:3", "tall" (h = 2 w)
    proto: Callable[[np.random.Generator, int], Any] | None = None  # per-class prototype (seeded)


def _flower_extra(rng, k, proto, w, h):
    return _draw_flower(rng, k, proto, w, h, table=_FLOWERS_EXTRA)


_RECIPES: Mapping[str, _Recipe] = {
    "imagenet12": _Recipe(
        _draw_imagenet,
        tuple(f"{i + 1:02d}-shape{i % 10}-{'composite' if i >= 10 else 'plain'}" for i in range(20)),
        "free",
        lambda rng, k: rng.uniform(),
    ),
    "aircraft": _Recipe(_draw_aircraft, tuple(f"{i + 1:02d}-model{i + 1}" for i in range(10)), "wide"),
    "cifar100": _Recipe(_draw_cifar, _names(_CIFAR_OBJECTS), "square"),
    "daimlerpedcls": _Recipe(_draw_daimler, ("01-non-pedestrian", "02-pedestrian"), "tall"),
    "dtd": _Recipe(
        _draw_dtd,
        _names(
            (
                "striped",
                "chequered",
                "dotted",
                "ringed",
                "zigzagged",
                "crosshatched",
                "blotchy",
                "speckled",
                "wavy",
                "swirly",
            )
        ),
        "free",
    ),
    "gtsrb": _Recipe(
        _draw_gtsrb,
        _names(
            (
                "no-entry",
                "speed-30",
                "speed-80",
                "caution",
                "ahead-warning",
                "stop",
                "turn-right",
                "turn-left",
                "priority",
                "yield",
            )
        ),
        "square",
    ),
    "omniglot": _Recipe(
        _draw_omniglot,
        tuple(f"{i + 1:02d}-character{i + 1}" for i in range(10)),
        "square",
        lambda rng, k: _omniglot_proto(rng),
    ),
    "svhn": _Recipe(_draw_svhn, tuple(str(i) for i in range(10)), "square"),
    "ucf101": _Recipe(
        _draw_ucf,
        _names(
            (
                "sliding",
                "falling",
                "diagonal",
                "circling",
                "zooming",
                "jumping",
                "swaying",
                "bouncing",
                "looping",
                "spinning",
            )
        ),
        "4:3",
    ),
    "vgg-flowers": _Recipe(_draw_flower, tuple(f"{i + 1:02d}-flower{i + 1}" for i in range(10)), "free"),
    "cubs": _Recipe(_draw_cub, tuple(f"{i + 1:03d}.bird_{i + 1}" for i in range(10)), "free"),
    "stanford-cars": _Recipe(
        _draw_car,
        tuple(f"{i + 1:03d}.{b}_{'large' if g else 'small'}_wheels" for i, (b, g) in enumerate(_CARS)),
        "wide",
    ),
    "flowers": _Recipe(_flower_extra, tuple(f"{i + 1:03d}.flower_{i + 1}" for i in range(10)), "free"),
    "wikiart": _Recipe(_draw_wikiart, tuple(f"{i + 1:03d}.style_{i + 1}" for i in range(10)), "free"),
    "sketches": _Recipe(_draw_sketch, tuple(f"{i + 1:03d}.{n}" for i, n in enumerate(_SKETCHES)), "square"),
}


def _image_shape(rng: np.random.Generator, aspect: str, size: int) -> tuple[int, int]:
    """(width, height) with the shorter side `size`."""
    if aspect == "tall":
        return size, 2 * size
    if aspect == "4:3":
        return round(size * 4 / 3), size
    if aspect == "wide":
        return round(size * rng.uniform(1.3, 1.8)), size
    if aspect == "free":
        long = round(size * rng.uniform(1.0, 1.4))
        return (long, size) if rng.uniform() < 0.7 else (size, long)
    return size, size


# --------------------------------------------------------------------------------------- parameters


def _params(seed: int, image_size: int, source_counts, target_counts, extra_counts) -> dict[str, Any]:
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "image_size": int(image_size),
        "source_counts": [int(n) for n in source_counts],
        "target_counts": [int(n) for n in target_counts],
        "extra_counts": [int(n) for n in extra_counts],
    }


def _split_counts(params: Mapping[str, Any], name: str) -> dict[str, int]:
    """Images per class and split of one domain (val 0 for the extra stand-ins)."""
    return mini_split_counts(name, source_counts=params["source_counts"],
                             target_counts=params["target_counts"], extra_counts=params["extra_counts"])


def suite_specs(
    *,
    image_size: int = DEFAULT_IMAGE_SIZE,
    source_counts: Sequence[int] = DEFAULT_SOURCE_COUNTS,
    target_counts: Sequence[int] = DEFAULT_TARGET_COUNTS,
    extra_counts: Sequence[int] = DEFAULT_EXTRA_COUNTS,
) -> tuple[DomainSpec, ...]:
    """The DomainSpecs of a suite generated with these parameters (paper column order, then the extras)."""
    return mini_domains(image_size=image_size, source_counts=source_counts, target_counts=target_counts,
                        extra_counts=extra_counts)


# --------------------------------------------------------------------------------------- writing


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


_DOMAIN_KEY = {
    **{s.name: s.number for s in DECATHLON_DOMAINS},
    **{n: 100 + i for i, n in enumerate(EXTRA_COLUMNS)},
}


def _split_labels(params: Mapping[str, Any], name: str, split_index: int, split: str) -> list[int]:
    """Class index of every image of a split, in a seeded shuffled order."""
    n_classes = len(_RECIPES[name].classes)
    labels = np.repeat(np.arange(n_classes), _split_counts(params, name)[split])
    order = _rng(params["seed"], _DOMAIN_KEY[name], split_index, 10**6).permutation(len(labels))
    return [int(v) for v in labels[order]]


def _render(
    params: Mapping[str, Any], name: str, split_index: int, position: int, label: int, protos: Sequence[Any]
) -> Image.Image:
    recipe = _RECIPES[name]
    rng = _rng(params["seed"], _DOMAIN_KEY[name], split_index, position)
    w, h = _image_shape(rng, recipe.aspect, params["image_size"])
    return recipe.drawer(rng, label, protos[label], w, h)


def _protos(params: Mapping[str, Any], name: str) -> list[Any]:
    recipe = _RECIPES[name]
    return [
        recipe.proto(_rng(params["seed"], _DOMAIN_KEY[name], 99, k), k) if recipe.proto else None
        for k in range(len(recipe.classes))
    ]


def _save_jpeg(img: Image.Image, path: Path) -> None:
    img.save(path, "JPEG", quality=JPEG_QUALITY)


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, separators=(",", ":")))  # compact, like the released files


def _write_decathlon_domain(
    root: Path, params: Mapping[str, Any], name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Images and the four annotation files of one domain; returns the train mean and std (RGB, [0, 1])."""
    spec = next(s for s in DECATHLON_DOMAINS if s.name == name)
    d = spec.number
    recipe = _RECIPES[name]
    protos = _protos(params, name)
    categories = [
        {"id": d * 10**7 + k + 1, "name": c, "supercategory": name} for k, c in enumerate(recipe.classes)
    ]
    info = {
        "description": f"generated stand-in of {name} (decathlon.generate)",
        "version": "1.0",
        "year": 2017,
        "contributor": "decathlon.generate",
        "date_created": "2017-01-01",
        "url": "",
        "seed": params["seed"],
    }
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    position = 0  # image ids run through train, val and test in this order
    total, total_sq, count = np.zeros(3), np.zeros(3), 0
    for split_index, split in enumerate(DECATHLON_SPLITS):
        folder = root / "data" / name / split
        folder.mkdir(parents=True)
        images, annotations = [], []
        for i, label in enumerate(_split_labels(params, name, split_index, split)):
            img = _render(params, name, split_index, i, label, protos)
            file_name = f"data/{name}/{split}/{i + 1:06d}.jpg"
            _save_jpeg(img, root / file_name)
            image_id = d * 10**7 + 200001 + position
            position += 1
            images.append({"id": image_id, "width": img.width, "height": img.height, "file_name": file_name})
            annotations.append(
                {
                    "id": image_id,
                    "image_id": image_id,
                    "category_id": d * 10**7 + label + 1,
                    "segmentation": [],
                    "area": 0,
                    "bbox": [],
                    "iscrowd": 0,
                }
            )
            if split == "train":
                a = np.asarray(img.convert("RGB"), dtype=np.float64).reshape(-1, 3) / 255.0
                total += a.sum(0)
                total_sq += (a**2).sum(0)
                count += len(a)
        doc = {
            "info": info,
            "images": images,
            "annotations": annotations,
            "categories": categories,
            "licenses": [],
        }
        _write_json(root / "annotations" / f"{name}_{split}.json", doc)
        if split == "test":
            # what the challenge hands out: the test images without their labels
            _write_json(root / "annotations" / f"{name}_test_stripped.json", {**doc, "annotations": []})
    mean = total / count
    return mean, np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))


def _write_extra_domain(root: Path, params: Mapping[str, Any], name: str) -> tuple[np.ndarray, np.ndarray]:
    recipe = _RECIPES[name]
    protos = _protos(params, name)
    total, total_sq, count = np.zeros(3), np.zeros(3), 0
    for split_index, split in enumerate(EXTRA_SPLITS):
        seen = [0] * len(recipe.classes)
        for i, label in enumerate(_split_labels(params, name, split_index, split)):
            img = _render(params, name, split_index, i, label, protos)
            folder = root / name / split / recipe.classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            seen[label] += 1
            _save_jpeg(img, folder / f"{seen[label]:05d}.jpg")
            if split == "train":
                a = np.asarray(img.convert("RGB"), dtype=np.float64).reshape(-1, 3) / 255.0
                total += a.sum(0)
                total_sq += (a**2).sum(0)
                count += len(a)
    mean = total / count
    return mean, np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))


def _read_marker(out: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _is_complete(out: Path, params: Mapping[str, Any]) -> bool:
    marker = _read_marker(out)
    return (
        marker is not None
        and marker.get("params") == dict(params)
        and (out / "decathlon-1.0" / OWNED).is_file()
        and (out / "extra" / OWNED).is_file()
    )


def generate_suite(
    out: str | Path,
    *,
    seed: int = 0,
    image_size: int = DEFAULT_IMAGE_SIZE,
    source_counts: Sequence[int] = DEFAULT_SOURCE_COUNTS,
    target_counts: Sequence[int] = DEFAULT_TARGET_COUNTS,
    extra_counts: Sequence[int] = DEFAULT_EXTRA_COUNTS,
) -> SuitePaths:
    """Generate the suite into `out` (replacing a previously generated one) and return its paths.

    `image_size` is the shorter side in pixels; the ``*_counts`` are images per class and split
    (train, val, test for the Decathlon stand-ins; train, test for the extra ones). A folder
    ``decathlon-1.0`` or ``extra`` already in `out` that this generator did not write raises DataError
    rather than being replaced.
    """
    if image_size < 8:
        raise ConfigError(f"image_size={image_size}: expected at least 8 pixels")
    for name, counts, n in (("source_counts", source_counts, 3), ("target_counts", target_counts, 3),
                            ("extra_counts", extra_counts, 2)):
        if len(counts) != n or any(int(c) < 1 for c in counts):
            raise ConfigError(f"{name}={tuple(counts)}: expected {n} image counts per class, each at least 1")
    params = _params(seed, image_size, source_counts, target_counts, extra_counts)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    final = SuitePaths(out / "decathlon-1.0", out / "extra")
    for folder in final:
        if folder.exists() and not (folder / OWNED).is_file():
            raise DataError(
                f"{folder} exists and was not written by decathlon.generate; "
                "expected an empty output folder or a previously generated suite"
            )
    build = Path(tempfile.mkdtemp(prefix=".build-", dir=out))  # same file system: the renames are atomic
    try:
        stats = {}
        dec, extra = build / "decathlon-1.0", build / "extra"
        for name in DECATHLON_COLUMNS:
            stats[name] = _write_decathlon_domain(dec, params, name)
        for name in EXTRA_COLUMNS:
            stats[name] = _write_extra_domain(extra, params, name)
        table = {}
        for name, (mean, std) in stats.items():
            table[f"{name}mean"], table[f"{name}std"] = mean, std
        (dec / "decathlon_mean_std.pickle").write_bytes(pickle.dumps(table, protocol=2))
        for folder in (dec, extra):
            (folder / OWNED).write_text(json.dumps(params) + "\n")
        (out / MARKER).unlink(missing_ok=True)  # the suite is incomplete from here until the new marker
        for new, old in zip((dec, extra), final, strict=True):
            if old.exists():
                shutil.rmtree(old)
            new.rename(old)
        atomic_write_json(out / MARKER, {"generator": "decathlon.generate", "params": params})
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return final


def ensure_suite(out: str | Path, seed: int = 0, **kwargs: Any) -> SuitePaths:
    """Return the suite in `out`, generating it only when absent, incomplete or made with other parameters.

    Keyword arguments are those of :func:`generate_suite`.
    """
    out = Path(out)
    defaults = {
        "image_size": DEFAULT_IMAGE_SIZE,
        "source_counts": DEFAULT_SOURCE_COUNTS,
        "target_counts": DEFAULT_TARGET_COUNTS,
        "extra_counts": DEFAULT_EXTRA_COUNTS,
    }
    unknown = sorted(set(kwargs) - set(defaults))
    if unknown:
        raise TypeError(f"ensure_suite() got unknown argument(s) {unknown}; known: {sorted(defaults)}")
    merged = {**defaults, **kwargs}
    if _is_complete(out, _params(seed, **merged)):
        return SuitePaths(out / "decathlon-1.0", out / "extra")
    return generate_suite(out, seed=seed, **merged)
