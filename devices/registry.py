"""Devices by name, from devices.toml, built through a registry of import paths.

A heavy transport (paramiko, adbutils) is imported only when a device of that kind is built.
A new device kind is one new file and one line in KINDS.
"""
from __future__ import annotations

import importlib
import os
import tomllib
from pathlib import Path

from edgebench.devices.base import Device
from edgebench.types import EdgebenchError

# kind -> ("module", "DeviceClass", "ConfigClass")
KINDS: dict[str, tuple[str, str, str]] = {
    "local": ("edgebench.devices.local", "LocalDevice", "LocalConfig"),
    "ssh": ("edgebench.devices.ssh", "SSHDevice", "SSHConfig"),
    "adb": ("edgebench.devices.adb", "ADBDevice", "ADBConfig"),
    "emulated": ("edgebench.devices.emulated", "EmulatedDevice", "EmulatedConfig"),
}

# Devices that exist without any devices.toml. A user's file adds to these or overrides them by name.
BUILTIN: dict[str, dict] = {
    "local": {"kind": "local"},
    "pi4-emulated": {"kind": "emulated", "cpu": "cortex-a72"},
    # Raspberry Pi 5: Cortex-A76 at 2.4 GHz, calibrated on the 5 published Pi 5 figures of one source
    # (devices/data/pi5_reference.json): its band is leave-one-model-out, weaker than pi4-emulated's
    "pi5-emulated": {"kind": "emulated", "cpu": "cortex-a76", "clock_ghz": 2.4},
}

DEFAULT_FILE = "devices.toml"


def config_from_dict(cls, name: str, raw: dict):
    """A frozen config dataclass from a TOML table, through the one strict config mechanism: an unknown
    setting (with the closest valid name), a wrong type or an impossible value is one line."""
    from edgebench.config import build_strict

    return build_strict(cls, raw, f"devices.{name}", name=name)


def devices_file(path: str | Path | None = None) -> Path | None:
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise EdgebenchError(f"devices file not found: {p}")
        return p
    env = os.environ.get("EDGEBENCH_DEVICES")
    if env:
        return devices_file(env)
    p = Path(DEFAULT_FILE)
    return p if p.exists() else None


def device_table(path: str | Path | None = None) -> dict[str, dict]:
    """Every configured device: the built-ins plus the user's devices.toml ([devices.NAME] tables)."""
    table = {k: dict(v) for k, v in BUILTIN.items()}
    f = devices_file(path)
    if f is not None:
        try:
            doc = tomllib.loads(f.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise EdgebenchError(f"malformed devices file {f}: {exc}") from None
        for name, raw in doc.get("devices", {}).items():
            if not isinstance(raw, dict) or "kind" not in raw:
                raise EdgebenchError(f"devices file {f}: device '{name}' needs a 'kind' "
                                     f"(one of {', '.join(sorted(KINDS))})")
            table[name] = dict(raw)
    return table


def get_device(name: str, path: str | Path | None = None) -> Device:
    table = device_table(path)
    if name not in table:
        raise EdgebenchError(f"unknown device '{name}' (configured: {', '.join(sorted(table))})")
    raw = dict(table[name])
    kind = raw.pop("kind")
    if kind not in KINDS:
        raise EdgebenchError(f"device '{name}': unknown kind '{kind}' (known: {', '.join(sorted(KINDS))})")
    module_name, device_cls, config_cls = KINDS[kind]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EdgebenchError(f"device '{name}' of kind '{kind}' needs a package that is not installed: "
                             f"{exc.name}") from None
    config = config_from_dict(getattr(module, config_cls), name, raw)
    return getattr(module, device_cls)(config)
