"""Dataset summary in the spirit of the thesis's Table 4.1, from per-case lesion statistics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from sizepenalty.strata import Stratum

if TYPE_CHECKING:  # pandas is imported where the table is built
    import pandas as pd


def dataset_summary(
    stats: pd.DataFrame,
    strata: Sequence[Stratum],
    name: str = "dataset",
    folds: dict | None = None,
    trained: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Property/value table. ``stats`` has one row per case with the columns written by preprocess
    (``lesion_ml``, ``n_lesions``, ``shape``, ``spacing``, ``voxel_ml``); ``strata`` count cases by
    total lesion volume; ``folds`` (the folds file) adds the realised train/val/test case counts of
    each fold in ``trained``."""
    import pandas as pd

    vols = stats["lesion_ml"].to_numpy(dtype=float)
    counts = {
        s.label + (" (subset)" if s.subset else ""): int(sum(map(s.contains, vols))) for s in strata
    }
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
    for fold in (folds or {}).get("folds", []):
        if trained is None or fold["fold"] in trained:
            n = (len(fold["train"]), len(fold["val"]), len(fold["test"]))
            rows.append((f"Fold {fold['fold']}: train / val / test cases", " / ".join(map(str, n))))
    return pd.DataFrame(rows, columns=["Property", name])
