"""Study configuration: validated once at the edge, then handed around as typed objects.

The JSON Schema in ``workflow/schemas/config.schema.yaml`` is the single source of truth: the
Snakefile validates with it and this module loads the very same file (shipped inside the package),
fills its defaults, and adds the checks a schema cannot express (loss letters, data paths).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from sizepenalty.combos import LossCodeError, canonical_name, combo_id, parse_combo, terms_of
from sizepenalty.errors import InputError
from sizepenalty.keys import METHOD_PATTERN, VARIANT_PATTERN, arm_label
from sizepenalty.terms import TERMS, nominal_tau, schema_fragment, term_settings, weight_key


class ConfigError(InputError):
    """An invalid study configuration; the message names the key path and what was expected."""


@cache
def load_schema() -> dict[str, Any]:
    """The configuration JSON Schema (a dict): ``workflow/schemas/config.schema.yaml`` with the
    loss terms' part (weights, hyper-parameters, combination letters) filled in from the
    registry (:func:`sizepenalty.terms.schema_fragment`). ``sizepenalty schema`` prints it."""
    text = resources.files("sizepenalty").joinpath("schemas/config.schema.yaml").read_text()
    schema = yaml.safe_load(text)
    fragment = schema_fragment()
    schema["$defs"]["combo"]["pattern"] = fragment["combo_pattern"]
    schema["$defs"]["combo"]["description"] = fragment["combo_description"]
    core = fragment["combo_pattern"].strip("^$")
    # an arm (a combination, optionally @variant) or an external method's name (methods:)
    schema["$defs"]["arm"]["pattern"] = f"^(({core})(@{VARIANT_PATTERN})?|{METHOD_PATTERN})$"
    schema["$defs"]["arm"]["description"] = (
        fragment["combo_description"] + ", optionally followed by @<variant>; or the name of "
        "one of the study's external methods (methods:)"
    )
    schema["properties"]["losses"]["properties"].update(fragment["losses"])
    return schema


def _extend_with_default(validator_class: type) -> type:
    # The documented jsonschema recipe: fill "default" values while validating, so a partial
    # config becomes complete (Snakemake's validate(..., set_default=True) does the same).
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, subschema in properties.items():
                if "default" in subschema and prop not in instance:
                    instance[prop] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_DefaultingValidator = _extend_with_default(jsonschema.Draft202012Validator)


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = []
    for p in error.absolute_path:
        parts.append(f"[{p}]" if isinstance(p, int) else f".{p}" if parts else str(p))
    return "".join(parts) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    # Prefer the schema's own description of the field as "what was expected".
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = (
            sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        )
        where = _key_path(error)
        keys = ", ".join(f"{where}.{k}" if where != "<top level>" else k for k in extra)
        return f"{keys}: unknown key; expected one of: {', '.join(allowed)}"
    msg = error.message
    if error.validator == "oneOf" and isinstance(error.schema.get("description"), str):
        msg = f"{error.instance!r} is not valid; expected {error.schema['description']}"
    elif error.validator == "pattern" and "description" in error.schema:
        msg = f"{error.instance!r} is not valid; expected {error.schema['description']}"
    return f"{_key_path(error)}: {msg}"


def validate_dict(raw: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Validate a raw config dict against the schema; return a deep copy with defaults filled.

    Raises :class:`ConfigError` listing every problem as ``<source>: <key.path>: <problem>``.
    """
    return _validate(raw, source)[0]


