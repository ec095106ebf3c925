"""Fuzzing the loader and the static stages with mutated valid graphs (strategies: fuzz_models.py).

CI runs a short, derandomised profile (the same examples every run, a few seconds). The fuzz runs
onnx shape inference in this process for speed (the tool runs it in a child process with a memory
limit; the regression cases below go through that real path). ``make fuzz``
runs the long profile: ``HYPOTHESIS_PROFILE=eeki-fuzz-long`` with ``FUZZ_EXAMPLES`` examples (default
20,000), random seeds, examples that fail kept in ``.hypothesis/``; with ``FUZZ_RUNTIME=1`` one
example in ten also runs the runtime profile (in its child process). Every finding is kept below as
a regression case.
"""

from __future__ import annotations

import faulthandler
import os
import random
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from eeki_label.errors import EekiError, ModelInvalidError
from fuzz_models import assess_file, base_models, check_file, fuzz_dir, mut_wrap_in_function, mutated_model_files

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
           HealthCheck.function_scoped_fixture]
settings.register_profile("eeki-fuzz-ci", max_examples=40, deadline=timedelta(seconds=20), derandomize=True,
                          database=None, suppress_health_check=_HEALTH, print_blob=True)
settings.register_profile("eeki-fuzz-long", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "20000")),
                          deadline=None, derandomize=False, suppress_health_check=_HEALTH, print_blob=True)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "")
FUZZ = settings.get_profile(PROFILE if PROFILE.startswith("eeki-fuzz-") else "eeki-fuzz-ci")
RUNTIME = os.environ.get("FUZZ_RUNTIME") == "1"
_WORK = Path(tempfile.mkdtemp(prefix="eeki-fuzz-"))
_COUNT = [0]


@settings(FUZZ)
@given(mutated_model_files())
def test_mutated_models_give_a_label_or_an_eeki_error(data):
    keep = fuzz_dir()
    if keep is not None:  # long runs: leave the example on disk while it runs (hang or crash: reproduce it)
        keep.mkdir(parents=True, exist_ok=True)
        (keep / "last.onnx").write_bytes(data)
        faulthandler.dump_traceback_later(120, exit=True)
    _COUNT[0] += 1
    try:
        event(check_file(_WORK / "model.onnx", data, runtime=RUNTIME and random.random() < 0.1,
                         inprocess_inference=True))
    finally:
        if keep is not None:
            faulthandler.cancel_dump_traceback_later()


@settings(FUZZ, max_examples=min(FUZZ.max_examples, 400))
@given(base_models(), st.data())
def test_wrapping_nodes_in_local_functions_keeps_the_profile(m, data):
    """Metamorphic: moving nodes into model-local functions (nested up to four levels) changes nothing
    that runs, so the label's profile and energy must not change either (a profile that did not look
    into functions gave 0 MACs and class A)."""
    import onnx

    wrapped = onnx.ModelProto()
    wrapped.CopyFrom(m)
    for _ in range(data.draw(st.integers(1, 3))):
        mut_wrap_in_function(data.draw, wrapped, twice=False)
    if not any(o.domain == "local" for o in wrapped.opset_import):
        wrapped.opset_import.add(domain="local", version=1)
    plain = assess_file(_WORK / "plain.onnx", m.SerializeToString(), inprocess_inference=True)
    moved = assess_file(_WORK / "wrapped.onnx", wrapped.SerializeToString(), inprocess_inference=True)
    if isinstance(plain, EekiError):
        event(f"base model refused: {type(plain).__name__}")
        return
    if isinstance(moved, ModelInvalidError) and "ONNX checker" in str(moved):
        event("wrapped model refused by the checker")  # e.g. a moved If whose branches read outer names
        return
    assert not isinstance(moved, EekiError), moved
    event("compared")
    a, b = plain.labels[0], moved.labels[0]
    for key in ("macs", "macs_depthwise", "macs_by_op", "op_histogram", "node_count", "parameters", "weight_bytes",
                "activation_bytes", "activation_peak_bytes"):
        assert getattr(b.model, key) == getattr(a.model, key), key
    assert b.inference.energy_j == a.inference.energy_j and b.label.index == a.label.index


# --------------------------------------------------------------------------------------------
# Regression cases: what fuzzing found, kept as files built here


def _conv_like(op, domain, inputs=("x", "w"), **attrs) -> bytes:
    import numpy as np
    from onnx import helper, numpy_helper

    import hostile as H

    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    return H.model([helper.make_node(op, list(inputs), ["y"], domain=domain, **attrs)], [H.vi("x", [1, 3, 8, 8])],
                   [H.vi("y", [1, 4, 8, 8])], [w],
                   opset=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]).SerializeToString()


