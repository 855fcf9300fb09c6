"""The small contract every elastic search space meets, so finders and predictors work for any family.

An architecture ("arch") is a plain JSON-able dict (OFA: {"ks": [...], "e": [...], "d": [...], "r": R};
InstaTune: {"layers": L, "heads": [...], "ffn": [...]}). A space turns it into a fixed-length vector of
integer choice indices (what NSGA-II and the evolutionary finder mutate and cross over) and into a feature
vector (what predictors read), and refuses an arch outside the space with one clear line (ArchError).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from edgebench.types import EdgebenchError


class ArchError(EdgebenchError):
    """An arch outside the space or a malformed ARCH.json: one line, exit 2."""


@runtime_checkable
class SearchSpace(Protocol):
    name: str  # e.g. "ofa-mbv3-fashion", "instatune-minilm"

    def n_choices(self) -> list[int]:
        """Number of options of every integer gene; gene i takes values 0 .. n_choices()[i] - 1."""

    def to_genes(self, arch: dict) -> np.ndarray:
        """The arch as integer choice indices (validates it: ArchError when outside the space)."""

    def from_genes(self, genes: np.ndarray) -> dict:
        """Inverse of to_genes; genes of inactive positions (e.g. blocks beyond a stage's depth) are kept
        so mutation and crossover stay simple, but do not change the arch."""

    def features(self, arch: dict) -> np.ndarray:
        """Predictor input (e.g. OFA's one-hot encoding), float32, fixed length for the space."""

    def validate(self, arch: dict) -> dict:
        """The arch normalised (ints, lists), or ArchError naming what is wrong."""


def sample_genes(space: SearchSpace, n: int, rng: np.random.Generator) -> np.ndarray:
    """n uniformly random gene vectors, shape (n, n_genes)."""
    n_choices = np.asarray(space.n_choices())
    return (rng.random((n, len(n_choices))) * n_choices).astype(np.int64)


def load_arch(path: str | Path, space: SearchSpace) -> dict:
    """Read ARCH.json and validate it against the space; every failure is an ArchError line."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArchError(f"arch file not found: {path}") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArchError(f"malformed arch file {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ArchError(f"malformed arch file {path}: expected a JSON object, got {type(raw).__name__}")
    return space.validate(raw)
