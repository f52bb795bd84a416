"""Which settings each pipeline stage reads — one declaration for two uses:

* the stage's **fingerprint**: the hash of those settings, which the Snakemake rule passes as a
  param (a change reruns exactly the jobs that read the changed setting) and the job checks
  against the configuration it loads (so a job never runs with other settings than it was
  planned with);
* the **configuration the stage's code sees** (:func:`stage_config`): every undeclared setting is
  replaced by a value that raises :class:`UndeclaredSetting` when used, so code that reads a
  setting its stage does not declare fails its tests instead of silently escaping the
  fingerprint.

Paths are dotted config keys. Settings whose meaning depends on the run's combination are
declared once in :data:`PER_COMBO` (``losses[combo]``: the weights and hyper-parameters of the
job's loss terms, from :mod:`sizepenalty.terms`; ``infer.overlap[combo]``: the job's
sliding-window overlap); a run's variant overrides and training seed are resolved by
:meth:`sizepenalty.runs.StudyPlan.job`. ``NEUTRAL`` settings say where things go and
``EXECUTION`` settings (declared in :mod:`sizepenalty.config`, whose variants may not set them) how
fast they get there, not what comes out: every stage may read them and no fingerprint holds them.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sizepenalty.combos import canonical_name, combo_id, terms_of
from sizepenalty.config import EXECUTION, StudyConfig, _build, config_hash, load_schema
from sizepenalty.terms import weight_key

NEUTRAL = ("study", "results", "tracking", "container")


@dataclass(frozen=True)
class Stage:
    reads: tuple[str, ...]
    rerun: bool = True  # False: bookkeeping that reads settings but never reruns for them
    version: int = 1  # of the stage's output format: a new one reruns the stage (fingerprint)


_SEGMENT = ("metrics.profile", "metrics.connectivity", "metrics.matching",
            "metrics.iou_threshold", "metrics.strict_threshold", "metrics.eps")  # fmt: skip

STAGES: dict[str, Stage] = {
    "synth": Stage(("seeds.cohort", "dataset.synthetic")),
    "cohort": Stage(
        (
            "dataset.source",
            "dataset.path",
            "dataset.binarize_labels",
            "dataset.affine_atol",
            "dataset.skip_invalid",
        )
    ),  # fmt: skip
    # version 2: the file keeps the original mask and spacing (metrics on the original grid)
    "preprocess": Stage(
        ("dataset.binarize_labels", "dataset.affine_atol", "dataset.skip_invalid", "preprocess"),
        version=2,
    ),  # fmt: skip
    "folds": Stage(("seeds.split", "folds.k", "folds.val_fraction", "folds.assignment")),
    "summary": Stage(
        ("folds.k", "folds.run", "metrics.strata_ml", "metrics.subset_strata_ml", "losses.tau")
    ),  # fmt: skip
    # The parent run records the whole configuration once; it is bookkeeping, not a result.
    "study_run": Stage(("*",), rerun=False),
    # Training and its validation monitor (train.validation picks best.pt); the run's seed is
    # added by StudyPlan.job.
    "train": Stage(("model", "train", "losses[combo]")),
    "infer": Stage(
        ("model", "train.amp", "infer.roi", "infer.overlap[combo]", "infer.tta")
    ),  # fmt: skip
    "evaluate": Stage(
        ("infer.thresholds", "infer.min_size", "infer.connectivity", *_SEGMENT, "metrics.strata_ml")
    ),  # fmt: skip
    # An external method's masks of one fold's test cases, scored as a run's (no threshold).
    "method": Stage(("methods", "dataset.affine_atol", *_SEGMENT, "metrics.strata_ml")),
    # Tables of every arm: the run plan (combinations, variants, seeds) and the statistics.
    "aggregate": Stage(
        (
            "seeds.bootstrap",
            "seeds.train",
            "seeds.train_by_combo",
            "losses.combinations",
            "variants",
            "methods",
            "report.pairs",
            "report.bootstrap",
            "metrics.profile",
            "metrics.strata_ml",
            "metrics.subset_strata_ml",
        )
    ),  # fmt: skip
    "figures": Stage(
        (
            "seeds.train",
            "seeds.train_by_combo",
            "losses.combinations",
            "variants",
            "methods",
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


@dataclass(frozen=True)
class PerCombo:
    """A setting whose meaning depends on the combination: the config keys the stage's code may
    read for it, and the values its fingerprint holds."""

    paths: Callable[[str], list[str]]
    values: Callable[[StudyConfig, str], dict[str, Any]]


PER_COMBO: dict[str, PerCombo] = {
    "losses": PerCombo(
        _term_paths, lambda cfg, combo: {p: _get(cfg.raw, p) for p in _term_paths(combo)}
    ),
    # The effective overlap only, so another combination's override does not rerun this one.
    "infer.overlap": PerCombo(
        lambda combo: ["infer.overlap", "infer.overlap_by_combo"],
        lambda cfg, combo: {"infer.overlap[combo]": cfg.infer.overlap_for(combo)},
    ),
}
"""Every per-combination setting, ``name[combo]`` in a stage's reads (``name[S+D]`` names a
fixed combination)."""

_PER_COMBO_RE = re.compile(r"^(?P<name>[a-z_.]+)\[(?P<combo>[^\]]+)\]$")


def _per_combo(path: str, combo: str | None, stage: str) -> tuple[PerCombo, str] | None:
    """(the declaration, the combination) of a per-combination read, or None for a plain path."""
    m = _PER_COMBO_RE.match(path)
    if not m:
        return None
    which = m["combo"]
    if which == "combo":
        if combo is None:
            raise ValueError(f"stage {stage!r} reads {path}: give the combination")
        which = combo
    return PER_COMBO[m["name"]], which


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise KeyError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")


def _expand(stage: str, combo: str | None) -> list[str]:
    """The config keys the stage's code may read, per-combination entries resolved."""
    _check_stage(stage)
    out = []
    for path in STAGES[stage].reads:
        found = _per_combo(path, combo, stage)
        out += found[0].paths(found[1]) if found else [path]
    return out


