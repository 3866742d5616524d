"""The typed result of a cell: :class:`CellRecord` and its :class:`ScoreEntry` rows.

A record on disk is the JSON of :meth:`CellRecord.to_dict` (schema ``rsabench.cell/2``, described by
``rsabench/schemas/cell-2.schema.json``); :meth:`CellRecord.from_dict` reads one back after validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .records import SCHEMA, strict_json, validate_record
from .scoring import Score


@dataclass(frozen=True)
class ScoreEntry:
    """One scored (split, group, convention, layer, epoch); ``score`` is None where the RDM had a ``problem``."""

    split: str
    group: str
    convention: str
    layer: str
    epoch: int
    score: Score | None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"split": self.split, "group": self.group, "convention": self.convention, "layer": self.layer}
        out.update(epoch=self.epoch, score=None if self.score is None else self.score.to_dict())
        if self.problem is not None:
            out["problem"] = self.problem
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScoreEntry:
        score = None if d["score"] is None else Score.from_dict(d["score"])
        return cls(d["split"], d["group"], d["convention"], d["layer"], d["epoch"], score, d.get("problem"))


@dataclass(frozen=True)
class CellRecord:
    """Everything one cell computed (``selection``, ``scores``, ``per_layer_final``, ``curves``, ``splits``),
    what it depends on (``config``, hashed into ``cell``) and how it ran (``timings``, ``manifest``)."""

    cell: str
    config: dict[str, Any]
    selection: dict[str, Any]
    scores: list[ScoreEntry]
    per_layer_final: list[ScoreEntry]
    curves: dict[str, Any]
    splits: dict[str, dict[str, list[int]]]
    timings: dict[str, float]
    manifest: dict[str, Any] = field(default_factory=dict)
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        """The record's JSON document (strict: NaN and infinities become null)."""
        return strict_json(
            {
                "schema": self.schema,
                "cell": self.cell,
                "config": self.config,
                "selection": self.selection,
                "scores": [e.to_dict() for e in self.scores],
                "per_layer_final": [e.to_dict() for e in self.per_layer_final],
                "curves": self.curves,
                "splits": self.splits,
                "timings": self.timings,
                "manifest": self.manifest,
            }
        )

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> CellRecord:
        """A record from its JSON document; InvalidRecord unless it is a valid ``rsabench.cell/2`` record."""
        doc = validate_record(doc)
        return cls(
            cell=doc["cell"],
            config=doc["config"],
            selection=doc["selection"],
            scores=[ScoreEntry.from_dict(e) for e in doc["scores"]],
            per_layer_final=[ScoreEntry.from_dict(e) for e in doc["per_layer_final"]],
            curves=doc["curves"],
            splits=doc["splits"],
            timings=doc["timings"],
            manifest=doc["manifest"],
            schema=doc["schema"],
        )