def _validate(raw: dict[str, Any], source: str) -> tuple[dict[str, Any], list[str]]:
    """:func:`validate_dict`, plus the notes on what validation left out (dropped default
    comparison pairs and curves: :func:`_drop_unlisted_defaults`)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(raw).__name__}"
        )
    data = copy.deepcopy(raw)
    user_report = raw.get("report") if isinstance(raw.get("report"), dict) else {}
    validator = _DefaultingValidator(load_schema())
    errors = sorted(
        validator.iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.message)
    )
    if errors:
        lines = [f"{source}: {_describe(e)}" for e in errors]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    _resolve_seeds(data)
    notes = _drop_unlisted_defaults(data, user_report)
    _semantic_checks(data, source)
    return data, notes


def _resolve_seeds(data: dict[str, Any]) -> None:
    # Every seed left at null takes the top-level seed; the effective config shows the values.
    seeds = data["seeds"]
    for name in ("cohort", "split", "bootstrap"):
        if seeds[name] is None:
            seeds[name] = data["seed"]
    if seeds["train"] is None:
        seeds["train"] = [data["seed"]]


def _drop_unlisted_defaults(data: dict[str, Any], user_report: dict[str, Any]) -> list[str]:
    # The default comparison pairs/curves name thesis combinations; a study that runs fewer
    # combinations keeps only those it has, and is told which were left out (the returned
    # notes). Explicitly configured ones are checked strictly (a list is replaced whole by a
    # later configfile, so the user can always restate it).
    # Per-combination overrides keyed by name (infer.overlap_by_combo, seeds.train_by_combo)
    # merge key by key, so a
    # study that runs a subset of a preset's combinations cannot remove the others' keys: those
    # simply do not apply.
    studied = [*data["losses"]["combinations"]]
    for variant in data["variants"].values():
        studied += variant["combinations"]
    ids = {combo_id(c) for c in studied if _parses(c)}
    for section, key in (("infer", "overlap_by_combo"), ("seeds", "train_by_combo")):
        data[section][key] = {
            k: v for k, v in data[section][key].items() if not _parses(k) or combo_id(k) in ids
        }
    arms = _arm_labels(data)
    notes = []
    if "pairs" not in user_report:
        pairs = data["report"]["pairs"]
        data["report"]["pairs"] = [p for p in pairs if all(_arm(c) in arms for c in p)]
        notes += _dropped_pairs_note(pairs, data["report"]["pairs"], arms)
    if "curves" not in user_report:
        curves = data["report"]["curves"]
        data["report"]["curves"] = [c for c in curves if _arm(c) in arms]
        left_out = [c for c in curves if c not in data["report"]["curves"]]
        if left_out:
            notes.append(f"report.curves: the default curve(s) of {', '.join(left_out)} are left "
                         f"out: not arms of this study (arms: {', '.join(sorted(arms))})")  # fmt: skip
    return notes


def _dropped_pairs_note(pairs: list, kept: list, arms: set[str]) -> list[str]:
    """What leaving default comparison pairs out means for the report, in one note (or none)."""
    dropped = [p for p in pairs if p not in kept]
    if not dropped:
        return []
    names = "; ".join(f"{a} vs {b}" for a, b in dropped)
    missing = sorted({c for p in dropped for c in p if _arm(c) not in arms})
    verb = "is not an arm" if len(missing) == 1 else "are not arms"
    why = (f"report.pairs: the default comparison(s) {names} are left out: {', '.join(missing)} "
           f"{verb} of this study (arms: {', '.join(sorted(arms))})")  # fmt: skip
    if kept:
        return [why]
    example = sorted(arms)[:2]
    hint = f", e.g. report.pairs: [[{', '.join(example)}]]" if len(example) == 2 else ""
    return [f"{why}; no comparison pair is left, so the report has no paired statistics: set "
            f"report.pairs to the (baseline, candidate) arms to compare{hint}"]  # fmt: skip


def _arm(label: str) -> str | None:
    """The canonical label of an arm label, or None when it does not parse."""

    try:
        return arm_label(label)
    except LossCodeError:
        return None


def _arm_labels(data: dict[str, Any]) -> set[str]:
    """Every arm a (validated) config makes: each combination's main arm and each variant's."""
    arms = {_arm(c) for c in data["losses"]["combinations"]}
    for name, variant in data["variants"].items():
        arms |= {_arm(f"{c}@{name}") for c in variant["combinations"]}
    return (arms | set(data["methods"])) - {None}


def _semantic_checks(data: dict[str, Any], source: str) -> None:
    problems: list[str] = []
    combos = data["losses"]["combinations"]
    for i, code in enumerate(combos):
        try:
            parse_combo(code)
        except LossCodeError as exc:
            problems.append(f"losses.combinations[{i}]: {exc}")
    ids = [combo_id(c) for c in combos if _parses(c)]
    if len(set(ids)) != len(ids):
        problems.append(
            "losses.combinations: the same combination is listed twice under different spellings"
        )
    arms = _arm_labels(data)
    for i, pair in enumerate(data["report"]["pairs"]):
        for j, code in enumerate(pair):
            if _arm(code) is not None and _arm(code) not in arms:
                problems.append(f"report.pairs[{i}][{j}]: {code!r} is not an arm of this study "
                                f"(arms: {', '.join(sorted(arms))})")  # fmt: skip
    for i, code in enumerate(data["report"]["curves"]):
        if code in data["methods"]:
            problems.append(f"report.curves[{i}]: {code!r} is an external method: it has no "
                            "training curves")  # fmt: skip
        elif _arm(code) is not None and _arm(code) not in arms:
            problems.append(f"report.curves[{i}]: {code!r} is not an arm of this study")
    for name in data["methods"]:
        if _parses(name):  # a name that reads as a loss code would be taken for that combination
            problems.append(f"methods.{name}: the name reads as the loss combination "
                            f"{canonical_name(name)}; give the method another name")  # fmt: skip
    for name, variant in data["variants"].items():
        problems += _variant_problems(name, variant)
    ds = data["dataset"]
    if ds["source"] != "synthetic":
        if not ds["path"]:
            problems.append(f"dataset.path: required when dataset.source is {ds['source']!r}")
        else:
            path = Path(ds["path"]).expanduser()
            if ds["source"] == "manifest" and not path.is_file():
                problems.append(f"dataset.path: manifest CSV {str(path)!r} does not exist")
            if ds["source"] == "isles22" and not (path / "rawdata").is_dir():
                problems.append(
                    f"dataset.path: {str(path)!r} is not an ISLES 2022 root (no rawdata/ folder)"
                )
    problems += _fit_problems(data)
    lo, hi = data["preprocess"]["clip_percentiles"]
    if not lo < hi:
        problems.append(
            f"preprocess.clip_percentiles: expected [low, high] with low < high, got {[lo, hi]}"
        )
    edges = data["metrics"]["strata_ml"]
    if list(edges) != sorted(set(edges)):
        problems.append(f"metrics.strata_ml: expected strictly increasing edges, got {edges}")
    k, run = data["folds"]["k"], data["folds"]["run"]
    outside = [f for f in run or [] if f >= k]
    if outside:
        problems.append(
            f"folds.run: fold(s) {', '.join(map(str, outside))} do not exist with folds.k = {k} "
            f"(folds are 0..{k - 1}); list the folds to train, or null for all"
        )
    if problems:
        raise ConfigError(
            "invalid configuration:\n  " + "\n  ".join(f"{source}: {p}" for p in problems)
        )


def _fit_problems(data: dict[str, Any]) -> list[str]:
    """Training patches that do not fit in the preprocessed volume, whose shape is
    ``preprocess.shape`` (a patch is cropped from it; one larger than it on an axis would be cut
    short there). Sliding windows (``train.validation.roi``, ``infer.roi``) are clipped to the
    volume instead: a window larger than it is one whole-volume pass."""
    shape, train = data["preprocess"]["shape"], data["train"]
    sizes = {"train.patch_large": train["patch_large"], "train.patch_small": train["patch_small"]}
    problems = []
    for key, size in sizes.items():
        over = [f"{axis} ({s} > {d})" for axis, s, d in zip("DHW", size, shape) if s > d]
        if over:
            problems.append(f"{key}: {list(size)} is larger than the preprocessed volume "
                            f"(preprocess.shape {list(shape)}) on {', '.join(over)}; it must fit "
                            "in the volume (shapes are depth-first: D, H, W)")  # fmt: skip
    return problems


EXECUTION = ("train.threads", "train.workers", "train.device", "train.checkpoint_minutes",
             "infer.sw_batch_size")  # fmt: skip
"""Settings that change speed, never results (threads, loader processes, the device choice, how
often ``last.pt`` is written — where a killed run resumes from, not what it learns —,
sliding-window batching): no fingerprint holds them (:mod:`sizepenalty.stages`), so changing one
reruns nothing, and no variant may set one. The numerics a device implies (its AMP mode) are
checked by the training itself (train.py)."""

VARIANT_SECTIONS = ("losses", "model", "train", "infer")
"""What a variant may override: the training's and the inference's settings. The data, split,
preprocessing and evaluation are shared by every arm (and so comparable)."""


def _schema_node(path: str) -> dict[str, Any] | None:
    """The schema of a dotted setting (None when the schema has no such key)."""
    node: dict[str, Any] = load_schema()
    for part in path.split("."):
        props = node.get("properties", {})
        if part in props:
            node = props[part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
    return node


def _variant_problems(name: str, variant: dict[str, Any]) -> list[str]:
    problems = []
    for i, code in enumerate(variant["combinations"]):
        try:
            parse_combo(code)
        except LossCodeError as exc:
            problems.append(f"variants.{name}.combinations[{i}]: {exc}")
    for key in variant["set"]:
        where = f"variants.{name}.set.{key}"
        if key.split(".")[0] not in VARIANT_SECTIONS or key == "losses.combinations":
            problems.append(f"{where}: a variant may set {', '.join(VARIANT_SECTIONS)} settings "
                            "(training and inference); the data, split, preprocessing and "
                            "evaluation are shared by every arm")  # fmt: skip
        elif any(key == e or key.startswith(e + ".") for e in EXECUTION):
            problems.append(f"{where}: an execution setting (speed only) cannot define a variant")
        elif _schema_node(key) is None:
            problems.append(f"{where}: unknown setting")
    return problems


def apply_settings(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of a raw config with dotted settings replaced (``{"losses.tau": 300}``)."""
    out = copy.deepcopy(raw)
    for path, value in values.items():
        node = out
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = copy.deepcopy(value)
    return out