def _get(raw: dict[str, Any], path: str) -> Any:
    node: Any = raw
    for part in path.split("."):
        node = node[part]
    return node


def _without_execution(path: str, value: Any) -> Any:
    """``value`` (the setting at ``path``; ``""`` = the root) without the execution settings
    below it."""
    inside = list(EXECUTION) if not path else [
        e[len(path) + 1 :] for e in EXECUTION if e.startswith(path + ".")
    ]
    if not inside or not isinstance(value, dict):
        return value
    value = copy.deepcopy(value)
    for rest in inside:
        *parents, last = rest.split(".")
        node = value
        for part in parents:
            node = node.get(part, {})
        node.pop(last, None)
    return value


def settings(cfg: StudyConfig, stage: str, combo: str | None = None) -> dict[str, Any]:
    """The values a stage's result depends on, by dotted path (what its fingerprint hashes):
    the declared settings, per-combination ones resolved, execution settings left out."""
    _check_stage(stage)
    if not STAGES[stage].rerun:
        return {}
    if STAGES[stage].reads == ("*",):  # the whole configuration, but for how fast it runs
        return {"*": _without_execution("", cfg.raw)}
    values: dict[str, Any] = {}
    for path in STAGES[stage].reads:
        found = _per_combo(path, combo, stage)
        if found:
            values.update(found[0].values(cfg, found[1]))
        elif path not in EXECUTION:
            values[path] = _without_execution(path, _get(cfg.raw, path))
    return values


def hash_settings(stage: str, values: dict[str, Any], combo: str | None = None) -> str:
    """The fingerprint of a stage's settings (:func:`settings`, plus a run's seed)."""
    key: dict[str, Any] = {"stage": stage, "settings": values}
    if STAGES[stage].version != 1:
        key["version"] = STAGES[stage].version
    if combo is not None:
        key["combo"] = combo_id(canonical_name(combo))
    return config_hash(key)


def fingerprint(cfg: StudyConfig, stage: str, combo: str | None = None) -> str:
    """Short hash of :func:`settings` (the rule's params and the job's check). The per-run
    stages' fingerprints (with the variant and seed) come from StudyPlan.job."""
    return hash_settings(stage, settings(cfg, stage, combo), combo)


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
    allowed = [*NEUTRAL, *EXECUTION, *_expand(stage, combo)]
    raw = _poison(copy.deepcopy(cfg.raw), load_schema(), allowed, stage)
    view = _build(StudyConfig, raw)
    object.__setattr__(view, "raw", raw)
    return view


