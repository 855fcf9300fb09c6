"""`edgebench devices list|doctor|setup|calibrate`: the configured devices (built-ins plus devices.toml), whether
each is reachable and ready (and, with --stability, whether this machine keeps its speed), preparing one, and
refitting an emulated device's cost model (devices/calibrate_cli.py). Heavy modules load inside the commands."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from edgebench.console import fmt as _fmt, out
from edgebench.devices.calibrate_cli import calibrate

app = typer.Typer(no_args_is_help=True, help="List, check and prepare the devices in devices.toml.")


@app.command("list")
def devices_list(devices_file: Optional[Path] = typer.Option(None, "--devices", help="devices.toml"),
                 as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """The configured devices (built-ins plus devices.toml)."""
    from edgebench.devices.registry import device_table

    table = device_table(devices_file)
    if as_json:
        print(json.dumps(table))
        return
    t = Table(title="devices")
    t.add_column("name")
    t.add_column("kind")
    t.add_column("settings")
    for name, raw in sorted(table.items()):
        t.add_row(name, raw["kind"], ", ".join(f"{k}={v}" for k, v in raw.items() if k != "kind"))
    out.print(t)


@app.command("doctor")
def devices_doctor(names: List[str] = typer.Argument(None, help="Device names (default: all configured)"),
                   devices_file: Optional[Path] = typer.Option(None, "--devices", help="devices.toml"),
                   stability: float = typer.Option(0.0, min=0.0, help="Also time a fixed workload for this many "
                                                   "seconds on each local device's cores and say whether the "
                                                   "machine keeps its speed (a shared host may not); 0: skip"),
                   as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Is each device reachable and ready? Prints its Python, runtimes, CPU, cores, memory.

    With --stability S (e.g. 20), a local device's cores are probed for S seconds: if the same work runs
    at two speeds (another tenant or an SMT sibling on the core), latency figures move between runs by as
    much, and the line says so (a warning, not a failure)."""
    from edgebench.devices.registry import device_table, get_device
    from edgebench.devices.stability import probe_speed

    names = names or sorted(device_table(devices_file))
    results = {}
    for name in names:
        dev = get_device(name, devices_file)
        results[name] = dev.doctor()
        if stability and dev.kind == "local":
            results[name]["stability"] = probe_speed(dev, stability).to_dict()
    if as_json:
        print(json.dumps(results, default=str))
    else:
        for name, res in results.items():
            out.print(f"[bold]{name}[/bold]: {'ready' if res['ok'] else 'NOT READY'}")
            for what, ok, detail in res["checks"]:
                out.print(f"  {'✓' if ok else '✗'} {what}: {detail}")
            if "stability" in res:
                from edgebench.devices.stability import SpeedTrace

                trace = SpeedTrace(**{k: v for k, v in res["stability"].items() if k != "stable"})
                out.print(f"  {'✓' if trace.stable else '!'} speed: {trace.summary()}", markup=False)
            facts = res.get("facts", {})
            if facts:
                out.print(f"  cpu {facts.get('cpu')}, {facts.get('cores')} cores, {facts.get('machine')}, "
                          f"memory {_fmt(facts.get('mem_total_mb'), '{:.0f}')} MB, {facts.get('os')}")
    if not all(r["ok"] for r in results.values()):
        raise typer.Exit(1)


@app.command("setup")
def devices_setup(name: str = typer.Argument(..., help="Device name"),
                  devices_file: Optional[Path] = typer.Option(None, "--devices", help="devices.toml")):
    """Prepare what a device needs (e.g. build the emulated aarch64 root). Safe to repeat."""
    from edgebench.devices.registry import get_device

    dev = get_device(name, devices_file)
    dev.setup()
    out.print(f"{name}: ready")


app.command("calibrate")(calibrate)
