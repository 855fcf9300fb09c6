"""Cross-validate a HAPT training recipe inside the 21 training subjects (the 9 test subjects never seen).

Reads one model of a run config (default: the LIF L2MU of examples/har_hapt.toml), applies --set overrides
(`train.epochs=16`, `data.rotate_deg=15`, `model.hidden_size=96`), and trains it once per fold and seed: the
training subjects in --folds interleaved folds (sorted subject ids, every k-th), each fold in turn the
validation split, the other folds the training split; the real test subjects are left out of both
(load_hapt(exclude_subjects=...)). Prints each fold's accuracy and the mean per seed. This is how the recipes
in examples/har_hapt.toml were chosen; the test subjects are only used by `edgebench run`.

    python benchmarks/hapt_cv.py                                     # the shipped LIF recipe, seeds 0 and 1
    python benchmarks/hapt_cv.py --set train.epochs=16 --json        # a variant; one JSON line per seed
    python benchmarks/hapt_cv.py --model lmu --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tomllib
from pathlib import Path


def override(entry: dict, assignment: str) -> None:
    """`table.key=value` with a TOML value, into the model entry (table: train, model or data)."""
    key, sep, value = assignment.partition("=")
    table, dot, name = key.strip().partition(".")
    if not sep or not dot or table not in ("train", "model", "data"):
        sys.exit(f"hapt_cv: --set wants train.KEY=VALUE, model.KEY=VALUE or data.KEY=VALUE, got '{assignment}'")
    try:
        entry.setdefault(table, {})[name] = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        sys.exit(f"hapt_cv: '{value}' is not a TOML value (strings need quotes)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="examples/har_hapt.toml")
    ap.add_argument("--model", default="l2mu_lif", help="the [[models]] name in the config")
    ap.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=VALUE")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="one JSON line per seed")
    args = ap.parse_args()

    from edgebench.train.hapt import HAPT_TEST_SUBJECTS, read_hapt_pickle
    from edgebench.train.registry import train_model

    cfg = tomllib.loads(Path(args.config).read_text())
    entries = {m["name"]: m for m in cfg.get("models", [])}
    if args.model not in entries:
        sys.exit(f"hapt_cv: no model '{args.model}' in {args.config} (it has {', '.join(entries)})")
    entry = json.loads(json.dumps(entries[args.model]))
    if entry.get("dataset") != "hapt":
        sys.exit(f"hapt_cv: model '{args.model}' trains on '{entry.get('dataset')}', not hapt")
    for assignment in args.set:
        override(entry, assignment)
    subjects = sorted(int(u) for u in read_hapt_pickle() if int(u) not in HAPT_TEST_SUBJECTS)
    folds = [tuple(subjects[i::args.folds]) for i in range(args.folds)]
    for seed in args.seeds:
        t0, accs = time.perf_counter(), []
        for fold in folds:
            data = {**entry.get("data", {}), "test_subjects": fold, "exclude_subjects": HAPT_TEST_SUBJECTS}
            trained = train_model("cv", entry["kind"], "hapt", entry.get("model", {}),
                                  {**entry.get("train", {}), "seed": seed}, data, progress=False)
            accs.append(trained.metrics["test_accuracy"])
        row = {"model": args.model, "set": args.set, "seed": seed, "folds": [round(a, 4) for a in accs],
               "mean": round(statistics.mean(accs), 4), "seconds": round(time.perf_counter() - t0)}
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            print(f"{args.model} {' '.join(args.set) or '(as configured)'} seed {seed}: folds "
                  + ", ".join(f"{a:.2%}" for a in accs) + f"; mean {row['mean']:.2%} ({row['seconds']} s)",
                  flush=True)


if __name__ == "__main__":
    main()
