"""Study configuration: validated once at the edge, then handed around as typed objects.

The JSON Schema in ``workflow/schemas/config.schema.yaml`` is the single source of truth: the
Snakefile validates with it and this module loads the very same file (shipped inside the package),
fills its defaults, and adds the checks a schema cannot express (loss letters, data paths).
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field, fields
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from sizepenalty.combos import LossCodeError, canonical_name, combo_id, parse_combo, terms_of
from sizepenalty.errors import InputError
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
    schema["$defs"]["arm"]["pattern"] = f"^{core}(@[a-z][a-z0-9_]*)?$"
    schema["$defs"]["arm"]["description"] = (
        fragment["combo_description"] + ", optionally followed by @<variant>"
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
    _drop_unlisted_defaults(data, user_report)
    _semantic_checks(data, source)
    return data


def _resolve_seeds(data: dict[str, Any]) -> None:
    # Every seed left at null takes the top-level seed; the effective config shows the values.
    seeds = data["seeds"]
    for name in ("cohort", "split", "bootstrap"):
        if seeds[name] is None:
            seeds[name] = data["seed"]
    if seeds["train"] is None:
        seeds["train"] = [data["seed"]]


def _drop_unlisted_defaults(data: dict[str, Any], user_report: dict[str, Any]) -> None:
    # The default comparison pairs/curves name thesis combinations; a study that runs fewer
    # combinations keeps only those it has. Explicitly configured ones are checked strictly
    # (a list is replaced whole by a later configfile, so the user can always restate it).
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
    if "pairs" not in user_report:
        data["report"]["pairs"] = [
            p for p in data["report"]["pairs"] if all(_arm(c) in arms for c in p)
        ]
    if "curves" not in user_report:
        data["report"]["curves"] = [c for c in data["report"]["curves"] if _arm(c) in arms]


def _arm(label: str) -> str | None:
    """The canonical label of an arm label, or None when it does not parse."""
    from sizepenalty.runs import arm_label

    try:
        return arm_label(label)
    except LossCodeError:
        return None


def _arm_labels(data: dict[str, Any]) -> set[str]:
    """Every arm a (validated) config makes: each combination's main arm and each variant's."""
    arms = {_arm(c) for c in data["losses"]["combinations"]}
    for name, variant in data["variants"].items():
        arms |= {_arm(f"{c}@{name}") for c in variant["combinations"]}
    return arms - {None}


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
        if _arm(code) is not None and _arm(code) not in arms:
            problems.append(f"report.curves[{i}]: {code!r} is not an arm of this study")
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
    from sizepenalty.stages import EXECUTION

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


def _build(cls: type, data: dict[str, Any]) -> Any:
    if cls is LossesConfig:
        return _losses(data)
    if cls is VariantConfig:
        return _variants(data)
    if cls is SeedsConfig:
        by_combo = data["train_by_combo"]
        if isinstance(by_combo, dict):
            by_combo = {k: tuple(v) for k, v in by_combo.items()}
        return SeedsConfig(data["cohort"], data["split"], data["bootstrap"],
                           _tuples(data["train"]), by_combo)  # fmt: skip
    kwargs = {}
    for f in fields(cls):
        if f.name == "raw":
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
    data = validate_dict(raw, source)
    cfg = _build(StudyConfig, data)
    object.__setattr__(cfg, "raw", data)
    return cfg


def workflow_config(merged: dict[str, Any], configfiles: list[str | Path]) -> StudyConfig:
    """The Snakefile's view: each configfile validated on its own first (so a problem names the
    file it is in), then the merged configuration (``--config`` overrides included)."""
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
    return from_dict(merged, source="merged configuration (configfiles + --config)")


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Read a YAML config file (optionally deep-merged with ``overrides``) and validate it."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if overrides:
        raw = deep_merge(raw, overrides)
    return from_dict(raw, source=str(path))


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` into a copy of ``base`` (like Snakemake's --configfile stacking)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
