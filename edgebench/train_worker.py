"""A worker process of `edgebench run` (edgebench/train_pool.py, train_in_workers): trains one built-in model
and writes its checkpoint. `python -m edgebench.train_worker SPEC.json`; exit 0 once the checkpoint is written.

A process of its own, started by path (not multiprocessing): nothing of the caller's script is imported again.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    spec = json.loads(Path((argv if argv is not None else sys.argv[1:])[0]).read_text())
    import torch

    from edgebench.train.base import save_checkpoint
    from edgebench.train.registry import train_model
    from edgebench.types import EdgebenchError

    torch.set_num_threads(int(spec["threads"]))
    try:
        trained = train_model(spec["name"], spec["kind"], spec["dataset"], spec["model"], spec["train"],
                              spec["data"], progress=False)
    except EdgebenchError as exc:
        print(f"edgebench: error: {exc}", file=sys.stderr)
        return 2
    save_checkpoint(trained, Path(spec["checkpoint"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
