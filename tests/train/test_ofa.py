"""The elastic supernet: subnet extraction, kernel transformation, channel sorting, BN recalibration,
progressive shrinking, checkpoints and export of a subnet."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from edgebench.train.fashion import load_fashion_splits, read_idx
from edgebench.train.ofa import OFASpec, OFASupernet, evaluate, extract_subnet, resize
from edgebench.train.ofa_train import ShrinkConfig, load_supernet, save_supernet, train_supernet
from edgebench.types import EdgebenchError

TINY = OFASpec(stem_width=8, widths=(8, 16), strides=(2, 2), se=(False, True), hswish=(False, True),
               final_width=32, resolutions=(12, 16))


def _scrambled(spec=TINY, seed=0) -> OFASupernet:
    """A supernet whose BN statistics and kernel transforms are not the identity, so that a copying
    mistake shows up as a difference."""
    torch.manual_seed(seed)
    net = OFASupernet(spec)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        for name, p in net.named_parameters():
            if "transform" in name:
                p.add_(0.1 * torch.randn_like(p))
    return net.eval()


def test_active_subnet_is_a_standalone_copy_with_the_same_outputs():
    net = _scrambled()
    rng = np.random.default_rng(1)
    x = torch.randn(4, 1, 16, 16)
    for arch in [TINY.largest(), TINY.smallest()] + [TINY.random_arch(rng) for _ in range(2)]:
        net.set_active_subnet(arch["ks"], arch["e"], arch["d"])
        xr = resize(x, arch["r"])
        sub = net.get_active_subnet(arch["r"])
        assert len(sub.blocks) == sum(arch["d"])
        assert torch.allclose(net(xr), sub(xr), atol=1e-5)
        # standalone: changing the supernet afterwards does not change the copy
        before = sub(xr).clone()
        with torch.no_grad():
            net.blocks[0].dw.weight.add_(1.0)
        assert torch.equal(sub(xr), before)
        with torch.no_grad():
            net.blocks[0].dw.weight.sub_(1.0)


def test_the_exported_twin_folds_every_batchnorm_and_computes_the_same():
    net = _scrambled()
    x = torch.randn(4, 1, 16, 16)
    for arch in (TINY.largest(), TINY.smallest()):
        net.set_arch(arch)
        sub = net.get_active_subnet(arch["r"]).eval()
        twin = sub.export_module()
        xr = resize(x, arch["r"])
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in twin.modules())
        n_conv = sum(isinstance(m, torch.nn.Conv2d) for m in sub.modules())
        assert sum(isinstance(m, torch.nn.Conv2d) for m in twin.modules()) == n_conv
        assert torch.allclose(twin(xr), sub(xr), atol=1e-5)
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in sub.modules())  # the original is untouched


def test_smaller_kernels_are_transformed_centres_of_the_largest():
    net = OFASupernet(TINY)
    block = net.blocks[0]
    mid = block.active_mid()
    w7 = block.dw.weight[:mid]
    block.active_kernel = 3
    with torch.no_grad():  # identity transforms: the 3x3 is exactly the centre of the 7x7
        assert torch.equal(block.active_dw_weight(mid), w7[:, :, 2:5, 2:5])
        block.transform_5to3.mul_(2.0)
        assert torch.allclose(block.active_dw_weight(mid), 2 * w7[:, :, 2:5, 2:5])


def test_channel_sorting_keeps_the_function_and_puts_important_channels_first():
    net = _scrambled()
    net.set_active_subnet(7, 6, 4)
    x = torch.randn(3, 1, 16, 16)
    before = net(x)
    net.sort_channels()
    assert torch.allclose(net(x), before, atol=1e-5)
    imp = net.blocks[0].project.weight.abs().sum((0, 2, 3))
    assert torch.all(imp[:-1] >= imp[1:])


def test_bn_recalibration_sets_the_subnets_own_statistics():
    net = _scrambled()
    arch = TINY.smallest()
    x = np.random.default_rng(0).standard_normal((500, 1, 16, 16)).astype(np.float32)  # two equal batches
    sub = extract_subnet(net, arch, x)
    with torch.no_grad():
        stem_out = sub.stem.conv(resize(torch.from_numpy(x), arch["r"]))
    expected = stem_out.mean((0, 2, 3))
    assert torch.allclose(sub.stem.bn.running_mean, expected, atol=1e-4)
    assert not sub.training


def test_progressive_shrinking_learns_a_separable_toy_task(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 400)
    x = rng.standard_normal((400, 1, 16, 16)).astype(np.float32) * 0.3
    for c in range(10):  # class c: a bright square at a class-specific place
        r, col = divmod(c, 4)
        x[y == c, :, 4 * r:4 * r + 4, 4 * col:4 * col + 4] += 2.0
    net = OFASupernet(TINY)
    cfg = ShrinkConfig(full_epochs=4, kernel_epochs=1, depth_epochs=1, expand_epochs=2, batch_size=50, lr=1e-2,
                       shrink_lr=3e-3, bn_calib_images=250)
    metrics = train_supernet(net, x, y, cfg, progress=False, log=lambda *_: None)
    assert list(metrics["phases"]) == ["full", "kernel", "depth", "expand"]
    for arch in (TINY.largest(), TINY.smallest()):
        sub = extract_subnet(net, arch, x[:250])
        assert evaluate(sub, x, y, arch["r"]) > 0.6
    path = save_supernet(net, tmp_path / "s.pt", metrics)
    net2, ckpt = load_supernet(path)
    assert ckpt["spec"]["widths"] == [8, 16]
    a = TINY.smallest()
    net.set_arch(a)
    net2.set_arch(a)
    xs = resize(torch.from_numpy(x[:5]), a["r"])
    assert torch.equal(net.eval()(xs), net2(xs))


def test_sandwich_steps_train_the_phases_extremes_beside_the_random_subnets(monkeypatch):
    """With sandwich = [largest, smallest], every shrinking step sets the phase's largest, then the random
    subnet(s), then the phase's smallest (at the step's resolution); without it only random ones."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((100, 1, 16, 16)).astype(np.float32), rng.integers(0, 10, 100)

    def archs_set(sandwich):
        net, seen = OFASupernet(TINY), []
        real = net.set_arch
        monkeypatch.setattr(net, "set_arch", lambda a: seen.append(a) or real(a))
        cfg = ShrinkConfig(full_epochs=0.5, kernel_epochs=0.5, depth_epochs=0, expand_epochs=0.5, batch_size=50,
                           sandwich=sandwich, bn_calib_images=50)
        train_supernet(net, x, y, cfg, progress=False, log=lambda *_: None)
        # the full phase's step, the frozen teacher's set_arch(largest) and the final one excluded
        return seen[2:-1]

    plain = archs_set(())
    assert len(plain) == 2 and plain[0]["e"] == [6] * TINY.n_slots  # the kernel phase keeps e at its largest
    both = archs_set(("largest", "smallest"))
    assert len(both) == 6
    kernel_big, _, kernel_small, expand_big, _, expand_small = both
    assert kernel_big["ks"] == [7] * TINY.n_slots and kernel_small["ks"] == [3] * TINY.n_slots
    assert kernel_small["e"] == [6] * TINY.n_slots and kernel_small["d"] == [4] * TINY.n_stages  # phase limits
    assert expand_small["e"] == [3] * TINY.n_slots and expand_small["d"] == [2] * TINY.n_stages
    assert expand_big == TINY.largest() | {"r": expand_big["r"]} and expand_small["r"] == expand_big["r"]
    with pytest.raises(EdgebenchError, match="sandwich takes"):
        ShrinkConfig(sandwich=("medium",))


