"""Convert OpenCV Zoo's YuNet 2023mar (``face_detection_yunet_2023mar_int8bq.onnx``) to a plain fp32 ONNX graph.

The shipped file is a small fully convolutional detector (Conv/Relu/MaxPool backbone, a two-step nearest
``Resize`` + ``Add`` neck, per-stride heads) whose weights are int8 behind opset-21 ``DequantizeLinear``. As
shipped it fails in onnxruntime at run time: the biases use ``block_size=64`` with a single scale, which
onnxruntime refuses ("block_size must be 0 for per-tensor quantization"). :func:`minimal_load_fix` sets just
those to ``block_size=0`` (identical values; the reference the tests compare against); :func:`build_graph`:

- folds every ``DequantizeLinear`` (+ constant ``Reshape``) into an fp32 initializer, exactly as onnxruntime
  computes it (:mod:`streamproc.models.quant_fold`, shared with SFace);
- makes the input height and width symbolic (the source fixes 640x640; every layer is convolutional and the
  heads reshape with ``-1``), keeps the batch at 1 (the heads reshape to a leading 1) and drops stale
  ``value_info``;
- lowers the opset to 17 (every remaining operator has the same semantics there).

Graph contract (relied on by :mod:`streamproc.vision.detect_yunet`): input ``input``, float32
``[1, 3, H, W]``, NCHW, **BGR**, raw 0..255, H and W multiples of 32 (zero-pad right/bottom). Outputs, for
stride s in 8/16/32 over the ``(H/s) x (W/s)`` cells in row-major order: ``cls_s`` and ``obj_s``
``[1, A, 1]`` (sigmoid already applied), ``bbox_s`` ``[1, A, 4]`` and ``kps_s`` ``[1, A, 10]`` (raw
regressions).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from streamproc.errors import ModelError
from streamproc.fsutil import atomic_write_bytes
from streamproc.models.quant_fold import ConstantFolder, int_attr

log = logging.getLogger(__name__)

OPSET = 17
INPUT_NAME = "input"
SOURCE_SIZE = 640
STRIDES = (8, 16, 32)
HEADS = (("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10))
OUTPUT_NAMES = tuple(f"{head}_{stride}" for head, _ in HEADS for stride in STRIDES)

_SOURCE_OPS = frozenset(
    {"DequantizeLinear", "Reshape", "Conv", "Relu", "MaxPool", "Resize", "Add", "Transpose", "Sigmoid"}
)


def minimal_load_fix(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the source that onnxruntime runs: each ``DequantizeLinear`` with a single scale becomes
    per-tensor (``block_size=0``, scalar scale and zero point: the same values); nothing else changes
    (640x640, int8 weights)."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    inits = {init.name: init for init in fixed.graph.initializer}
    for node in fixed.graph.node:
        scale = inits.get(node.input[1]) if node.op_type == "DequantizeLinear" else None
        if scale is None or int(np.prod(list(scale.dims))) != 1:
            continue
        for attr in node.attribute:
            if attr.name == "block_size":
                attr.i = 0
        for name in node.input[1:]:
            del inits[name].dims[:]
    return fixed


def _check_io(source: onnx.ModelProto) -> None:
    """One input ``input`` float32 (1, 3, 640, 640); the twelve head outputs, float32, batch 1."""
    inputs = [(v.name, [d.dim_value for d in v.type.tensor_type.shape.dim]) for v in source.graph.input]
    if inputs != [(INPUT_NAME, [1, 3, SOURCE_SIZE, SOURCE_SIZE])]:
        raise ModelError(f"YuNet graph does not match: inputs {inputs}, expected {INPUT_NAME} [1, 3, 640, 640]")
    outputs = {v.name: v.type.tensor_type for v in source.graph.output}
    if set(outputs) != set(OUTPUT_NAMES):
        raise ModelError(f"YuNet graph does not match: outputs {sorted(outputs)}, expected {sorted(OUTPUT_NAMES)}")
    for head, width in HEADS:
        for stride in STRIDES:
            tensor = outputs[f"{head}_{stride}"]
            dims = [d.dim_value for d in tensor.shape.dim]
            expected = [1, (SOURCE_SIZE // stride) ** 2, width]
            if tensor.elem_type != TensorProto.FLOAT or dims != expected:
                raise ModelError(f"YuNet graph does not match: '{head}_{stride}' is {dims}, expected {expected}")


def build_graph(source: onnx.ModelProto) -> onnx.ModelProto:
    """The fp32 model with symbolic H and W (see the module docstring for the contract)."""
    _check_io(source)
    unknown = sorted({node.op_type for node in source.graph.node} - _SOURCE_OPS)
    if unknown:
        raise ModelError(f"YuNet graph does not match: unexpected operators {unknown}")
    folder = ConstantFolder(source, "YuNet")
    for node in source.graph.node:
        if node.op_type == "Resize" and int_attr(node, "antialias", 0):
            raise ModelError("YuNet graph does not match: an antialiased Resize (opset 18+ only)")
        if not folder.fold(node):
            folder.copy(node)
    outputs = [
        helper.make_tensor_value_info(f"{head}_{stride}", TensorProto.FLOAT, [1, f"cells_{stride}", width])
        for head, width in HEADS
        for stride in STRIDES
    ]
    graph = helper.make_graph(
        folder.nodes,
        "yunet_2023mar_fp32",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, 3, "height", "width"])],
        outputs,
        initializer=folder.inits,
    )
    opsets = [helper.make_opsetid("", OPSET)]
    model = helper.make_model(
        graph,
        opset_imports=opsets,
        producer_name="streamproc.models.yunet_convert",
        ir_version=helper.find_min_ir_version_for(opsets),
        doc_string="OpenCV Zoo YuNet 2023mar (MIT), dequantised to fp32 by streamproc. BGR 0..255 NCHW "
        "[1, 3, H, W] float32, H and W multiples of 32 -> cls/obj/bbox/kps per stride 8/16/32",
    )
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ModelError(f"converted YuNet graph is invalid: {err}") from None
    return model


def convert_yunet(source: bytes, onnx_path: Path) -> None:
    """Convert the source ONNX bytes (already checked against their pinned sha256) and write the result atomically.

    The bytes depend only on the source and the installed ``onnx`` version, so the registry pins their sha256.
    """
    payload = build_graph(onnx.load_from_string(source)).SerializeToString(deterministic=True)
    atomic_write_bytes(Path(onnx_path), payload)
    log.info("converted YuNet -> %s (%d bytes)", onnx_path, len(payload))
