"""Helpers shared by the tests: paths, the real models in ../shared/models, builders of tiny graphs.

Imported as ``from support import ...`` (a unique module name: every test folder may have its own conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
SHARED_MODELS = ROOT.parent / "shared" / "models"
ARCH = ROOT / "tests" / "data" / "arch"


def read_every_tensor(loaded) -> None:
    """Read back every stored tensor and the whole model of a file that loaded: what fails must fail
    with an EekiError (the caller's property: nothing else may escape)."""
    from eeki_label.errors import EekiError
    from eeki_label.model_io import iter_all_tensors, materialize, tensor_array

    for t in iter_all_tensors(loaded.proto):
        try:
            tensor_array(loaded, t)
        except EekiError:
            pass
    try:
        materialize(loaded)
    except EekiError:
        pass


def shared_model(name: str) -> Path:
    """A real trained model from ../shared/models; fails (never skips) when the folder is missing."""
    path = SHARED_MODELS / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: the tests need ../shared/models beside the repository (see README)")
    return path



def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def tiny_cnn(with_constant: bool = False, batch: "int | str" = "N", seed: int = 0) -> onnx.ModelProto:
    """Conv(3->8, 3x3) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(8->4): a valid small classifier."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")
    fc = numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "fc")
    fcb = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "fcb")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], transB=1, name="fc"),
    ]
    inits = [w, b, fc, fcb]
    if with_constant:  # weights in Constant nodes, as in the PP-OCR exports
        nodes = [helper.make_node("Constant", [], [t.name], value=t, name=f"const_{t.name}") for t in inits] + nodes
        inits = []
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="eeki-tests")


def classifier(classes: int, hw: "tuple | None" = None, seed: int = 0) -> onnx.ModelProto:
    """Conv -> GlobalAveragePool -> Flatten -> MatMul to ``classes`` scores; image input (N,3,H,W)."""
    rng = np.random.default_rng(seed)
    h, w = hw or ("H", "W")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, h, w])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes])
    inits = [numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((16, classes)).astype(np.float32), "fc")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("MatMul", ["f", "fc"], ["y"])]
    return helper.make_model(helper.make_graph(nodes, "cls", [x], [y], inits),
                             opset_imports=[helper.make_opsetid("", 17)])


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def headless_chromium(tmp_path_factory, window: str):
    """Debian's headless Chromium driven by selenium (window ``"W,H"``); fails, never skips, when missing."""
    import shutil

    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("headless Chromium is missing: apt-get install -y chromium chromium-driver (see .ci/run)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--window-size={window}",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
