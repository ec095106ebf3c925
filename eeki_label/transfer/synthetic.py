"""Structured synthetic images: the default calibration inputs of image-like model inputs.

Standard-normal noise is a poor stand-in for what a vision network sees. A text detector answers
noise with an almost empty probability map, so a relative output error measured on it divides by
almost nothing and the QP search ends far finer than real inputs need (PP-OCRv4 det: 43 % of the
float32 bytes on noise, 23-29 % on real pages or photos at the same held-out error). These images
have what natural and document images have and noise lacks: smooth shading, regions with sharp
edges, and thin high-contrast strokes in rows, at many scales.

Each image is a deterministic function of its seed (numpy only, no files, no fonts): a smooth
random colour field (three octaves of bilinearly upsampled noise), a few filled rectangles and
ellipses with soft edges, rows of short dark or light strokes (segments and arcs, 1-4 pixels wide,
text-like), a slight blur on some, and mild sensor noise. Values are RGB in [0, 1], then normalised
with the ImageNet mean and standard deviation, the most common preprocessing of image networks; its
range (about -2.1 to 2.6) covers the [-1, 1] and [0, 1] conventions too. One-channel inputs get the
luminance, normalised with mean 0.5 and standard deviation 0.25.

:func:`is_image_input` decides which inputs get them: float, rank 4, NCHW with 1 or 3 channels and
both spatial sides at least 16.
"""

from __future__ import annotations

import math

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
GRAY_MEAN, GRAY_STD = 0.5, 0.25
MIN_SIDE = 16


def is_image_input(shape: tuple[int, ...], dtype: np.dtype) -> bool:
    """True for a float NCHW input with 1 or 3 channels and both spatial sides >= :data:`MIN_SIDE`."""
    return (np.dtype(dtype).kind == "f" and len(shape) == 4 and shape[0] >= 1 and shape[1] in (1, 3)
            and shape[2] >= MIN_SIDE and shape[3] >= MIN_SIDE)