def test_bad_settings_and_files_are_one_line_errors(tmp_path):
    with pytest.raises(EdgebenchError, match="one entry per stage"):
        OFASpec(widths=(8, 16), strides=(2,))
    with pytest.raises(EdgebenchError, match="odd"):
        OFASpec(ks_list=(3, 4))
    with pytest.raises(EdgebenchError, match="unknown key"):
        OFASpec.from_dict({"widht": [8]})
    with pytest.raises(EdgebenchError, match="not found"):
        load_supernet(tmp_path / "missing.pt")
    bad = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, bad)
    with pytest.raises(EdgebenchError, match="not an edgebench OFA supernet"):
        load_supernet(bad)
    net = OFASupernet(TINY)
    with pytest.raises(EdgebenchError, match="kernel size 9"):
        net.set_active_subnet(ks=9)


def test_idx_reader_reads_what_was_written(tmp_path):
    data = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in data.shape) + data.tobytes()
    path = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(raw)
    assert np.array_equal(read_idx(path), data)
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + b"\x00" * 8))
    with pytest.raises(EdgebenchError, match="unsigned-byte IDX"):
        read_idx(tmp_path / "bad.gz")


def test_fashion_mnist_splits_hold_out_validation_from_train(tmp_path):
    ds, x_val, y_val = load_fashion_splits(val_size=5000)
    assert ds.x_train.shape == (55000, 1, 28, 28) and x_val.shape == (5000, 1, 28, 28)
    assert ds.x_test.shape == (10000, 1, 28, 28) and len(ds.labels) == 10
    assert abs(float(ds.x_train.mean())) < 0.05 and abs(float(ds.x_train.std()) - 1) < 0.05
    # the validation images are not in the training split (compare raw bytes of a sample)
    train_rows = {r.tobytes() for r in ds.x_train[:, 0, 14, :]}
    assert sum(r.tobytes() in train_rows for r in x_val[:200, 0, 14, :]) < 10
    small, xv2, _ = load_fashion_splits(val_size=5000, train_limit=1000)
    assert len(small.x_train) == 1000 and np.array_equal(xv2, x_val)
    with pytest.raises(EdgebenchError, match="not found"):
        load_fashion_splits(root=str(tmp_path))
