"""Shared fixtures: one small trained CNN and its validated ONNX artifact per test session."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def calibration_export_cache(tmp_path_factory):
    """Reference-model exports are cached between calibrations (devices/calibration.py): the tests share one
    cache of their own, never the user's ~/.cache."""
    from edgebench.devices.calibration import CACHE_ENV

    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("calibration-exports"))


@pytest.fixture(scope="session")
def trained_cnn():
    from edgebench.train.registry import train_model

    return train_model("digits_cnn", "cnn", "digits", train_cfg={"epochs": 6, "seed": 0}, progress=False)


@pytest.fixture(scope="session")
def onnx_artifact(trained_cnn, tmp_path_factory):
    from edgebench.export.onnx import export_and_validate

    return export_and_validate(trained_cnn, tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="session")
def eval_npz(trained_cnn, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("eval") / "digits-eval.npz"
    np.savez(path, x=trained_cnn.dataset.x_test, y=trained_cnn.dataset.y_test)
    return path


@pytest.fixture()
def cnn_bundle(onnx_artifact, trained_cnn, tmp_path):
    from edgebench.deploy.bundle import make_bundle

    return make_bundle(onnx_artifact, tmp_path / "bundle", trained_cnn.dataset.x_test, trained_cnn.dataset.y_test)


def run_cli(*args, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    """The installed command line, as a user runs it."""
    env = dict(os.environ)
    env.pop("EDGEBENCH_DEVICES", None)
    return subprocess.run([sys.executable, "-m", "edgebench.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def cli():
    return run_cli
