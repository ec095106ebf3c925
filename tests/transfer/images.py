"""Deterministic, licence-free calibration images for the OCR models in ../shared/models.

Rendered with Pillow (text in its built-in FreeType font on smooth, noisy or gradient backgrounds), so
the tests need no image files. The det model sees pages of text lines; the cls model sees single
text lines, some rotated by 180 degrees (what it classifies). Different seeds give disjoint images,
so a search can be tuned on one seed range and checked on another.

Preprocessing follows the models' PaddleOCR/RapidOCR pipelines: det normalises with the ImageNet
mean/std on [0, 1] RGB; cls scales to [-1, 1].
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

WORDS = ("energy label model transfer codec neural network quantise bitstream receiver federated "
         "round client server update delta fidelity bound calibration device tensor weights Berlin "
         "Fraunhofer standard 15938 ResNet MobileNet efficient inference label A B C D E F G 2023 "
         "kWh joule watt Jetson Xavier optical character recognition detection classifier").split()


def _background(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    kind = rng.integers(0, 3)
    base = rng.integers(170, 256, size=3)
    if kind == 0:  # flat paper with noise
        a = np.ones((h, w, 3)) * base + rng.normal(0, 6, (h, w, 3))
    elif kind == 1:  # gradient
        t = np.linspace(0, 1, w)[None, :, None]
        other = rng.integers(120, 256, size=3)
        a = base * (1 - t) + other * t + rng.normal(0, 4, (h, w, 3))
    else:  # blotchy texture
        small = rng.normal(0, 25, (max(2, h // 40), max(2, w // 40), 3))
        tex = np.asarray(Image.fromarray(np.clip(small + 128, 0, 255).astype(np.uint8)).resize((w, h), Image.BICUBIC),
                         dtype=np.float64) - 128
        a = np.ones((h, w, 3)) * base + tex
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def _line(rng: np.random.Generator, n_words: int) -> str:
    return " ".join(rng.choice(WORDS, size=n_words))


def text_page(seed: int, size: int = 640) -> np.ndarray:
    """A size x size RGB uint8 image with several text lines (det model input before normalising)."""
    rng = np.random.default_rng(10_000 + seed)
    img = _background(rng, size, size)
    draw = ImageDraw.Draw(img)
    y = int(rng.integers(10, 40))
    while y < size - 40:
        fs = int(rng.integers(16, 44))
        font = ImageFont.load_default(size=fs)
        color = tuple(int(c) for c in rng.integers(0, 90, size=3))
        x = int(rng.integers(5, size // 3))
        draw.text((x, y), _line(rng, int(rng.integers(2, 7))), fill=color, font=font)
        y += int(fs * rng.uniform(1.3, 2.6))
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.2))))
    return np.asarray(img)


def text_line(seed: int, h: int = 48, w: int = 192) -> np.ndarray:
    """An h x w RGB uint8 crop of one text line; odd seeds are rotated by 180 degrees."""
    rng = np.random.default_rng(20_000 + seed)
    fs = int(rng.integers(22, 34))
    font = ImageFont.load_default(size=fs)
    text = _line(rng, int(rng.integers(1, 4)))
    tw = int(draw_width(text, font)) + 10
    img = _background(rng, h, max(w, tw))
    ImageDraw.Draw(img).text((5, (h - fs) // 2 - 2), text, fill=tuple(int(c) for c in rng.integers(0, 80, size=3)),
                             font=font)
    img = img.crop((0, 0, max(w, tw), h)).resize((w, h), Image.BILINEAR)
    if seed % 2:
        img = img.rotate(180)
    return np.asarray(img)


def draw_width(text: str, font) -> float:
    left, _, right, _ = font.getbbox(text)
    return right - left


def det_input(images: "list[np.ndarray]") -> np.ndarray:
    """N x 3 x H x W float32, ImageNet-normalised (det model)."""
    a = np.stack(images).astype(np.float32) / 255.0
    a = (a - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def cls_input(images: "list[np.ndarray]") -> np.ndarray:
    """N x 3 x H x W float32 in [-1, 1] (cls model)."""
    a = np.stack(images).astype(np.float32) / 255.0
    return np.ascontiguousarray(((a - 0.5) / 0.5).transpose(0, 3, 1, 2))


def det_batch(seeds) -> np.ndarray:
    return det_input([text_page(s) for s in seeds])


def cls_batch(seeds) -> np.ndarray:
    return cls_input([text_line(s) for s in seeds])
