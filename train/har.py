"""Human activity recognition data from smartwatch accelerometer + gyroscope: BasicMotions and WISDM.

Both loaders return float32 N x 6 x T (channels: accel x, y, z, gyro x, y, z), standardised per channel with
mean and std fitted on the training split only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgebench.train.base import Dataset
from edgebench.types import EdgebenchError

BASICMOTIONS_LABELS = ("badminton", "running", "standing", "walking")

# WISDM activity key (activity_key.txt of the dataset)
WISDM_ACTIVITIES = {
    "A": "walking", "B": "jogging", "C": "stairs", "D": "sitting", "E": "standing", "F": "typing",
    "G": "brushing_teeth", "H": "eating_soup", "I": "eating_chips", "J": "eating_pasta", "K": "drinking",
    "L": "eating_sandwich", "M": "kicking", "O": "catch", "P": "dribbling", "Q": "writing", "R": "clapping",
    "S": "folding_clothes",
}
# The "hand-oriented activities (general)" group of the WISDM dataset description (Weiss 2019, table 2):
# typing, brushing teeth, playing catch, dribbling, writing, clapping, folding clothes. This is the
# 7-class watch subset Fra et al. use ("subset 2", NeHAR 2022 and the L2MU paper 2024); their exact list
# could not be checked offline here, so the choice rests on the dataset description's grouping.
WISDM_SUBSET2 = ("F", "G", "O", "P", "Q", "R", "S")
WISDM_RATE_HZ = 20


def _standardise(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    mean = x_train.mean(axis=(0, 2), keepdims=True)
    std = x_train.std(axis=(0, 2), keepdims=True) + 1e-8
    return ((x_train - mean) / std).astype(np.float32), ((x_test - mean) / std).astype(np.float32), mean, std


def _fmt(v: np.ndarray) -> str:
    return "[" + ", ".join(f"{float(a):.4g}" for a in v.ravel()) + "]"


def read_ts(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(x float64 N x dims x length, labels as written) of an equal-length, labelled .ts file (the UEA/UCR
    archive's format: '@' header lines, then per series `dim1 values : dim2 values : ... : label`)."""
    rows, labels = [], []
    with open(path) as f:
        data = False
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not data:
                data = line.lower() == "@data"
                continue
            *dims, label = line.split(":")
            rows.append([[float(v) for v in d.split(",")] for d in dims])
            labels.append(label.strip())
    return np.asarray(rows, dtype=np.float64), np.asarray(labels)


def basic_motions_files() -> tuple[Path, Path] | None:
    """BasicMotions' .ts files inside the installed sktime package, found without importing it (sktime.datasets
    takes 2 s to import here, in every training worker)."""
    import importlib.util

    spec = importlib.util.find_spec("sktime")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "BasicMotions"
    files = folder / "BasicMotions_TRAIN.ts", folder / "BasicMotions_TEST.ts"
    return files if all(f.is_file() for f in files) else None


def load_basic_motions() -> Dataset:
    """sktime's BasicMotions: 40 train / 40 test series, 6 x 100 samples (10 s at 10 Hz), 4 classes. Read from the
    .ts files sktime ships (read_ts; tests/train/test_har_data.py checks it against sktime's own loader), or
    through sktime's loader where the files are not found."""
    files = basic_motions_files()
    if files is not None:
        (x_tr, y_tr), (x_te, y_te) = read_ts(files[0]), read_ts(files[1])
    else:
        from sktime.datasets import load_basic_motions as _load

        x_tr, y_tr = _load(split="train", return_type="numpy3D")
        x_te, y_te = _load(split="test", return_type="numpy3D")
    index = {name: i for i, name in enumerate(BASICMOTIONS_LABELS)}
    y_tr = np.array([index[str(v).lower()] for v in y_tr], dtype=np.int64)
    y_te = np.array([index[str(v).lower()] for v in y_te], dtype=np.int64)
    x_tr, x_te, mean, std = _standardise(x_tr.astype(np.float64), x_te.astype(np.float64))
    return Dataset(
        name="basicmotions", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, labels=BASICMOTIONS_LABELS,
        preprocessing=("sktime BasicMotions (accel xyz, gyro xyz); per-channel standardisation fitted on the "
                       f"train split: (x - mean) / std, mean={_fmt(mean)}, std={_fmt(std)}; float32, "
                       "layout N x 6 x 100 (channels x time)"),
    )


def _read_wisdm_file(path: Path) -> dict:
    """{activity_code: array (n, 4) of timestamp, x, y, z} in file order; lines `subject,code,ts,x,y,z;`."""
    rows: dict = {}
    with open(path) as f:
        for line in f:
            line = line.strip().rstrip(";")
            if not line:
                continue
            parts = line.split(",")
            if len(parts) != 6:
                continue  # the raw files have a few truncated lines
            try:
                rows.setdefault(parts[1].strip(), []).append(
                    (int(parts[2]), float(parts[3]), float(parts[4]), float(parts[5])))
            except ValueError:
                continue
    return {code: np.asarray(r, dtype=np.float64) for code, r in rows.items()}


