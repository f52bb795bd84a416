"""Which settings each pipeline stage reads — one declaration for two uses:

* the stage's **fingerprint**: the hash of those settings, which the Snakemake rule passes as a
  param (a change reruns exactly the jobs that read the changed setting) and the job checks
  against the configuration it loads (so a job never runs with other settings than it was
  planned with);
* the **configuration the stage's code sees** (:func:`stage_config`): every undeclared setting is
  replaced by a value that raises :class:`UndeclaredSetting` when used, so code that reads a
  setting its stage does not declare fails its tests instead of silently escaping the
  fingerprint.

Paths are dotted config keys. Two per-combination entries exist: ``losses[combo]`` (the weights
and hyper-parameters of the job's loss terms, from :mod:`sizepenalty.terms`) and
``infer.overlap[combo]`` (the job's sliding-window overlap, ``infer.overlap`` or its
``infer.overlap_by_combo`` override). ``NEUTRAL`` settings say where things go, not what comes
out: every stage may read them and no fingerprint holds them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sizepenalty.combos import canonical_name, combo_id, terms_of
from sizepenalty.config import StudyConfig, _build, config_hash, load_schema
from sizepenalty.terms import weight_key

NEUTRAL = ("study", "results", "tracking", "container")


@dataclass(frozen=True)
class Stage:
    reads: tuple[str, ...]
    rerun: bool = True  # False: bookkeeping that reads settings but never reruns for them


_SEGMENT = ("metrics.profile", "metrics.connectivity", "metrics.matching",
            "metrics.iou_threshold", "metrics.strict_threshold", "metrics.eps")  # fmt: skip

STAGES: dict[str, Stage] = {
    "synth": Stage(("seed", "dataset.synthetic")),
    "cohort": Stage(
        (
            "dataset.source",
            "dataset.path",
            "dataset.binarize_labels",
            "dataset.affine_atol",
            "dataset.skip_invalid",
        )
    ),  # fmt: skip
    "preprocess": Stage(
        ("dataset.binarize_labels", "dataset.affine_atol", "dataset.skip_invalid", "preprocess")
    ),  # fmt: skip
    "folds": Stage(("seed", "folds.k", "folds.val_fraction", "folds.assignment")),
    "summary": Stage(
        ("folds.k", "folds.run", "metrics.strata_ml", "metrics.subset_strata_ml", "losses.tau")
    ),  # fmt: skip
    # The parent run records the whole configuration once; it is bookkeeping, not a result.
    "study_run": Stage(("*",), rerun=False),
    # Training, and the validation monitor that picks best.pt (it runs the sliding window).
    "train": Stage(
        (
            "seed",
            "model",
            "train",
            "losses[combo]",
            "infer.roi",
            "infer.overlap",
            "infer.sw_batch_size",
        )
    ),  # fmt: skip
    "infer": Stage(
        (
            "model",
            "train.device",
            "train.threads",
            "train.amp",
            "infer.roi",
            "infer.overlap[combo]",
            "infer.sw_batch_size",
            "infer.tta",
        )
    ),  # fmt: skip
    "evaluate": Stage(
        ("infer.thresholds", "infer.min_size", "infer.connectivity", *_SEGMENT, "metrics.strata_ml")
    ),  # fmt: skip
    "aggregate": Stage(
        (
            "seed",
            "losses.combinations",
            "report.pairs",
            "report.bootstrap",
            "metrics.profile",
            "metrics.strata_ml",
            "metrics.subset_strata_ml",
        )
    ),  # fmt: skip
    "figures": Stage(
        (
            "losses.combinations",
            "losses.tau",
            "losses.eps",
            "losses.cap",
            "report.pairs",
            "report.curves",
            "metrics.profile",
            "metrics.strata_ml",
            "infer.min_size",
            "infer.connectivity",
        )
    ),  # fmt: skip
    # The report prints the whole effective configuration.
    "report": Stage(("*",)),
    "explainer": Stage(("losses[S+D]",)),
}
"""Every stage and the settings it reads (see the module doc)."""


class UndeclaredSetting(RuntimeError):
    """A stage's code read a setting that its entry in :data:`STAGES` does not declare."""


class Undeclared:
    """Stands in for a setting the stage does not declare; any use raises."""

    __slots__ = ("path", "stage")

    def __init__(self, path: str, stage: str) -> None:
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "stage", stage)

    def _fail(self, *args: Any, **kwargs: Any):
        raise UndeclaredSetting(
            f"stage {self.stage!r} read {self.path}, which its entry in sizepenalty.stages.STAGES "
            "does not declare: declare it there (it then joins the stage's rerun fingerprint)"
        )

    def __repr__(self) -> str:
        return f"<undeclared {self.path}>"

    def __getattr__(self, name: str):
        self._fail()

    def __reduce__(self):
        return (Undeclared, (self.path, self.stage))

    def __deepcopy__(self, memo):
        return self

    __bool__ = __len__ = __iter__ = __getitem__ = __contains__ = _fail
    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __hash__ = _fail
    __int__ = __float__ = __index__ = __str__ = __format__ = _fail
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _fail
    __truediv__ = __rtruediv__ = __neg__ = __abs__ = _fail


