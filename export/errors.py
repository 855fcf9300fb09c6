"""Typed export errors that carry the numbers (as optimum's exporters do)."""
from __future__ import annotations

from edgebench.types import EdgebenchError


class ExportError(EdgebenchError):
    """The exporter or converter itself failed (e.g. an unsupported operator)."""


class ShapeError(ExportError):
    def __init__(self, expected, got, what: str = "output"):
        self.expected, self.got = tuple(expected), tuple(got)
        super().__init__(f"{what} shape mismatch: reference {list(self.expected)}, exported {list(self.got)}")


class AtolError(ExportError):
    def __init__(self, max_diff: float, atol: float, beyond: int = 0, n: int = 0, allowed: int = 0):
        self.max_diff, self.atol = float(max_diff), float(atol)
        self.beyond, self.n, self.allowed = int(beyond), int(n), int(allowed)
        where = (f" in {self.beyond} of {self.n} samples (a spiking model may differ in at most {self.allowed}: "
                 f"spikes flipped at threshold by rounding)" if self.allowed else "")
        super().__init__(f"exported model differs from PyTorch by {self.max_diff:.3g} > atol {self.atol:.3g}{where}")


class AgreementError(ExportError):
    """Top-1 agreement with the reference is below the required fraction (quantized models)."""

    def __init__(self, agreement: float, required: float):
        self.agreement, self.required = float(agreement), float(required)
        super().__init__(f"top-1 agreement with PyTorch {self.agreement:.2%} < required {self.required:.2%}")


class CalibrationError(ExportError):
    """Static INT8 needs calibration samples and none (or too few) were given."""