def _parses(code: str) -> bool:
    try:
        parse_combo(code)
    except LossCodeError:
        return False
    return True


# ----------------------------------------------------------------------------- typed objects


Shape3 = tuple[int, int, int]


@dataclass(frozen=True)
class SeedsConfig:
    """The study's seeds, each resolved (``seed`` where the config leaves one null)."""

    cohort: int
    split: int
    bootstrap: int
    train: tuple[int, ...]
    train_by_combo: dict[str, tuple[int, ...]]

    def train_of(self, combo: str) -> tuple[int, ...]:
        """The training seeds of a combination's main arm."""
        for key, seeds in self.train_by_combo.items():
            if combo_id(key) == combo_id(combo):
                return tuple(seeds)
        return tuple(self.train)


@dataclass(frozen=True)
class VariantConfig:
    """A named variant: the combinations it runs, the settings it overrides and its seeds
    (None: each combination's)."""

    name: str
    combinations: tuple[str, ...]
    set: dict[str, Any]
    seeds: tuple[int, ...] | None
    description: str


@dataclass(frozen=True)
class MethodConfig:
    """An external method (``methods.<name>``): a folder of its binary masks, one per case on the
    case's original grid, scored beside the study's arms (:mod:`sizepenalty.methods`)."""

    name: str
    path: str
    description: str


