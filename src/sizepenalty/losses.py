"""Loss library: Size Penalty Loss (SPL) and the thesis's loss combinations.

Everything here is a plain ``torch.nn.Module`` taking raw logits of shape (B, 1, *spatial)
(2D or 3D, floating point) and a binary target of the same shape (values 0 and 1 only, any
dtype; anything else raises, naming the argument), so it drops into any PyTorch/MONAI loop::

    from sizepenalty.losses import build_loss
    criterion = build_loss("DTS")            # Dice + Tversky + 0.3 * SPL
    total, terms = criterion(logits, target)  # terms: {"D": ..., "T": ..., "S": ...}

Letters: D = Dice, T = Tversky, F = Focal, S = Size Penalty. Combination names are those of the
thesis (``"DTS"``, ``"F+S"``, ``"S+T"``, ...); letter order and ``+`` do not matter.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from sizepenalty.combos import (
    COMBINATIONS,
    LETTERS,
    LossCodeError,
    canonical_name,
    combo_id,
    parse_combo,
    terms_of,
)
from sizepenalty.terms import (
    BY_LETTER,
    BY_NAME,
    TERMS,
    TermContext,
    alone_key,
    nominal_tau,
    weight_of,
)

__all__ = [
    "COMBINATIONS",
    "LETTERS",
    "CombinedLoss",
    "LossCodeError",
    "SizePenaltyLoss",
    "TermContext",
    "build_loss",
    "canonical_name",
    "combo_id",
    "default_params",
    "default_weights",
    "estimate_tau",
    "parse_combo",
    "spl_curves",
]


def _flatten_per_sample(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def _check_inputs(logits: torch.Tensor, target: torch.Tensor) -> None:
    """``logits`` (B, 1, *spatial) floating point and a binary ``target`` of the same shape, or a
    ValueError/TypeError naming the argument. Binary: values 0 and 1 only, any dtype; soft or
    multi-class targets (e.g. {0, 2}) are not what these terms are defined for."""
    for name, x in (("logits", logits), ("target", target)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got dtype {logits.dtype}")
    if logits.ndim < 3 or logits.shape[1] != 1:
        raise ValueError(f"expected logits of shape (B, 1, *spatial), got {tuple(logits.shape)}")
    if target.shape != logits.shape:
        raise ValueError(
            f"target shape {tuple(target.shape)} != logits shape {tuple(logits.shape)}"
        )
    if target.dtype != torch.bool and bool(((target != 0) & (target != 1)).any()):
        shown = torch.unique(target.detach().flatten().float().cpu())[:6].tolist()
        raise ValueError(
            f"target must be binary (values 0 and 1 only), got values {shown} "
            f"(dtype {target.dtype}); threshold or one-hot it first"
        )


class SizePenaltyLoss(nn.Module):
    r"""Size Penalty Loss: a size-weighted relative volume error (thesis ch. 3, SPEC §3).

    With ``p = sigmoid(logits)`` and a binary target ``y``, per sample ``i``::

        V_g = sum(y),  V_p = sum(p)                     (all spatial voxels, in voxels)
        w   = exp(-V_g / tau) * g(V_g)                  (g = 1 unless gated, see below)
        l_i = min(cap, w * |V_p - V_g| / (V_g + eps))

    and the batch loss is the mean of ``l_i`` over the lesion-positive samples (``V_g > 0``).

    Edge cases and numerics:

    * Samples with an empty target are excluded (the relative error is ill-conditioned there);
      they stay supervised by the spatial terms. A batch with no lesion-positive sample gives
      exactly 0, still connected to the graph so ``backward()`` works and yields zero gradients.
    * Past the cap the term is constant: ``torch.clamp`` gives zero gradient there.
    * Below the cap, ``d l_i / d z_j = w * sign(V_p - V_g) / (V_g + eps) * p_j (1 - p_j)`` divided by
      the number of lesion-positive samples; at ``V_p == V_g`` the subgradient is 0.
    * The computation runs in float32 with autocast disabled, even if the logits are float16 or
      bfloat16: a half-precision sum over ~10^6 voxels would lose the volume.

    Gating (beyond the thesis, its ch. 6.4): with ``gate_voxels`` set, the weight is multiplied by
    the logistic fade ``g(V_g) = 1 / (1 + exp((V_g - gate_voxels) / (softness * gate_voxels)))``, so the
    term is active for small lesions and fades out above the threshold. Build it from a volume in mL
    with :meth:`gated`.
    """

    def __init__(
        self,
        tau: float = 600.0,
        eps: float = 1e-5,
        cap: float = 10.0,
        gate_voxels: float | None = None,
        softness: float = 0.1,
    ) -> None:
        super().__init__()
        if not (tau > 0 and math.isfinite(tau)):
            raise ValueError(f"tau must be a positive finite number of voxels, got {tau!r}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        if not cap > 0:  # math.inf is allowed: an uncapped term for analysis
            raise ValueError(f"cap must be > 0, got {cap!r}")
        if gate_voxels is not None and not gate_voxels > 0:
            raise ValueError(f"gate_voxels must be > 0, got {gate_voxels!r}")
        if not softness > 0:
            raise ValueError(f"softness must be > 0, got {softness!r}")
        self.tau = float(tau)
        self.eps = float(eps)
        self.cap = float(cap)
        self.gate_voxels = None if gate_voxels is None else float(gate_voxels)
        self.softness = float(softness)

    @classmethod
    def gated(
        cls,
        threshold_ml: float,
        voxel_ml: float,
        tau: float = 600.0,
        eps: float = 1e-5,
        cap: float = 10.0,
        softness: float = 0.1,
    ) -> SizePenaltyLoss:
        """SPL that fades out above ``threshold_ml`` (thesis: 5 mL) given the voxel volume in mL."""
        if not voxel_ml > 0:
            raise ValueError(f"voxel_ml must be > 0, got {voxel_ml!r}")
        return cls(
            tau=tau, eps=eps, cap=cap, gate_voxels=threshold_ml / voxel_ml, softness=softness
        )

    def weight(self, v_g: torch.Tensor) -> torch.Tensor:
        """Size weight ``exp(-V_g/tau)``, times the gate when one is set."""
        w = torch.exp(-v_g / self.tau)
        if self.gate_voxels is not None:
            w = w * torch.sigmoid((self.gate_voxels - v_g) / (self.softness * self.gate_voxels))
        return w

    def from_volumes(self, v_p: torch.Tensor, v_g: torch.Tensor) -> torch.Tensor:
        """``min(cap, w(V_g) |V_p - V_g| / (V_g + eps))`` elementwise, differentiable in ``V_p``.

        The single place the formula lives; no lesion-positive masking here.
        """
        return torch.clamp(self.weight(v_g) * torch.abs(v_p - v_g) / (v_g + self.eps), max=self.cap)

    def per_sample(
        self, logits: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample values ``l_i`` (float32, shape (B,)) and the lesion-positive mask (bool, (B,)).

        ``l_i`` is 0 for samples without a lesion; use the mask to tell them apart when logging.
        """
        _check_inputs(logits, target)
        with torch.autocast(device_type=logits.device.type, enabled=False):
            p = torch.sigmoid(logits.float())
            y = target.float()
            v_g = _flatten_per_sample(y).sum(dim=1)
            v_p = _flatten_per_sample(p).sum(dim=1)
            positive = v_g > 0
            values = self.from_volumes(v_p, v_g)
            values = torch.where(positive, values, torch.zeros_like(values))
        return values, positive

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        values, positive = self.per_sample(logits, target)
        # The sum over all samples keeps the graph alive when no sample is positive (0 / 1 = 0).
        return values.sum() / positive.sum().clamp(min=1).to(values.dtype)


