"""Structured synthetic calibration images (the default calibration of image-like inputs)."""

from __future__ import annotations

import numpy as np

from eeki_label.transfer.fidelity import calibration_feeds
from eeki_label.transfer.synthetic import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    is_image_input,
    synthetic_image_batch,
    synthetic_rgb,
)


def _neighbour_correlation(img: np.ndarray) -> float:
    a, b = img[..., :, :-1].ravel(), img[..., :, 1:].ravel()
    return float(np.corrcoef(a, b)[0, 1])


def test_which_inputs_are_images():
    f32 = np.dtype(np.float32)
    assert is_image_input((1, 3, 224, 224), f32) and is_image_input((2, 1, 16, 64), f32)
    assert is_image_input((1, 3, 640, 640), np.dtype(np.float16))
    assert not is_image_input((1, 4, 224, 224), f32)  # not 1 or 3 channels
    assert not is_image_input((1, 3, 8, 224), f32)  # too small to hold structure
    assert not is_image_input((1, 224, 224, 3), f32)  # NHWC: not recognised, stays noise
    assert not is_image_input((1, 64), f32) and not is_image_input((1, 3, 224, 224), np.dtype(np.int64))


def test_deterministic_structured_and_normalised():
    a = synthetic_image_batch((2, 3, 96, 128), np.dtype(np.float32), seed=3)
    assert a.shape == (2, 3, 96, 128) and a.dtype == np.float32 and np.all(np.isfinite(a))
    assert np.array_equal(a, synthetic_image_batch((2, 3, 96, 128), np.dtype(np.float32), seed=3))
    assert not np.array_equal(a, synthetic_image_batch((2, 3, 96, 128), np.dtype(np.float32), seed=4))
    assert not np.array_equal(a[0], a[1])
    # ImageNet-normalised [0, 1] RGB
    lo = (0 - IMAGENET_MEAN) / IMAGENET_STD
    hi = (1 - IMAGENET_MEAN) / IMAGENET_STD
    assert np.all(a >= lo[None, :, None, None] - 1e-5) and np.all(a <= hi[None, :, None, None] + 1e-5)
    # images, not noise: smooth almost everywhere, with sharp edges and strokes somewhere
    rgb = synthetic_rgb(240, 320, seed=7)
    assert _neighbour_correlation(rgb) > 0.8
    grad = np.abs(np.diff(rgb.mean(axis=0), axis=1))
    assert 0.002 < float(np.mean(grad > 0.15)) < 0.3
    gray = synthetic_image_batch((1, 1, 32, 32), np.dtype(np.float32), seed=0)
    assert gray.shape == (1, 1, 32, 32) and -2.01 <= gray.min() and gray.max() <= 2.01


def test_calibration_feeds_use_images_for_image_inputs_only(cnn, mlp):
    feeds, src = calibration_feeds(cnn.proto, {"x": (1, 3, 16, 16)}, None, samples=3, seed=0)
    assert src == "synthetic" and len(feeds) == 3
    assert _neighbour_correlation(feeds[0]["x"]) > 0.5  # standard-normal noise would give about 0
    again, _ = calibration_feeds(cnn.proto, {"x": (1, 3, 16, 16)}, None, samples=3, seed=0)
    assert all(np.array_equal(f["x"], g["x"]) for f, g in zip(feeds, again))
    feeds, _ = calibration_feeds(mlp.proto, {"x": (1, 64)}, None, samples=2)
    assert abs(_neighbour_correlation(feeds[0]["x"])) < 0.3  # a vector input keeps the profiler's noise