@dataclass(frozen=True)
class SyntheticConfig:
    cases: int
    shape: Shape3
    spacing: tuple[float, float, float]
    mean_lesions: float
    shine_through: bool


@dataclass(frozen=True)
class DatasetConfig:
    source: str
    path: str | None
    binarize_labels: bool
    skip_invalid: bool
    affine_atol: float
    synthetic: SyntheticConfig


@dataclass(frozen=True)
class PreprocessConfig:
    shape: Shape3
    mode: str
    clip_percentiles: tuple[float, float]


@dataclass(frozen=True)
class FoldsConfig:
    k: int
    run: tuple[int, ...] | None
    val_fraction: float
    assignment: str  # stratified | sequential | random (sizepenalty.data.folds)

    @property
    def trained(self) -> tuple[int, ...]:
        """The folds the study trains and evaluates (``run``, else all ``k``)."""
        return tuple(self.run) if self.run is not None else tuple(range(self.k))


@dataclass(frozen=True)
class LossesConfig:
    """The combinations and, per registered term (:mod:`sizepenalty.terms`), its weights and
    hyper-parameters."""

    combinations: tuple[str, ...]
    weights: dict[str, float]  # term name (and <name>_alone) -> lambda
    params: dict[str, dict[str, Any]]  # term name -> hyper-parameters

    def params_for(self, combo: str) -> dict[str, dict[str, Any]]:
        """Hyper-parameters of the terms ``combo`` uses."""
        return {t.name: self.params[t.name] for t in terms_of(combo)}

    def ungated_params_for(self, combo: str) -> dict[str, dict[str, Any]]:
        """:meth:`params_for` with the size gate off: for listings and the explainer, which have
        no voxel volume to place a gate in mL."""
        params = self.params_for(combo)
        if "size" in params:
            params["size"] = params["size"] | {"gate": dict(params["size"]["gate"], enabled=False)}
        return params

    def weights_for(self, combo: str) -> dict[str, float]:
        """The weights ``combo`` uses (its terms', and a term's alone weight when it is alone)."""
        used = terms_of(combo)
        keys = [weight_key(t, alone=len(used) == 1) for t in used]
        return {k: self.weights[k] for k in keys}

    @property
    def size(self) -> dict[str, Any]:
        """The size penalty's settings (tau, tau_quantile, eps, cap, size_warmup, gate)."""
        return self.params["size"]

    @property
    def nominal_tau(self) -> float:
        """τ as a number (the thesis's 600 voxels with ``tau: auto``); see :func:`terms.nominal_tau`."""
        return nominal_tau(self.size["tau"])