def _constant_external(location: str) -> bytes:
    from onnx import TensorProto, helper

    import hostile as H

    t = TensorProto(name="c", data_type=TensorProto.BOOL, dims=[], data_location=TensorProto.EXTERNAL)
    t.external_data.add(key="location", value=location)
    return H.model([helper.make_node("Constant", [], ["c"], value=t), helper.make_node("Identity", ["x"], ["y"])],
                   [H.vi("x", [1])], [H.vi("y", [1])]).SerializeToString()


def _output_elem_type(elem: int) -> bytes:
    import hostile as H

    m = H.tiny()
    m.graph.output[0].type.tensor_type.elem_type = elem
    return m.SerializeToString()


def _einsum(equation: bytes, x_shape=(3, 3)) -> bytes:
    import numpy as np
    from onnx import helper, numpy_helper

    import hostile as H

    e = numpy_helper.from_array(np.ones((3, 3), np.float32), "E")
    return H.model([helper.make_node("Einsum", ["x", "E"], ["y"], equation=equation)], [H.vi("x", list(x_shape))],
                   [H.vi("y", [3, 3])], [e]).SerializeToString()


REGRESSIONS = [
    # make fuzz, 2026-11: ConvTranspose of domain com.microsoft with one input (the checker has no schema
    # for it): node_macs indexed node.input[1] -> IndexError
    ("convtranspose_ms_one_input", lambda: (
        b'\x08\x0e\x12\x04fuzz:\x83\x01\n)\n\x01x\x12\x02t0\x1a\x02n0"\rConvTranspose:\rcom.microsoft\n\x16\n\x02t0\x12'
        b'\x01y\x1a\x03out"\x08Identity\x12\x04fuzzZ\x1b\n\x01x\x12\x16\n\x14\x08\x01\x12\x10\n\x02\x08\x01\n\x02\x08\x01'
        b'\n\x02\x08\x01\n\x02\x08\x01b\x1b\n\x01y\x12\x16\n\x14\x08\x01\x12\x10\n\x02\x08\x01\n\x02\x08\x01\n\x02\x08\x01'
        b'\n\x02\x08\x01B\x04\n\x00\x10\x11B\x11\n\rcom.microsoft\x10\x01'), "label"),
    # make fuzz, 2026-11: a Constant whose tensor names external data "w" * 300: a file name longer than
    # the file system allows made Path.is_file() raise OSError (ENAMETOOLONG) -> internal error
    ("external_location_name_too_long", lambda: _constant_external("w" * 300), "ExternalDataError"),
    # make fuzz, 2026-11: a graph output of element type 29 (not in this onnx's enum; the checker let
    # it through): dtype_name raised ValueError -> internal error
    ("output_of_undefined_element_type", lambda: _output_elem_type(29), "label"),
    # make fuzz, 2026-11: If output declared (value_info) as a 1-D tensor of 2^31 elements, then Add:
    # onnx shape inference with data propagation allocated without bound; the fuzzing process was
    # OOM-killed at 24 GB. Shape inference now runs in a child with a memory limit.
    ("shape_inference_memory_bomb", lambda: __import__("hostile").shape_inference_memory_bomb().SerializeToString(),
     "ModelTooLargeError"),
    # found while writing the semantic mutations: a non-integer 'group' on operators the checker
    # cannot verify went through int() -> ValueError / TypeError
    ("fusedconv_group_is_a_string", lambda: _conv_like("FusedConv", "com.microsoft", group="abc"), "ModelInvalidError"),
    ("nhwcconv_group_is_a_list", lambda: _conv_like("NhwcConv", "com.microsoft", group=[1, 2]), "ModelInvalidError"),
    ("conv_of_another_domain_group_string", lambda: _conv_like("Conv", "com.microsoft", group="x"), "ModelInvalidError"),
    ("fusedconv_without_inputs", lambda: _conv_like("FusedConv", "com.microsoft", inputs=()), "label"),
    # an Einsum equation that is not UTF-8 (attribute strings are bytes): .decode() raised; since the
    # loader checks equations (below) it is refused as invalid
    ("einsum_equation_not_utf8", lambda: _einsum(b"\xff\xfe,jk->ik"), "ModelInvalidError"),
    # make fuzz-atheris, 2026-11-23: an Einsum equation with '?' on an input of lower rank kept onnx shape
    # inference looping (the tool's child stopped it after 300 s; atheris's in-process run timed out)
    ("einsum_equation_hangs_shape_inference", lambda: _einsum(b"?chw,wv->bchv", (3, 3, 1)), "ModelInvalidError"),
]


@pytest.mark.parametrize("build,expected", [c[1:] for c in REGRESSIONS], ids=[c[0] for c in REGRESSIONS])
def test_fuzz_regression(build, expected, tmp_path):
    assert check_file(tmp_path / "model.onnx", build()) == expected
