"""Dataset summary in the spirit of the thesis's Table 4.1, from per-case lesion statistics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pandas is imported where the table is built: evaluate only needs stratum_of
    import pandas as pd


def stratum_labels(edges_ml: Sequence[float]) -> list[str]:
    """``[1, 5]`` -> ``["< 1 mL", "< 5 mL", ">= 5 mL"]`` (the thesis's strata)."""
    return [f"< {e:g} mL" for e in edges_ml] + [f">= {edges_ml[-1]:g} mL"]


def stratum_of(volume_ml: float, edges_ml: Sequence[float]) -> str:
    """Size stratum of a case's total reference volume: the first edge it is below, else the last."""
    labels = stratum_labels(edges_ml)
    for edge, label in zip(edges_ml, labels):
        if volume_ml < edge:
            return label
    return labels[-1]


def dataset_summary(
    stats: pd.DataFrame, edges_ml: Sequence[float], name: str = "dataset"
) -> pd.DataFrame:
    """Property/value table. ``stats`` has one row per case with the columns written by preprocess
    (``lesion_ml``, ``n_lesions``, ``shape``, ``spacing``, ``voxel_ml``)."""
    import pandas as pd

    vols = stats["lesion_ml"].to_numpy(dtype=float)
    strata = [stratum_of(v, edges_ml) for v in vols]
    counts = {label: strata.count(label) for label in stratum_labels(edges_ml)}
    shapes = sorted(set(stats["shape"]))
    spacings = sorted(set(stats["spacing"]))
    voxel = stats["voxel_ml"].to_numpy(dtype=float)
    rows = [
        ("Cases", f"{len(stats)}"),
        ("Input shape (D x H x W)", "; ".join(shapes)),
        ("Voxel spacing (mm, D x H x W)", "; ".join(spacings)),
        (
            "Voxel volume (mL)",
            f"{voxel.mean():.4f}"
            if np.allclose(voxel, voxel[0])
            else f"{voxel.min():.4f}-{voxel.max():.4f}",
        ),
        ("Lesion volume, mean (mL)", f"{vols.mean():.3f}"),
        ("Lesion volume, range (mL)", f"{vols.min():.3f} to {vols.max():.3f}"),
        ("Lesions per case, mean", f"{stats['n_lesions'].mean():.2f}"),
        ("Lesion-free cases", f"{int((vols == 0).sum())}"),
    ]
    rows += [(f"Cases {label}", f"{n}") for label, n in counts.items()]
    return pd.DataFrame(rows, columns=["Property", name])