@dataclass(frozen=True)
class ModelConfig:
    base_filters: int
    depth: int
    dropout: float
    aspp: bool
    attention: bool
    prior_prob: float


@dataclass(frozen=True)
class ValidationConfig:
    """The validation monitor that picks ``best.pt``."""

    mode: str  # volume | patches
    roi: Shape3
    overlap: float
    patches_per_volume: int


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    patches_per_volume: int
    patch_large: Shape3
    patch_small: Shape3
    small_prob: float
    pos_ratio_large: float
    pos_ratio_small: float
    lr: float
    weight_decay: float
    pct_start: float
    div_factor: float
    final_div_factor: float
    grad_clip: float
    amp: str
    val_every: int
    validation: ValidationConfig
    workers: int
    device: str
    threads: int
    checkpoint_minutes: float  # last.pt cadence (execution only)
    augment: bool


@dataclass(frozen=True)
class InferConfig:
    roi: Shape3
    overlap: float
    overlap_by_combo: dict[str, float]
    sw_batch_size: int
    tta: bool
    thresholds: tuple[float, ...]
    min_size: int
    connectivity: int

    def overlap_for(self, combo: str) -> float:
        """Sliding-window overlap for a combination (per-combo override, else the default)."""
        for key, value in self.overlap_by_combo.items():
            if combo_id(key) == combo_id(combo):
                return value
        return self.overlap


@dataclass(frozen=True)
class MetricsConfig:
    profile: str
    connectivity: int
    matching: str
    iou_threshold: float
    strict_threshold: bool
    eps: float
    strata_ml: tuple[float, ...]
    subset_strata_ml: tuple[float, ...]

    @property
    def instance_rule(self):
        """How masks become matched lesion instances (default: panoptica's)."""
        from sizepenalty.metrics.instances import InstanceRule

        return InstanceRule(
            self.connectivity, self.matching, self.iou_threshold, self.strict_threshold
        )

    @property
    def strata(self):
        """The size strata: the covering bins, then the extra subsets."""
        from sizepenalty.strata import size_strata

        return size_strata(self.strata_ml, self.subset_strata_ml)


@dataclass(frozen=True)
class ReportConfig:
    pairs: tuple[tuple[str, str], ...]
    bootstrap: int
    curves: tuple[str, ...]


