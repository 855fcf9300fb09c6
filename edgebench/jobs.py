"""Run-config jobs other than the plain train -> export -> bench -> report sweep.

A run config with a top-level `job = "NAME"` is handed whole to the job registered here under that name
(an import path, so a job's heavy modules load only when it runs). A job validates its own tables strictly
(edgebench.config.build_strict), does its work through the same export/deploy/devices/reports stages, and
returns an edgebench.pipeline.RunResult.

    def run(doc: dict, source: Path, fresh: bool, progress: bool, log) -> RunResult
"""
from __future__ import annotations

import importlib

from edgebench.types import EdgebenchError

# job name -> "module:function"
JOBS: dict[str, str] = {
    "instatune": "edgebench.search.instatune_job:run",
    "ofa": "edgebench.search.ofa_job:run",
}


def get_job(name: str):
    if name not in JOBS:
        known = ", ".join(sorted(JOBS)) or "none"
        raise EdgebenchError(f"unknown job '{name}' (known: {known})")
    module, func = JOBS[name].split(":")
    return getattr(importlib.import_module(module), func)
