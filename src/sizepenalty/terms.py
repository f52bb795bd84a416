"""The loss-term registry: every term a combination can use, declared once (no torch here).

A term is a letter (``D``), a name (``dice``: its key under ``losses.weights`` and, for terms with
their own section, under ``losses``), a default weight λ, its hyper-parameters (each a JSON-Schema
fragment with its default and meaning) and a factory that builds the ``torch.nn.Module``. The
config schema, combination parsing, the training fingerprints, the epoch log, MLflow and the
figures all read :data:`TERMS`; adding a term (a boundary or blob loss, say) is one entry here,
its class and a test.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TermContext:
    """What a term may need beyond its hyper-parameters: the training split's estimated τ (when
    ``tau: auto``) and the voxel volume in mL (for the size gate)."""

    tau: float | None = None
    voxel_ml: float | None = None


@dataclass(frozen=True)
class LossTerm:
    letter: str
    name: str
    title: str
    weight: float
    factory: str  # "module:function(params, context) -> nn.Module"
    params: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    section: str | None = ""  # "" = its own section losses.<name>; None = keys directly in losses
    alone_weight: float | None = None  # λ when the term is the combination's only term
    ramped: bool = False  # combined, its weight can ramp in over training (losses.size_warmup)

    @property
    def config_section(self) -> str | None:
        return self.name if self.section == "" else self.section

    def defaults(self) -> dict[str, Any]:
        """The hyper-parameters at their declared defaults (nested sections, e.g. the gate, too)."""
        return {k: _default(v) for k, v in self.params.items()}

    def build(self, params: Mapping[str, Any], context: TermContext):
        module, func = self.factory.split(":")
        return getattr(importlib.import_module(module), func)(params, context)


def _default(spec: Mapping[str, Any]) -> Any:
    if "properties" in spec:
        return {k: _default(v) for k, v in spec["properties"].items()}
    return spec["default"]


def _number(default: float, description: str, minimum: float | None = 0, exclusive=False) -> dict:
    spec: dict[str, Any] = {"type": "number", "default": default, "description": description}
    if minimum is not None:
        spec["exclusiveMinimum" if exclusive else "minimum"] = minimum
    return spec


TERMS: tuple[LossTerm, ...] = (
    LossTerm(
        "D", "dice", "Dice", 1.0, "sizepenalty.losses:dice_term",
        {
            "batch": {"type": "boolean", "default": False,
                      "description": "pool the batch into one Dice instead of averaging per sample"},
            "smooth": _number(1e-5, "added to numerator and denominator", 0, exclusive=True),
        },
    ),
    LossTerm(
        "T", "tversky", "Tversky", 1.0, "sizepenalty.losses:tversky_term",
        {
            "alpha": _number(0.3, "weight of false positives"),
            "beta": _number(0.7, "weight of false negatives"),
        },
    ),
    LossTerm(
        "F", "focal", "Focal", 1.0, "sizepenalty.losses:focal_term",
        {
            "gamma": _number(2.0, "focusing exponent"),
            "alpha": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.25,
                      "description": "weight of the lesion class (1 - alpha on background)"},
        },
    ),
    LossTerm(
        "S", "size", "Size Penalty", 0.3, "sizepenalty.losses:size_term",
        {
            "tau": {"description": "SPL size scale in voxels (> 0), or \"auto\" to estimate it "
                                   "from the training split",
                    "oneOf": [{"type": "number", "exclusiveMinimum": 0}, {"const": "auto"}],
                    "default": 600},
            "tau_quantile": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1,
                             "default": 0.5, "description": "with tau auto, tau is this quantile "
                             "of the training lesion volumes (voxels)"},
            "eps": _number(1e-5, "added to V_g in the relative volume error", 0, exclusive=True),
            "cap": _number(10.0, "upper clamp of the per-sample penalty", 0, exclusive=True),
            "size_warmup": {"type": "number", "minimum": 0, "maximum": 1, "default": 0,
                            "description": "fraction of the training steps over which the size "
                            "term's weight ramps linearly from 0 when S is combined with spatial "
                            "terms (0 = full weight from the first step, the thesis)"},
            "gate": {
                "type": "object", "additionalProperties": False, "default": {},
                "description": "fade the penalty out above a lesion volume (thesis ch. 6.4)",
                "properties": {
                    "enabled": {"type": "boolean", "default": False},
                    "threshold_ml": _number(5.0, "volume (mL) above which the penalty fades", 0,
                                            exclusive=True),
                    "softness": _number(0.1, "width of the logistic fade as a fraction of the "
                                        "threshold", 0, exclusive=True),
                },
            },
        },
        section=None,  # the thesis-era keys losses.tau, losses.eps, ... stay where they are
        alone_weight=1.0,
        ramped=True,
    ),
)  # fmt: skip
"""Every loss term, in canonical order (the order of a combination's parts)."""

BY_LETTER: dict[str, LossTerm] = {t.letter: t for t in TERMS}
BY_NAME: dict[str, LossTerm] = {t.name: t for t in TERMS}
LETTERS: str = "".join(BY_LETTER)


def alone_key(term: LossTerm) -> str:
    """``losses.weights`` key of a term's weight when it is alone (``size_alone``)."""
    return f"{term.name}_alone"


def term_settings(losses: Mapping[str, Any], term: LossTerm) -> dict[str, Any]:
    """A term's hyper-parameters from a (validated) ``losses`` config section."""
    section = term.config_section
    source = losses if section is None else losses.get(section, {})
    return {k: source[k] for k in term.params}


def weight_key(term: LossTerm, alone: bool) -> str:
    """The ``losses.weights`` key of ``term``'s λ: its alone weight when it is the combination's
    only term and has one, else its name."""
    return alone_key(term) if alone and term.alone_weight is not None else term.name


def weight_of(weights: Mapping[str, float], term: LossTerm, alone: bool) -> float:
    """λ of ``term`` from ``losses.weights`` (see :func:`weight_key`)."""
    return float(weights[weight_key(term, alone)])


def nominal_tau(tau: float | str) -> float:
    """τ as a number: the configured one, or the registry's default (the thesis's 600 voxels) with
    ``tau: auto``, where each training estimates its own (listings, figures, the explainer)."""
    return float(BY_LETTER["S"].params["tau"]["default"] if tau == "auto" else tau)


def schema_fragment() -> dict[str, Any]:
    """The part of the config schema the registry owns: ``losses.weights``, each term's own
    section or top-level keys, and the combination-code pattern."""
    weights: dict[str, Any] = {}
    props: dict[str, Any] = {}
    for t in TERMS:
        weights[t.name] = {"type": "number", "minimum": 0, "default": t.weight,
                           "description": f"λ of {t.title} ({t.letter}) in a combination"}  # fmt: skip
        if t.alone_weight is not None:
            weights[alone_key(t)] = {"type": "number", "minimum": 0, "default": t.alone_weight,
                                     "description": f"λ of {t.title} when it is the only term"}  # fmt: skip
        if t.config_section is None:
            props.update(t.params)
        elif t.params:
            props[t.config_section] = {"type": "object", "additionalProperties": False,
                                       "default": {}, "properties": dict(t.params),
                                       "description": f"{t.title} ({t.letter}) hyper-parameters"}  # fmt: skip
    props["weights"] = {"type": "object", "additionalProperties": False, "default": {},
                        "properties": weights}  # fmt: skip
    letters = f"[{LETTERS}]"
    pattern = f"^{letters}(\\+?{letters}){{0,{len(LETTERS) - 1}}}$"
    letters_text = ", ".join(f"{t.letter} ({t.title})" for t in TERMS)
    description = f"thesis loss name, letters from {letters_text}, optionally joined by '+'"
    return {"losses": props, "combo_pattern": pattern, "combo_description": description}


__all__ = ["BY_LETTER", "BY_NAME", "LETTERS", "TERMS", "LossTerm", "TermContext", "alone_key",
           "nominal_tau", "schema_fragment", "term_settings", "weight_key", "weight_of"]  # fmt: skip