def _term_paths(combo: str) -> list[str]:
    used = terms_of(combo)
    paths = []
    for t in used:
        section = t.config_section
        if section is None:
            paths += [f"losses.{p}" for p in t.params]
        elif t.params:  # the schema has a section only for a term with hyper-parameters
            paths.append(f"losses.{section}")
        paths.append(f"losses.weights.{weight_key(t, alone=len(used) == 1)}")
    return paths


def _expand(stage: str, combo: str | None) -> list[str]:
    """The stage's declared paths with the per-combination entries resolved."""
    if stage not in STAGES:
        raise KeyError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    out = []
    for path in STAGES[stage].reads:
        if path.endswith("[combo]") and combo is None:
            raise ValueError(f"stage {stage!r} reads {path}: give the combination")
        if path == "losses[combo]":
            out += _term_paths(combo)
        elif path.startswith("losses["):
            out += _term_paths(path[len("losses[") : -1])
        elif path == "infer.overlap[combo]":
            out += ["infer.overlap", "infer.overlap_by_combo"]
        else:
            out.append(path)
    return out


def _get(raw: dict[str, Any], path: str) -> Any:
    node: Any = raw
    for part in path.split("."):
        node = node[part]
    return node


def settings(cfg: StudyConfig, stage: str, combo: str | None = None) -> dict[str, Any]:
    """The values a stage's result depends on, by dotted path (what its fingerprint hashes). The
    per-combination overlap enters as its effective value only, so another combination's override
    does not rerun this one."""
    if not STAGES[stage].rerun:
        return {}
    if STAGES[stage].reads == ("*",):
        return {"*": cfg.raw}
    values = {}
    per_combo_overlap = "infer.overlap[combo]" in STAGES[stage].reads
    for path in _expand(stage, combo):
        if per_combo_overlap and path in ("infer.overlap", "infer.overlap_by_combo"):
            values["infer.overlap[combo]"] = cfg.infer.overlap_for(combo)
        else:
            values[path] = _get(cfg.raw, path)
    return values


def fingerprint(cfg: StudyConfig, stage: str, combo: str | None = None) -> str:
    """Short hash of :func:`settings` (the rule's params and the job's check)."""
    key = {"stage": stage, "settings": settings(cfg, stage, combo)}
    if combo is not None:
        key["combo"] = combo_id(canonical_name(combo))
    return config_hash(key)


def _covered(path: str, allowed: Iterable[str]) -> bool:
    return any(path == a or path.startswith(a + ".") for a in allowed)


def _poison(node: dict, schema: dict, allowed: list[str], stage: str, prefix: str = "") -> dict:
    out = {}
    props = schema.get("properties", {})
    for key, value in node.items():
        path = f"{prefix}{key}"
        sub = props.get(key, {})
        if _covered(path, allowed):
            out[key] = value
        elif isinstance(value, dict) and "properties" in sub:
            out[key] = _poison(value, sub, allowed, stage, path + ".")
        else:
            out[key] = Undeclared(path, stage)
    return out


def stage_config(cfg: StudyConfig, stage: str, combo: str | None = None) -> StudyConfig:
    """``cfg`` as the stage's code may see it: declared and neutral settings as they are, every
    other setting an :class:`Undeclared` that raises on use."""
    if STAGES[stage].reads == ("*",):
        return cfg
    allowed = [*NEUTRAL, *_expand(stage, combo)]
    raw = _poison(copy.deepcopy(cfg.raw), load_schema(), allowed, stage)
    view = _build(StudyConfig, raw)
    object.__setattr__(view, "raw", raw)
    return view


def load_stage_config(
    path: str | Path, stage: str, combo: str | None = None, planned: str | None = None
) -> tuple[StudyConfig, StudyConfig]:
    """(full config, the stage's view) for one job: the config file read and validated, the
    combination checked against the study's, and — when the workflow passed the fingerprint it
    planned the job with — that fingerprint checked against the file's settings (a job never runs
    with settings other than those its rerun decision was based on)."""
    from sizepenalty.config import load_config
    from sizepenalty.errors import InputError

    full = load_config(path)
    if combo is not None and combo_id(combo) not in {combo_id(c) for c in full.combo_names}:
        studied = ", ".join(full.combo_names)
        raise InputError(f"--combo {combo}: not one of losses.combinations ({studied})")
    actual = fingerprint(full, stage, combo)
    if planned and planned != actual:
        of = f" of {canonical_name(combo)}" if combo else ""
        raise InputError(
            f"{path}: the {stage} settings{of} changed after the workflow planned this job "
            f"(fingerprint {actual}, planned {planned}); run snakemake again so that it plans "
            "the jobs for the configuration now in force"
        )
    return full, stage_config(full, stage, combo)
