"""Retraining runs from scratch (``sizepenalty retrain``): the one way to train a run again that
its checkpoint would otherwise resume or skip.

A run is selected by its id (``DTS/main/seed42/fold0``), a prefix of one (``DTS/main/seed42``:
every fold of that seed) or an arm label (``DTS``, ``DTS@tau300``: all its runs). Each selected
run's training folder (the one it shares with another arm, when it reuses that arm's training) is
cleared: its tracking record moved aside as superseded (its MLflow run tagged so), its
checkpoints, epoch log and done marker deleted. The next workflow run finds the done marker
missing and trains the run from epoch 0, then reruns what depends on it.
"""

from __future__ import annotations

from pathlib import Path

from sizepenalty.combos import LossCodeError, combo_id
from sizepenalty.config import StudyConfig
from sizepenalty.runs import AXES, RunKey, RunKeyError, StudyPlan

REASON = "retrain requested (sizepenalty retrain)"
"""Why a cleared run's record was superseded (its MLflow run's ``sizepenalty.superseded_why``)."""


def select_runs(plan: StudyPlan, patterns: list[str]) -> list[RunKey]:
    """The study's runs that ``patterns`` name (see the module doc), in plan order; a pattern
    that names none raises :class:`~sizepenalty.runs.RunKeyError` saying what the study runs."""
    chosen: dict[RunKey, None] = {}
    for pattern in patterns:
        found = _matching(plan, pattern)
        if not found:
            examples = ", ".join(k.id for k in plan.runs()[:2])
            raise RunKeyError(f"{pattern!r} names no run of this study (a run id such as "
                              f"{examples}, a prefix of one, or an arm)")  # fmt: skip
        chosen |= dict.fromkeys(found)
    return list(chosen)


def _matching(plan: StudyPlan, pattern: str) -> list[RunKey]:
    parts = pattern.strip("/").split("/")
    if len(parts) == 1:  # an arm label
        return plan.runs(plan.arm(parts[0]))
    if len(parts) > len(AXES):
        raise RunKeyError(f"{pattern!r}: a run id has {len(AXES)} parts "
                          f"({'/'.join('<' + a.name + '>' for a in AXES)})")  # fmt: skip
    try:
        parts[0] = combo_id(parts[0])
    except LossCodeError as exc:
        raise RunKeyError(f"{pattern!r}: {exc}") from None
    return [k for k in plan.runs() if k.segments()[: len(parts)] == parts]


def training_dirs(cfg: StudyConfig, keys: list[RunKey]) -> list[Path]:
    """The training folders of ``keys`` (a run that reuses another arm's training: that one's)."""
    from sizepenalty.paths import StudyLayout

    plan, layout = StudyPlan(cfg), StudyLayout(cfg.study_dir)
    return list(dict.fromkeys(layout.run_dir(plan.canonical(k, "train")) for k in keys))


def trained(run_dir: Path) -> bool:
    """Whether a run folder holds a training (finished or not) or its record."""
    from sizepenalty.tracking import RECORD
    from sizepenalty.train import RUN_FILES

    return any((run_dir / name).exists() for name in (*RUN_FILES, RECORD))


def clear_training(run_dir: Path, tracker) -> bool:
    """Supersede a run folder's record and delete its training state; False when the folder
    holds no training (:func:`trained`)."""
    from sizepenalty.tracking import supersede
    from sizepenalty.train import clear_run

    if not trained(run_dir):
        return False
    supersede(run_dir, tracker, REASON)
    clear_run(run_dir)
    return True
