import pytest
from onnx import TensorProto, helper

from eeki_label.errors import ShapeError, UsageError
from eeki_label.profile.shapes import parse_shape_option, parse_shape_options, resolve_input_shapes


def model_with_input(dims):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_parse_shape_option_variants():
    assert parse_shape_option("x=1x3x224x224") == ("x", (1, 3, 224, 224))
    assert parse_shape_option(" input.1 = 2,3 ") == ("input.1", (2, 3))
    assert parse_shape_option("past=1x0x8") == ("past", (1, 0, 8))  # an empty dimension (an empty KV cache)
    for bad in ("x", "x=", "x=1xax2", "=1x2", "x=-1x3"):
        with pytest.raises(UsageError):
            parse_shape_option(bad)
    with pytest.raises(UsageError, match="twice"):
        parse_shape_options(["x=1", "x=2"])


def test_leading_symbolic_dim_defaults_to_batch_one():
    assert resolve_input_shapes(model_with_input(["N", 3, 8, 8])) == {"x": (1, 3, 8, 8)}


def test_unknown_inner_dim_is_an_error_naming_input_and_dim():
    with pytest.raises(ShapeError, match=r"input 'x': dimension 2 is 'H'"):
        resolve_input_shapes(model_with_input(["N", 3, "H", 8]))


def test_override_wins_and_is_checked_against_fixed_dims():
    m = model_with_input(["N", 3, "H", "W"])
    assert resolve_input_shapes(m, {"x": (2, 3, 48, 192)}) == {"x": (2, 3, 48, 192)}
    with pytest.raises(ShapeError, match="fixes it to 3"):
        resolve_input_shapes(m, {"x": (1, 4, 48, 192)})
    with pytest.raises(ShapeError, match="rank"):
        resolve_input_shapes(m, {"x": (1, 3, 48)})
    with pytest.raises(UsageError, match="model's inputs are 'x'"):
        resolve_input_shapes(m, {"y": (1,)})
