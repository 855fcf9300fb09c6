"""One strict config mechanism: a typo or an impossible value is one line naming it (with the closest valid
name) and exit 2, before any training starts."""
import pytest

from tests.cli.test_cli import one_error_line

BASE = """
name = "strict"
out_dir = "{out}"
[[models]]
name = "m"
kind = "cnn"
dataset = "digits"
{model_lines}
[bench]
devices = ["{device}"]
"""


def _run(cli, tmp_path, model_lines="", device="local", devices_toml=None):
    cfg = tmp_path / "run.toml"
    cfg.write_text(BASE.format(out=tmp_path / "out", model_lines=model_lines, device=device))
    args = ["run", cfg]
    if devices_toml is not None:
        (tmp_path / "devices.toml").write_text(devices_toml)
        args += []
    return cli(*args, cwd=tmp_path)


@pytest.mark.parametrize("model_lines, expected", [
    ("train = { epoch = 1 }", "unknown key 'epoch' in models[0].train; did you mean 'epochs'?"),
    ("model = { widht = 3 }", "unknown key 'widht' in models[0].model; did you mean 'width'?"),
    ("kind2 = 'x'", "unknown key 'kind2' in models[0]; did you mean 'kind'?"),
    ("train = { epochs = -1 }", "models[0].train.epochs = -1: must be >= 0"),
    ("prune_precisions = ['int9']", "models[0].prune_precisions: 'int9' is not one of fp32, int8, int8-dynamic; "
                                    "did you mean 'int8'?"),
])
def test_model_typos_and_impossible_values_are_one_line_and_nothing_is_trained(cli, tmp_path, model_lines, expected):
    p = _run(cli, tmp_path, model_lines)
    assert p.returncode == 2
    assert one_error_line(p) == f"edgebench: error: {expected}"
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written


@pytest.mark.parametrize("device_lines, expected", [
    ("kind = 'ssh'\nhost = 'pi'\nretries = -1", "devices.bad.retries = -1: must be >= 0"),
    ("kind = 'ssh'\nhost = 'pi'\nport = 70000", "devices.bad.port = 70000: must be <= 65535"),
    ("kind = 'local'\ncpu_quota = 0", "devices.bad.cpu_quota = 0: must be > 0"),
    ("kind = 'local'\ncorse = [0]", "unknown key 'corse' in devices.bad; did you mean 'cores'?"),
])
def test_device_typos_and_impossible_values_are_one_line(cli, tmp_path, device_lines, expected):
    pytest.importorskip("paramiko")
    p = _run(cli, tmp_path, device="bad", devices_toml=f"[devices.bad]\n{device_lines}\n")
    assert p.returncode == 2
    assert one_error_line(p) == f"edgebench: error: {expected}"
    assert not (tmp_path / "out").exists()


def test_unknown_precision_in_export_names_the_closest(cli, tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(BASE.format(out=tmp_path / "out", model_lines="", device="local")
                   + "[export]\nprecisions = ['fp16']\n")
    assert one_error_line(cli("run", cfg)) == ("edgebench: error: export.precisions: 'fp16' is not one of fp32, "
                                                "int8, int8-dynamic")


def test_a_config_is_checked_without_loading_torch(tmp_path):
    """A typo costs the user half a second, not torch's import: checking a config (model keys, training settings,
    the dataset's options) loads no torch."""
    import subprocess
    import sys

    cfg = tmp_path / "run.toml"
    cfg.write_text(BASE.format(out=tmp_path / "out", model_lines="train = { epochs = 1 }\ndata = { seed = 1 }",
                               device="local"))
    code = ("import sys; from edgebench.config import load_config; c = load_config(sys.argv[1]); "
            "print(c.models[0].train['epochs'], 'torch' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code, str(cfg)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["1", "False"]
