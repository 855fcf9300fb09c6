"""A bundle is a folder a device can run on its own: model file, manifest.json, eval data, runner.py and its
parts."""
from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgebench.deploy.inputs import resolve_feeds
from edgebench.types import Artifact, EdgebenchError, Format, sha256_file

RUNNER_SOURCE = Path(__file__).with_name("runner.py")
# The runner and the parts it imports from beside itself: every device gets all of them, in one folder.
RUNNER_FILES = (RUNNER_SOURCE,) + tuple(RUNNER_SOURCE.with_name(f"runner_{part}.py")
                                        for part in ("runtimes", "stream", "device"))


def copy_runner(folder: Path, name: str = "runner.py") -> None:
    """The runner into `folder` as `name`, its parts beside it under their own names."""
    shutil.copyfile(RUNNER_SOURCE, Path(folder) / name)
    for part in RUNNER_FILES[1:]:
        shutil.copyfile(part, Path(folder) / part.name)
MANIFEST = "manifest.json"
EVAL_FILE = "eval.npz"
FEEDS_FILE = "inputs.npz"  # the exact arrays timed, one per model input
STREAM_FILE = "stream.npz"  # a step model's timed windows (x: batch x channels x steps), one sample per call
BUNDLE_VERSION = 2


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

    def feed_arrays(self) -> dict:
        """The exact arrays the runner feeds, by input name."""
        with np.load(self.path / self.manifest["feeds_file"]) as data:
            return {k: data[k] for k in data.files}

    @classmethod
    def load(cls, path: Path) -> "Bundle":
        path = Path(path)
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise EdgebenchError(f"not a bundle: {path} ({exc})") from None
        return cls(path=path, manifest=manifest)


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


def make_bundle(artifact: Artifact, out_dir: Path, eval_x=None, eval_y=None, preprocessing: str = "",
                shapes: dict | None = None, inputs: dict | None = None) -> Bundle:
    """Write the bundle folder for one artifact (replacing an older one at the same place).

    `shapes` (input name -> shape) sets free dimensions, `inputs` (name -> array, number or 'zeros' /
    'ones' / 'random') gives values; the rest is resolved by edgebench.deploy.inputs, which never guesses a
    free dimension other than a leading batch. `eval_x` is the first input's eval samples, or a dict of
    per-sample arrays by input name (e.g. token ids and their mask)."""
    out_dir = Path(out_dir)
    stream = artifact.extra.get("stream")  # a streaming step model (export/step.py): eval data are windows
    if stream:
        return _make_stream_bundle(artifact, out_dir, stream, eval_x, eval_y, preprocessing, shapes, inputs)
    eval_arrays = dict(eval_x) if isinstance(eval_x, dict) else (
        {artifact.inputs[0].name: np.asarray(eval_x)} if eval_x is not None else {})
    first = artifact.inputs[0].name
    quantized_io = artifact.format is Format.TFLITE
    feeds, arrays = resolve_feeds(artifact.inputs, shapes, inputs, eval_arrays.get(first), quantized_io)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    model_file = "model" + Path(artifact.path).suffix
    shutil.copyfile(artifact.path, out_dir / model_file)
    copy_runner(out_dir)
    np.savez(out_dir / FEEDS_FILE, **arrays)
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
        "feeds": [f.to_dict() for f in feeds],
        "feeds_file": FEEDS_FILE,
        "labels": list(artifact.labels),
        "preprocessing": preprocessing,
        "eval_file": None,
    }
    if eval_arrays:
        if eval_y is None:
            raise EdgebenchError("eval data needs labels (y) as well as inputs")
        eval_y = np.asarray(eval_y)
        dtypes = {f.name: f.dtype for f in feeds}
        specs = {t.name: t for t in artifact.inputs}
        saved = {}
        for name, x in eval_arrays.items():
            if name not in specs:
                raise EdgebenchError(f"eval data for '{name}', which is not a model input "
                                     f"(inputs: {', '.join(specs)})")
            check_eval(np.asarray(x), eval_y, specs[name].shape)
            saved["x" if name == first else f"input:{name}"] = np.asarray(x).astype(dtypes[name])
        np.savez(out_dir / EVAL_FILE, y=eval_y.astype(np.int64), **saved)
        manifest["eval_file"] = EVAL_FILE
        manifest["n_eval"] = int(eval_y.shape[0])
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return Bundle(path=out_dir, manifest=manifest)


def _make_stream_bundle(artifact: Artifact, out_dir: Path, stream: dict, eval_x, eval_y, preprocessing: str,
                        shapes: dict | None, inputs: dict | None) -> Bundle:
    """A step model's bundle: its inputs fed by name as any model's (the state inputs zeros unless given), the
    eval windows (N x channels x steps) streamed one sample per call, and the windows the runner times."""
    x_name, steps = stream["x"], int(stream["steps"])
    inputs = dict(inputs or {})
    for state_in, _ in stream["carry"]:
        inputs.setdefault(state_in, "zeros")  # every window starts from rest
    windows = None if eval_x is None else np.asarray(eval_x, dtype=np.float32)
    if windows is not None and (windows.ndim != 3 or windows.shape[-1] != steps):
        raise EdgebenchError(f"a step model streams windows N x channels x {steps}; eval data has shape "
                             f"{list(windows.shape)}")
    bundle = make_bundle(dataclasses.replace(artifact, extra={k: v for k, v in artifact.extra.items()
                                                              if k != "stream"}),
                         out_dir, None if windows is None else windows[:, :, 0], eval_y, preprocessing,
                         shapes=shapes, inputs=inputs)
    manifest = dict(bundle.manifest)
    batch = int(bundle.feed_arrays()[x_name].shape[0])
    timed = windows[:batch] if windows is not None and len(windows) >= batch else \
        np.random.default_rng(0).standard_normal((batch, bundle.feed_arrays()[x_name].shape[1], steps))
    np.savez(out_dir / STREAM_FILE, x=np.asarray(timed, dtype=np.float32))
    manifest["stream"] = dict(stream, file=STREAM_FILE,
                              timed_windows="eval data" if windows is not None else "random normal (seed 0)")
    if windows is not None:
        if eval_y is None:
            raise EdgebenchError("eval data needs labels (y) as well as inputs")
        np.savez(out_dir / EVAL_FILE, x=windows, y=np.asarray(eval_y).astype(np.int64))
        manifest["eval_file"] = EVAL_FILE
        manifest["n_eval"] = int(len(windows))
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
