"""A local Hugging Face model folder -> ONNX through optimum's exporter (run config `kind = "hf"`).

optimum exports and validates against the transformers model at its own tolerance (`do_validation`); on
top of that the file is compared here with the same model on the benchmark's own token inputs, and the
maximum difference is recorded. Nothing is downloaded: the folder is read with HF_HUB_OFFLINE=1.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from edgebench.export.errors import AtolError, ExportError
from edgebench.types import Artifact, EdgebenchError, Validation, first_line

HF_ATOL = 1e-3  # last hidden states of a 6-layer BERT differ by ~1e-4 between torch and onnxruntime


@contextlib.contextmanager
def _offline_and_quiet():
    old = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"
    loggers = [logging.getLogger(n) for n in ("optimum", "transformers", "torch.utils._pytree", "torchao")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def token_inputs(folder: Path, text: str, sequence_length: int) -> dict:
    """The benchmark's token inputs: `text` tokenized by the folder's own tokenizer, padded to the length."""
    from transformers import AutoTokenizer

    with _offline_and_quiet():
        tok = AutoTokenizer.from_pretrained(str(folder))
    enc = tok(text, padding="max_length", truncation=True, max_length=sequence_length, return_tensors="np")
    return {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}


def export_hf(name: str, folder: str | Path, out_dir: Path, task: str = "text-classification",
              sequence_length: int = 64, text: str = "", opset: int | None = None) -> tuple[Artifact, dict]:
    """(Artifact, token inputs to bench with, each as (array, where it came from)). Validated by optimum and
    against transformers here."""
    from edgebench.export.onnx import describe_onnx

    folder = Path(folder).expanduser()
    if not (folder / "config.json").exists():
        raise EdgebenchError(f"not a Hugging Face model folder (no config.json): {folder}")
    work = Path(out_dir) / f"{name}-optimum"
    if work.exists():
        shutil.rmtree(work)
    try:
        with _offline_and_quiet():  # optimum's and torch's import-time chatter stays off the terminal too
            from optimum.exporters.onnx import main_export
            from optimum.exporters.tasks import TasksManager

            main_export(str(folder), output=str(work), task=task, opset=opset, local_files_only=True,
                        do_validation=True, library_name="transformers")
            reference = TasksManager.get_model_from_task(task, str(folder), local_files_only=True,
                                                         framework="pt", library_name="transformers")
    except EdgebenchError:
        raise
    except Exception as exc:
        raise ExportError(f"optimum ONNX export of {folder} (task {task}) failed: {first_line(exc)}") from None
    path = Path(out_dir) / f"{name}-onnx-fp32.onnx"
    shutil.move(str(work / "model.onnx"), path)
    shutil.rmtree(work, ignore_errors=True)
    feeds = token_inputs(folder, text or "edgebench", sequence_length)

    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_inputs = [i.name for i in sess.get_inputs()]
    feeds = {k: v for k, v in feeds.items() if k in onnx_inputs}
    n_real = int(feeds["attention_mask"].sum()) if "attention_mask" in feeds else sequence_length
    got = sess.run(None, feeds)[0]
    reference.eval()
    with torch.no_grad():
        ref = reference(**{k: torch.from_numpy(v) for k, v in feeds.items()})[0].numpy()
    max_diff = float(np.max(np.abs(ref - got)))
    if max_diff > HF_ATOL:
        raise AtolError(max_diff, HF_ATOL)
    validation = Validation(reference="transformers (optimum validated too)", n_samples=1, max_abs_diff=max_diff,
                            atol=HF_ATOL, top1_agreement=float(np.mean(ref.reshape(len(ref), -1).argmax(-1)
                                                                       == got.reshape(len(got), -1).argmax(-1))))
    artifact = describe_onnx(path, name=f"{name}-onnx-fp32", model_name=name, dataset="", validation=validation,
                             extra={"exporter": f"optimum main_export (task {task})", "hf_folder": str(folder),
                                    "sequence_length": sequence_length})
    label = f"the folder's tokenizer on the configured text: {n_real} tokens + padding to {sequence_length}"
    return artifact, {k: (v, label) for k, v in feeds.items()}
