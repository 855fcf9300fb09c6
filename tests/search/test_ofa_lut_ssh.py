"""A latency table built on a board over SSH: the real sshd on loopback of tests/devices (the "board" is
this computer), the real SSH device, one runner process for all tiny models, the remote folder removed."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

from edgebench.devices.ssh import SSHDevice
from edgebench.search.lut import LUTConfig, all_entries, build_lut
from edgebench.train.ofa import OFASpec

_spec = importlib.util.spec_from_file_location("edgebench_devices_fixtures",
                                               Path(__file__).parents[1] / "devices" / "conftest.py")
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)
sshd, remote_workdir, ssh_config = _fixtures.sshd, _fixtures.remote_workdir, _fixtures.ssh_config

SPEC = OFASpec(stem_width=8, widths=(8, 16), strides=(2, 2), se=(False, True), hswish=(False, True),
               final_width=16, ks_list=(3, 5), expand_list=(3, 6), depth_list=(1, 2), resolutions=(12, 16))


def test_lut_over_ssh_measures_every_key_on_the_board_and_cleans_up(ssh_config, remote_workdir, tmp_path):
    device = SSHDevice(ssh_config())
    cfg = LUTConfig(runs=10, rounds=2, warmup=1, calib_nets=3)
    table = build_lut(SPEC, device, tmp_path / "lut.yaml", cfg, resolutions=[16], progress=False,
                      log=lambda *_: None)
    doc = yaml.safe_load((tmp_path / "lut.yaml").read_text())
    assert doc["_meta"]["device"] == device.name and doc["_meta"]["device_kind"] == "ssh"
    assert doc["_meta"]["provenance"] == "measured" and doc["_meta"]["resolutions"] == [16]
    assert set(k for k in doc if not k.startswith("_")) == set(all_entries(SPEC, [16]))
    assert all(doc[k]["count"] == 10 for k in doc if not k.startswith("_"))
    assert table.fit["n_calib"] == 5 and all(c["arch"]["r"] == 16 for c in table.fit["calib"])
    assert list(remote_workdir.iterdir()) == []  # the board's temp folders are gone
