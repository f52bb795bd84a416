"""A study's runs: the axes every training is a point on, and the plan of which runs the study
makes. No torch, no Snakemake, no MLflow: the Snakefile, the CLI and every stage import it.

* :class:`RunKey` — one run's identity: a loss **combination**, a **variant** (named setting
  overrides, ``main`` = none), a training **seed** and a **fold**. Paths, rule wildcards, MLflow
  names and tags, per-case metric rows and table group-bys all read it from here
  (:data:`AXES`).
* :class:`Arm` — what tables and comparisons compare: a combination under a variant
  (``DTS``, ``DTS@tau300``); an arm's seeds are averaged, its folds summarised.
* :class:`StudyPlan` — the runs a configuration makes, each run's settings and their
  fingerprint per stage (:meth:`StudyPlan.job`: one call), and which runs share a job: a variant
  whose settings equal another arm's for a stage reuses that arm's output
  (:meth:`StudyPlan.canonical`), so only the jobs whose settings differ run.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sizepenalty.combos import LossCodeError, canonical_name, combo_id
from sizepenalty.errors import InputError

if TYPE_CHECKING:
    from sizepenalty.config import StudyConfig

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


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Job:
    """One run's job of one stage: the configuration its code sees (undeclared settings raise),
    the settings it depends on and their fingerprint (the rule's param and the job's check)."""

    key: RunKey
    stage: str
    config: StudyConfig
    settings: dict[str, Any]
    fingerprint: str


@dataclass
class StudyPlan:
    """The runs of a study (see the module doc), built from its validated configuration."""

    cfg: StudyConfig
    _configs: dict[str, StudyConfig] = field(default_factory=dict, repr=False)
    _jobs: dict[tuple[RunKey, str], Job] = field(default_factory=dict, repr=False)
    _all: frozenset[RunKey] | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ arms and runs
    @property
    def variants(self) -> tuple[str, ...]:
        """``main`` first, then the configured variants in their order."""
        return (MAIN, *self.cfg.variants)

    @property
    def arms(self) -> list[Arm]:
        """Every arm, in table order: the main arm of each combination (thesis order as
        configured), then each variant's arms."""
        arms = [Arm(c) for c in self.cfg.combo_names]
        for name, variant in self.cfg.variants.items():
            arms += [Arm(c, name) for c in variant.combinations]
        return arms

    def seeds(self, arm: Arm) -> tuple[int, ...]:
        """The training seeds an arm runs (``seeds.train``, a combination's
        ``seeds.train_by_combo``, or a variant's own ``seeds``)."""
        if arm.variant != MAIN and self.cfg.variants[arm.variant].seeds:
            return self.cfg.variants[arm.variant].seeds
        return self.cfg.seeds.train_of(arm.combo)

    def values(self, axis: str, arm: Arm) -> tuple[Any, ...]:
        """The values an arm runs on an axis beyond its combination and variant."""
        if axis == "seed":
            return self.seeds(arm)
        if axis == "fold":
            return self.cfg.folds.trained
        raise KeyError(f"no values for axis {axis!r}: declare them in StudyPlan.values")

    def runs(self, arm: Arm | None = None) -> list[RunKey]:
        """Every run (of one arm), in table order."""
        out = []
        for a in [arm] if arm else self.arms:
            rest = [x.name for x in AXES if x.name not in ("combo", "variant")]
            for values in itertools.product(*(self.values(n, a) for n in rest)):
                out.append(RunKey(a.combo, a.variant, **dict(zip(rest, values))))
        return out

    def arm(self, label: str) -> Arm:
        """The study's arm of a label, or :class:`RunKeyError` listing the arms."""
        arm = Arm.parse(label)
        if arm not in self.arms:
            known = ", ".join(a.label for a in self.arms)
            raise RunKeyError(f"{label!r} is not an arm of this study (arms: {known})")
        return arm

    def check(self, key: RunKey) -> RunKey:
        """``key`` itself, or :class:`RunKeyError` when the study does not make that run."""
        self.arm(key.arm.label)
        if key not in self._run_set():
            raise RunKeyError(f"run {key.id} is not part of this study (its arm runs seeds "
                              f"{list(self.seeds(key.arm))}, folds {list(self.cfg.folds.trained)})")  # fmt: skip
        return key

    # ------------------------------------------------------------------ settings per job
    def config(self, variant: str) -> StudyConfig:
        """The study's configuration with a variant's overrides applied (validated once)."""
        if variant not in self._configs:
            if variant == MAIN:
                self._configs[variant] = self.cfg
            else:
                self._configs[variant] = self.cfg.variant_config(variant)
        return self._configs[variant]

    def job(self, key: RunKey, stage: str) -> Job:
        """A run's job of one of :data:`PER_RUN_STAGES`: its view of the configuration, its
        settings and their fingerprint (the variant's overrides and the combination's terms and
        overlap resolved here, once)."""
        from sizepenalty import stages

        if (key, stage) not in self._jobs:
            cfg = self.config(key.variant)
            values = stages.settings(cfg, stage, key.combo)
            if stage == "train":  # the training seed is a setting of the training alone
                values = values | {"seed": key.seed}
            fp = stages.hash_settings(stage, values, key.combo)
            view = stages.stage_config(cfg, stage, key.combo)
            self._jobs[(key, stage)] = Job(key, stage, view, values, fp)
        return self._jobs[(key, stage)]

    def canonical(self, key: RunKey, stage: str) -> RunKey:
        """The run whose output of ``stage`` this run uses: the first run (variants in plan
        order, ``main`` first) with the same combination, seed and fold whose settings equal
        this run's for ``stage`` and every stage before it. A variant that changes only the
        inference (e.g. the equal-overlap control) thus reuses the main arm's training."""
        chain = PER_RUN_STAGES[: PER_RUN_STAGES.index(stage) + 1]
        mine = [self.job(key, s).fingerprint for s in chain]
        for variant in self.variants:
            other = replace(key, variant=variant)
            if variant == key.variant:
                return key
            if other in self._run_set():
                if [self.job(other, s).fingerprint for s in chain] == mine:
                    return other
        return key

    def _run_set(self) -> frozenset[RunKey]:
        if self._all is None:
            self._all = frozenset(self.runs())
        return self._all

    def jobs(self, stage: str) -> list[RunKey]:
        """The distinct runs that make ``stage``'s outputs (the rule's targets), in plan order."""
        return list(dict.fromkeys(self.canonical(k, stage) for k in self.runs()))

    def shared(self) -> Iterator[tuple[RunKey, str, RunKey]]:
        """(run, stage, the run whose output it reuses) for every run that reuses another's."""
        for key in self.runs():
            for stage in PER_RUN_STAGES:
                other = self.canonical(key, stage)
                if other != key:
                    yield key, stage, other


__all__ = [
    "AXES", "KEY_COLUMNS", "MAIN", "METHOD_PATTERN", "PER_RUN_STAGES", "Arm", "Axis", "Job",
    "RunKey", "RunKeyError", "StudyPlan", "Wildcard", "arm_label", "wildcard_constraints",
]  # fmt: skip