def estimate_tau(lesion_volumes: Iterable[float], quantile: float = 0.5) -> float:
    """Estimate the SPL size scale ``tau`` (voxels) from a training set's lesion volumes.

    Rule: ``tau`` is the ``quantile`` (default the median) of the positive per-sample lesion
    volumes in voxels, i.e. of the ``V_g`` values SPL will see. Why: the weight is ``e^-1 ~ 0.37`` at
    ``V_g = tau``, so the smaller half of the training samples get weights between 0.37 and 1 and the
    larger half fade towards 0 — the size curriculum adapts to the dataset's own scale instead of a
    fixed 600 voxels (thesis ch. 6.5, 6.7). The median is insensitive to the few huge territorial
    infarcts that dominate a mean. Zero volumes (lesion-free cases) are ignored.

    Raises ``ValueError`` when there is no positive volume or the quantile is outside (0, 1).
    """
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile!r}")
    vols = np.asarray(list(lesion_volumes), dtype=float)
    if vols.size and not np.all(np.isfinite(vols)):
        raise ValueError("lesion volumes must be finite")
    vols = vols[vols > 0]
    if vols.size == 0:
        raise ValueError("cannot estimate tau: no lesion-positive volume given")
    return float(np.quantile(vols, quantile))


class CombinedLoss(nn.Module):
    """Weighted sum of the active terms. ``forward`` returns ``(total, terms)``.

    ``terms`` maps each active letter to its *weighted* contribution (detached floats are left to the
    caller: the values keep their graph so they can also be back-propagated individually).

    ``size_scale`` (default 1) multiplies the size term when it is combined with spatial terms; the
    trainer ramps it from 0 to 1 when ``losses.size_warmup`` is set (see :func:`size_warmup_scale`).
    S alone is never scaled: it would have no gradient at all. Parts are computed and reported in
    the registry's order (:data:`sizepenalty.terms.TERMS`).
    """

    def __init__(self, code: str, terms: dict[str, nn.Module], weights: dict[str, float]) -> None:
        super().__init__()
        self.code = code
        self.name = canonical_name(code)
        self.terms = nn.ModuleDict(terms)
        self.weights = dict(weights)
        self.size_scale = 1.0

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        _check_inputs(logits, target)
        parts: dict[str, torch.Tensor] = {}
        for letter in LETTERS:
            if letter in self.terms:
                # Spatial terms also run in float32: MONAI's Dice/Tversky sums suffer in half precision.
                with torch.autocast(device_type=logits.device.type, enabled=False):
                    value = self.terms[letter](logits.float(), target.float())
                weight = self.weights[letter]
                if BY_LETTER[letter].ramped and len(self.terms) > 1:
                    weight = weight * self.size_scale
                parts[letter] = weight * value
        total = torch.stack(list(parts.values())).sum()
        return total, parts


