"""BasicMotions from sktime and the WISDM raw-file loader on files written here in the dataset's format."""
from pathlib import Path

import numpy as np
import pytest

from edgebench.train import har
from edgebench.train.har import WISDM_SUBSET2, load_basic_motions, load_wisdm, read_ts, wisdm_windows
from edgebench.types import EdgebenchError


def write_wisdm(root: Path, subject: int, codes: dict, start_ts: int = 1_000_000_000) -> None:
    """codes: {activity_code: n_samples}; values encode (code index, sample index, axis) to check alignment."""
    for sensor, offset in (("accel", 0.0), ("gyro", 100.0)):
        folder = root / "raw" / "watch" / sensor
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        ts = start_ts
        for code, n in codes.items():
            for k in range(n):
                v = offset + k
                lines.append(f"{subject},{code},{ts},{v},{v + 0.25},{v + 0.5};")
                ts += 50_000_000  # 20 Hz in ns
        (folder / f"data_{subject}_{sensor}_watch.txt").write_text("\n".join(lines) + "\n")


def test_basic_motions_shapes_and_standardisation():
    ds = load_basic_motions()
    assert ds.x_train.shape == (40, 6, 100) and ds.x_test.shape == (40, 6, 100)
    assert ds.x_train.dtype == np.float32
    assert ds.labels == ("badminton", "running", "standing", "walking")
    assert sorted(np.bincount(ds.y_train).tolist()) == [10, 10, 10, 10]
    np.testing.assert_allclose(ds.x_train.mean(axis=(0, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(axis=(0, 2)), 1.0, atol=1e-4)
    assert "fitted on the train split" in ds.preprocessing


def test_basic_motions_read_from_the_ts_files_equals_sktimes_loader(monkeypatch):
    """load_basic_motions reads sktime's .ts files itself (no 2 s import of sktime.datasets); the arrays and
    labels are exactly what sktime's own loader gives, and so is the dataset built either way."""
    from sktime.datasets import load_basic_motions as sktime_load

    files = har.basic_motions_files()
    assert files is not None, "BasicMotions' .ts files not found in the installed sktime"
    for path, split in zip(files, ("train", "test")):
        x, y = read_ts(path)
        x_ref, y_ref = sktime_load(split=split, return_type="numpy3D")
        assert x.shape == (40, 6, 100)
        np.testing.assert_array_equal(x, x_ref)
        assert [str(v).lower() for v in y] == [str(v) for v in y_ref]  # sktime lowercases; the loader does too
    ours = load_basic_motions()
    monkeypatch.setattr(har, "basic_motions_files", lambda: None)  # sktime's loader, as where files are missing
    theirs = load_basic_motions()
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(ours, name), getattr(theirs, name))
    assert ours.preprocessing == theirs.preprocessing


def test_read_ts_parses_the_archive_format(tmp_path):
    path = tmp_path / "t.ts"
    path.write_text("# a comment\n@problemName T\n@dimensions 2\n@classLabel true a b\n@data\n"
                    "1.5,2,3:4,5,6e-1:a\n\n-1,0,1:0.25,0.5,0.75:b\n")
    x, y = read_ts(path)
    np.testing.assert_array_equal(x, [[[1.5, 2, 3], [4, 5, 0.6]], [[-1, 0, 1], [0.25, 0.5, 0.75]]])
    assert y.tolist() == ["a", "b"]


def test_wisdm_windows_align_accel_and_gyro(tmp_path):
    write_wisdm(tmp_path, 1600, {"A": 90, "F": 85, "R": 40})
    x, y = wisdm_windows(tmp_path, 1600, activities=("F", "R"))
    # F: 85 samples -> 2 windows of 40; R: 40 -> 1 window; A is not selected
    assert x.shape == (3, 6, 40)
    assert y.tolist() == [0, 0, 1]
    np.testing.assert_allclose(x[0, 0, :3], [0, 1, 2])       # accel x
    np.testing.assert_allclose(x[0, 4, :3], [100.25, 101.25, 102.25])  # gyro y
    np.testing.assert_allclose(x[1, 0, 0], 40)                # second window continues the stream


def test_wisdm_split_by_subject(tmp_path):
    subjects = [1600, 1601, 1602, 1603, 1604]
    for s in subjects:
        write_wisdm(tmp_path, s, {code: 80 for code in WISDM_SUBSET2} | {"A": 80})
    ds = load_wisdm(str(tmp_path), test_fraction=0.2, seed=0)
    assert ds.x_train.shape == (4 * 7 * 2, 6, 40) and ds.x_test.shape == (7 * 2, 6, 40)
    assert ds.x_train.dtype == np.float32
    assert len(ds.labels) == 7 and "typing" in ds.labels and "walking" not in ds.labels
    assert "split by subject" in ds.preprocessing
    np.testing.assert_allclose(ds.x_train.mean(axis=(0, 2)), 0.0, atol=1e-4)


def test_wisdm_errors_are_clear(tmp_path):
    with pytest.raises(EdgebenchError, match="no WISDM files"):
        (tmp_path / "raw" / "watch" / "accel").mkdir(parents=True)
        load_wisdm(str(tmp_path))
    write_wisdm(tmp_path, 1600, {"F": 80})
    write_wisdm(tmp_path, 1601, {"F": 80})
    with pytest.raises(EdgebenchError, match="unknown WISDM activity"):
        load_wisdm(str(tmp_path), activities=("Z",))