@dataclass(frozen=True)
class TrackingConfig:
    uri: str | None
    experiment: str
    enabled: bool


@dataclass(frozen=True)
class ContainerConfig:
    image: str


@dataclass(frozen=True)
class StudyConfig:
    study: str
    results: str
    seed: int
    seeds: SeedsConfig
    variants: dict[str, VariantConfig]
    methods: dict[str, MethodConfig]
    dataset: DatasetConfig
    preprocess: PreprocessConfig
    folds: FoldsConfig
    losses: LossesConfig
    model: ModelConfig
    train: TrainConfig
    infer: InferConfig
    metrics: MetricsConfig
    report: ReportConfig
    tracking: TrackingConfig
    container: ContainerConfig
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)
    notes: tuple[str, ...] = field(repr=False, compare=False, default=())
    """What validation left out of the configuration as given (default comparison pairs and
    curves of arms the study does not run), one sentence each; ``validate-config`` and the
    workflow print them as warnings."""

    @property
    def study_dir(self) -> Path:
        """``<results>/<study>``: everything this study writes lives below it."""
        return Path(self.results) / self.study

    @property
    def combo_names(self) -> tuple[str, ...]:
        """Configured combinations under their thesis names."""
        return tuple(canonical_name(c) for c in self.losses.combinations)

    def tracking_uri(self) -> str:
        """The MLflow tracking URI: configured, else a SQLite file in the study folder."""
        if self.tracking.uri:
            return self.tracking.uri
        return f"sqlite:///{(self.study_dir / 'mlflow.db').resolve()}"

    def artifact_location(self) -> str | None:
        """Where new MLflow experiments keep artifacts: next to the SQLite store in the study folder
        (MLflow's own default is ./mlruns in the working directory); a tracking server decides
        for itself (None)."""
        uri = self.tracking_uri()
        if uri.startswith("sqlite:") or uri.startswith("file:"):
            return (self.study_dir / "mlartifacts").resolve().as_uri()
        return None

    def digest(self) -> str:
        """Short stable hash of the full (defaults-filled) configuration."""
        return config_hash(self.raw)

    def variant_config(self, name: str) -> StudyConfig:
        """This configuration with variant ``name``'s settings applied, validated."""
        variant = self.variants[name]
        return from_dict(apply_settings(self.raw, variant.set),
                         source=f"variants.{name} (the study's config with its set applied)")  # fmt: skip


