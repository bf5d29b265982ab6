"""Dynamic int8 whose activations are quantised per window, not per batch.

onnxruntime's DynamicQuantizeLinear takes one scale and zero point over the whole tensor, batch
included: batched with a loud window, a quiet one gets a coarser scale and other scores. Served
streams share batches (kws_daemon.batching), so one stream's audio would move another's decisions.
This rewrite gives each window (the first axis) its own range, with the same rounding, and keeps
the integer MatMul: for activations q with zero point z,

    (q - z) @ (W - w_z)  ==  q @ (W - w_z)  -  z * colsum(W - w_z)

so MatMulInteger runs with no activation zero point, and the correction is one int32 product per
window and output. At batch 1 the scores are those of the original graph; at any batch each window
gets what it gets alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def per_window(model: object) -> int:
    """Rewrites an onnx.ModelProto in place; returns the number of DynamicQuantizeLinear replaced."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    assert isinstance(model, onnx.ModelProto)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    inferred = onnx.shape_inference.infer_shapes(model).graph
    ranks = {
        v.name: len(v.type.tensor_type.shape.dim)
        for v in [*inferred.value_info, *inferred.input, *inferred.output]
        if v.type.tensor_type.HasField("shape")
    }
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    new_nodes: list[onnx.NodeProto] = []
    after: dict[str, list[onnx.NodeProto]] = {}  # the correction, by the MatMulInteger it follows
    replaced = 0

    def const(name: str, value: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    zero = const("perwindow/zero", np.array(0.0, np.float32))
    levels = const("perwindow/255", np.array(255.0, np.float32))
    tiny = const("perwindow/tiny", np.array(1e-30, np.float32))  # an all-zero window: no 0/0
    for node in graph.node:
        if node.op_type != "DynamicQuantizeLinear":
            new_nodes.append(node)
            continue
        x, (q, scale, zp) = node.input[0], node.output
        p = f"perwindow/{replaced}/"
        rank = ranks.get(x)
        if rank is None:
            raise ValueError(f"the rank of {x} is not known from shape inference")
        axes = list(range(1, rank))  # every axis but the first: one range per window
        f = [
            helper.make_node("ReduceMin", [x], [p + "min"], axes=axes, keepdims=1),
            helper.make_node("ReduceMax", [x], [p + "max"], axes=axes, keepdims=1),
            helper.make_node("Min", [p + "min", zero], [p + "lo"]),
            helper.make_node("Max", [p + "max", zero], [p + "hi"]),
            helper.make_node("Sub", [p + "hi", p + "lo"], [p + "span"]),
            helper.make_node("Max", [p + "span", tiny], [p + "range"]),
            helper.make_node("Div", [p + "range", levels], [scale]),
            # zero point: round(-lo / scale), in 0..255 (DynamicQuantizeLinear's definition)
            helper.make_node("Div", [p + "lo", scale], [p + "lo_q"]),
            helper.make_node("Neg", [p + "lo_q"], [p + "neg_lo_q"]),
            helper.make_node("Round", [p + "neg_lo_q"], [p + "zp_round"]),
            helper.make_node("Clip", [p + "zp_round", zero, levels], [p + "zp_f"]),
            helper.make_node("Div", [x, scale], [p + "x_q"]),
            helper.make_node("Round", [p + "x_q"], [p + "x_round"]),
            helper.make_node("Add", [p + "x_round", p + "zp_f"], [p + "x_shift"]),
            helper.make_node("Clip", [p + "x_shift", zero, levels], [p + "x_clip"]),
            helper.make_node("Cast", [p + "x_clip"], [q], to=TensorProto.UINT8),
            helper.make_node("Cast", [p + "zp_f"], [p + "zp_i32"], to=TensorProto.INT32),
        ]
        new_nodes += f
        # the consumers: MatMulInteger without the activation zero point, then the correction
        for user in consumers.get(zp, []):
            if user.op_type != "MatMulInteger":
                raise ValueError(f"{zp} feeds a {user.op_type}, not a MatMulInteger")
            w = numpy_helper.to_array(inits[user.input[1]]).astype(np.int32)
            w_zp = (
                numpy_helper.to_array(inits[user.input[3]]).astype(np.int32)
                if len(user.input) > 3 and user.input[3]
                else np.zeros(w.shape[-1], np.int32)
            )
            colsum = const(user.output[0] + "/colsum", (w - w_zp).sum(axis=0).astype(np.int32))
            raw = user.output[0] + "/uncorrected"
            correction = user.output[0] + "/correction"
            user.input[2] = ""  # no activation zero point: q is taken as it is
            out = user.output[0]
            user.output[0] = raw
            new_nodes_after = [
                helper.make_node("Mul", [p + "zp_i32", colsum], [correction]),
                helper.make_node("Sub", [raw, correction], [out]),
            ]
            after[user.name or raw] = new_nodes_after
        replaced += 1
    ordered: list[onnx.NodeProto] = []
    for node in new_nodes:
        ordered.append(node)
        ordered += after.pop(node.name or (node.output[0] if node.output else ""), [])
    del graph.node[:]
    graph.node.extend(ordered)
    return replaced


def rewrite(path: Path) -> int:
    import onnx

    model = onnx.load(str(path))
    n = per_window(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return n


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(f"{arg}: {rewrite(Path(arg))} DynamicQuantizeLinear made per window")
