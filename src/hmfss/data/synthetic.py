"""An embedded few-shot segmentation benchmark, generated deterministically from a seed.

Every class is a distinct object appearance: a shape family (disc, star, ring, ...) x a
texture (solid, stripes, checker, ...) x a colour. Each image shows one object of its class,
pasted at a random scale (a quarter of the images hold a *small* object, under 2 % of the
image), position, rotation and aspect ratio onto a varied background (gradients, smooth
noise, faint patterns), with clutter: objects of *other* classes of the same split. The
binary mask covers the class's object only.

The benchmark is written in the FSS-1000 layout, so the FSS reader serves it::

    OUT/FSS-1000/<category>/<n>.jpg      n = 1..images_per_class
    OUT/FSS-1000/<category>/<n>.png      mask, 0 / 255
    OUT/splits/fss/{trn,val,test}.txt    category names, one per line (the FSS split format)
    OUT/synthetic.json                   parameters, classes, per-image foreground fractions

Classes are split into disjoint trn / val / test sets (test and val classes are never seen in
training). Everything is a pure function of the parameters: an image depends only on
(seed, class, image number), so the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from hmfss.errors import HmfssError
from hmfss.inputs import check_seed

SHAPES = ("disc", "square", "triangle", "star", "ring", "cross", "crescent", "hexagon", "diamond", "heart")
TEXTURES = ("solid", "stripes", "checker", "dots", "gradient", "waves")
COLOURS: dict[str, tuple[int, int, int]] = {
    "crimson": (200, 20, 50), "orange": (245, 130, 20), "gold": (235, 200, 30), "lime": (150, 220, 40),
    "green": (30, 140, 60), "teal": (20, 150, 140), "cyan": (40, 200, 230), "blue": (30, 60, 200),
    "violet": (120, 50, 200), "magenta": (220, 40, 190), "brown": (130, 80, 40), "white": (240, 240, 235),
}
MAX_CLASSES = {"trn": 520, "val": 240, "test": 240}  # FSS-1000 class-id ranges
SMALL_FRACTION = 0.02  # "small object": under 2 % of the image
SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered: smooth edges, exact binary masks
JPEG_QUALITY = 92


@dataclass(frozen=True)
class SyntheticParams:
    classes: int = 120
    images_per_class: int = 10
    size: int = 128
    seed: int = 0
    test_ratio: float = 0.25
    val_ratio: float = 0.1
    small_ratio: float = 0.25  # share of images whose object covers < 2 % of the image


@dataclass(frozen=True)
class Appearance:
    shape: str
    texture: str
    colour: str

    @property
    def name(self) -> str:
        return f"{self.shape}-{self.texture}-{self.colour}"


def all_appearances() -> list[Appearance]:
    return [Appearance(s, t, c) for s in SHAPES for t in TEXTURES for c in COLOURS]


def check_params(p: SyntheticParams) -> None:
    total = len(SHAPES) * len(TEXTURES) * len(COLOURS)
    if not 3 <= p.classes <= total:
        raise HmfssError(f"--classes must be between 3 and {total}, got {p.classes}")
    check_seed(p.seed, "--seed")
    if p.images_per_class < 2:
        raise HmfssError(f"--images-per-class must be at least 2, got {p.images_per_class}")
    if not 32 <= p.size <= 1024:
        raise HmfssError(f"--size must be between 32 and 1024, got {p.size}")
    if not (0 < p.test_ratio < 1 and 0 <= p.val_ratio < 1 and p.test_ratio + p.val_ratio < 1):
        raise HmfssError("--test-ratio and --val-ratio must be fractions with test + val < 1")
    if not 0 <= p.small_ratio <= 1:
        raise HmfssError(f"--small-ratio must be in [0, 1], got {p.small_ratio}")
    counts = split_counts(p)
    for split, count in counts.items():
        if count > MAX_CLASSES[split]:
            raise HmfssError(f"{count} {split} classes exceed the FSS-1000 layout's {MAX_CLASSES[split]}")
    if counts["trn"] < 1:
        raise HmfssError("no training classes left; lower --test-ratio / --val-ratio")


def split_counts(p: SyntheticParams) -> dict[str, int]:
    test = max(1, int(round(p.test_ratio * p.classes)))
    val = int(round(p.val_ratio * p.classes))
    if p.val_ratio > 0:
        val = max(1, val)
    return {"trn": p.classes - test - val, "val": val, "test": test}


def choose_classes(p: SyntheticParams) -> dict[str, list[Appearance]]:
    """The classes of each split: a seeded draw without replacement from all appearances."""
    pool = all_appearances()
    rng = np.random.default_rng([p.seed, 7])
    picks = [pool[i] for i in rng.permutation(len(pool))[: p.classes]]
    counts = split_counts(p)
    out, start = {}, 0
    for split in ("test", "val", "trn"):
        out[split] = sorted(picks[start:start + counts[split]], key=lambda a: a.name)
        start += counts[split]
    return out


# ---- shapes ---------------------------------------------------------------------------------


def _regular(n: int, phase: float = 0.0) -> list[tuple[float, float]]:
    return [(math.cos(phase + 2 * math.pi * i / n), math.sin(phase + 2 * math.pi * i / n)) for i in range(n)]


def _star(points: int, inner: float) -> list[tuple[float, float]]:
    out = []
    for i in range(2 * points):
        r = 1.0 if i % 2 == 0 else inner
        a = -math.pi / 2 + math.pi * i / points
        out.append((r * math.cos(a), r * math.sin(a)))
    return out


def _heart() -> list[tuple[float, float]]:
    pts = []
    for i in range(64):
        t = 2 * math.pi * i / 64
        x = 16 * math.sin(t) ** 3
        y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
        pts.append((x / 17.0, (y + 2.5) / 17.0))
    return pts


# Each shape: list of (polygon in [-1, 1]^2, fill 1 = add / 0 = cut), drawn in order.
_CIRCLE = _regular(48)
SHAPE_POLYGONS: dict[str, list[tuple[list[tuple[float, float]], int]]] = {
    "disc": [(_CIRCLE, 1)],
    "square": [(_regular(4, math.pi / 4), 1)],
    "triangle": [(_regular(3, -math.pi / 2), 1)],
    "star": [(_star(5, 0.45), 1)],
    "ring": [(_CIRCLE, 1), ([(0.5 * x, 0.5 * y) for x, y in _CIRCLE], 0)],
    "cross": [([(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3), (0.3, 1), (-0.3, 1),
                (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)], 1)],
    "crescent": [(_CIRCLE, 1), ([(0.85 * x + 0.45, 0.85 * y - 0.1) for x, y in _CIRCLE], 0)],
    "hexagon": [(_regular(6), 1)],
    "diamond": [([(0, -1), (0.6, 0), (0, 1), (-0.6, 0)], 1)],
    "heart": [(_heart(), 1)],
}


def render_shape(shape: str, side: int, angle: float, aspect: float) -> np.ndarray:
    """Coverage (side, side) float32 in [0, 1] of a shape rotated by ``angle`` (radians),
    squeezed to ``aspect`` (x scale / y scale), drawn at 4x and box-filtered."""
    big = side * SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    sx, sy = (1.0, 1.0 / aspect) if aspect >= 1 else (aspect, 1.0)
    cos, sin = math.cos(angle), math.sin(angle)
    half = big / 2.0
    for poly, fill in SHAPE_POLYGONS[shape]:
        pts = []
        for x, y in poly:
            x, y = x * sx, y * sy
            rx, ry = x * cos - y * sin, x * sin + y * cos
            pts.append((half + rx * half * 0.98, half + ry * half * 0.98))
        draw.polygon(pts, fill=255 if fill else 0)
    small = canvas.resize((side, side), Image.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


# ---- textures and backgrounds ---------------------------------------------------------------


def _jitter(rgb: tuple[int, int, int], rng: np.random.Generator, amount: float) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) + rng.normal(0, amount, 3), 0, 255)


def _partner(rgb: np.ndarray) -> np.ndarray:
    """The class's second colour: a dark shade when the colour is light, a light tint otherwise."""
    lum = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return rgb * 0.35 if lum > 110 else rgb * 0.4 + 150


