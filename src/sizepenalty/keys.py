"""A run's identity: the axes every training of a study is a point on, and the arms that tables
compare. No torch, no Snakemake, no MLflow, nothing of the configuration: paths, the
configuration's checks, the rules and every stage read it.

* :class:`RunKey` — one run: a loss **combination**, a **variant** (named setting overrides,
  ``main`` = none), a training **seed** and a **fold**. Paths, rule wildcards, MLflow names and
  tags, per-case metric rows and table group-bys all read it from here (:data:`AXES`).
* :class:`Arm` — what tables and comparisons compare: a combination under a variant
  (``DTS``, ``DTS@tau300``); an arm's seeds are averaged, its folds summarised.

The plan of which runs a configuration makes is :mod:`sizepenalty.runs`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sizepenalty.combos import LossCodeError, canonical_name, combo_id
from sizepenalty.errors import InputError

MAIN = "main"
"""The variant without overrides: the study's main arm of each combination."""

VARIANT_PATTERN = r"[a-z][a-z0-9_]*"
"""What a variant name may be (an identifier: it is a path segment and a tag)."""

METHOD_PATTERN = r"[a-z][a-z0-9_-]*"
"""What an external method's name may be (``methods:``, ``evaluate --method``): lowercase, so
that it never reads as a combination's thesis name; it is its arm label in every table."""

PER_RUN_STAGES = ("train", "infer", "evaluate")
"""The stages that run once per run, in the order each one's output feeds the next."""


class RunKeyError(InputError):
    """A run key that cannot be parsed or is not part of the study."""


@dataclass(frozen=True)
class Axis:
    """How one field of :class:`RunKey` appears outside Python: the path segment (``{}`` is
    the value), the rule wildcard's pattern, and how a value is read back from text."""

    name: str
    segment: str
    pattern: str
    parse: Callable[[str], Any]
    text: Callable[[Any], str] = str


def _combo_text(value: str) -> str:
    return combo_id(value)


AXES: tuple[Axis, ...] = (
    Axis("combo", "{}", r"[A-Z]+", canonical_name, _combo_text),
    Axis("variant", "{}", VARIANT_PATTERN, str),
    Axis("seed", "seed{}", r"\d+", int),
    Axis("fold", "fold{}", r"\d+", int),
)
"""The study's axes, in path order. Adding one: a field of :class:`RunKey` (with a default),
its entry here, where its values come from in :meth:`StudyPlan.values`, and the stage code that
reads it (see docs/architecture.md)."""


class Wildcard(str):
    """A rule wildcard standing in for an axis value (``{combo}``), kept verbatim in paths."""


@dataclass(frozen=True, order=True)
class RunKey:
    """One run of the study (see the module doc). ``combo`` is the thesis name (``"F+S"``);
    paths and ids use its path-safe id (``"FS"``)."""

    combo: str
    variant: str = MAIN
    seed: int = 42
    fold: int = 0

    # ------------------------------------------------------------------ text forms
    def segments(self) -> list[str]:
        """The path segments, one per axis: ``["DTS", "main", "seed42", "fold0"]``."""
        out = []
        for axis in AXES:
            value = getattr(self, axis.name)
            text = value if isinstance(value, Wildcard) else axis.text(value)
            out.append(axis.segment.format(text))
        return out

    @property
    def id(self) -> str:
        """``DTS/main/seed42/fold0``: the run's path under a stage's folder, and its CLI form
        (``--run``)."""
        return "/".join(self.segments())

    @property
    def label(self) -> str:
        """``DTS@tau300 seed 43 fold 0``-like text for logs and messages."""
        return f"{self.arm.label} seed {self.seed} fold {self.fold}"

    @property
    def name(self) -> str:
        """The MLflow run name: ``DTS-seed42-fold0`` (``DTS@tau300-seed42-fold0``)."""
        return f"{self.arm.label}-seed{self.seed}-fold{self.fold}"

    @property
    def arm(self) -> Arm:
        return Arm(self.combo, self.variant)

    def values(self) -> dict[str, Any]:
        """Axis name -> value (the per-case metric rows' key columns, with ``arm``)."""
        return {"arm": self.arm.label} | {a.name: getattr(self, a.name) for a in AXES}

    def tags(self) -> dict[str, str]:
        """MLflow tags: one per axis, plus the arm."""
        return {k: str(v) for k, v in self.values().items()}

    @classmethod
    def parse(cls, text: str) -> RunKey:
        """The key of an :attr:`id` (``DTS/main/seed42/fold0``)."""
        parts = str(text).strip("/").split("/")
        if len(parts) != len(AXES):
            raise RunKeyError(
                f"run {text!r}: expected {'/'.join(a.segment.format('<' + a.name + '>') for a in AXES)}"
            )
        values = {}
        for axis, part in zip(AXES, parts):
            prefix, suffix = axis.segment.split("{}")
            if not (part.startswith(prefix) and part.endswith(suffix)):
                raise RunKeyError(f"run {text!r}: {part!r} is not a {axis.name} ({axis.segment})")
            raw = part[len(prefix) : len(part) - len(suffix)]
            try:
                values[axis.name] = axis.parse(raw)
            except (ValueError, InputError) as exc:
                raise RunKeyError(f"run {text!r}: bad {axis.name} {raw!r}: {exc}") from None
        return cls(**values)

    @classmethod
    def from_wildcards(cls, wildcards: Any) -> RunKey:
        """The key of a rule's wildcards (``{combo}``, ``{variant}``, ``{seed}``, ``{fold}``)."""
        return cls(**{a.name: a.parse(str(getattr(wildcards, a.name))) for a in AXES})

    @classmethod
    def wildcards(cls) -> RunKey:
        """The key whose every value is its rule wildcard: paths made from it are patterns."""
        return cls(**{a.name: Wildcard("{" + a.name + "}") for a in AXES})


def wildcard_constraints(combos: Sequence[str]) -> dict[str, str]:
    """Each axis' wildcard pattern (the combination's: the study's combination ids)."""
    out = {a.name: a.pattern for a in AXES}
    ids = sorted({combo_id(c) for c in combos}, key=len, reverse=True)
    out["combo"] = "|".join(ids)
    return out


KEY_COLUMNS = ("arm", *(a.name for a in AXES))
"""The columns that identify a run in per-case and per-lesion tables."""


@dataclass(frozen=True, order=True)
class Arm:
    """A combination under a variant: what tables show as one row and comparisons pair."""

    combo: str
    variant: str = MAIN

    @property
    def label(self) -> str:
        return self.combo if self.variant == MAIN else f"{self.combo}@{self.variant}"

    @classmethod
    def parse(cls, label: str) -> Arm:
        """``"DTS"``, ``"dst"``, ``"DTS@tau300"`` -> the arm (combination under its thesis name)."""
        combo, _, variant = str(label).partition("@")
        return cls(canonical_name(combo), variant or MAIN)


def arm_label(label: str) -> str:
    """The canonical label of an arm label (``"dst@tau300"`` -> ``"DTS@tau300"``); an external
    method's name (:data:`METHOD_PATTERN`, not a loss code) is its own label (``"nnunet"``)."""
    try:
        return Arm.parse(label).label
    except LossCodeError:
        if re.fullmatch(METHOD_PATTERN, str(label)):
            return str(label)
        raise


__all__ = [
    "AXES", "KEY_COLUMNS", "MAIN", "METHOD_PATTERN", "PER_RUN_STAGES", "VARIANT_PATTERN", "Arm",
    "Axis", "RunKey", "RunKeyError", "Wildcard", "arm_label", "wildcard_constraints",
]  # fmt: skip