def size_warmup_scale(step: int, total_steps: int, warmup: float) -> float:
    """Linear ramp of the size term's weight: ``min(1, step / (warmup * total_steps))``; 1 when
    ``warmup`` is 0 (the thesis setting). ``step`` counts optimizer steps from 0.

    Why: with few optimisation steps the penalty (per-voxel gradient ~ 1/V_g on every voxel) outweighs
    the spatial terms before they have localised anything and drives all probabilities down; a short
    ramp lets Dice/Tversky/Focal act first, as they do over the thesis's 400 epochs.
    """
    if warmup <= 0:
        return 1.0
    return min(1.0, step / (warmup * total_steps))


def default_params() -> dict[str, dict[str, Any]]:
    """Every registered term's hyper-parameters at their defaults (the thesis's, appendix A.1)."""
    return {t.name: t.defaults() for t in TERMS}


def default_weights() -> dict[str, float]:
    """Every λ at its default: 1 for D, T, F; 0.3 for S combined, 1.0 for S alone (thesis §3.6)."""
    out = {t.name: t.weight for t in TERMS}
    out.update({alone_key(t): t.alone_weight for t in TERMS if t.alone_weight is not None})
    return out


def _merged(defaults: Mapping[str, Any], given: Mapping[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise TypeError(f"unknown loss hyper-parameter(s) {where}{', '.join(unknown)}")
    out = dict(defaults)
    for key, value in given.items():
        nested = isinstance(defaults[key], dict) and isinstance(value, Mapping)
        out[key] = _merged(defaults[key], value, f"{where}{key}.") if nested else value
    return out


def build_loss(
    code: str,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    weights: Mapping[str, float] | None = None,
    context: TermContext | None = None,
) -> CombinedLoss:
    """Build the loss for a combination code.

    ``params`` overrides hyper-parameters per term name (``{"size": {"tau": 300}}``), ``weights``
    overrides λ (``{"size": 0.5}``); everything else takes the registry's defaults
    (:mod:`sizepenalty.terms`). ``context`` carries a training split's estimated τ and the voxel
    volume (for the gated size penalty). The terms:

    * D: ``monai.losses.DiceLoss(sigmoid=True, smooth_nr=smooth_dr=smooth)``:
      ``1 - (2 sum(p y) + s) / (sum(p) + sum(y) + s)`` per sample (``batch=False``) averaged over
      the batch, or pooled over the batch (``batch=True``). An empty target with an empty
      prediction gives loss 0; with any predicted mass it approaches 1.
    * T: ``monai.losses.TverskyLoss(sigmoid=True, alpha=0.3, beta=0.7)``:
      ``1 - (TP + s) / (TP + alpha FP + beta FN + s)`` with soft ``TP = sum(p y)``,
      ``FP = sum(p (1-y))``, ``FN = sum((1-p) y)``, ``s = 1e-5``; alpha weights false positives and
      beta false negatives, as in the thesis.
    * F: ``monai.losses.FocalLoss(gamma=2, alpha=0.25, use_softmax=False)``: the sigmoid focal loss of
      Lin et al., ``-a_t (1 - p_t)^gamma log(p_t)`` with ``a_t = alpha`` on lesion voxels and
      ``1 - alpha`` on background, averaged over all voxels.
    * S: :class:`SizePenaltyLoss`.

    Weights: ``lambda_D = lambda_T = lambda_F = 1``; ``lambda_S = 0.3`` when S is combined with a
    spatial term and ``1.0`` when S is alone (thesis §3.6).
    """
    chosen = terms_of(code)
    given = dict(params or {})
    unknown = sorted(set(given) - set(BY_NAME))
    if unknown:
        raise TypeError(f"unknown loss term(s) {', '.join(unknown)}; expected {', '.join(BY_NAME)}")
    hp = {name: _merged(d, given.get(name, {}), f"{name}.") for name, d in default_params().items()}
    lam = _merged(default_weights(), weights or {}, "weights.")
    ctx = context or TermContext()
    terms = {t.letter: t.build(hp[t.name], ctx) for t in chosen}
    lam = {t.letter: weight_of(lam, t, alone=len(chosen) == 1) for t in chosen}
    return CombinedLoss(code, terms, lam)


# Factories named in the registry (sizepenalty.terms.TERMS): hyper-parameters -> module.


def dice_term(p: Mapping[str, Any], ctx: TermContext) -> nn.Module:
    from monai.losses import DiceLoss

    return DiceLoss(sigmoid=True, smooth_nr=p["smooth"], smooth_dr=p["smooth"], batch=p["batch"])


def tversky_term(p: Mapping[str, Any], ctx: TermContext) -> nn.Module:
    from monai.losses import TverskyLoss

    return TverskyLoss(sigmoid=True, alpha=p["alpha"], beta=p["beta"])


def focal_term(p: Mapping[str, Any], ctx: TermContext) -> nn.Module:
    from monai.losses import FocalLoss

    return FocalLoss(gamma=p["gamma"], alpha=p["alpha"], use_softmax=False)


def size_term(p: Mapping[str, Any], ctx: TermContext) -> nn.Module:
    tau = ctx.tau if ctx.tau is not None else nominal_tau(p["tau"])
    gate = p["gate"]
    if not gate["enabled"]:
        return SizePenaltyLoss(tau=tau, eps=p["eps"], cap=p["cap"])
    if ctx.voxel_ml is None:
        raise ValueError("the gated size penalty needs the voxel volume (TermContext.voxel_ml)")
    return SizePenaltyLoss.gated(
        gate["threshold_ml"], ctx.voxel_ml, tau=tau, eps=p["eps"], cap=p["cap"],
        softness=gate["softness"],
    )  # fmt: skip


def spl_curves(
    v_g: Sequence[float] | np.ndarray,
    ratio: Sequence[float] | np.ndarray,
    tau: float = 600.0,
    eps: float = 1e-5,
    cap: float = 10.0,
) -> dict[str, np.ndarray]:
    """SPL components on a grid of lesion volumes ``v_g`` and ratios ``V_p / V_g``, computed with
    :class:`SizePenaltyLoss` itself (autograd gives the gradient w.r.t. ``V_p``).

    Returns arrays of shape (len(v_g), len(ratio)): ``weight``, ``rel_error``, ``loss`` (clamped) and
    ``grad`` (d loss / d V_p with the cap, 0 where saturated) and ``grad_precap`` (without the cap).
    Used by the figures and the explainer so they show the package's own function.
    """
    vg = torch.as_tensor(np.asarray(v_g, dtype=np.float64)).reshape(-1, 1)
    r = torch.as_tensor(np.asarray(ratio, dtype=np.float64)).reshape(1, -1)
    vp = (vg * r).clone().requires_grad_(True)
    spl = SizePenaltyLoss(tau=tau, eps=eps, cap=cap)
    w = spl.weight(vg).expand_as(vp)
    loss = spl.from_volumes(vp, vg)
    (grad,) = torch.autograd.grad(loss.sum(), vp)
    # Without the cap (cap = inf) the same function gives the pre-clamp gradient of Fig. 3.1(d).
    uncapped = SizePenaltyLoss(tau=tau, eps=eps, cap=math.inf).from_volumes(vp, vg)
    (precap,) = torch.autograd.grad(uncapped.sum(), vp)
    rel = torch.abs(vp - vg) / (vg + eps)
    return {
        "weight": w.detach().numpy(),
        "rel_error": rel.detach().numpy(),
        "loss": loss.detach().numpy(),
        "grad": grad.numpy(),
        "grad_precap": precap.numpy(),
    }
