"""A bundle is a folder a device can run on its own: model file, manifest.json, eval data, runner.py."""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgebench.types import Artifact, EdgebenchError, Format

RUNNER_SOURCE = Path(__file__).with_name("runner.py")
MANIFEST = "manifest.json"
EVAL_FILE = "eval.npz"
BUNDLE_VERSION = 1


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict

    @property
    def model_file(self) -> Path:
        return self.path / self.manifest["model_file"]

    @property
    def eval_labels(self):
        f = self.path / EVAL_FILE
        if not f.exists():
            return None
        with np.load(f) as data:
            return data["y"].tolist()

    @classmethod
    def load(cls, path: Path) -> "Bundle":
        path = Path(path)
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise EdgebenchError(f"not a bundle: {path} ({exc})") from None
        return cls(path=path, manifest=manifest)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_eval(x: np.ndarray, y: np.ndarray, input_shape) -> None:
    """Eval data must match the model's input: same rank, same fixed dims after the batch dim."""
    if x.shape[0] != y.shape[0]:
        raise EdgebenchError(f"eval data: x has {x.shape[0]} samples but y has {y.shape[0]}")
    if len(input_shape) != x.ndim:
        raise EdgebenchError(
            f"eval data shape {list(x.shape)} does not fit the model input {list(input_shape)} (rank differs)")
    for i, (want, got) in enumerate(zip(input_shape[1:], x.shape[1:]), start=1):
        if isinstance(want, int) and want > 0 and want != got:
            raise EdgebenchError(
                f"eval data shape {list(x.shape)} does not fit the model input {list(input_shape)} (dim {i})")


def make_bundle(artifact: Artifact, out_dir: Path, eval_x=None, eval_y=None, preprocessing: str = "") -> Bundle:
    """Write the bundle folder for one artifact (replacing an older one at the same place)."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    model_file = "model" + Path(artifact.path).suffix
    shutil.copyfile(artifact.path, out_dir / model_file)
    shutil.copyfile(RUNNER_SOURCE, out_dir / "runner.py")
    manifest = {
        "bundle_version": BUNDLE_VERSION,
        "name": artifact.name,
        "model": artifact.model,
        "dataset": artifact.dataset,
        "model_file": model_file,
        "format": artifact.format.value,
        "precision": artifact.precision.value,
        "sha256": sha256_file(out_dir / model_file),
        "inputs": [t.to_dict() for t in artifact.inputs],
        "outputs": [t.to_dict() for t in artifact.outputs],
        "labels": list(artifact.labels),
        "preprocessing": preprocessing,
        "eval_file": None,
    }
    if eval_x is not None:
        eval_x = np.asarray(eval_x)
        eval_y = np.asarray(eval_y)
        check_eval(eval_x, eval_y, artifact.inputs[0].shape)
        np.savez(out_dir / EVAL_FILE, x=eval_x.astype(np.float32), y=eval_y.astype(np.int64))
        manifest["eval_file"] = EVAL_FILE
        manifest["n_eval"] = int(eval_x.shape[0])
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return Bundle(path=out_dir, manifest=manifest)


def load_eval_npz(path: Path):
    path = Path(path)
    if not path.exists():
        raise EdgebenchError(f"eval file not found: {path}")
    try:
        with np.load(path) as data:
            if "x" not in data or "y" not in data:
                raise EdgebenchError(f"eval file {path} must hold arrays 'x' and 'y' (has {sorted(data.keys())})")
            return data["x"], data["y"]
    except EdgebenchError:
        raise
    except Exception as exc:
        raise EdgebenchError(f"cannot read eval file {path}: {exc}") from None


__all__ = ["Bundle", "make_bundle", "load_eval_npz", "sha256_file", "check_eval", "Format"]
