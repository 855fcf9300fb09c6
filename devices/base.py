"""The device contract: move a bundle, start the runner, bring its JSON back, clean up.

Every method is abstract, so a device that forgets one fails when it is constructed, not midway
through a sweep. Devices turn whatever went wrong on their side (a crashed runtime, a dropped link,
a timeout) into a failed Measurement with a reason; they raise only for configuration errors.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

from edgebench.types import Measurement, Provenance, RunSpec

from edgebench.deploy.bundle import Bundle


class Device(ABC):
    """One place a bundle can run."""

    name: str

    @property
    @abstractmethod
    def kind(self) -> str:
        """The registry key: local, ssh, emulated, adb, ..."""

    @property
    @abstractmethod
    def provenance(self) -> Provenance:
        """What this device's latency figures are: measured, emulated, estimated."""

    @abstractmethod
    def facts(self) -> dict:
        """CPU, cores, OS, Python, runtime versions: the device's own answer, gathered on it."""

    @abstractmethod
    def doctor(self) -> dict:
        """Is it reachable and ready? {'ok': bool, 'checks': [(what, ok, detail), ...], 'facts': {...}}."""

    @abstractmethod
    def setup(self) -> None:
        """Prepare what the device needs (an emulated root, a remote folder). Idempotent."""

    @abstractmethod
    def run(self, bundle: Bundle, spec: RunSpec) -> Measurement:
        """Run the bundle's runner with `spec`; always return a Measurement (ok or failed)."""
