"""The training settings of a config's [models] train table: checked before any work, without importing torch."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = field(default=20, metadata={"min": 0})
    batch_size: int = field(default=64, metadata={"min": 1})
    lr: float = field(default=2e-3, metadata={"gt": 0})
    weight_decay: float = field(default=0.0, metadata={"min": 0})
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict, where: str = "train") -> "TrainConfig":
        from edgebench.config import build_strict

        return build_strict(cls, d, where)