def config_hash(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def _losses(data: dict[str, Any]) -> LossesConfig:
    return LossesConfig(
        combinations=_tuples(data["combinations"]),
        weights=dict(data["weights"]),
        params={t.name: term_settings(data, t) for t in TERMS},
    )


def _variants(data: Any) -> Any:
    if not isinstance(data, dict):  # a stage's view that does not declare the variants
        return data
    return {
        name: VariantConfig(
            name, tuple(canonical_name(c) for c in v["combinations"]), dict(v["set"]),
            tuple(v["seeds"]) if v.get("seeds") else None, v.get("description", ""),
        )
        for name, v in data.items()
    }  # fmt: skip


def _methods(data: Any) -> Any:
    if not isinstance(data, dict):  # a stage's view that does not declare the methods
        return data
    return {name: MethodConfig(name, m["path"], m.get("description", "")) for name, m in data.items()}


def _build(cls: type, data: dict[str, Any]) -> Any:
    if cls is LossesConfig:
        return _losses(data)
    if cls is VariantConfig:
        return _variants(data)
    if cls is MethodConfig:
        return _methods(data)
    if cls is SeedsConfig:
        by_combo = data["train_by_combo"]
        if isinstance(by_combo, dict):
            by_combo = {k: tuple(v) for k, v in by_combo.items()}
        return SeedsConfig(data["cohort"], data["split"], data["bootstrap"],
                           _tuples(data["train"]), by_combo)  # fmt: skip
    kwargs = {}
    for f in fields(cls):
        if f.name in ("raw", "notes"):
            continue
        value = data[f.name]
        sub = _SECTION_TYPES.get((cls, f.name))
        kwargs[f.name] = (
            _build(sub, value)
            if sub
            else (dict(value) if isinstance(value, dict) else _tuples(value))
        )
    return cls(**kwargs)


_SECTION_TYPES: dict[tuple[type, str], type] = {
    (StudyConfig, "seeds"): SeedsConfig,
    (StudyConfig, "variants"): VariantConfig,
    (StudyConfig, "methods"): MethodConfig,
    (StudyConfig, "dataset"): DatasetConfig,
    (DatasetConfig, "synthetic"): SyntheticConfig,
    (StudyConfig, "preprocess"): PreprocessConfig,
    (StudyConfig, "folds"): FoldsConfig,
    (StudyConfig, "losses"): LossesConfig,
    (StudyConfig, "model"): ModelConfig,
    (StudyConfig, "train"): TrainConfig,
    (TrainConfig, "validation"): ValidationConfig,
    (StudyConfig, "infer"): InferConfig,
    (StudyConfig, "metrics"): MetricsConfig,
    (StudyConfig, "report"): ReportConfig,
    (StudyConfig, "tracking"): TrackingConfig,
    (StudyConfig, "container"): ContainerConfig,
}


def from_dict(raw: dict[str, Any], source: str = "config") -> StudyConfig:
    """Validate ``raw`` and return the typed configuration."""
    data, notes = _validate(raw, source)
    cfg = _build(StudyConfig, data)
    object.__setattr__(cfg, "raw", data)
    object.__setattr__(cfg, "notes", tuple(notes))
    return cfg


def workflow_config(merged: dict[str, Any], configfiles: Sequence[str | Path]) -> StudyConfig:
    """The Snakefile's view: each configfile validated on its own first (so a problem names the
    file it is in), then the merged configuration (``--config`` overrides included, their text
    values typed by the schema: :func:`type_text_values`). Its notes go to stderr, once per
    workflow run."""
    problems = []
    validator = jsonschema.Draft202012Validator(load_schema())
    for path in configfiles:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read the config file: {exc}") from None
        for error in sorted(
            validator.iter_errors(raw), key=lambda e: list(map(str, e.absolute_path))
        ):
            problems.append(f"{path}: {_describe(error)}")
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    cfg = from_dict(type_text_values(merged), source="merged configuration (configfiles + --config)")
    for note in cfg.notes:
        print(f"warning: {note}", file=sys.stderr)
    return cfg


BASE_CONFIGFILE = "config.yaml"
"""The Snakefile's own ``configfile:``, read from the working directory when it is there; every
``--configfile`` is merged over it, in order."""


def stacked_config(configfiles: Sequence[str | Path], base: str | Path | None = BASE_CONFIGFILE
                   ) -> tuple[StudyConfig, list[Path]]:  # fmt: skip
    """The configuration a workflow run with these ``--configfile`` files would use: ``base``
    (when the file exists), then each file in order, merged as Snakemake merges them, then
    validated as the Snakefile validates it (:func:`workflow_config`). Returns it and the files
    it was made of."""
    base_files = [Path(base)] if base is not None and Path(base).is_file() else []
    overrides: dict[str, Any] = {}
    for path in configfiles:
        overrides = deep_merge(overrides, _read_yaml(Path(path)))
    merged = overrides
    if base_files:
        # Snakemake's order: its config starts as the command line's (the --configfile files
        # merged), then the Snakefile's configfile is merged in and the command line's again
        # over it; the keys keep that order (the effective config is written in it).
        merged = deep_merge(deep_merge(overrides, _read_yaml(base_files[0])), overrides)
    files = base_files + [Path(f) for f in configfiles]
    return workflow_config(merged, files), files


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def study_config(path: str | Path) -> StudyConfig:
    """A config file as the commands that read a study's outputs (``compare``, ``sync``,
    ``retrain``) use it: a study's effective config (``<study folder>/config.effective.yaml``,
    which names its ``results`` folder relative to the workflow's directory) finds its study in
    the folder it lies in, wherever the command runs; any other config names it as the
    workflow does, relative to the current directory."""
    from sizepenalty.paths import StudyLayout

    path = Path(path)
    cfg = load_config(path)
    if path.name == StudyLayout(Path()).effective_config.name and path.parent.name == cfg.study:
        cfg = replace(cfg, results=str(path.parent.parent))
    return cfg


# ----------------------------------------------------------------------------- --config text values

_INT = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_LITERALS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False,
             "FALSE": False, "null": None, "Null": None, "NULL": None, "~": None}  # fmt: skip
