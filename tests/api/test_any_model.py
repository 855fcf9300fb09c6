"""Real third-party ONNX files from pip packages, benched as a user would: free dimensions are never
guessed, the shapes fed are in the record, state and integer scalar inputs can be given."""
import importlib.metadata
import json

import pytest

from tests.cli.test_cli import one_error_line


def packaged(dist: str, path: str):
    return importlib.metadata.distribution(dist).locate_file(path)


DET = ("rapidocr-onnxruntime", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx")
VAD = ("silero-vad", "silero_vad/data/silero_vad.onnx")


def test_detector_with_free_height_and_width(cli, tmp_path):
    det = packaged(*DET)
    store = ("--store", tmp_path / "s.sqlite")
    line = one_error_line(cli("bench", det, "--runs", "3", *store))
    assert "input 'x'" in line and "free dimension(s) 2" in line and "--shape x=Nx3xNxN" in line

    docs = {}
    for side in (640, 1280):
        p = cli("bench", det, "--shape", f"x=1x3x{side}x{side}", "--runs", "2", "--warmup", "0", "--json", *store)
        assert p.returncode == 0, p.stderr
        docs[side] = json.loads(p.stdout)
        assert docs[side]["inputs_fed"] == [{"name": "x", "shape": [1, 3, side, side], "dtype": "float32",
                                             "source": "random normal (seed 0)"}]
        assert docs[side]["params"] > 1_000_000  # weights live in Constant nodes in this graph
    ratio = docs[1280]["macs"] / docs[640]["macs"]
    assert 3.9 < ratio < 4.1  # 4x the pixels, 4x the work


def test_vad_with_state_and_int64_sample_rate(cli, tmp_path):
    vad = packaged(*VAD)
    store = ("--store", tmp_path / "s.sqlite")
    line = one_error_line(cli("bench", vad, *store))
    assert "input 'input'" in line and "--shape input=" in line
    p = cli("bench", vad, "--shape", "input=1x512", "--shape", "state=2x1x128", "--input", "state=zeros",
            "--input", "sr=16000", "--runs", "20", "--json", *store)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["status"] == "ok" and doc["latency_ms"]["n"] == 20
    fed = {f["name"]: f for f in doc["inputs_fed"]}
    assert fed["sr"] == {"name": "sr", "shape": [], "dtype": "int64", "source": "value 16000"}
    assert fed["state"]["shape"] == [2, 1, 128] and fed["state"]["source"] == "zeros"
    # onnx-tool cannot shape-infer the If branches: no MACs, and the record says why
    assert doc["macs"] is None and "could not shape-infer" in doc["macs_unavailable"]


def test_inputs_given_by_npz_and_bad_names(cli, tmp_path):
    import numpy as np

    vad = packaged(*VAD)
    npz = tmp_path / "feed.npz"
    np.savez(npz, input=np.zeros((1, 256), np.float32), state=np.zeros((2, 1, 128), np.float32),
             sr=np.asarray(8000, np.int64))
    p = cli("bench", vad, "--inputs", npz, "--runs", "5", "--json", "--store", tmp_path / "s.sqlite")
    assert p.returncode == 0, p.stderr
    fed = {f["name"]: f for f in json.loads(p.stdout)["inputs_fed"]}
    assert fed["input"]["shape"] == [1, 256] and fed["sr"]["source"] == "value 8000"
    line = one_error_line(cli("bench", vad, "--inputs", npz, "--input", "rate=8000", "--store", tmp_path / "s.sqlite"))
    assert "no input named 'rate'" in line and "input, state, sr" in line


def test_float16_int32_bool_and_int64_inputs_are_fed_as_such(cli, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    ins = [helper.make_tensor_value_info("half", TensorProto.FLOAT16, ["n", 4]),
           helper.make_tensor_value_info("ids", TensorProto.INT32, ["n", 4]),
           helper.make_tensor_value_info("flags", TensorProto.BOOL, ["n", 4]),
           helper.make_tensor_value_info("count", TensorProto.INT64, [])]
    nodes = [helper.make_node("Cast", [i.name], [f"{i.name}_f"], to=TensorProto.FLOAT) for i in ins]
    nodes += [helper.make_node("Add", ["half_f", "ids_f"], ["s1"]), helper.make_node("Add", ["s1", "flags_f"], ["s2"]),
              helper.make_node("Add", ["s2", "count_f"], ["y"])]
    graph = helper.make_graph(nodes, "dtypes", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])])
    path = tmp_path / "dtypes.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    p = cli("bench", path, "--input", "ids=7", "--input", "flags=ones", "--input", "count=3", "--runs", "5", "--json",
            "--store", tmp_path / "s.sqlite")
    assert p.returncode == 0, p.stderr
    fed = {f["name"]: (f["shape"], f["dtype"], f["source"]) for f in json.loads(p.stdout)["inputs_fed"]}
    assert fed == {"half": ([1, 4], "float16", "random normal (seed 0); batch dimension defaulted to 1"),
                   "ids": ([1, 4], "int32", "value 7; batch dimension defaulted to 1"),
                   "flags": ([1, 4], "bool", "ones; batch dimension defaulted to 1"),
                   "count": ([], "int64", "value 3")}
    line = one_error_line(cli("bench", path, "--input", "ids=2.5", "--store", tmp_path / "s.sqlite"))
    assert line == "edgebench: error: input 'ids' is int32 but the given values are not whole numbers"
