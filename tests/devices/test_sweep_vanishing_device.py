"""A sweep over several artifacts and devices survives a device that vanishes midway: that device's later
rows are failed measurements with reasons, every other row completes (real sshd, killed for real)."""
import threading
import time

from edgebench.config import parse_config
from edgebench.pipeline import run_pipeline
from edgebench.reports.store import Store


def test_sshd_killed_mid_sweep(private_sshd, tmp_path):
    devices = tmp_path / "devices.toml"
    c = private_sshd.config(workdir=str(tmp_path))
    devices.write_text(
        "[devices.board]\nkind = 'ssh'\n"
        f"host = '{c.host}'\nport = {c.port}\nuser = '{c.user}'\nkey_file = '{c.key_file}'\n"
        f"known_hosts = '{c.known_hosts}'\npython = '{c.python}'\nworkdir = '{tmp_path}'\n"
        "retries = 2\nbackoff_s = 0.2\nconnect_timeout_s = 3.0\n")
    store_path = tmp_path / "store.sqlite"
    cfg = parse_config({
        "name": "sweep", "out_dir": str(tmp_path / "out"), "store": str(store_path),
        "models": [{"name": "tiny", "kind": "cnn", "dataset": "digits", "model": {"width": 4},
                    "train": {"epochs": 1}}],
        "export": {"formats": ["onnx"], "precisions": ["fp32", "int8-dynamic", "int8"]},
        "bench": {"devices": ["local", "board"], "devices_file": str(devices), "runs": 20, "warmup": 2},
    })

    killed = threading.Event()

    def kill_after_first_board_row():
        deadline = time.time() + 300
        while time.time() < deadline:
            if store_path.exists():
                with Store(store_path) as s:
                    if any(r.device == "board" and r.status == "ok" for r in s.query()):
                        private_sshd.kill_all()
                        killed.set()
                        return
            time.sleep(0.1)

    watcher = threading.Thread(target=kill_after_first_board_row, daemon=True)
    watcher.start()
    result = run_pipeline(cfg, progress=False, log=lambda *a: None)
    watcher.join(timeout=5)
    assert killed.is_set()

    rows = {(r.name.split("-")[-1], r.device): r for r in result.records}
    assert len(rows) == 6
    local = [r for (_, d), r in rows.items() if d == "local"]
    board = [r for (_, d), r in rows.items() if d == "board"]
    assert all(r.status == "ok" and r.latency_ms["n"] == 20 and r.accuracy is not None for r in local)
    assert board[0].status == "ok"
    failed = [r for r in board if r.status == "failed"]
    assert len(failed) >= 1 and all(r.error for r in failed)
    assert any("refused" in r.error or "link" in r.error or "connect" in r.error for r in failed), \
        [r.error for r in failed]
    assert (result.report_dir / "report.html").exists()
