"""Convert dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) to ONNX.

The ``.dat`` is dlib's own serialisation of the whole network object. Only the learnable tensors
matter here; they appear input-first, each written as the integers ``2, num_samples, k, nr, nc``
followed by ``num_samples*k*nr*nc`` little-endian float32 values. dlib packs each integer as one
byte holding the byte count (``0x80`` set when negative) followed by that many little-endian bytes.

Rather than re-implementing every layer's serialisation, the parser walks the file in network order
and finds each tensor by the encoded header of its known shape, allowing only a short stretch of
layer metadata between tensors. After each convolution it also reads dlib's own record of the
filter count, kernel, stride and padding and checks it against :data:`_BLOCKS`, so a layout the
spec does not describe fails loudly instead of producing a wrong graph.

Per convolution the file holds one tensor of ``cout*cin*kh*kw + cout`` values (filters in
(O, I, H, W) order, then biases), then its affine layer as one tensor of ``2*cout`` values
(scales, then shifts); the affine is folded into the convolution. The final fully connected layer
is one ``256 x 128`` tensor (input-major, no bias). The file ends with a 72-byte tail of layer
metadata.

Graph contract (relied on by the embedder): input ``input``, float32 ``[batch, 3, 150, 150]``, NCHW,
RGB, raw pixel values 0..255 (dlib's mean subtraction and 1/256 scaling happen inside the graph);
output ``embedding``, float32 ``[batch, 128]``, the raw dlib descriptor (not normalised; compare
with L2 distance).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import helper, numpy_helper

from streamproc.errors import ModelError
from streamproc.fsutil import atomic_write_bytes
from streamproc.models.onnx_embedder import embedder_model

log = logging.getLogger(__name__)

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "embedding"
INPUT_SIZE = 150
EMBEDDING_DIM = 128

# dlib's input_rgb_image_sized<150>: (pixel - mean) / 256, means in R, G, B order.
_RGB_MEAN = (122.782, 117.001, 104.298)
_INPUT_SCALE = 1.0 / 256.0

# Network body after the stem, input first: ("res", channels) is a residual block, ("down",
# channels) a stride-2 residual_down block. Mirrors dlib's alevel4 .. alevel0.
_BLOCKS: tuple[tuple[str, int], ...] = (
    *(("res", 32),) * 3,
    ("down", 64),
    *(("res", 64),) * 3,
    ("down", 128),
    *(("res", 128),) * 2,
    ("down", 256),
    *(("res", 256),) * 2,
    ("down", 256),
)
_STEM_CHANNELS = 32
_STEM_KERNEL = 7
_FC_IN = 256

_MAX_GAP = 1024  # bytes of layer metadata allowed between two tensors (largest seen: 341)
_TAIL_BYTES = 72  # metadata after the last tensor (the fc layer's alias tensors and settings)
_TENSOR_VERSION = 2


@dataclass(frozen=True)
class ConvSpec:
    """One dlib ``con_`` layer (always followed by an ``affine_`` layer)."""

    name: str
    cin: int
    cout: int
    kernel: int
    stride: int

    @property
    def pad(self) -> int:
        """dlib's default padding: ``kernel // 2`` at stride 1, none otherwise."""
        return self.kernel // 2 if self.stride == 1 else 0


@dataclass(frozen=True)
class DlibWeights:
    """Parsed weights: per conv the affine-folded filters (O, I, H, W) and biases, plus the fc matrix."""

    convs: tuple[tuple[NDArray[np.float32], NDArray[np.float32]], ...]
    fc: NDArray[np.float32]  # (256, 128): embedding = pooled @ fc


def conv_specs() -> list[ConvSpec]:
    """All convolutions in network (input-first) order, which is also their order in the file."""
    specs = [ConvSpec("stem", 3, _STEM_CHANNELS, _STEM_KERNEL, 2)]
    channels = _STEM_CHANNELS
    for index, (kind, cout) in enumerate(_BLOCKS):
        stride = 2 if kind == "down" else 1
        specs.append(ConvSpec(f"b{index:02d}_{kind}{cout}.conv1", channels, cout, 3, stride))
        specs.append(ConvSpec(f"b{index:02d}_{kind}{cout}.conv2", cout, cout, 3, 1))
        channels = cout
    return specs


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


def _encode_int(value: int) -> bytes:
    """dlib's integer packing: a byte-count byte (0x80 if negative), then little-endian bytes."""
    magnitude = abs(value)
    body = bytearray()
    while True:
        body.append(magnitude & 0xFF)
        magnitude >>= 8
        if magnitude == 0:
            break
    return bytes([len(body) | (0x80 if value < 0 else 0)]) + bytes(body)


def _read_int(buf: memoryview, offset: int) -> tuple[int, int]:
    """Decode one dlib-packed integer at ``offset``; returns ``(value, next_offset)``."""
    if offset >= len(buf):
        raise ModelError(f"dlib model is truncated: integer expected at byte {offset}")
    control = buf[offset]
    size = control & 0x0F
    if size == 0 or size > 8 or control & 0x70:
        raise ModelError(f"dlib model does not parse: bad integer control byte {control:#04x} at {offset}")
    end = offset + 1 + size
    if end > len(buf):
        raise ModelError(f"dlib model is truncated: integer at byte {offset} runs past the end")
    value = int.from_bytes(buf[offset + 1 : end], "little")
    return (-value if control & 0x80 else value), end


