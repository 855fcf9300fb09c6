"""An SQLite store of records: append-only, one transaction per record, so nothing written is lost."""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from edgebench.reports.record import Record
from edgebench.types import EdgebenchError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    config TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    record_id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    device TEXT NOT NULL,
    status TEXT NOT NULL,
    measure_key TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    created_at REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_run ON records(run_id);
CREATE INDEX IF NOT EXISTS records_key ON records(run_id, measure_key);
"""


DEFAULT_STORE = Path("out/edgebench.sqlite")  # the embedded default: one SQLite file per working folder


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(str(self.path), timeout=30)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise EdgebenchError(f"cannot open result store {self.path}: {exc}") from None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # runs
    def begin_run(self, run_id: str, name: str, config: dict) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT INTO runs(run_id, name, config, started_at, status) VALUES (?, ?, ?, ?, 'running') "
                "ON CONFLICT(run_id) DO UPDATE SET status='running'",
                (run_id, name, json.dumps(config, default=str), time.time()))

    def finish_run(self, run_id: str, status: str = "finished") -> None:
        with self.conn:
            self.conn.execute("UPDATE runs SET finished_at=?, status=? WHERE run_id=?", (time.time(), status, run_id))

    def runs(self) -> list[dict]:
        cur = self.conn.execute(
            "SELECT r.run_id, r.name, r.started_at, r.finished_at, r.status, "
            "(SELECT COUNT(*) FROM records x WHERE x.run_id = r.run_id), "
            "(SELECT COUNT(*) FROM records x WHERE x.run_id = r.run_id AND x.status = 'failed') "
            "FROM runs r ORDER BY r.started_at")
        keys = ("run_id", "name", "started_at", "finished_at", "status", "records", "failed")
        return [dict(zip(keys, row)) for row in cur.fetchall()]

    def latest_run(self, name: str | None = None) -> str | None:
        if name:
            row = self.conn.execute("SELECT run_id FROM runs WHERE name=? ORDER BY started_at DESC LIMIT 1",
                                    (name,)).fetchone()
        else:
            row = self.conn.execute("SELECT run_id FROM records ORDER BY created_at DESC LIMIT 1").fetchone()
        return row[0] if row else None

    # records
    def append(self, record: Record, measure_key: str = "") -> None:
        with self.conn:
            self.conn.execute(
                "INSERT INTO records(record_id, run_id, name, device, status, measure_key, schema_version, "
                "created_at, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.record_id, record.run_id, record.name, record.device, record.status,
                 measure_key or f"{record.name}@{record.device}", record.schema_version, record.created_at,
                 json.dumps(record.to_dict(), default=str)))

    def done_keys(self, run_id: str) -> set[str]:
        """Measure keys of this run that already have an ok record (for resuming)."""
        cur = self.conn.execute("SELECT measure_key FROM records WHERE run_id=? AND status='ok'", (run_id,))
        return {row[0] for row in cur.fetchall()}

    def query(self, run_id: str | None = None, name: str | None = None, device: str | None = None,
              status: str | None = None) -> list[Record]:
        sql, args = "SELECT data FROM records WHERE 1=1", []
        for col, val in (("run_id", run_id), ("name", name), ("device", device), ("status", status)):
            if val is not None:
                sql += f" AND {col}=?"
                args.append(val)
        sql += " ORDER BY created_at"
        return [Record.from_dict(json.loads(row[0])) for row in self.conn.execute(sql, args).fetchall()]


def run_records(run_id: str, store: str | Path | None = None) -> list[Record]:
    """Every record of one run in a store; a missing store or an unknown run is one line."""
    store = Path(store) if store else DEFAULT_STORE
    if not store.exists():
        raise EdgebenchError(f"result store not found: {store} (run `edgebench run` or `edgebench bench` first)")
    with Store(store) as s:
        records = s.query(run_id=run_id)
    if not records:
        raise EdgebenchError(f"no records for run '{run_id}' in {store} (see `edgebench report --list`)")
    return records
