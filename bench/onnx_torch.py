"""Run our ONNX graphs (RetinaFace MobileNet-0.25, SFace, YuNet, dlib ResNet) with PyTorch, node by node.

Why: the lent GPU machine has PyTorch with CUDA but only the CPU build of onnxruntime, so GPU numbers for
our models must come from PyTorch executing the same graph with the same weights. The ONNX file is read
with a small protobuf reader (no ``onnx`` package needed), and only the ops these graphs use are
implemented; anything else raises, naming the op.

Shape arithmetic (Shape/Gather/Slice/Concat on int64) stays on the CPU as small tensors, so the
Reshape/Resize sizes it feeds never force a GPU synchronisation.

    python bench/onnx_torch.py MODEL.onnx [--batch 2 --height 360 --width 640]   # compare with onnxruntime
"""

from __future__ import annotations

import argparse
import math
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch  # type: ignore[import-not-found,unused-ignore]
import torch.nn.functional as F  # type: ignore[import-not-found,unused-ignore]  # noqa: N812

# --- protobuf wire format -------------------------------------------------------------------------------
# Field numbers from onnx/onnx.proto (ModelProto.graph=7, opset_import=8; GraphProto node=1, initializer=5,
# input=11, output=12; NodeProto input=1, output=2, op_type=4, attribute=5, domain=7; AttributeProto name=1,
# f=2, i=3, s=4, t=5, floats=7, ints=8, type=20; TensorProto dims=1, data_type=2, float_data=4,
# int32_data=5, int64_data=7, name=8, raw_data=9, double_data=10, data_location=14).

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 9: np.bool_, 10: np.float16, 11: np.float64}


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _signed(value: int) -> int:
    """int64 fields are two's complement in 10-byte varints."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value): an int for varints, bytes for the rest."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == LENGTH:
            size, pos = _varint(buf, pos)
            yield number, wire, buf[pos : pos + size]
            pos += size
        elif wire == FIXED32:
            yield number, wire, buf[pos : pos + 4]
            pos += 4
        elif wire == FIXED64:
            yield number, wire, buf[pos : pos + 8]
            pos += 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} (field {number})")


def _ints(wire: int, value: Any) -> list[int]:
    """A repeated int64 field, packed or not."""
    if wire == VARINT:
        return [_signed(value)]
    out, pos = [], 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        out.append(_signed(v))
    return out


def _floats(wire: int, value: bytes) -> list[float]:
    """A repeated float field, packed (LENGTH) or one FIXED32 at a time."""
    return list(struct.unpack(f"<{len(value) // 4}f", value))


@dataclass
class Tensor:
    name: str
    array: np.ndarray[Any, Any]


@dataclass
class Node:
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    domain: str = ""


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
    initializers: dict[str, np.ndarray[Any, Any]] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    opset: int = 0


def _tensor(buf: bytes) -> Tensor:
    dims: list[int] = []
    dtype, name, raw = 1, "", b""
    floats: list[float] = []
    ints: list[int] = []
    doubles: list[float] = []
    for number, wire, value in _fields(buf):
        if number == 1:
            dims += _ints(wire, value)
        elif number == 2:
            dtype = value
        elif number == 4:
            floats += _floats(wire, value)
        elif number in (5, 7):
            ints += _ints(wire, value)
        elif number == 8:
            name = bytes(value).decode()
        elif number == 9:
            raw = bytes(value)
        elif number == 10:
            doubles += list(struct.unpack(f"<{len(value) // 8}d", value))
        elif number == 14 and value == 1:
            raise ValueError("tensors stored as external data are not supported")
    if dtype not in DTYPES:
        raise ValueError(f"tensor {name}: unsupported data type {dtype}")
    np_type = DTYPES[dtype]
    array: np.ndarray[Any, Any]
    if raw:
        array = np.frombuffer(raw, dtype=np.dtype(np_type).newbyteorder("<")).astype(np_type)
    elif dtype == 10:  # float16 lives in int32_data as raw bit patterns
        array = np.array(ints, np.uint16).view(np.float16)
    else:
        array = np.array(floats or doubles or ints, dtype=np_type)
    return Tensor(name, array.reshape(dims))


def _attribute(buf: bytes) -> tuple[str, Any]:
    name, kind = "", 0
    values: dict[int, Any] = {}
    lists: dict[int, list[Any]] = {7: [], 8: []}
    for number, wire, value in _fields(buf):
        if number == 1:
            name = bytes(value).decode()
        elif number == 20:
            kind = value
        elif number == 2:
            values[2] = struct.unpack("<f", value)[0]
        elif number == 3:
            values[3] = _signed(value)
        elif number == 4:
            values[4] = bytes(value).decode()
        elif number == 5:
            values[5] = _tensor(value).array
        elif number == 7:
            lists[7] += _floats(wire, value)
        elif number == 8:
            lists[8] += _ints(wire, value)
    # AttributeType: FLOAT=1, INT=2, STRING=3, TENSOR=4, FLOATS=6, INTS=7
    by_kind = {1: 2, 2: 3, 3: 4, 4: 5}
    if kind in by_kind:
        return name, values[by_kind[kind]]
    if kind in (6, 7):
        return name, lists[7 if kind == 6 else 8]
    raise ValueError(f"attribute {name}: unsupported attribute type {kind}")


def _node(buf: bytes) -> Node:
    node = Node(op="", inputs=[], outputs=[], attrs={})
    for number, _, value in _fields(buf):
        if number == 1:
            node.inputs.append(bytes(value).decode())
        elif number == 2:
            node.outputs.append(bytes(value).decode())
        elif number == 4:
            node.op = bytes(value).decode()
        elif number == 5:
            key, attr = _attribute(value)
            node.attrs[key] = attr
        elif number == 7:
            node.domain = bytes(value).decode()
    return node


def _value_name(buf: bytes) -> str:
    return next(bytes(v).decode() for n, _, v in _fields(buf) if n == 1)


def read_onnx(path: Path) -> Graph:
    """Parse the parts of an ONNX ModelProto that execution needs."""
    graph = Graph()
    graph_buf = b""
    for number, _, value in _fields(path.read_bytes()):
        if number == 7:
            graph_buf = value
        elif number == 8:
            opset = dict((n, v) for n, _, v in _fields(value))
            if not opset.get(1):  # the default ("") domain
                graph.opset = int(opset.get(2, 0))
    for number, _, value in _fields(graph_buf):
        if number == 1:
            graph.nodes.append(_node(value))
        elif number == 5:
            tensor = _tensor(value)
            graph.initializers[tensor.name] = tensor.array
        elif number == 11:
            graph.inputs.append(_value_name(value))
        elif number == 12:
            graph.outputs.append(_value_name(value))
    graph.inputs = [name for name in graph.inputs if name not in graph.initializers]
    return graph


# --- ops -----------------------------------------------------------------------------------------------

Op = Callable[[Node, list[Any], int], Any]


def _ints_of(t: Any) -> list[int]:
    return [int(v) for v in t.reshape(-1).tolist()]


def _conv(node: Node, x: list[Any], _: int) -> Any:
    a = node.attrs
    if a.get("auto_pad", "NOTSET") != "NOTSET":
        raise NotImplementedError("Conv auto_pad")
    pads = a.get("pads", [0, 0, 0, 0])
    inp = x[0]
    if pads[:2] != pads[2:]:
        inp = F.pad(inp, (pads[1], pads[3], pads[0], pads[2]))
        pads = [0, 0, 0, 0]
    bias = x[2] if len(x) > 2 else None
    return F.conv2d(inp, x[1], bias, a.get("strides", 1), pads[:2], a.get("dilations", 1), a.get("group", 1))


def _pool(node: Node, x: Any, average: bool) -> Any:
    a = node.attrs
    if a.get("auto_pad", "NOTSET") != "NOTSET" or a.get("dilations", [1, 1]) != [1, 1]:
        raise NotImplementedError(f"{node.op} auto_pad/dilations")
    pads = a.get("pads", [0, 0, 0, 0])
    kernel, strides, ceil = a["kernel_shape"], a.get("strides", [1, 1]), bool(a.get("ceil_mode", 0))
    if pads[:2] != pads[2:]:
        x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]), value=0.0 if average else -math.inf)
        pads = [0, 0, 0, 0]
    if average:
        include = bool(a.get("count_include_pad", 0))
        return F.avg_pool2d(x, kernel, strides, pads[:2], ceil, count_include_pad=include)
    return F.max_pool2d(x, kernel, strides, pads[:2], ceil_mode=ceil)


def _pad(node: Node, x: list[Any], _: int) -> Any:
    if node.attrs.get("mode", "constant") != "constant" or (len(x) > 3 and x[3] is not None):
        raise NotImplementedError("Pad other than constant over all axes")
    pads = _ints_of(x[1]) if len(x) > 1 else node.attrs["pads"]
    rank = len(pads) // 2
    torch_pads: list[int] = []
    for axis in reversed(range(rank)):  # torch: last axis first, (begin, end) pairs
        torch_pads += [pads[axis], pads[axis + rank]]
    value = float(x[2].item()) if len(x) > 2 and x[2] is not None and x[2].numel() else 0.0
    return F.pad(x[0], torch_pads, value=value)


def _slice(node: Node, x: list[Any], opset: int) -> Any:
    if opset < 10:
        starts, ends = node.attrs["starts"], node.attrs["ends"]
        axes, steps = node.attrs.get("axes", list(range(len(starts)))), [1] * len(starts)
    else:
        starts, ends = _ints_of(x[1]), _ints_of(x[2])
        axes = _ints_of(x[3]) if len(x) > 3 and x[3] is not None else list(range(len(starts)))
        steps = _ints_of(x[4]) if len(x) > 4 and x[4] is not None else [1] * len(starts)
    index = [slice(None)] * x[0].dim()
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        index[axis] = slice(start, min(end, sys.maxsize), step)
    return x[0][tuple(index)]


def _reshape(node: Node, x: list[Any], _: int) -> Any:
    shape = _ints_of(x[1])
    if not node.attrs.get("allowzero", 0):
        shape = [x[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x[0].reshape(shape)


def _resize(node: Node, x: list[Any], _: int) -> Any:
    a = node.attrs
    mode, coords = a.get("mode", "nearest"), a.get("coordinate_transformation_mode", "half_pixel")
    if mode != "nearest" or coords != "asymmetric" or a.get("nearest_mode", "round_prefer_floor") != "floor":
        raise NotImplementedError(f"Resize mode={mode} coordinate_transformation_mode={coords}")
    # torch's 'nearest' is exactly ONNX nearest/asymmetric/floor: src = floor(dst * in / out).
    if len(x) > 3 and x[3] is not None and x[3].numel():
        return F.interpolate(x[0], size=_ints_of(x[3])[2:], mode="nearest")
    scales = [float(s) for s in x[2].reshape(-1).tolist()]
    return F.interpolate(x[0], scale_factor=scales[2:], mode="nearest")


def _softmax(node: Node, x: list[Any], opset: int) -> Any:
    axis = node.attrs.get("axis", -1 if opset >= 13 else 1)
    if opset >= 13:
        return torch.softmax(x[0], axis)
    # Before opset 13 Softmax flattens the axes from ``axis`` on into one.
    shape = x[0].shape
    axis = axis % len(shape)
    flat = x[0].reshape(*shape[:axis], -1)
    return torch.softmax(flat, -1).reshape(shape)


def _unsqueeze(node: Node, x: list[Any], opset: int) -> Any:
    axes = node.attrs["axes"] if opset < 13 else _ints_of(x[1])
    out = x[0]
    rank = out.dim() + len(axes)
    for axis in sorted(a % rank for a in axes):
        out = out.unsqueeze(axis)
    return out


def _gather(node: Node, x: list[Any], _: int) -> Any:
    index = x[1].to(x[0].device)
    axis = node.attrs.get("axis", 0) % x[0].dim()
    out = torch.index_select(x[0], axis, index.reshape(-1).remainder(x[0].shape[axis]))
    return out.reshape((*x[0].shape[:axis], *index.shape, *x[0].shape[axis + 1 :]))


def _batch_norm(node: Node, x: list[Any], _: int) -> Any:
    """Inference BatchNormalization (SFace keeps 29 of them unfused), on (N, C, ...) or (N, C)."""
    data, scale, bias, mean, var = x[:5]
    return F.batch_norm(data, mean, var, scale, bias, training=False, eps=node.attrs.get("epsilon", 1e-5))


def _gemm(node: Node, x: list[Any], _: int) -> Any:
    a = node.attrs
    left = x[0].transpose(0, 1) if a.get("transA", 0) else x[0]
    right = x[1].transpose(0, 1) if a.get("transB", 0) else x[1]
    out = a.get("alpha", 1.0) * torch.matmul(left, right)
    if len(x) > 2 and x[2] is not None:
        out = out + a.get("beta", 1.0) * x[2]
    return out


CAST = {1: "float32", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64"}

OPS: dict[str, Op] = {
    "Conv": _conv,
    "Relu": lambda n, x, o: F.relu(x[0]),
    "Sigmoid": lambda n, x, o: torch.sigmoid(x[0]),
    "BatchNormalization": _batch_norm,
    "Gemm": _gemm,
    "LeakyRelu": lambda n, x, o: F.leaky_relu(x[0], n.attrs.get("alpha", 0.01)),
    "Add": lambda n, x, o: x[0] + x[1],
    "Sub": lambda n, x, o: x[0] - x[1],
    "Mul": lambda n, x, o: x[0] * x[1],
    "MatMul": lambda n, x, o: torch.matmul(x[0], x[1]),
    "MaxPool": lambda n, x, o: _pool(n, x[0], average=False),
    "AveragePool": lambda n, x, o: _pool(n, x[0], average=True),
    "GlobalAveragePool": lambda n, x, o: x[0].mean(dim=(2, 3), keepdim=True),
    "Flatten": lambda n, x, o: x[0].reshape(math.prod(x[0].shape[: n.attrs.get("axis", 1)]), -1),
    "Pad": _pad,
    "Concat": lambda n, x, o: torch.cat(x, n.attrs["axis"]),
    "Transpose": lambda n, x, o: x[0].permute(*n.attrs.get("perm", list(reversed(range(x[0].dim()))))),
    "Reshape": _reshape,
    "Resize": _resize,
    "Softmax": _softmax,
    "Identity": lambda n, x, o: x[0],
    "Shape": lambda n, x, o: torch.tensor(list(x[0].shape), dtype=torch.int64),
    "Gather": _gather,
    "Unsqueeze": _unsqueeze,
    "Slice": _slice,
    "Cast": lambda n, x, o: x[0].to(getattr(torch, CAST[n.attrs["to"]])),
}


class OnnxModule(torch.nn.Module):  # type: ignore[misc,unused-ignore]
    """An ONNX graph as a ``torch.nn.Module``: float weights are buffers (``.to()``/``.half()`` move them),
    integer constants stay CPU tensors for shape arithmetic."""

    def __init__(self, graph: Graph) -> None:
        super().__init__()
        known = {*OPS, "Constant"}
        missing = sorted({n.op for n in graph.nodes if n.op not in known or n.domain not in ("", "ai.onnx")})
        if missing:
            raise NotImplementedError(f"ONNX ops not implemented: {', '.join(missing)}")
        self.graph = graph
        self._buffer_of: dict[str, str] = {}
        self._cpu_consts: dict[str, Any] = {}
        consts = dict(graph.initializers)
        self._nodes: list[Node] = []
        for node in graph.nodes:
            if node.op == "Constant":
                consts[node.outputs[0]] = np.asarray(node.attrs["value"])
            else:
                self._nodes.append(node)
        last_use: dict[str, int] = {}
        for step, node in enumerate(self._nodes):
            for name in node.inputs:
                last_use[name] = step
        keep = set(graph.outputs) | set(consts)
        self._dead_after: list[list[str]] = [[] for _ in self._nodes]
        for name, step in last_use.items():
            if name and name not in keep:
                self._dead_after[step].append(name)
        for i, (name, array) in enumerate(consts.items()):
            value = torch.from_numpy(np.array(array))
            if value.is_floating_point():
                self.register_buffer(f"c{i}", value)
                self._buffer_of[name] = f"c{i}"
            else:
                self._cpu_consts[name] = value

    @classmethod
    def from_file(cls, path: Path) -> OnnxModule:
        return cls(read_onnx(path))

    def forward(self, *inputs: Any) -> tuple[Any, ...]:
        env: dict[str, Any] = dict(self._cpu_consts)
        for name, attr in self._buffer_of.items():
            env[name] = getattr(self, attr)
        env.update(zip(self.graph.inputs, inputs, strict=True))
        opset = self.graph.opset
        for node, dead in zip(self._nodes, self._dead_after, strict=True):
            args = [env[name] if name else None for name in node.inputs]
            env[node.outputs[0]] = OPS[node.op](node, args, opset)
            for name in dead:  # free activations early: 1080p batches hold gigabytes otherwise
                del env[name]
        return tuple(env[name] for name in self.graph.outputs)


def compare_with_onnxruntime(model: Path, batch: Any) -> list[float]:
    """Max |torch - onnxruntime| per output, both in fp32 on the CPU, on the same input."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: batch})
    module = OnnxModule.from_file(model).eval()
    with torch.inference_mode():
        got = module(torch.from_numpy(batch))
    return [float(np.abs(g.numpy() - e).max()) for g, e in zip(got, expected, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--height", type=int, default=150)
    parser.add_argument("--width", type=int, default=150)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    batch = rng.uniform(0, 255, (args.batch, 3, args.height, args.width)).astype(np.float32)
    diffs = compare_with_onnxruntime(args.model, batch)
    print(f"{args.model.name}: max abs diff torch vs onnxruntime per output: {', '.join(f'{d:.3g}' for d in diffs)}")


if __name__ == "__main__":
    main()
