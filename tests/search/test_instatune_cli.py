"""`edgebench instatune export|search` and the `job = "instatune"` run config, as a user runs them."""
from __future__ import annotations

import json
import tomllib
from dataclasses import asdict
from pathlib import Path

import pytest

from edgebench.train.instatune import InstaTuneConfig, Supernet, save_supernet
from edgebench.train.minilm import ElasticChoices, pretrained_minilm
from edgebench.types import EdgebenchError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """Pretrained MiniLM saved as a supernet without fine-tuning: the command-line flow, in seconds."""
    sn = Supernet(pretrained_minilm(2, seed=0), ElasticChoices(), ("rotten", "fresh"),
                  {"train": asdict(InstaTuneConfig(max_length=32)), "data": {"dataset": "rotten_tomatoes", "seed": 0}})
    return save_supernet(sn, tmp_path_factory.mktemp("sn") / "supernet.pt")


def test_arch_outside_the_space_is_one_line_and_exit_2(cli, ckpt, tmp_path):
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"layers": 2, "heads": [4, 3], "ffn": [384, 384]}))

    r = cli("instatune", "export", "--supernet", ckpt, "--arch", arch, "--out", tmp_path / "x")

    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "heads[1] = 3 is outside the space" in r.stderr
    assert not (tmp_path / "x").exists()


def test_export_small_arch_reports_size_and_accuracy_on_the_device(cli, ckpt, tmp_path):
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"layers": 2, "heads": [4, 4], "ffn": [384, 384]}))

    r = cli("instatune", "export", "--supernet", ckpt, "--arch", arch, "--format", "onnx", "--precision", "fp32",
                "--out", tmp_path / "x", "--device", "local", "--json")

    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert Path(out["file"]).exists() and out["seq_len"] == 32
    qkv, attn_out = 3 * (384 * 128 + 128), 128 * 384 + 384  # 4 heads x 32 = 128
    ffn, norms = (384 * 384 + 384) + (384 * 384 + 384), 2 * 2 * 384
    assert out["encoder_params"] == 2 * (qkv + attn_out + ffn + norms)
    assert out["validation"]["max_abs_diff"] < 1e-4
    assert out["device"]["n_eval"] == 1281  # the whole test split ran on the device
    assert out["device"]["accuracy"] == pytest.approx(out["test_accuracy_host"], abs=1e-9)


def test_unknown_key_in_the_job_config_is_one_line():
    from edgebench.search.instatune_job import parse

    doc = {"job": "instatune", "search": {"n_initail": 4}}
    with pytest.raises(EdgebenchError, match="unknown key 'n_initail'.*did you mean 'n_initial'"):
        parse(doc, REPO / "examples" / "x.toml")


def test_quick_run_config_measures_picks_with_predictions_beside_them(ckpt, tmp_path):
    from edgebench.search.instatune_job import run

    doc = tomllib.loads((REPO / "examples" / "instatune_quick.toml").read_text())
    doc.update(out=str(tmp_path / "out"), store=str(tmp_path / "store.sqlite"), supernet=str(ckpt))
    doc["search"].update(n_initial=2, iterations=0, refit_head=32)
    doc["deploy"].update(picks=1)

    result = run(doc, REPO / "examples" / "instatune_quick.toml", progress=False, log=lambda *_: None)

    assert [r.status for r in result.records] == ["ok", "ok"]
    full, pick = result.records
    assert full.extra["role"] == "full" and pick.extra["role"] == "pick0"
    assert pick.macs < full.macs and pick.n_eval == 64 and pick.accuracy is not None
    assert pick.extra["predicted_provenance"] == "predicted" and pick.extra["predicted_latency_ms"] > 0
    assert pick.latency_provenance == "measured"
    assert pick.extra["head"].startswith("refit") and full.extra["head"] == "the supernet's"
    assert (result.report_dir / "search.html").exists()
    summary = json.loads((result.report_dir / "search.json").read_text())
    assert summary["devices"]["local"]["evaluations"] == 20 * 10 + 1
    assert len(summary["devices"]["local"]["evaluated"]) == 4
    # the search's own bundles (a model copy per subnet and device) are gone once measured; exports stay
    assert not any((tmp_path / "out" / "work" / "bundles" / "local").iterdir())
    assert len(list((tmp_path / "out" / "work" / "subnets").glob("*.onnx"))) == 4


def test_a_second_run_of_the_same_config_reuses_its_supernet(tmp_path):
    from edgebench.search.instatune_job import _supernet, parse

    doc = tomllib.loads((REPO / "examples" / "instatune_quick.toml").read_text())
    doc["out"] = str(tmp_path / "out")
    job = parse(doc, REPO / "examples" / "instatune_quick.toml")
    made = Supernet(pretrained_minilm(2, seed=0), ElasticChoices(), ("rotten", "fresh"),
                    {"train": {**asdict(job.train), "threads": 7}, "data": {"dataset": "rotten_tomatoes", "seed": 0}})
    save_supernet(made, job.out / "supernet.pt")

    sn, reused = _supernet(job, fresh=False, progress=False, log=lambda *_: None)

    assert reused and sn.path == job.out / "supernet.pt"
    other = parse({**doc, "train": {**doc["train"], "steps": 3}}, REPO / "examples" / "instatune_quick.toml")
    assert not _supernet.__globals__["_same_training"](asdict(other.train), made.config["train"])
