"""Convert OpenCV Zoo's SFace (``face_recognition_sface_2021dec_int8bq.onnx``) to a plain fp32 ONNX graph.

The shipped file is a MobileFaceNet-style network (Conv -> BatchNormalization -> PRelu, 27 times, then
BatchNormalization, Dropout, Flatten, Gemm and a final BatchNormalization) whose weights are int8 with
block-wise ``DequantizeLinear`` (opset 21). As shipped it does not load in onnxruntime: 29 graph inputs
that no node uses (the original fp32 weight names) are demanded at run time. :func:`minimal_load_fix`
removes just those (the reference the tests compare against); :func:`build_graph` goes further:

- every ``DequantizeLinear`` (+ constant ``Reshape``) is folded into an fp32 initializer, computed
  exactly as onnxruntime does (``(q - zero_point)`` in integers, times the block's float32 scale);
- the batch dimension is symbolic (the source fixes it at 1) and stale ``value_info`` is dropped;
- ``PRelu(x, s)`` becomes ``Relu(x) * (1 - s) + x * s``: the same values to ~1e-6 relative, but about
  twice as fast on onnxruntime's CPU provider, whose PRelu kernel dominated the run time;
- the input normalisation ``(x - 127.5) * 0.0078125`` is removed, so the model takes the standard
  ArcFace preprocessing ``(x - 127.5) / 128`` from the embedder (bit-identical: 1/128 is exact);
- inference-time ``Dropout`` is removed (an identity), and the opset is lowered to 17 (every
  remaining operator has the same semantics there), so older onnxruntime releases load it.

Graph contract (relied on by the embedder): input ``data``, float32 ``[batch, 3, 112, 112]``, NCHW,
**RGB**, normalised ``(pixel - 127.5) / 128`` (BGR silently degrades it), on a chip aligned to the
standard ArcFace 112-px five-point template; output ``fc1``, float32 ``[batch, 128]``, not normalised
(norm ~10): L2-normalise and compare by cosine.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto

from streamproc.errors import ModelError
from streamproc.fsutil import atomic_write_bytes
from streamproc.models.onnx_embedder import embedder_model
from streamproc.models.quant_fold import ConstantFolder

log = logging.getLogger(__name__)

OPSET = 17
INPUT_NAME = "data"
OUTPUT_NAME = "fc1"
INPUT_SIZE = 112
EMBEDDING_DIM = 128
INPUT_MEAN = 127.5  # what the embedder must subtract (the source graph's own Sub constant)
INPUT_STD = 128.0  # what it must divide by (the source graph multiplies by 0.0078125 = 1/128)

# Operators the source may contain; anything else means a different file and fails loudly.
_SOURCE_OPS = frozenset(
    {"DequantizeLinear", "Reshape", "Sub", "Mul", "Conv", "BatchNormalization", "PRelu"}
    | {"Constant", "Dropout", "Flatten", "Gemm"}
)


def minimal_load_fix(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the source that onnxruntime loads: graph inputs that no node reads or that are initializers
    are removed, nothing else changes (batch stays fixed at 1, weights stay int8)."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    used = {name for node in fixed.graph.node for name in node.input}
    initialised = {init.name for init in fixed.graph.initializer}
    keep = [inp for inp in fixed.graph.input if inp.name in used and inp.name not in initialised]
    del fixed.graph.input[:]
    fixed.graph.input.extend(keep)
    return fixed


def _expect_scalar(consts: dict[str, NDArray[np.generic]], name: str, value: float, what: str) -> None:
    array = consts.get(name)
    if array is None or array.size != 1 or float(array.reshape(())) != value:
        raise ModelError(f"SFace graph does not match: {what} is {array!r}, expected the constant {value}")


class _Converter(ConstantFolder):
    """Walks the source nodes in order, folding constants and emitting the new nodes and initializers."""

    def __init__(self, source: onnx.ModelProto) -> None:
        super().__init__(source, "SFace")
        self.normalisation: list[str] = []  # the removed input Sub and Mul, in order

    def convert(self, node: onnx.NodeProto) -> None:
        if self.fold(node):
            return
        op, inputs, out = node.op_type, [self.name(i) for i in node.input], node.output[0]
        if op == "Sub" and inputs[0] == INPUT_NAME and not self.normalisation:
            _expect_scalar(self.consts, inputs[1], INPUT_MEAN, "the input mean")
            self.alias[out] = INPUT_NAME
            self.normalisation.append(op)
        elif op == "Mul" and inputs[0] == INPUT_NAME and self.normalisation == ["Sub"]:
            _expect_scalar(self.consts, inputs[1], 1.0 / INPUT_STD, "the input scale")
            self.alias[out] = INPUT_NAME
            self.normalisation.append(op)
        elif op == "Dropout":
            self.alias[out] = inputs[0]  # an identity at inference
        elif op == "Constant":
            pass  # only Dropout's ratio, dropped with it (checked by the full model check at the end)
        elif op == "PRelu":
            x, slope = inputs[0], self.const(inputs[1]).astype(np.float32)
            self.consts[f"{out}.one_minus_slope"] = (np.float32(1.0) - slope).astype(np.float32)
            self.emit("Relu", [x], f"{out}.pos")
            self.emit("Mul", [f"{out}.pos", f"{out}.one_minus_slope"], f"{out}.pos_scaled")
            self.emit("Mul", [x, inputs[1]], f"{out}.x_scaled")
            self.emit("Add", [f"{out}.pos_scaled", f"{out}.x_scaled"], out)
        else:
            self.copy(node)


def _check_io(source: onnx.ModelProto) -> None:
    """The source's input ``data`` (1, 3, 112, 112) and output ``fc1`` (1, 128), both float32."""
    for values, name, shape in (
        (source.graph.input, INPUT_NAME, [1, 3, INPUT_SIZE, INPUT_SIZE]),
        (source.graph.output, OUTPUT_NAME, [1, EMBEDDING_DIM]),
    ):
        found = next((v for v in values if v.name == name), None)
        if found is None:
            raise ModelError(f"SFace graph does not match: no '{name}' among its inputs/outputs")
        tensor = found.type.tensor_type
        dims = [d.dim_value for d in tensor.shape.dim]
        if tensor.elem_type != TensorProto.FLOAT or dims != shape:
            raise ModelError(f"SFace graph does not match: '{name}' is {dims}, expected float32 {shape}")


