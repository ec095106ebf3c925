"""Fixtures of the transfer tests; the graph builders are in nnc_models.py."""

from pathlib import Path

import pytest

from nnc_models import SHARED_MODELS, save_and_load, small_cnn, wide_mlp  # noqa: F401

@pytest.fixture
def cnn(tmp_path):
    return save_and_load(small_cnn(), tmp_path / "cnn.onnx")


@pytest.fixture
def mlp(tmp_path):
    return save_and_load(wide_mlp(), tmp_path / "mlp.onnx")


@pytest.fixture(scope="session")
def shared_models() -> Path:
    """The real trained models; a clear failure (not a skip) when the folder is missing."""
    if not (SHARED_MODELS / "ppocr_v4_det.onnx").is_file() or not (SHARED_MODELS / "ppocr_mobile_v2_cls.onnx").is_file():
        pytest.fail(f"real-model checks need ../shared/models/ppocr_v4_det.onnx and ppocr_mobile_v2_cls.onnx "
                    f"(looked in {SHARED_MODELS}); get them with: pip download --no-deps rapidocr-onnxruntime==1.4.4 "
                    "and unzip rapidocr_onnxruntime/models/ from the wheel (see ../shared/models/README.md)")
    return SHARED_MODELS