def _texture_field(texture: str, h: int, w: int, rng: np.random.Generator, base_angle: float) -> np.ndarray:
    """(h, w) in [0, 1]: weight of the second colour."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = base_angle + rng.uniform(-0.3, 0.3)
    u = xx * math.cos(angle) + yy * math.sin(angle)
    v = -xx * math.sin(angle) + yy * math.cos(angle)
    period = max(3.0, rng.uniform(0.12, 0.22) * max(h, w, 16))
    phase = rng.uniform(0, period)
    if texture == "solid":
        return np.zeros((h, w), np.float32)
    if texture == "stripes":
        return (((u + phase) / period) % 1.0 < 0.5).astype(np.float32)
    if texture == "checker":
        return ((np.floor((u + phase) / period) + np.floor((v + phase) / period)) % 2).astype(np.float32)
    if texture == "dots":
        du = ((u + phase) / period) % 1.0 - 0.5
        dv = ((v + phase) / period) % 1.0 - 0.5
        return (du * du + dv * dv < 0.09).astype(np.float32)
    if texture == "gradient":
        span = max(u.max() - u.min(), 1.0)
        return (u - u.min()) / span
    if texture == "waves":
        return (0.5 + 0.5 * np.sin(2 * math.pi * (u + 0.35 * period * np.sin(2 * math.pi * v / period)) / period)).astype(np.float32)
    raise ValueError(texture)


def _texture_angle(appearance: Appearance) -> float:
    # fixed per class (derived from the name, not from Python's salted hash)
    code = sum((i + 1) * ord(ch) for i, ch in enumerate(appearance.name))
    return (code % 180) * math.pi / 180.0


def object_pixels(appearance: Appearance, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) float32 colours of an object of this appearance."""
    first = _jitter(COLOURS[appearance.colour], rng, 10.0)
    second = _partner(first)
    field = _texture_field(appearance.texture, h, w, rng, _texture_angle(appearance))[..., None]
    shade = 1.0 + rng.uniform(-0.12, 0.12)
    return np.clip((first * (1 - field) + second * field) * shade, 0, 255)


