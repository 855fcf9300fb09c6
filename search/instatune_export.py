"""Export an InstaTune subnet (extracted, not masked) to ONNX or TFLite, validated against PyTorch.

The file has one input, `input_ids` (int64, batch x seq_len, padded with 0); the attention mask is
ids != 0 inside the graph. One input means the eval split is the ids alone and the device runner's
"first input" is the whole input.

ONNX goes through torch.onnx (TorchScript exporter, dynamic batch, opset 17) rather than optimum: optimum
exports transformers models from their config, and a BertConfig cannot say "4 heads in layer 0, 12 in
layer 1, FFN 384 here and 1536 there"; the extracted subnets are plain torch modules. TFLite goes through
litert-torch (edgebench.export.tflite), INT8 dynamic through onnxruntime's quantize_dynamic and
ai-edge-quantizer as for every other model.
"""
from __future__ import annotations

import io
import warnings
from contextlib import redirect_stdout
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from edgebench.export.errors import ExportError
from edgebench.export.onnx import compare, describe_onnx
from edgebench.export.registry import DEFAULT_ATOL, DEFAULT_OPSET
from edgebench.train.instatune import Supernet
from edgebench.train.minilm import MiniLMClassifier, arch_macs, extract_subnet, predict
from edgebench.types import Artifact, EdgebenchError, Format, Precision, first_line

MIN_AGREEMENT_INT8 = 0.97  # top-1 agreement an INT8-dynamic file must reach against the float subnet
MACS_DEFINITION = ("analytic: multiply-accumulates of the encoder's linear layers and attention matmuls plus the "
                   "head, one sequence of seq_len tokens (embedding lookups, LayerNorm, softmax, GELU excluded)")


def run_onnx_ids(path: Path, ids: np.ndarray, batch: int = 64, threads: int = 1) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: ids[i:i + batch].astype(np.int64)})[0] for i in range(0, len(ids), batch)]
    return np.concatenate(outs, axis=0)


def run_file(path: Path, ids: np.ndarray) -> np.ndarray:
    """Logits of an exported subnet file for token ids, on this host."""
    if Path(path).suffix == ".tflite":
        from edgebench.export.tflite_model import run_tflite

        return run_tflite(path, ids)
    return run_onnx_ids(path, ids)


def onnx_export_ids(module: MiniLMClassifier, path: Path, seq_len: int, opset: int = DEFAULT_OPSET) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.ones(1, seq_len, dtype=torch.int64)
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module.eval(), (example,), str(path), dynamo=False, opset_version=opset,
                              input_names=["input_ids"], output_names=["logits"],
                              dynamic_axes={"input_ids": {0: "batch"}, "logits": {0: "batch"}})
        except Exception as exc:
            raise ExportError(f"ONNX export of the subnet failed: {first_line(exc)}") from None
    return path


def export_subnet(sn: Supernet, arch: dict, fmt: Format, precision: Precision, out_dir: Path, eval_ids: np.ndarray,
                  name: str, atol: float = DEFAULT_ATOL, fp32: Artifact | None = None, head=None) -> Artifact:
    """Extract `arch`, write one file, validate it on eval_ids (atol for float, top-1 agreement for INT8).
    head: (weight, bias) of a refitted classification head for this subnet (None: the supernet's)."""
    fmt, precision = Format(fmt), Precision(precision)
    if precision not in (Precision.FP32, Precision.INT8_DYNAMIC):
        raise EdgebenchError(f"instatune export: precision {precision.value} is not offered "
                             "(fp32 or int8-dynamic; static INT8 needs per-model calibration of attention)")
    out_dir = Path(out_dir)
    sub = extract_subnet(sn.model, arch)
    if head is not None:
        with torch.no_grad():
            sub.classifier.weight.copy_(head[0])
            sub.classifier.bias.copy_(head[1])
    seq_len = int(eval_ids.shape[1])
    ref = predict(sub, eval_ids)
    stem = f"{name}-{fmt.value}-{precision.value}"
    if precision == Precision.INT8_DYNAMIC and fp32 is None:
        fp32 = export_subnet(sn, arch, fmt, Precision.FP32, out_dir, eval_ids, name, atol, head=head)
    if fmt == Format.ONNX:
        path = out_dir / f"{stem}.onnx"
        if precision == Precision.FP32:
            onnx_export_ids(sub, path, seq_len)
        else:
            from edgebench.export.quantize import quantize_onnx_file

            quantize_onnx_file(fp32.path, path, Precision.INT8_DYNAMIC, input_name="input_ids")
    elif fmt == Format.TFLITE:
        from edgebench.export.tflite import convert_tflite, quantize_tflite_dynamic

        path = out_dir / f"{stem}.tflite"
        if precision == Precision.FP32:
            convert_tflite(sub, torch.ones(1, seq_len, dtype=torch.int64), path)
        else:
            quantize_tflite_dynamic(fp32.path, path)
    else:
        raise EdgebenchError(f"instatune export: format {fmt.value} is not offered (onnx or tflite)")
    got = run_file(path, eval_ids)
    validation = (compare(ref, got, atol) if precision == Precision.FP32
                  else compare(ref, got, None, MIN_AGREEMENT_INT8))
    encoder_params = sum(p.numel() for n, p in sub.named_parameters() if n.startswith("layers."))
    extra = {"arch": arch, "seq_len": seq_len, "arch_macs": arch_macs(arch, sub.dims.hidden, sub.dims.head_dim,
                                                                      seq_len, sub.dims.n_classes),
             "arch_macs_definition": MACS_DEFINITION, "encoder_params": int(encoder_params),
             "input": f"input_ids int64 [batch, {seq_len}], padded with 0; attention mask = ids != 0 in the graph"}
    extra["head"] = "refit on the subnet's own features" if head is not None else "the supernet's"
    if fp32 is not None and precision != Precision.FP32:
        extra["quantized_from"] = fp32.name
    if fmt == Format.ONNX:
        art = describe_onnx(path, name=stem, model_name=name, dataset=sn.config.get("data", {}).get(
            "dataset", "rotten_tomatoes"), precision=precision, validation=validation, labels=sn.labels, extra=extra)
    else:
        from edgebench.export.tflite_model import describe_tflite

        art = describe_tflite(path, name=stem, model_name=name, dataset=sn.config.get("data", {}).get(
            "dataset", "rotten_tomatoes"), precision=precision, validation=validation, labels=sn.labels, extra=extra)
    if art.macs is None:  # the graph counter could not profile the int64 input: state the analytic count
        art = replace(art, macs=extra["arch_macs"], macs_definition=MACS_DEFINITION)
    return art


def file_accuracy(path: Path, ids: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of an exported file run by its own runtime on this host (onnxruntime / LiteRT)."""
    return float((run_file(path, ids).argmax(-1) == y).mean())
