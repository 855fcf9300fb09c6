"""The user's own model, defined in a file outside the package: through the Python API and through a run
config with kind = "python". Real export (torch.onnx, litert-torch), real local device, real store."""
import json
import textwrap

import numpy as np
import pytest

import edgebench

MY_MODELS = textwrap.dedent('''
    import torch
    from torch import nn


    class TinyNet(nn.Module):
        def __init__(self, width=8, classes=10):
            super().__init__()
            self.conv = nn.Conv2d(1, width, 3, padding=1)
            self.head = nn.Linear(width * 16, classes)

        def forward(self, x):
            h = torch.relu(self.conv(x))
            h = torch.nn.functional.max_pool2d(h, 2)
            return self.head(h.flatten(1))


    def make_net(width=8):
        torch.manual_seed(0)
        return TinyNet(width)
''')


@pytest.fixture(scope="module")
def user_project(tmp_path_factory):
    """A user's folder: my_models.py and digits.npz (x_train, y_train, x_test, y_test)."""
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("work")
    (folder / "my_models.py").write_text(MY_MODELS)
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    np.savez(folder / "digits.npz", x_train=x[:1200], y_train=y[:1200], x_test=x[1200:], y_test=y[1200:])
    return folder


def _trained_module(folder):
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("user_models_for_test", folder / "my_models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = mod.make_net(8)
    data = np.load(folder / "digits.npz")
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(data["x_train"]), torch.from_numpy(data["y_train"])
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    return net.eval(), data


def test_python_api_exports_benches_and_reports_a_users_module(user_project, tmp_path):
    net, data = _trained_module(user_project)
    x, y = data["x_test"], data["y_test"]
    store = tmp_path / "s.sqlite"
    records = []
    for fmt, prec in (("onnx", "fp32"), ("tflite", "fp32"), ("tflite", "int8")):
        art = edgebench.export(net, x[:1], format=fmt, precision=prec, eval=(x, y), calibration=data["x_train"][:200],
                               out=tmp_path / "artifacts", name="tinynet")
        assert art.path.exists() and art.validation is not None
        if prec == "fp32":
            assert art.validation.max_abs_diff <= 1e-4
        else:
            assert art.validation.top1_agreement >= 0.98
        rec = edgebench.bench(art, device="local", runs=20, warmup=2, eval=(x, y), store=store)
        assert rec.status == "ok", rec.error
        assert rec.n_eval == len(y) and rec.accuracy > 0.8
        assert rec.inputs_fed[0]["shape"] == [1, 1, 8, 8]
        records.append(rec)
    out = edgebench.report(records, out=tmp_path / "report")
    import csv

    with open(out / "records.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["tinynet-onnx-fp32", "tinynet-tflite-fp32", "tinynet-tflite-int8"]
    assert "tinynet-tflite-int8" in (out / "report.html").read_text()


def test_run_config_with_kind_python(user_project, tmp_path, cli):
    cfg = user_project / "mine.toml"
    cfg.write_text(textwrap.dedent(f'''
        name = "mine"
        out_dir = "{tmp_path / 'out'}"
        store = "{tmp_path / 's.sqlite'}"
        [[models]]
        name = "tinynet"
        kind = "python"
        factory = "my_models:make_net"
        data = "digits.npz"
        model = {{ width = 8 }}
        train = {{ epochs = 3, lr = 0.01 }}
        [export]
        formats = ["onnx"]
        [bench]
        runs = 20
        warmup = 2
    '''))
    p = cli("run", cfg, "--json", cwd=tmp_path)  # run from elsewhere: the factory is found beside the config
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    rec = doc["records"][0]
    assert rec["name"] == "tinynet-onnx-fp32" and rec["status"] == "ok" and rec["accuracy"] > 0.7
    assert (tmp_path / "out" / "report" / "report.html").exists()

    typo = cfg.read_text().replace("width = 8", "widht = 8")
    cfg.write_text(typo)
    p = cli("run", cfg, cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.strip() == (
        "edgebench: error: unknown key 'widht' in models[0].model; did you mean 'width'?")


def test_labels_outside_the_models_classes_are_refused(user_project, tmp_path):
    from edgebench.train.user import train_user_model
    from edgebench.types import EdgebenchError

    data = dict(np.load(user_project / "digits.npz"))
    data["y_train"] = data["y_train"] + 5  # labels up to 14 for a 10-class head
    np.savez(tmp_path / "bad.npz", **data)
    config = {"factory": "my_models:make_net", "base_dir": str(user_project), "model": {}, "data": str(tmp_path / "bad.npz"),
              "dataset": "", "train": {"epochs": 1}, "checkpoint": ""}
    with pytest.raises(EdgebenchError, match="labels up to 14 but the model .* outputs 10 classes"):
        train_user_model("bad", config, progress=False)
