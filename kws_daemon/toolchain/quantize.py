"""fp32 ONNX -> int8 ONNX with onnxruntime.quantization (the measurements behind it: docs/export.md).

Default: dynamic quantisation, QInt8 weights per output channel on 7 bits (`reduce_range`),
activations quantised at run time to QUInt8, for MatMul weights only. x86 CPUs without VNNI (AVX2,
many AMD EPYC and Intel laptop parts) multiply u8 x s8 with a 16-bit saturating add: with full 8-bit
weights the sums overflow, and on this machine int8 agreed with fp32 on 85.9 % of a stand-in's
top-1 labels (max |logit diff| 0.155); 7-bit weights cannot overflow it, giving 98.4 % (0.018) at
the same speed. On VNNI CPUs u8 x s8 is the fast path; u8 weights
(optimum's `avx2` preset) run about 1.8x slower. Convolutions stay fp32: onnxruntime's ConvInteger has
no fast kernel, and on the default model's conv stem quantising it made a window 2.7x slower
(1.63 ms against 0.61 ms, the stem in fp32). Static QDQ (calibrated on recordings) is offered but
was both less accurate and no faster on the full-size AST; it leaves activation x activation
MatMuls (attention) in fp32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kws_daemon.toolchain.progress import quiet

METHODS = {
    "int8": "dynamic: QInt8 weights per channel (7-bit range), QUInt8 activations at run time; "
    "weight MatMuls only",
    "int8-static": "static QDQ: QInt8 weights per channel, QUInt8 activations calibrated (MinMax); "
    "weight MatMuls only",
}


def quantize_dynamic_int8(fp32: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet(""):  # it advises quant_pre_process; measured, that gains nothing
        quantize_dynamic(
            str(fp32),
            str(out),
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,
            op_types_to_quantize=["MatMul"],
        )


def _activation_matmuls(fp32: Path) -> list[str]:
    """MatMul nodes with no weight input: attention scores and context, left in fp32."""
    import onnx

    graph = onnx.load(str(fp32), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "MatMul" and not weights.intersection(n.input)]


def quantize_static_int8(fp32: Path, out: Path, windows: np.ndarray) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Windows(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter({"input_values": w[None]} for w in windows)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    with quiet(""):  # it advises quant_pre_process; measured, that gains nothing
        quantize_static(
            str(fp32),
            str(out),
            Windows(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=_activation_matmuls(fp32),
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
