"""Small report helpers: PNG charts drawn with Pillow (no plotting library) and Markdown tables.

* :func:`line_chart` - curves over epochs (training loss, validation mIoU);
* :func:`bar_chart` - grouped bars (mIoU by object-size bucket);
* :func:`panel_grid` - rows of captioned image panels (support / query / predictions);
* :func:`tensor_to_pil`, :func:`outline` - panels from network inputs and masks;
* :func:`markdown_table` - a pipe table.

Images are written atomically.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from hmfss.data.io import overlay, save_image_atomic
from hmfss.data.transforms import denormalise

PALETTE = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75))
BACKGROUND = (255, 255, 255)
AXIS = (60, 60, 60)
GRID = (225, 225, 225)


def _font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [low, high]."""
    if not math.isfinite(low) or not math.isfinite(high):
        return [0.0, 1.0]
    if high <= low:
        high = low + 1.0
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=raw)
    start = math.floor(low / step) * step
    ticks = []
    value = start
    while value <= high + step * 1e-6:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _fmt(value: float) -> str:
    return f"{value:g}" if abs(value) >= 0.01 or value == 0 else f"{value:.1e}"


class _Axes:
    """Pixel mapping of a plot area with y ticks, grid and labels."""

    def __init__(self, draw, box, y_ticks, title, ylabel, font, title_font):
        self.draw, self.box, self.y_ticks = draw, box, y_ticks
        left, top, right, bottom = box
        self.y0, self.y1 = y_ticks[0], y_ticks[-1]
        for tick in y_ticks:
            y = self.y(tick)
            draw.line([(left, y), (right, y)], fill=GRID)
            label = _fmt(tick)
            w, h = _text_size(draw, label, font)
            draw.text((left - w - 6, y - h / 2 - 2), label, fill=AXIS, font=font)
        draw.line([(left, top), (left, bottom), (right, bottom)], fill=AXIS, width=1)
        tw, _ = _text_size(draw, title, title_font)
        draw.text(((left + right) / 2 - tw / 2, 8), title, fill=AXIS, font=title_font)
        if ylabel:
            draw.text((8, top - 16), ylabel, fill=AXIS, font=font)

    def y(self, value: float) -> float:
        left, top, right, bottom = self.box
        span = (self.y1 - self.y0) or 1.0
        return bottom - (value - self.y0) / span * (bottom - top)


def _legend(draw, names: Sequence[str], colors, left: float, right: float, y: float, font) -> None:
    """One row of colour keys, centred between ``left`` and ``right``, wrapped if needed."""
    widths = [20 + _text_size(draw, n, font)[0] + 16 for n in names]
    rows: list[list[int]] = [[]]
    for i, w in enumerate(widths):
        if rows[-1] and sum(widths[j] for j in rows[-1]) + w > right - left:
            rows.append([])
        rows[-1].append(i)
    for r, row in enumerate(rows):
        x = (left + right) / 2 - sum(widths[i] for i in row) / 2
        yy = y + r * 16
        for i in row:
            draw.rectangle([x, yy + 3, x + 14, yy + 13], fill=colors[i % len(colors)])
            draw.text((x + 20, yy), names[i], fill=AXIS, font=font)
            x += widths[i]