def build_graph(source: onnx.ModelProto) -> onnx.ModelProto:
    """The fp32 model (see the module docstring for the changes and the input/output contract)."""
    _check_io(source)
    unknown = sorted({node.op_type for node in source.graph.node} - _SOURCE_OPS)
    if unknown:
        raise ModelError(f"SFace graph does not match: unexpected operators {unknown}")
    converter = _Converter(source)
    for node in source.graph.node:
        converter.convert(node)
    if converter.normalisation != ["Sub", "Mul"]:
        raise ModelError("SFace graph does not match: no (data - 127.5) * 0.0078125 input normalisation found")

    return embedder_model(
        converter.nodes,
        converter.inits,
        name="sface_2021dec_fp32",
        io=(INPUT_NAME, OUTPUT_NAME),
        input_size=INPUT_SIZE,
        embedding_dim=EMBEDDING_DIM,
        opset=OPSET,
        producer="streamproc.models.sface_convert",
        doc="OpenCV Zoo SFace 2021dec (Apache-2.0), modified by streamproc: fp32 weights, PReLU rewritten, "
        "normalisation removed. RGB (x-127.5)/128 NCHW 112x112 float32 -> raw 128-d descriptor",
    )


def convert_sface(source: bytes, onnx_path: Path) -> None:
    """Convert the source ONNX bytes (already checked against their pinned sha256) and write the result atomically.

    The bytes depend only on the source and the installed ``onnx`` version (initializers in first-use
    order, deterministic serialisation), so the registry can pin their sha256.
    """
    payload = build_graph(onnx.load_from_string(source)).SerializeToString(deterministic=True)
    atomic_write_bytes(Path(onnx_path), payload)
    log.info("converted SFace -> %s (%d bytes)", onnx_path, len(payload))
