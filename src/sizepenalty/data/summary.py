"""Dataset summary in the spirit of the thesis's Table 4.1, from per-case lesion statistics."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sizepenalty.strata import Stratum

if TYPE_CHECKING:  # pandas is imported where the table is built
    import pandas as pd

    from sizepenalty.config import StudyConfig


def size_weight_rows(
    lesion_voxels: Sequence[float], tau: float = 600.0, voxel_ml: float | None = None
) -> list[tuple[str, str]]:
    """How much SPL's size weight exp(-V_g/τ) varies over the lesion-positive cases (V_g: a case's
    total reference voxels): its min/quartiles/max and how many cases are well inside the small
    (> 0.6) and large (< 0.15) ends. A cohort where every weight is ~1 switches the penalty off."""
    v = np.asarray(lesion_voxels, dtype=float)
    v = v[v > 0]
    tau_text = f"{tau:g} voxels" + (f" = {tau * voxel_ml:.2f} mL" if voxel_ml else "")
    rows = [("SPL size scale τ", tau_text)]
    if not len(v):
        return rows + [("Size weight exp(-V_g/τ)", "no lesion-positive cases")]
    w = np.exp(-v / tau)
    quartiles = np.quantile(w, [0.0, 0.25, 0.5, 0.75, 1.0])
    return rows + [
        (
            "Size weight exp(-V_g/τ), min / 25% / median / 75% / max",
            " / ".join(f"{x:.3f}" for x in quartiles),
        ),
        ("Cases with size weight > 0.6", f"{int((w > 0.6).sum())} of {len(w)}"),
        ("Cases with size weight < 0.15", f"{int((w < 0.15).sum())} of {len(w)}"),
    ]


def lesion_free_text(stats: pd.DataFrame) -> str:
    """How many cases have an empty reference mask, and which (``case_id`` column, when there)."""
    free = stats[stats["lesion_ml"].to_numpy(dtype=float) == 0]
    if not len(free) or "case_id" not in free:
        return f"{len(free)}"
    return f"{len(free)}: " + ", ".join(sorted(map(str, free["case_id"])))


def dataset_summary(
    stats: pd.DataFrame,
    strata: Sequence[Stratum],
    name: str = "dataset",
    folds: dict | None = None,
    trained: Sequence[int] | None = None,
    tau: float = 600.0,
) -> pd.DataFrame:
    """Property/value table. ``stats`` has one row per case with the columns written by preprocess
    (``lesion_ml``, ``n_lesions``, ``shape``, ``spacing``, ``voxel_ml``: the reference as supplied
    on its original grid; optionally ``grid_shape``, ``grid_lesion_voxels``, ``grid_voxel_ml``
    and ``lesion_voxels_outside_crop``); ``strata`` count cases by total lesion volume; ``folds``
    (the folds file) adds the realised train/val/test case counts of each fold in ``trained``;
    ``tau`` (voxels) is SPL's size scale for the size-weight rows, which count the reference
    voxels training sees (``grid_lesion_voxels``, else ``lesion_voxels`` when present)."""
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
        ("Original shape (D x H x W)", "; ".join(shapes)),
        *(
            [("Preprocessed grid (D x H x W)", "; ".join(sorted(set(stats["grid_shape"]))))]
            if "grid_shape" in stats
            else []
        ),
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
        ("Lesion-free cases", lesion_free_text(stats)),
    ]
    if "lesion_voxels_outside_crop" in stats:
        outside = stats["lesion_voxels_outside_crop"].to_numpy(dtype=float) > 0
        rows.append(("Cases with lesion voxels outside the crop", f"{int(outside.sum())}"))
    rows += [(f"Cases {label}", f"{n}") for label, n in counts.items()]
    if "grid_lesion_voxels" in stats:  # SPL's V_g: the voxels of the grid training sees
        case_voxels = stats["grid_lesion_voxels"].to_numpy(dtype=float)
        voxel = stats["grid_voxel_ml"].to_numpy(dtype=float)
    elif "lesion_voxels" in stats:
        case_voxels = stats["lesion_voxels"].to_numpy(dtype=float)
    else:
        case_voxels = np.round(vols / voxel)
    uniform = bool(np.allclose(voxel, voxel[0]))
    rows += size_weight_rows(case_voxels, tau, float(voxel[0]) if uniform else None)
    for fold in (folds or {}).get("folds", []):
        if trained is None or fold["fold"] in trained:
            n = (len(fold["train"]), len(fold["val"]), len(fold["test"]))
            rows.append((f"Fold {fold['fold']}: train / val / test cases", " / ".join(map(str, n))))
    return pd.DataFrame(rows, columns=["Property", name])


def run_summary(
    cfg: StudyConfig,
    stats_dir: str | Path,
    out_csv: str | Path,
    out_md: str | Path,
    cases_tsv: str | Path | None = None,
    folds_file: str | Path | None = None,
) -> pd.DataFrame:
    """The dataset-summary stage (thesis Table 4.1 analogue) as CSV and Markdown."""
    import json

    import pandas as pd

    from sizepenalty.data.io import write_text_atomic
    from sizepenalty.data.preprocess import read_case_stats

    folds = json.loads(Path(folds_file).read_text()) if folds_file else None
    table = dataset_summary(
        pd.DataFrame(read_case_stats(stats_dir, cases_tsv)), cfg.metrics.strata, cfg.study, folds,
        cfg.folds.trained, tau=cfg.losses.nominal_tau,
    )  # fmt: skip
    write_text_atomic(out_csv, table.to_csv(index=False))
    write_text_atomic(out_md, table.to_markdown(index=False) + "\n")
    return table
