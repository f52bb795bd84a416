"""A study's plan: the runs a configuration makes (over the axes of :mod:`sizepenalty.keys`),
each run's settings and their fingerprint per stage, and which runs share a job. No torch, no
Snakemake, no MLflow: the Snakefile, the CLI and every stage import it.

* :class:`StudyPlan` — the runs a configuration makes, each run's settings and their
  fingerprint per stage (:meth:`StudyPlan.job`: one call), and which runs share a job: a variant
  whose settings equal another arm's for a stage reuses that arm's output
  (:meth:`StudyPlan.canonical`), so only the jobs whose settings differ run.
* :func:`load_stage_config` — a stage job's view of a study's effective configuration.

The run identity (:class:`RunKey`, :class:`Arm`, :data:`AXES`) lives in :mod:`sizepenalty.keys`
and is importable from here too.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sizepenalty.errors import InputError
from sizepenalty.keys import (
    AXES,
    KEY_COLUMNS,
    MAIN,
    METHOD_PATTERN,
    PER_RUN_STAGES,
    Arm,
    Axis,
    RunKey,
    RunKeyError,
    Wildcard,
    arm_label,
    wildcard_constraints,
)

if TYPE_CHECKING:
    from sizepenalty.config import StudyConfig

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


@dataclass(frozen=True)
class StageJob:
    """What one job of a stage gets: the full configuration (for the run plan), the view its code
    sees, its settings and fingerprint, and — for a per-run stage — its run and the plan."""

    full: StudyConfig
    config: StudyConfig
    settings: dict[str, Any]
    fingerprint: str
    key: RunKey | None = None  # the run of a per-run stage
    plan: StudyPlan | None = None  # the plan of the full configuration


def load_stage_config(
    path: str | Path, stage: str, key: RunKey | None = None, planned: str | None = None
) -> StageJob:
    """One job's configuration: the config file read and validated; for a per-run stage the run
    (a :class:`RunKey`) checked against the study's plan and its settings
    resolved (variant, combination, seed); and — when the workflow passed the fingerprint it
    planned the job with — that fingerprint checked against the file's settings (a job never runs
    with settings other than those its rerun decision was based on)."""
    from sizepenalty import stages
    from sizepenalty.config import load_config

    full = load_config(path)
    plan = StudyPlan(full)
    if key is not None:
        job = plan.job(plan.check(key), stage)
        found = StageJob(full, job.config, job.settings, job.fingerprint, key, plan)
    else:
        values = stages.settings(full, stage)
        found = StageJob(full, stages.stage_config(full, stage), values,
                         stages.hash_settings(stage, values), None, plan)  # fmt: skip
    if planned and planned != found.fingerprint:
        of = f" of {key.label}" if key is not None else ""
        raise InputError(
            f"{path}: the {stage} settings{of} changed after the workflow planned this job "
            f"(fingerprint {found.fingerprint}, planned {planned}); run snakemake again so that "
            "it plans the jobs for the configuration now in force"
        )
    return found


__all__ = [
    "AXES", "KEY_COLUMNS", "MAIN", "METHOD_PATTERN", "PER_RUN_STAGES", "Arm", "Axis", "Job",
    "RunKey", "RunKeyError", "StageJob", "StudyPlan", "Wildcard", "arm_label", "load_stage_config",
    "wildcard_constraints",
]  # fmt: skip