def _tensor_header(shape: tuple[int, int, int, int]) -> bytes:
    """The encoded bytes that start a serialised dlib tensor of ``(num_samples, k, nr, nc)``."""
    return b"".join(_encode_int(v) for v in (_TENSOR_VERSION, *shape))


def _read_tensor(
    data: bytes, offset: int, shape: tuple[int, int, int, int], what: str
) -> tuple[NDArray[np.float32], int]:
    """Find the next tensor of ``shape`` at or after ``offset``; returns its values (flat) and end.

    Only ``_MAX_GAP`` bytes of metadata may precede the header, so a match inside float data of a
    misparsed file cannot be picked up silently.
    """
    header = _tensor_header(shape)
    start = data.find(header, offset, offset + _MAX_GAP + len(header))
    if start < 0:
        if len(data) < offset + _MAX_GAP + len(header):
            raise ModelError(f"dlib model is truncated: {what} {shape} missing after byte {offset}")
        raise ModelError(
            f"dlib model does not parse: no {what} tensor {shape} within {_MAX_GAP} bytes of byte {offset}"
        )
    count = int(np.prod(shape))
    begin = start + len(header)
    end = begin + 4 * count
    if end > len(data):
        raise ModelError(f"dlib model is truncated: {what} {shape} at byte {start} runs past the end")
    values = np.frombuffer(data, dtype="<f4", count=count, offset=begin).astype(np.float32)
    if not np.all(np.isfinite(values)):
        raise ModelError(f"dlib model is corrupt: {what} {shape} at byte {start} holds non-finite values")
    return values, end


def _check_conv_record(buf: memoryview, offset: int, spec: ConvSpec) -> int:
    """Check dlib's record after a ``con_`` tensor: filters, kernel rows/cols, strides, paddings."""
    found: list[int] = []
    for _ in range(7):
        value, offset = _read_int(buf, offset)
        found.append(value)
    expected = [spec.cout, spec.kernel, spec.kernel, spec.stride, spec.stride, spec.pad, spec.pad]
    if found != expected:
        raise ModelError(
            f"dlib model does not match the expected ResNet: {spec.name} has (filters, nr, nc, stride_y, "
            f"stride_x, pad_y, pad_x) = {tuple(found)}, expected {tuple(expected)}"
        )
    return offset


def parse_dlib_resnet(data: bytes) -> DlibWeights:
    """Parse the ``.dat`` bytes into affine-folded conv weights and the fc matrix.

    Raises :class:`ModelError` if a tensor is missing, the file is truncated, or anything but the
    expected metadata tail follows the last tensor.
    """
    buf = memoryview(data)
    offset = 0
    convs: list[tuple[NDArray[np.float32], NDArray[np.float32]]] = []
    for spec in conv_specs():
        n_filter = spec.cout * spec.cin * spec.kernel * spec.kernel
        params, offset = _read_tensor(data, offset, (n_filter + spec.cout, 1, 1, 1), f"{spec.name} filters")
        offset = _check_conv_record(buf, offset, spec)
        affine, offset = _read_tensor(data, offset, (2 * spec.cout, 1, 1, 1), f"{spec.name} affine")
        weight = params[:n_filter].reshape(spec.cout, spec.cin, spec.kernel, spec.kernel)
        bias = params[n_filter:]
        scale, shift = affine[: spec.cout], affine[spec.cout :]
        convs.append(
            (
                (weight * scale[:, None, None, None]).astype(np.float32),
                (bias * scale + shift).astype(np.float32),
            )
        )
    fc, offset = _read_tensor(data, offset, (_FC_IN, EMBEDDING_DIM, 1, 1), "fc")
    leftover = len(data) - offset
    if leftover != _TAIL_BYTES:
        raise ModelError(f"dlib model does not parse: {leftover} bytes follow the last tensor, expected {_TAIL_BYTES}")
    return DlibWeights(convs=tuple(convs), fc=fc.reshape(_FC_IN, EMBEDDING_DIM))


# ---------------------------------------------------------------------------------------------
# Graph building
# ---------------------------------------------------------------------------------------------


@dataclass
class _GraphBuilder:
    """Accumulates nodes and initializers in creation order (so the serialised bytes are stable)."""

    nodes: list[onnx.NodeProto]
    inits: list[onnx.TensorProto]

    def const(self, name: str, array: NDArray[np.float32] | NDArray[np.int64]) -> str:
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def conv(self, spec: ConvSpec, weights: tuple[NDArray[np.float32], NDArray[np.float32]], x: str) -> str:
        w, b = weights
        p = spec.pad
        return self.node(
            "Conv",
            [x, self.const(f"{spec.name}.w", w), self.const(f"{spec.name}.b", b)],
            spec.name,
            kernel_shape=[spec.kernel, spec.kernel],
            strides=[spec.stride, spec.stride],
            pads=[p, p, p, p],
        )

    def pad_to(self, x: str, have: tuple[int, int, int], want: tuple[int, int, int]) -> str:
        """Zero-pad (C, H, W) at the end of each axis, as dlib's ``add_prev`` does for the smaller input."""
        extra = [w - h for h, w in zip(have, want, strict=True)]
        if not any(extra):
            return x
        pads = np.array([0, 0, 0, 0, 0, *extra], dtype=np.int64)
        return self.node("Pad", [x, self.const(f"{x}.pads", pads)], f"{x}.padded", mode="constant")


