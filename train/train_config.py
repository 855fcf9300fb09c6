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
    # torch intra-op threads while training. Sums split over threads round differently, and a spiking net
    # amplifies that: the shipped LIF L2MU recipe gave 95-100% on BasicMotions with 1 thread and 62.5-90%
    # with 2 (seeds 0-3, AMD EPYC, 2026-11-29). One default makes a config train the same weights in
    # `edgebench train`, the Python API and `edgebench run`'s workers, whatever the machine's core count.
    threads: int = field(default=1, metadata={"min": 1})

    @classmethod
    def from_dict(cls, d: dict, where: str = "train") -> "TrainConfig":
        from edgebench.config import build_strict

        return build_strict(cls, d, where)
