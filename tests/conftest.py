"""Fixtures shared by all test folders; helpers live in support.py."""

from pathlib import Path

import pytest

from support import shared_model


@pytest.fixture
def cls_model() -> Path:
    return shared_model("ppocr_mobile_v2_cls.onnx")


@pytest.fixture
def det_model() -> Path:
    return shared_model("ppocr_v4_det.onnx")