def _conv_out(size: int, spec: ConvSpec) -> int:
    return (size + 2 * spec.pad - spec.kernel) // spec.stride + 1


def build_graph(weights: DlibWeights) -> onnx.ModelProto:
    """Build the ONNX model (see the module docstring for the input/output contract)."""
    specs = conv_specs()
    if len(specs) != len(weights.convs):
        raise ModelError(f"dlib weights hold {len(weights.convs)} convolutions, expected {len(specs)}")
    g = _GraphBuilder(nodes=[], inits=[])
    layers = iter(zip(specs, weights.convs, strict=True))

    mean = np.array(_RGB_MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
    x = g.node("Sub", [INPUT_NAME, g.const("rgb_mean", mean)], "centred")
    x = g.node("Mul", [x, g.const("input_scale", np.array(_INPUT_SCALE, dtype=np.float32))], "scaled")

    spec, w = next(layers)
    x = g.node("Relu", [g.conv(spec, w, x)], "stem.relu")
    size = _conv_out(INPUT_SIZE, spec)
    x = g.node("MaxPool", [x], "stem.maxpool", kernel_shape=[3, 3], strides=[2, 2])  # dlib: no padding
    size = (size - 3) // 2 + 1
    channels = spec.cout

    # Spatial sizes: 150 -conv7/2-> 72 -maxpool3/2-> 35, then each down block 35 -> 17 -> 8 -> 4 -> 2.
    # From 8 and 4 the 3x3/2 conv gives 3 and 1 but the 2x2/2 pool gives 4 and 2: dlib's add_prev
    # zero-pads the smaller input at the bottom/right (and missing channels at the end).
    for index, (kind, cout) in enumerate(_BLOCKS):
        name = f"b{index:02d}_{kind}{cout}"
        spec1, w1 = next(layers)
        spec2, w2 = next(layers)
        y = g.node("Relu", [g.conv(spec1, w1, x)], f"{name}.relu1")
        y = g.conv(spec2, w2, y)
        conv_size = _conv_out(_conv_out(size, spec1), spec2)
        if kind == "down":
            # dlib residual_down: 2x2/2 average pool of the input, added with zero padding.
            skip = g.node("AveragePool", [x], f"{name}.skip", kernel_shape=[2, 2], strides=[2, 2])
            skip_size = (size - 2) // 2 + 1
            target = (max(channels, cout), max(conv_size, skip_size), max(conv_size, skip_size))
            y = g.pad_to(y, (cout, conv_size, conv_size), target)
            skip = g.pad_to(skip, (channels, skip_size, skip_size), target)
            channels, size = target[0], target[1]
        else:
            skip = x
        x = g.node("Relu", [g.node("Add", [y, skip], f"{name}.add")], f"{name}.relu2")
    if channels != _FC_IN:
        raise ModelError(f"network ends with {channels} channels, the fc layer expects {_FC_IN}")

    x = g.node("GlobalAveragePool", [x], "avgpool")
    x = g.node("Flatten", [x], "flatten", axis=1)
    g.node("MatMul", [x, g.const("fc.w", weights.fc)], OUTPUT_NAME)

    return embedder_model(
        g.nodes,
        g.inits,
        name="dlib_face_recognition_resnet_model_v1",
        io=(INPUT_NAME, OUTPUT_NAME),
        input_size=INPUT_SIZE,
        embedding_dim=EMBEDDING_DIM,
        opset=OPSET,
        producer="streamproc.models.dlib_convert",
        doc="dlib face ResNet v1: RGB 0..255 NCHW 150x150 float32 -> raw 128-d descriptor",
    )


def convert_dlib_resnet(dat_path: Path, onnx_path: Path) -> None:
    """Parse the .dat, build the ONNX graph, write it atomically (tmp file + os.replace).

    The bytes depend only on the source file and the installed ``onnx`` version, so converting
    twice gives identical files (the registry records their sha256).
    """
    try:
        data = Path(dat_path).read_bytes()
    except OSError as err:
        raise ModelError(f"cannot read dlib model {dat_path}: {err.strerror or err}") from None
    try:
        weights = parse_dlib_resnet(data)
    except ModelError as err:
        raise ModelError(f"{dat_path}: {err}") from None
    payload = build_graph(weights).SerializeToString(deterministic=True)

    atomic_write_bytes(Path(onnx_path), payload)
    log.info("converted %s -> %s (%d bytes)", dat_path, onnx_path, len(payload))
