"""Glue between the typed study config and the library objects (no tracking, no Snakemake)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sizepenalty.config import StudyConfig

if TYPE_CHECKING:
    from sizepenalty.losses import CombinedLoss, LossHyperParams


def loss_hyperparams(
    cfg: StudyConfig, tau: float | None = None, voxel_ml: float | None = None
) -> LossHyperParams:
    """The study's loss hyper-parameters (``tau`` and ``voxel_ml`` as in :func:`loss_from_config`)."""
    from sizepenalty.losses import LossHyperParams

    lc = cfg.losses
    return LossHyperParams(
        # With tau: auto, training always passes its estimate; the nominal value is for listings.
        tau=float(tau if tau is not None else lc.nominal_tau),
        eps=lc.eps,
        cap=lc.cap,
        gate_ml=lc.gate.threshold_ml if lc.gate.enabled else None,
        gate_softness=lc.gate.softness,
        voxel_ml=voxel_ml if voxel_ml is not None else (1.0 if lc.gate.enabled else None),
        tversky_alpha=lc.tversky.alpha,
        tversky_beta=lc.tversky.beta,
        focal_gamma=lc.focal.gamma,
        focal_alpha=lc.focal.alpha,
        dice_batch=lc.dice.batch,
        dice_smooth=lc.dice.smooth,
        lambda_dice=lc.weights.dice,
        lambda_tversky=lc.weights.tversky,
        lambda_focal=lc.weights.focal,
        lambda_size=lc.weights.size,
        lambda_size_alone=lc.weights.size_alone,
    )


def loss_from_config(
    cfg: StudyConfig, combo: str, tau: float | None = None, voxel_ml: float | None = None
) -> CombinedLoss:
    """The loss module for ``combo`` with the study's hyper-parameters.

    ``tau`` must be given when the config says ``tau: auto`` (the trainer estimates it from the
    training split); ``voxel_ml`` is needed by the gated variant.
    """
    from sizepenalty.losses import build_loss

    return build_loss(combo, loss_hyperparams(cfg, tau, voxel_ml))