def wisdm_windows(root: Path, subject: int, activities=WISDM_SUBSET2, window: int = 40,
                  device: str = "watch") -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows (n x 6 x window) and activity indices for one subject.

    Accelerometer and gyroscope are logged separately at 20 Hz with their own timestamps; they are aligned by
    order within each activity (sample k of accel with sample k of gyro), truncated to the shorter stream.
    """
    root = Path(root)
    acc_path = root / "raw" / device / "accel" / f"data_{subject}_accel_{device}.txt"
    gyr_path = root / "raw" / device / "gyro" / f"data_{subject}_gyro_{device}.txt"
    for p in (acc_path, gyr_path):
        if not p.exists():
            raise EdgebenchError(f"WISDM file not found: {p}")
    acc, gyr = _read_wisdm_file(acc_path), _read_wisdm_file(gyr_path)
    xs, ys = [], []
    for label, code in enumerate(activities):
        if code not in acc or code not in gyr:
            continue
        a = acc[code][np.argsort(acc[code][:, 0], kind="stable")]
        g = gyr[code][np.argsort(gyr[code][:, 0], kind="stable")]
        n = (min(len(a), len(g)) // window) * window
        if n == 0:
            continue
        sig = np.concatenate([a[:n, 1:], g[:n, 1:]], axis=1)  # n x 6
        xs.append(sig.reshape(n // window, window, 6).transpose(0, 2, 1))
        ys.append(np.full(n // window, label, dtype=np.int64))
    if not xs:
        return np.zeros((0, 6, window)), np.zeros((0,), dtype=np.int64)
    return np.concatenate(xs), np.concatenate(ys)


def wisdm_subjects(root: Path, device: str = "watch") -> list[int]:
    folder = Path(root) / "raw" / device / "accel"
    subjects = sorted(int(p.name.split("_")[1]) for p in folder.glob(f"data_*_accel_{device}.txt"))
    if not subjects:
        raise EdgebenchError(f"no WISDM files in {folder} (expected data_<subject>_accel_{device}.txt)")
    return subjects


def load_wisdm(root: str, activities: tuple | list = WISDM_SUBSET2, window_s: float = 2.0,
               test_fraction: float = 0.2, seed: int = 0, device: str = "watch") -> Dataset:
    """WISDM Smartphone and Smartwatch Activity and Biometrics from its raw files under `root`.

    2 s windows (40 samples at 20 Hz) of watch accel + gyro, split by subject: a seeded shuffle of the
    subject ids puts `test_fraction` of the subjects (at least one) in the test split, so no person is in both.
    """
    window = int(round(window_s * WISDM_RATE_HZ))
    activities = tuple(activities)
    unknown = [a for a in activities if a not in WISDM_ACTIVITIES]
    if unknown:
        raise EdgebenchError(f"unknown WISDM activity codes {unknown} (known: {''.join(WISDM_ACTIVITIES)})")
    subjects = wisdm_subjects(root, device)
    if len(subjects) < 2:
        raise EdgebenchError("WISDM split by subject needs at least two subjects")
    order = np.random.default_rng(seed).permutation(len(subjects))
    n_test = min(max(1, int(round(test_fraction * len(subjects)))), len(subjects) - 1)
    test_subjects = sorted(subjects[i] for i in order[:n_test])
    parts = {"train": ([], []), "test": ([], [])}
    for s in subjects:
        x, y = wisdm_windows(root, s, activities, window, device)
        xs, ys = parts["test" if s in test_subjects else "train"]
        xs.append(x)
        ys.append(y)
    x_tr, y_tr = np.concatenate(parts["train"][0]), np.concatenate(parts["train"][1])
    x_te, y_te = np.concatenate(parts["test"][0]), np.concatenate(parts["test"][1])
    if len(x_tr) == 0 or len(x_te) == 0:
        raise EdgebenchError(f"WISDM under {root}: no windows for activities {activities} in one of the splits")
    x_tr, x_te, mean, std = _standardise(x_tr, x_te)
    return Dataset(
        name="wisdm", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te,
        labels=tuple(WISDM_ACTIVITIES[a] for a in activities),
        preprocessing=(f"WISDM raw {device} accel xyz + gyro xyz at 20 Hz, aligned by sample order per activity; "
                       f"non-overlapping {window_s:g} s windows of {window} samples; activities "
                       f"{''.join(activities)}; split by subject (test subjects {test_subjects}); per-channel "
                       f"standardisation fitted on train, mean={_fmt(mean)}, std={_fmt(std)}; float32, layout "
                       f"N x 6 x {window}"),
    )