def _upsample(small: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling of a (c, h0, w0) array to (c, h, w) with separable interpolation matrices."""

    def matrix(n_out: int, n_in: int) -> np.ndarray:
        pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        pos = np.clip(pos, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        t = pos - lo
        m = np.zeros((n_out, n_in))
        m[np.arange(n_out), lo] += 1 - t
        m[np.arange(n_out), hi] += t
        return m

    mh, mw = matrix(h, small.shape[1]), matrix(w, small.shape[2])
    return np.stack([mh @ ch @ mw.T for ch in small])


def _smooth_field(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(3, h, w) smooth colour field in [0, 1]: a base colour plus three octaves of shading."""
    base = rng.uniform(0.15, 0.95, size=(3, 1, 1))
    field = np.zeros((3, h, w))
    for octave, amp in ((2, 0.25), (6, 0.12), (20, 0.05)):
        gh = max(2, min(h, int(round(octave * h / max(h, w))) + 1))
        gw = max(2, min(w, int(round(octave * w / max(h, w))) + 1))
        shared = rng.standard_normal((1, gh, gw))  # mostly luminance, some colour
        small = 0.8 * shared + 0.45 * rng.standard_normal((3, gh, gw))
        field += amp * _upsample(small, h, w)
    return np.clip(base + field, 0.0, 1.0)


def _paint(img: np.ndarray, alpha: np.ndarray, y0: int, x0: int, colour: np.ndarray) -> None:
    """Blend ``colour`` into ``img`` over the window at (y0, x0) with coverage ``alpha``."""
    h, w = alpha.shape
    win = img[:, y0:y0 + h, x0:x0 + w]
    a = alpha[None, : win.shape[1], : win.shape[2]]
    win *= 1 - a
    win += a * colour[:, None, None]


def _shapes(rng: np.random.Generator, img: np.ndarray) -> None:
    """A few filled rectangles and ellipses with soft edges (regions and their boundaries)."""
    _, h, w = img.shape
    for _ in range(int(rng.integers(2, 7))):
        sh = int(rng.integers(max(4, h // 12), max(5, h // 2)))
        sw = int(rng.integers(max(4, w // 12), max(5, w // 2)))
        y0, x0 = int(rng.integers(0, max(1, h - sh))), int(rng.integers(0, max(1, w - sw)))
        yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float64)
        soft = rng.uniform(0.5, 2.5)
        if rng.random() < 0.5:  # rectangle: distance to the nearest side
            d = np.minimum(np.minimum(yy + 0.5, sh - 0.5 - yy), np.minimum(xx + 0.5, sw - 0.5 - xx))
            alpha = np.clip(d / soft, 0, 1)
        else:  # ellipse
            r = np.sqrt(((yy + 0.5 - sh / 2) / (sh / 2)) ** 2 + ((xx + 0.5 - sw / 2) / (sw / 2)) ** 2)
            alpha = np.clip((1 - r) * min(sh, sw) / (2 * soft), 0, 1)
        colour = np.clip(rng.uniform(0, 1, 3) * 0.6 + rng.uniform(0, 0.4), 0, 1)
        _paint(img, alpha * rng.uniform(0.6, 1.0), y0, x0, colour)


def _segment_alpha(p: np.ndarray, q: np.ndarray, width: float, hh: int, ww: int) -> np.ndarray:
    """Anti-aliased coverage of a segment p -> q (y, x) of ``width`` pixels on an hh x ww window."""
    yy, xx = np.mgrid[0:hh, 0:ww].astype(np.float64) + 0.5
    d = q - p
    n2 = float(d @ d) or 1e-9
    t = np.clip(((yy - p[0]) * d[0] + (xx - p[1]) * d[1]) / n2, 0, 1)
    dist = np.hypot(yy - (p[0] + t * d[0]), xx - (p[1] + t * d[1]))
    return np.clip(width / 2 + 0.5 - dist, 0, 1)


def _strokes(rng: np.random.Generator, img: np.ndarray) -> None:
    """Rows of short strokes like lines of text: glyph-sized groups of segments and arcs."""
    _, h, w = img.shape
    density = float(rng.uniform(0.15, 0.6))  # share of text rows: sparse and dense images
    y = int(rng.integers(0, max(1, h // 10)))
    while True:
        size = float(rng.uniform(max(4.0, h / 60), max(6.0, h / 14)))  # glyph height in pixels
        if y + size >= h:
            break
        if rng.random() < density:  # the other rows stay empty
            bg = img[:, min(h - 1, int(y + size / 2)), :].mean()
            ink = np.clip(rng.uniform(0, 0.35, 3) if bg > 0.45 else rng.uniform(0.7, 1.0, 3), 0, 1)
            width = float(np.clip(size / rng.uniform(5, 9), 1.0, 4.0))
            x = float(rng.uniform(0, w / 3))
            x_end = min(w - 1.0, x + rng.uniform(w / 8, w))
            while x + size < x_end:
                glyph_w = size * rng.uniform(0.4, 0.9)
                for _ in range(int(rng.integers(1, 4))):
                    if rng.random() < 0.7:  # segment inside the glyph box
                        p = np.array([y + rng.uniform(0, size), x + rng.uniform(0, glyph_w)])
                        q = np.array([y + rng.uniform(0, size), x + rng.uniform(0, glyph_w)])
                        pts = [p, q]
                    else:  # arc: a polyline on an ellipse
                        cy, cx = y + size / 2, x + glyph_w / 2
                        a0 = rng.uniform(0, 2 * math.pi)
                        angles = a0 + np.linspace(0, rng.uniform(math.pi / 2, 2 * math.pi), 7)
                        pts = [np.array([cy + size / 2 * math.sin(a), cx + glyph_w / 2 * math.cos(a)]) for a in angles]
                    for p, q in zip(pts[:-1], pts[1:]):
                        y0 = int(max(0, math.floor(min(p[0], q[0]) - width - 1)))
                        x0 = int(max(0, math.floor(min(p[1], q[1]) - width - 1)))
                        y1 = int(min(h, math.ceil(max(p[0], q[0]) + width + 2)))
                        x1 = int(min(w, math.ceil(max(p[1], q[1]) + width + 2)))
                        if y1 <= y0 or x1 <= x0:
                            continue
                        alpha = _segment_alpha(p - (y0, x0), q - (y0, x0), width, y1 - y0, x1 - x0)
                        _paint(img, alpha, y0, x0, ink)
                x += glyph_w + size * rng.uniform(0.1, 0.3)
                if rng.random() < 0.15:  # word gap
                    x += size * rng.uniform(0.4, 1.0)
        y += int(size * rng.uniform(1.3, 2.4)) + 1


def _blur(img: np.ndarray, radius: int) -> np.ndarray:
    """Box blur of (c, h, w) over (2 radius + 1)^2 pixels, edges replicated."""
    k = 2 * radius + 1
    p = np.pad(img, ((0, 0), (radius, radius), (radius, radius)), mode="edge")
    c = np.cumsum(np.cumsum(p, axis=1), axis=2)
    c = np.pad(c, ((0, 0), (1, 0), (1, 0)))
    return (c[:, k:, k:] - c[:, :-k, k:] - c[:, k:, :-k] + c[:, :-k, :-k]) / (k * k)


def synthetic_rgb(h: int, w: int, seed: int) -> np.ndarray:
    """A (3, h, w) float32 RGB image in [0, 1], a deterministic function of ``seed``."""
    rng = np.random.default_rng([0xEE1, seed])
    img = _smooth_field(rng, h, w)
    _shapes(rng, img)
    _strokes(rng, img)
    if rng.random() < 0.4:
        img = _blur(img, 1)
    img += rng.normal(0, 0.01, img.shape)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def synthetic_image_batch(shape: tuple[int, ...], dtype: np.dtype, seed: int) -> np.ndarray:
    """A normalised NCHW batch of :func:`synthetic_rgb` images (see the module docstring)."""
    n, c, h, w = (int(d) for d in shape)
    out = np.empty((n, c, h, w), np.float32)
    for i in range(n):
        rgb = synthetic_rgb(h, w, seed * 1009 + i)
        if c == 3:
            out[i] = (rgb - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]
        else:
            lum = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
            out[i, 0] = (lum - GRAY_MEAN) / GRAY_STD
    return out.astype(dtype)
