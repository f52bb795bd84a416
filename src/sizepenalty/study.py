"""Glue between the typed study config and the library objects (no tracking, no Snakemake)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sizepenalty.config import StudyConfig

if TYPE_CHECKING:
    from sizepenalty.losses import CombinedLoss


def loss_from_config(
    cfg: StudyConfig, combo: str, tau: float | None = None, voxel_ml: float | None = None
) -> CombinedLoss:
    """The loss module for ``combo`` with the study's hyper-parameters and weights.

    ``tau`` must be given when the config says ``tau: auto`` (the trainer estimates it from the
    training split); ``voxel_ml`` is needed by the gated variant.
    """
    from sizepenalty.losses import TermContext, build_loss

    lc = cfg.losses
    return build_loss(
        combo, lc.params_for(combo), lc.weights_for(combo), TermContext(tau, voxel_ml)
    )
