"""Deterministic k-fold splits with train/val/test per fold, identical for every combination.

Every case is a test case in exactly one fold; inside each fold ``val_fraction`` of all cases
(at least one) is held out for validation and the rest train (thesis: 80/10/10). With
``stratify`` the cases are sorted by lesion volume and dealt to the folds block by block, so every
fold's test and validation sets span the volume range.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sizepenalty.errors import InputError

if TYPE_CHECKING:
    from sizepenalty.config import StudyConfig


class FoldError(InputError):
    pass


def make_folds(
    volumes: Mapping[str, float],
    k: int = 5,
    val_fraction: float = 0.1,
    seed: int = 42,
    stratify: bool = True,
) -> dict[str, Any]:
    """Return ``{"k", "seed", "stratify", "val_fraction", "folds": [{"fold", "train", "val", "test"}]}``.

    ``volumes`` maps case id to total lesion volume (any unit; only the order matters).
    """
    ids = sorted(volumes)
    n = len(ids)
    n_val = max(1, int(round(val_fraction * n)))
    largest_test = -(-n // k)
    if k < 2:
        raise FoldError(f"folds.k must be >= 2, got {k}")
    if n < k or n - largest_test - n_val < 1:
        need = k if n < k else largest_test + n_val + 1
        raise FoldError(
            f"{n} case(s) are too few for {k} folds with {n_val} validation case(s) per fold: need at least {need}"
        )
    rng = np.random.default_rng(seed)
    if stratify:
        order = sorted(ids, key=lambda c: (volumes[c], c))
    else:
        order = [ids[i] for i in rng.permutation(n)]
    test_of: dict[str, int] = {}
    for start in range(0, n, k):
        block = order[start : start + k]
        slots = rng.permutation(k)[: len(block)]
        for cid, f in zip(block, slots):
            test_of[cid] = int(f)
    folds = []
    for f in range(k):
        test = [c for c in order if test_of[c] == f]
        rest = [c for c in order if test_of[c] != f]  # volume-sorted when stratified
        # Evenly spaced picks over the (sorted) remainder give a validation set across sizes.
        offset = rng.random()
        picks = sorted(
            {min(len(rest) - 1, int((i + offset) * len(rest) / n_val)) for i in range(n_val)}
        )
        val = [rest[i] for i in picks]
        train = [c for c in rest if c not in set(val)]
        folds.append({"fold": f, "train": sorted(train), "val": sorted(val), "test": sorted(test)})
    return {
        "k": k,
        "seed": seed,
        "stratify": stratify,
        "val_fraction": val_fraction,
        "folds": folds,
    }


def check_folds(folds: dict[str, Any]) -> None:
    """Assert the invariants (disjoint splits; each case tested exactly once)."""
    all_cases = set()
    tested: list[str] = []
    for fold in folds["folds"]:
        tr, va, te = set(fold["train"]), set(fold["val"]), set(fold["test"])
        if tr & va or tr & te or va & te:
            raise FoldError(f"fold {fold['fold']}: train/val/test overlap")
        all_cases |= tr | va | te
        tested += fold["test"]
    if sorted(tested) != sorted(all_cases):
        raise FoldError("not every case is a test case exactly once")


def run_folds(
    cfg: StudyConfig, stats_dir: str | Path, out: str | Path, cases_tsv: str | Path | None = None
) -> dict[str, Any]:
    """The folds stage: splits from the preprocessed cases' lesion volumes, written to ``out``."""
    from sizepenalty.data.io import write_json_atomic
    from sizepenalty.data.preprocess import read_case_stats

    volumes = {s["case_id"]: float(s["lesion_ml"]) for s in read_case_stats(stats_dir, cases_tsv)}
    fc = cfg.folds
    folds = make_folds(volumes, fc.k, fc.val_fraction, cfg.seeds.split, fc.stratify)
    check_folds(folds)
    write_json_atomic(out, folds)
    return folds


def load_fold(path: str | Path, k: int) -> dict[str, Any]:
    """Fold ``k`` of a folds file (:class:`FoldError` naming the file when there is none)."""
    import json

    folds = json.loads(Path(path).read_text())["folds"]
    by_index = {f["fold"]: f for f in folds}
    if k not in by_index:
        raise FoldError(f"{path}: no fold {k} (have 0..{len(folds) - 1})")
    return by_index[k]
