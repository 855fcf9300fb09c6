"""Repeated blocks of an unrolled graph's encoding fold in records.csv, so any CSV reader reads it."""
import csv
import io

import torch

from edgebench.reports.encoding import fold_blocks


def test_a_block_repeated_with_other_wiring_is_written_once_with_its_count():
    steps = [f"Add(n{10 + 3 * t}, n{2 + t})\nMul(n{11 + 3 * t}, Param[4])\nSub(n{12 + 3 * t}) --> Where"
             for t in range(50)]
    text = "input 1x4\n" + "\n".join(steps) + "\nGemm(n160, Param[2x4])"
    folded = fold_blocks(text).split("\n")
    assert folded == ["input 1x4", "Add(n10, n2)", "Mul(n11, Param[4])", "Sub(n12) --> Where",
                      "[above 3 lines x50]", "Gemm(n160, Param[2x4])"]
    assert fold_blocks("a\nb\nc") == "a\nb\nc"  # nothing repeated, nothing changed


def test_unrolled_spiking_encoding_fits_csv_default_limits(tmp_path):
    import onnx

    from edgebench.export.onnx import export_onnx, export_view, onnx_encoding
    from edgebench.train.l2mu import L2MU

    net = L2MU(in_channels=6, num_classes=4, hidden_size=64, memory_size=4, order=8, theta=100.0,
               input_size=32, neuron="cuba").eval()
    path = export_onnx(export_view(net), torch.randn(1, 6, 100), tmp_path / "cuba.onnx")
    full = onnx_encoding(onnx.load(str(path)))
    folded = fold_blocks(full)
    assert len(full) > 50_000  # the unrolled window (lean graph: ~85k characters) is long enough to need folding
    assert len(folded) * 10 <= len(full)  # at least 10x shorter
    buf = io.StringIO()
    csv.writer(buf).writerow(["cuba", folded])
    assert next(csv.reader(io.StringIO(buf.getvalue())))[1] == folded  # default limits
