"""Tiny models the predictor's build times beside the kernels: an empty model (a runtime call and the machine's
speed), a Split handing back one or both outputs (what one more returned output costs a kernel timed alone), and
the deployed runner's interpreter share around one inference (search/predictor.py build_predictor)."""
from __future__ import annotations

from pathlib import Path

import onnx


def runner_harness(device, folder: Path) -> int | None:
    """The Python interpreter's instructions around one inference in the deployed runner, as `edgebench bench`
    counts them (an empty model: 11,434 under pi4-emulated; about 11,800 for a one-input model, about 9,000 in
    the batch runner that times kernels and whole models for the build). A predicted count is the runtime's work
    plus this."""
    from edgebench.deploy.bundle import make_bundle
    from edgebench.export.onnx import describe_onnx
    from edgebench.types import RunSpec

    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(empty_model(), str(folder / "empty.onnx"))
    bundle = make_bundle(describe_onnx(folder / "empty.onnx"), folder / "bundle")
    m = device.run(bundle, RunSpec(runs=3, warmup=1, threads=1, eval=False))
    full, outside = m.extra.get("instructions_per_inference"), m.extra.get("instructions_outside_interpreter")
    if not m.ok or full is None or outside is None:
        return None
    return int(full - outside)


def split_model(returned: int) -> onnx.ModelProto:
    """A Split in two of a [1, 2] tensor, `returned` of its outputs handed back."""
    from onnx import TensorProto, helper

    outs = ["y0", "y1"]
    graph = helper.make_graph([helper.make_node("Split", ["x"], outs, axis=1, num_outputs=2)], "split",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, 1]) for o in outs[:returned]])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


def empty_model() -> onnx.ModelProto:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "empty",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    # IR 8: what onnxruntime of two years ago (a board's, the emulated root's) still loads
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
