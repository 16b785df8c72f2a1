"""Folding OpenCV Zoo's block-quantised ONNX weights (``*_int8bq.onnx``) back into fp32 initializers.

The Zoo's int8bq files (SFace 2021dec, YuNet 2023mar) store every weight as int8 behind an opset-21
``DequantizeLinear`` (per-tensor, per-axis or block-wise), often followed by a constant ``Reshape``.
:class:`ConstantFolder` walks such a graph in order, evaluates those constant subgraphs exactly as onnxruntime
does and emits the remaining nodes with plain float32 initializers; each converter adds its own rewrites on top.
"""

from __future__ import annotations

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import helper, numpy_helper

from streamproc.errors import ModelError


def dequantize(
    quantized: NDArray[np.int8], scale: NDArray[np.float32], zero_point: NDArray[np.int8] | None, axis: int, block: int
) -> NDArray[np.float32]:
    """ONNX ``DequantizeLinear`` (opset 21) on constants: per-tensor, per-axis or block-wise along ``axis``.

    Block-wise, ``scale`` has ``ceil(n / block)`` entries along ``axis`` where ``quantized`` has ``n``;
    element ``i`` uses entry ``i // block``. The integer difference is exact, so the float32 product
    matches onnxruntime's kernel bit for bit.
    """
    zp = np.zeros_like(scale, dtype=np.int32) if zero_point is None else zero_point.astype(np.int32)
    if block > 0:
        n = quantized.shape[axis]
        scale = np.repeat(scale, block, axis=axis).take(np.arange(n), axis=axis)
        zp = np.repeat(zp, block, axis=axis).take(np.arange(n), axis=axis)
    elif scale.size > 1:
        shape = [1] * quantized.ndim
        shape[axis] = scale.size
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    diff = (quantized.astype(np.int32) - zp).astype(np.float32)
    return (diff * scale.astype(np.float32)).astype(np.float32)


def int_attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(attr.i)
    return default


class ConstantFolder:
    """Folds ``DequantizeLinear`` and constant ``Reshape`` nodes; collects the emitted nodes and initializers.

    ``label`` names the model in errors ("SFace graph does not match: ..."). Initializers are emitted in order
    of first use, so the serialised bytes of a converted graph depend only on its source.
    """

    def __init__(self, source: onnx.ModelProto, label: str) -> None:
        self.label = label
        self.consts: dict[str, NDArray[np.generic]] = {
            init.name: numpy_helper.to_array(init) for init in source.graph.initializer
        }
        self.alias: dict[str, str] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.emitted: set[str] = set()

    def mismatch(self, what: str) -> ModelError:
        return ModelError(f"{self.label} graph does not match: {what}")

    def name(self, tensor: str) -> str:
        return self.alias.get(tensor, tensor)

    def use(self, tensor: str) -> str:
        """Reference ``tensor``; the first reference of a constant emits its initializer."""
        if tensor in self.consts and tensor not in self.emitted:
            self.emitted.add(tensor)
            self.inits.append(numpy_helper.from_array(self.consts[tensor], tensor))
        return tensor

    def const(self, tensor: str) -> NDArray[np.generic]:
        if tensor not in self.consts:
            raise self.mismatch(f"'{tensor}' should be a constant")
        return self.consts[tensor]

    def emit(self, op: str, inputs: list[str], output: str) -> None:
        self.nodes.append(helper.make_node(op, [self.use(i) for i in inputs], [output], name=output))

    def fold(self, node: onnx.NodeProto) -> bool:
        """Evaluate ``node`` into a constant when it is a ``DequantizeLinear`` or a ``Reshape`` of a constant."""
        op, inputs, out = node.op_type, [self.name(i) for i in node.input], node.output[0]
        if op == "DequantizeLinear":
            q = self.const(inputs[0])
            if q.dtype != np.int8:
                raise self.mismatch(f"{inputs[0]} is {q.dtype}, expected int8")
            zero_point = self.const(inputs[2]).astype(np.int8) if len(inputs) > 2 and inputs[2] else None
            self.consts[out] = dequantize(
                q.astype(np.int8),
                self.const(inputs[1]).astype(np.float32),
                zero_point,
                int_attr(node, "axis", 1),
                int_attr(node, "block_size", 0),
            )
            return True
        if op == "Reshape" and inputs[0] in self.consts:
            shape = self.const(inputs[1]).astype(np.int64)
            if (shape == 0).any():
                raise self.mismatch(f"Reshape {out} copies a dimension (0 in {shape})")
            self.consts[out] = self.const(inputs[0]).reshape(tuple(int(d) for d in shape))
            return True
        return False

    def copy(self, node: onnx.NodeProto) -> None:
        """Emit ``node`` unchanged but for its inputs, renamed through the aliases."""
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        del copy.input[:]
        copy.input.extend(self.use(self.name(i)) for i in node.input)
        self.nodes.append(copy)