def line_chart(series: dict[str, tuple[Sequence[float], Sequence[float | None]]], path: str | Path,
               title: str, xlabel: str = "", ylabel: str = "", size: tuple[int, int] = (560, 360),
               y_range: tuple[float, float] | None = None, integer_x: bool = True,
               bands: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None) -> Path:
    """Curves ``{name: (xs, ys)}`` (None values are gaps) as a PNG; ``bands`` {name: (lows, highs)}
    shades a range around the curve of that name (same xs)."""
    width, height = size
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    font, title_font = _font(12), _font(15)
    bands = bands or {}
    xs_all = [x for xs, _ in series.values() for x in xs]
    ys_all = [y for _, ys in series.values() for y in ys if y is not None and math.isfinite(y)]
    ys_all += [y for lows, highs in bands.values() for y in (*lows, *highs) if math.isfinite(y)]
    x_lo, x_hi = (min(xs_all), max(xs_all)) if xs_all else (0.0, 1.0)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    y_lo, y_hi = y_range if y_range else ((min(ys_all), max(ys_all)) if ys_all else (0.0, 1.0))
    ticks = nice_ticks(min(y_lo, 0.0) if y_range is None and y_lo >= 0 else y_lo, y_hi)
    box = (64, 44 + 16 * _legend_rows(draw, list(series), width - 84, font), width - 20, height - 64)
    axes = _Axes(draw, box, ticks, title, ylabel, font, title_font)
    left, top, right, bottom = box

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * (right - left)

    x_ticks = nice_ticks(x_lo, x_hi, 6)
    if integer_x:
        x_ticks = sorted({float(round(t)) for t in x_ticks}) if x_hi - x_lo > 6 else [float(v) for v in range(math.ceil(x_lo), math.floor(x_hi) + 1)]
    for tick in x_ticks:
        if x_lo <= tick <= x_hi:
            label = _fmt(tick)
            w, _ = _text_size(draw, label, font)
            draw.line([(px(tick), bottom), (px(tick), bottom + 4)], fill=AXIS)
            draw.text((px(tick) - w / 2, bottom + 6), label, fill=AXIS, font=font)
    if xlabel:
        w, _ = _text_size(draw, xlabel, font)
        draw.text(((left + right) / 2 - w / 2, bottom + 24), xlabel, fill=AXIS, font=font)
    for i, (name, (xs, _)) in enumerate(series.items()):
        if name in bands and len(xs) > 1:
            lows, highs = bands[name]
            shade = tuple(c + (255 - c) * 3 // 4 for c in PALETTE[i % len(PALETTE)])
            draw.polygon([(px(x), axes.y(y)) for x, y in zip(xs, highs)]
                         + [(px(x), axes.y(y)) for x, y in reversed(list(zip(xs, lows)))], fill=shade)
    for i, (name, (xs, ys)) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        points = [(px(x), axes.y(y)) for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
        if len(points) > 1:
            draw.line(points, fill=color, width=2)
        for x, y in points:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
    _legend(draw, list(series), PALETTE, left, right, 30, font)
    return save_image_atomic(image, path)


def _legend_rows(draw, names: Sequence[str], span: float, font) -> int:
    rows, used = 1, 0.0
    for name in names:
        w = 20 + _text_size(draw, name, font)[0] + 16
        if used and used + w > span:
            rows, used = rows + 1, 0.0
        used += w
    return rows


def bar_chart(groups: Sequence[str], series: dict[str, Sequence[float | None]], path: str | Path, title: str,
              ylabel: str = "", size: tuple[int, int] = (640, 380), y_max: float | None = None,
              notes: Sequence[str] | None = None, errors: dict[str, Sequence[float | None]] | None = None) -> Path:
    """Grouped bars: one group per label in ``groups``, one bar per series (None = no bar, "n/a");
    ``errors`` {name: half-lengths} draws an error bar (value +- half-length) on that series' bars."""
    width, height = size
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    font, title_font = _font(12), _font(15)
    errors = errors or {}
    values = [v for vs in series.values() for v in vs if v is not None]
    values += [v + e for name, vs in series.items() for v, e in zip(vs, errors.get(name, ()))
               if v is not None and e is not None]
    top_value = y_max if y_max is not None else (max(values) if values else 1.0)
    ticks = nice_ticks(0.0, max(top_value, 1e-6))
    box = (64, 44 + 16 * _legend_rows(draw, list(series), width - 84, font), width - 20, height - 70)
    axes = _Axes(draw, box, ticks, title, ylabel, font, title_font)
    left, top, right, bottom = box
    n_series = max(len(series), 1)
    group_w = (right - left) / max(len(groups), 1)
    bar_w = group_w * 0.8 / n_series
    for g, label in enumerate(groups):
        gx = left + g * group_w + group_w * 0.1
        for s, (name, vals) in enumerate(series.items()):
            value = vals[g] if g < len(vals) else None
            x0 = gx + s * bar_w
            if value is None:
                w, _ = _text_size(draw, "n/a", font)
                draw.text((x0 + bar_w / 2 - w / 2, bottom - 16), "n/a", fill=AXIS, font=font)
                continue
            y = axes.y(value)
            draw.rectangle([x0 + 1, y, x0 + bar_w - 1, bottom], fill=PALETTE[s % len(PALETTE)])
            spread = errors.get(name, ())
            error = spread[g] if g < len(spread) else None
            if error:
                mid, hi, lo = x0 + bar_w / 2, axes.y(value + error), axes.y(max(value - error, ticks[0]))
                draw.line([(mid, hi), (mid, lo)], fill=AXIS, width=1)
                for yy in (hi, lo):
                    draw.line([(mid - 3, yy), (mid + 3, yy)], fill=AXIS, width=1)
                y = min(y, hi)
            text = f"{value:.1f}"
            w, h = _text_size(draw, text, font)
            if w <= bar_w + 6:
                draw.text((x0 + bar_w / 2 - w / 2, y - h - 5), text, fill=AXIS, font=font)
        w, _ = _text_size(draw, label, font)
        draw.text((gx + group_w * 0.4 - w / 2, bottom + 6), label, fill=AXIS, font=font)
        if notes and g < len(notes) and notes[g]:
            w, _ = _text_size(draw, notes[g], font)
            draw.text((gx + group_w * 0.4 - w / 2, bottom + 22), notes[g], fill=(120, 120, 120), font=font)
    _legend(draw, list(series), PALETTE, left, right, 30, font)
    return save_image_atomic(image, path)


def panel_grid(rows: Sequence[Sequence[tuple[Image.Image, str]]], path: str | Path, tile: int = 128,
               header: Sequence[str] | None = None) -> Path:
    """Rows of (image, caption) panels, each resized to ``tile`` x ``tile``, captions underneath."""
    font = _font(11)
    cols = max((len(r) for r in rows), default=1)
    cap_h, head_h, pad = 18, (20 if header else 0), 4
    width = cols * (tile + pad) + pad
    height = head_h + len(rows) * (tile + cap_h + pad) + pad
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    if header:
        for c, text in enumerate(header):
            w, _ = _text_size(draw, text, font)
            draw.text((pad + c * (tile + pad) + tile / 2 - w / 2, 4), text, fill=AXIS, font=font)
    for r, row in enumerate(rows):
        y = head_h + pad + r * (tile + cap_h + pad)
        for c, (panel, caption) in enumerate(row):
            x = pad + c * (tile + pad)
            image.paste(panel.convert("RGB").resize((tile, tile), Image.NEAREST), (x, y))
            w, _ = _text_size(draw, caption, font)
            draw.text((x + tile / 2 - w / 2, y + tile + 2), caption, fill=AXIS, font=font)
    return save_image_atomic(image, path)


def tensor_to_pil(img: torch.Tensor, size: tuple[int, int] | None = None) -> Image.Image:
    """A normalised (3, H, W) network input as an 8-bit RGB image, resized (bilinear) to
    ``size`` = (H, W) when given."""
    arr = (denormalise(img.detach().cpu()).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    pil = Image.fromarray(arr)
    if size is not None and (pil.height, pil.width) != tuple(size):
        pil = pil.resize((size[1], size[0]), Image.BILINEAR)
    return pil


def outline(image: Image.Image, mask: np.ndarray, color: tuple[int, int, int]) -> Image.Image:
    """Tint the (H, W) bool mask lightly and draw its boundary in ``color`` (visible on any object colour)."""
    mask = np.asarray(mask, dtype=bool)
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    tinted = np.array(overlay(image, mask, color, alpha=0.35))
    tinted[mask & ~inner] = color
    return Image.fromarray(tinted)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        if value is None:
            return "n/a"
        if isinstance(value, float):
            return f"{value:.2f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def plus_minus(stats: Mapping[str, Any] | None, digits: int = 2, signed: bool = False) -> str:
    """``mean ± sd`` of a {"mean", "sd"} summary for a table cell (just the mean without an sd,
    n/a without a mean)."""
    if not stats or stats.get("mean") is None:
        return "n/a"
    text = f"{stats['mean']:{'+' if signed else ''}.{digits}f}"
    return text if stats.get("sd") is None else f"{text} ± {stats['sd']:.{digits}f}"
