"""The ONNX wrapper every converted face embedder shares: the graph's I/O contract, opset and checker."""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from onnx import TensorProto, helper

from streamproc.errors import ModelError


def embedder_model(
    nodes: Sequence[onnx.NodeProto],
    initializers: Sequence[onnx.TensorProto],
    *,
    name: str,
    io: tuple[str, str],
    input_size: int,
    embedding_dim: int,
    opset: int,
    producer: str,
    doc: str,
) -> onnx.ModelProto:
    """A checked model: input ``io[0]`` float32 ``[batch, 3, size, size]`` (NCHW) -> output ``io[1]`` float32
    ``[batch, dim]``.

    The IR version is the lowest that carries ``opset``, so older onnxruntime releases load the file too.
    Raises :class:`ModelError` when onnx's full checker (with shape inference) rejects the graph.
    """
    input_name, output_name = io
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", 3, input_size, input_size])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", embedding_dim])],
        initializer=initializers,
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(
        graph,
        opset_imports=opsets,
        producer_name=producer,
        ir_version=helper.find_min_ir_version_for(opsets),
        doc_string=doc,
    )
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ModelError(f"converted {name} graph is invalid: {err}") from None
    return model