def _smooth_noise(size: int, rng: np.random.Generator, cells: int) -> np.ndarray:
    grid = rng.uniform(0, 255, (cells, cells)).astype(np.uint8)
    return np.asarray(Image.fromarray(grid).resize((size, size), Image.BICUBIC), np.float32) / 255.0


def background(size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size, 3) float32: one of four background families, plus pixel noise."""
    kind = int(rng.integers(4))
    c1 = rng.uniform(0, 255, 3).astype(np.float32)
    c2 = rng.uniform(0, 255, 3).astype(np.float32)
    if kind == 0:  # linear gradient
        a = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        t = (xx * math.cos(a) + yy * math.sin(a))
        t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
        img = c1 * (1 - t[..., None]) + c2 * t[..., None]
    elif kind == 1:  # smooth coloured noise
        img = np.stack([_smooth_noise(size, rng, int(rng.integers(3, 9))) for _ in range(3)], -1) * 255.0
    elif kind == 2:  # faint pattern (low contrast, so it never looks like an object texture)
        field = _texture_field(str(rng.choice(["stripes", "checker", "waves"])), size, size, rng, rng.uniform(0, math.pi))
        c2 = c1 * 0.75 + c2 * 0.25
        img = c1 * (1 - field[..., None]) + c2 * field[..., None]
    else:  # flat colour with blotches
        blot = _smooth_noise(size, rng, int(rng.integers(2, 5)))[..., None]
        img = c1 * (0.8 + 0.4 * blot)
    img = img + rng.normal(0, 5.0, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.float32)


# ---- composition ----------------------------------------------------------------------------

_FILL = {"disc": 0.76, "square": 0.48, "triangle": 0.31, "star": 0.27, "ring": 0.57, "cross": 0.46,
         "crescent": 0.30, "hexagon": 0.62, "diamond": 0.29, "heart": 0.55}  # approx. coverage of the box


def _paste(canvas: np.ndarray, coverage: np.ndarray, pixels: np.ndarray, top: int, left: int) -> np.ndarray:
    """Alpha-blend an object into ``canvas`` (in place); returns its full-size coverage map."""
    h, w = coverage.shape
    region = canvas[top:top + h, left:left + w]
    alpha = coverage[..., None]
    region[:] = region * (1 - alpha) + pixels * alpha
    full = np.zeros(canvas.shape[:2], np.float32)
    full[top:top + h, left:left + w] = coverage
    return full


def _place(appearance: Appearance, fraction: float, size: int, rng: np.random.Generator):
    """Coverage, pixels and position of one object covering about ``fraction`` of the image."""
    aspect = float(np.exp(rng.uniform(-0.35, 0.35)))
    fill = _FILL[appearance.shape] * (min(aspect, 1 / aspect))
    side = int(round(math.sqrt(fraction * size * size / max(fill, 0.05))))
    side = int(np.clip(side, 5, size))
    coverage = render_shape(appearance.shape, side, float(rng.uniform(0, 2 * math.pi)), aspect)
    pixels = object_pixels(appearance, side, side, rng)
    top = int(rng.integers(0, size - side + 1))
    left = int(rng.integers(0, size - side + 1))
    return coverage, pixels, top, left


def object_fraction(rng: np.random.Generator, small_ratio: float) -> float:
    if rng.uniform() < small_ratio:
        return float(rng.uniform(0.004, 0.018))
    return float(np.exp(rng.uniform(math.log(0.03), math.log(0.45))))


def render_image(p: SyntheticParams, appearance: Appearance, index: int, class_number: int,
                 distractors: list[Appearance]) -> tuple[Image.Image, Image.Image, float]:
    """One (RGB image, 0/255 mask, foreground fraction); depends only on (seed, class, index)."""
    rng = np.random.default_rng([p.seed, 1, class_number, index])
    size = p.size
    canvas = background(size, rng)
    others = [d for d in distractors if d != appearance]
    for _ in range(int(rng.integers(0, 4)) if others else 0):
        other = others[int(rng.integers(len(others)))]
        frac = float(np.exp(rng.uniform(math.log(0.01), math.log(0.12))))
        cov, pix, top, left = _place(other, frac, size, rng)
        _paste(canvas, cov, pix, top, left)
    cov, pix, top, left = _place(appearance, object_fraction(rng, p.small_ratio), size, rng)
    coverage = _paste(canvas, cov, pix, top, left)
    mask = coverage >= 0.5
    if not mask.any():  # degenerate tiny shape: keep at least its most covered pixel
        mask.flat[int(np.argmax(coverage))] = True
    image = Image.fromarray(np.clip(np.round(canvas), 0, 255).astype(np.uint8))
    if rng.uniform() < 0.3:  # some blur, as in real photos
        image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 0.8))))
    return image, Image.fromarray(mask.astype(np.uint8) * 255), float(mask.mean())


# ---- writing --------------------------------------------------------------------------------


def _write(path: Path, image: Image.Image, **kwargs) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format=kwargs.pop("format"), **kwargs)
    tmp.replace(path)


def generate(out: str | Path, params: SyntheticParams | None = None,
             progress: Callable[[int, int], None] | None = None) -> dict:
    """Write the benchmark to ``out`` (see the module docstring); returns its metadata.

    Existing files are overwritten; the result depends only on ``params``.
    """
    p = params or SyntheticParams()
    check_params(p)
    out = Path(out)
    root = out / "FSS-1000"
    splits = choose_classes(p)
    numbers = {a.name: i for i, a in enumerate(sorted(all_appearances(), key=lambda a: a.name))}
    classes_meta = []
    total = p.classes * p.images_per_class
    done = 0
    for split in ("trn", "val", "test"):
        for appearance in splits[split]:
            folder = root / appearance.name
            folder.mkdir(parents=True, exist_ok=True)
            fractions = []
            for n in range(1, p.images_per_class + 1):
                image, mask, frac = render_image(p, appearance, n, numbers[appearance.name], splits[split])
                _write(folder / f"{n}.jpg", image, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
                _write(folder / f"{n}.png", mask, format="PNG", optimize=False)
                fractions.append(round(frac, 6))
                done += 1
                if progress is not None:
                    progress(done, total)
            classes_meta.append({"name": appearance.name, "split": split, **asdict(appearance),
                                 "foreground_fraction": fractions})
    split_dir = out / "splits" / "fss"
    split_dir.mkdir(parents=True, exist_ok=True)
    for split in ("trn", "val", "test"):
        (split_dir / f"{split}.txt").write_text("".join(f"{a.name}\n" for a in splits[split]), encoding="utf-8")
    meta = {
        "format": "hmfss-synthetic",
        "version": 1,
        "params": asdict(p),
        "layout": "FSS-1000",
        "splits_dir": "splits",
        "counts": {k: len(v) for k, v in splits.items()},
        "classes": classes_meta,
    }
    (out / "synthetic.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return meta


def read_metadata(root: str | Path) -> dict | None:
    """The ``synthetic.json`` of a generated benchmark, or None (the app uses it to say what a
    demo model was trained on)."""
    path = Path(root) / "synthetic.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
