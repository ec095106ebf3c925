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


@pytest.fixture(autouse=True)
def _transfer_cache(tmp_path_factory, monkeypatch):
    """The transfer stage's content cache lives in a fresh temporary folder for each test (never the
    user's ~/.cache, and no test sees another test's codings: tests that replace the codec stay
    independent of the order they run in); child processes inherit it through the environment."""
    monkeypatch.setenv("EEKI_LABEL_CACHE_DIR", str(tmp_path_factory.mktemp("eeki-cache")))