_TEXT = object()  # a text that is no number, boolean or null


def _scalar(text: str) -> Any:
    """What ``text`` is as a YAML 1.2 core-schema scalar (int, float, bool, None), or _TEXT."""
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return _LITERALS.get(text, _TEXT)


def type_text_values(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``raw`` in which every text value the schema rejects as text but accepts as the
    number, boolean or null it spells exactly (``"2"`` -> 2, ``"1e-3"``, ``"false"``, ``"null"``)
    takes that type. Snakemake's ``--config key={...}`` passes nested values as text
    (``--config train='{epochs: 2}'`` gives ``{"epochs": "2"}``); top-level values it types
    itself. A text the schema accepts, or one that spells no such value, is kept as given."""
    schema = load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    out = _typed(copy.deepcopy(raw), schema, validator)
    variants = out.get("variants")
    if isinstance(variants, dict):  # a variant's settings have the schema of the key they set
        for variant in variants.values():
            settings = variant.get("set") if isinstance(variant, dict) else None
            if isinstance(settings, dict):
                for key, value in settings.items():
                    node = _schema_node(key)
                    if node is not None:
                        settings[key] = _typed(value, node, validator)
    return out


def _typed(value: Any, node: dict[str, Any], validator: Any) -> Any:
    node = _resolved(node, validator.schema)
    if isinstance(value, str):
        typed = _scalar(value)
        check = validator.evolve(schema=node)
        if typed is not _TEXT and not check.is_valid(value) and check.is_valid(typed):
            return typed
        return value
    if isinstance(value, dict):
        props = node.get("properties", {})
        extra = node.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                value[key] = _typed(item, sub, validator)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        value[:] = [_typed(item, node["items"], validator) for item in value]
    return value


def _resolved(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """A schema node with its local ``$ref`` (``#/$defs/<name>``) merged in."""
    ref = node.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/$defs/"):
        return node
    target = root["$defs"][ref.removeprefix("#/$defs/")]
    return {**_resolved(target, root), **{k: v for k, v in node.items() if k != "$ref"}}


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Read a YAML config file (optionally deep-merged with ``overrides``) and validate it."""
    path = Path(path)
    raw = _read_yaml(path)
    if overrides:
        raw = deep_merge(raw, overrides)
    return from_dict(raw, source=str(path))


def open_study(path: str | Path) -> tuple[StudyConfig, Path]:
    """A study that ran: its configuration and its folder, from the folder
    (``<results>/<study>``, holding ``config.effective.yaml``) or from that file. The folder is
    the one the file lies in, wherever the config's ``results`` pointed when the study ran.

    The study's own data need not be reachable (a study copied to another machine, or read in a
    container without its dataset bound): the dataset is read as a synthetic one's, whose path
    is never checked; its validation settings (``affine_atol``, ``binarize_labels``) are kept.
    Nothing that reads a study this way (``predict``, ``evaluate --config``) reads its cohort."""
    from sizepenalty.paths import StudyLayout

    path = Path(path)
    file = StudyLayout(path).effective_config if path.is_dir() else path
    if not file.is_file():
        raise ConfigError(f"{path}: not a study's results folder (no {file.name}) nor its "
                          "effective config file")  # fmt: skip
    try:
        raw = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    if isinstance(raw, dict) and isinstance(raw.get("dataset"), dict):
        raw["dataset"] = dict(raw["dataset"], source="synthetic")
    return from_dict(raw, source=str(file)), file.parent


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` into a copy of ``base`` (like Snakemake's --configfile stacking)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
