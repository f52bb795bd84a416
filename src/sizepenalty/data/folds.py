"""Deterministic k-fold splits with train/val/test per fold, identical for every combination.

Every case is a test case in exactly one fold; inside each fold ``n_val = max(1, round(
val_fraction * n))`` of the n cases are held out for validation and the rest train (thesis:
80/10/10). Three assignments (``folds.assignment``):

* ``stratified`` (default): the cases are sorted by lesion volume and dealt to the folds block
  by block (a seeded permutation of the k folds per block of k cases), so every fold's test set
  spans the volume range; validation takes ``n_val`` evenly spaced picks (seeded offset) over
  the fold's remaining cases in volume order. Case lists are sorted by id.
* ``random``: as stratified, on a seeded permutation of the cases instead of the volume order.
* ``sequential`` (the thesis's "sequential CSV order", §4.4): no shuffle, no seed. The cases, in
  manifest order, are cut into k contiguous blocks, the first ``n mod k`` of ``ceil(n / k)``
  cases and the others of ``floor(n / k)``; fold f tests block f, validates on the ``n_val``
  cases that follow block f in manifest order (wrapping from the last case to the first: the
  start of block f + 1, f + 2, ...) and trains on the rest. Case lists keep manifest order.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sizepenalty.errors import InputError

if TYPE_CHECKING:
    from sizepenalty.config import StudyConfig

ASSIGNMENTS = ("stratified", "sequential", "random")


class FoldError(InputError):
    pass


def make_folds(
    volumes: Mapping[str, float],
    k: int = 5,
    val_fraction: float = 0.1,
    seed: int = 42,
    assignment: str = "stratified",
) -> dict[str, Any]:
    """Return ``{"k", "seed", "assignment", "val_fraction", "folds": [{"fold", "train", "val",
    "test"}]}`` (see the module doc for each ``assignment``).

    Args:
        volumes: case id -> total lesion volume (any unit; only the order matters), in manifest
            order: ``sequential`` uses this order, the others do not depend on it.
        k: number of folds (>= 2). val_fraction: validation cases per fold, as a fraction of all.
        seed: for ``stratified`` and ``random`` (``sequential`` does not use it).
    """
    if assignment not in ASSIGNMENTS:
        expected = ", ".join(ASSIGNMENTS)
        raise FoldError(f"folds.assignment {assignment!r}: expected one of {expected}")
    n = len(volumes)
    n_val = max(1, int(round(val_fraction * n)))
    largest_test = -(-n // k)
    if k < 2:
        raise FoldError(f"folds.k must be >= 2, got {k}")
    if n < k or n - largest_test - n_val < 1:
        need = k if n < k else largest_test + n_val + 1
        raise FoldError(
            f"{n} case(s) are too few for {k} folds with {n_val} validation case(s) per fold: need at least {need}"
        )
    if assignment == "sequential":
        folds = _sequential(list(volumes), k, n_val)
    else:
        folds = _dealt(volumes, k, n_val, seed, stratify=assignment == "stratified")
    return {
        "k": k,
        "seed": seed,
        "assignment": assignment,
        "val_fraction": val_fraction,
        "folds": folds,
    }


def _sequential(order: list[str], k: int, n_val: int) -> list[dict[str, Any]]:
    """Contiguous blocks in manifest order; validation from the cases after the test block."""
    n = len(order)
    sizes = [n // k + (1 if f < n % k else 0) for f in range(k)]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
    folds = []
    for f, (start, size) in enumerate(zip(starts, sizes)):
        test = order[start : start + size]
        val = [order[(start + size + i) % n] for i in range(n_val)]
        held = set(test) | set(val)
        train = [c for c in order if c not in held]
        folds.append({"fold": f, "train": train, "val": val, "test": test})
    return folds


def _dealt(
    volumes: Mapping[str, float], k: int, n_val: int, seed: int, stratify: bool
) -> list[dict[str, Any]]:
    """Blocks of k cases (by volume, or shuffled) dealt to the folds by a seeded permutation."""
    ids = sorted(volumes)
    n = len(ids)
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
    return folds


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
    """The folds stage: splits from the preprocessed cases' lesion volumes (of the reference as
    supplied), written to ``out``. The cases come in the order of the case list ``cases_tsv``
    (the manifest's; ``sequential`` needs it), else of the statistics files' names."""
    from sizepenalty.data.io import write_json_atomic
    from sizepenalty.data.preprocess import read_case_stats

    fc = cfg.folds
    if fc.assignment == "sequential" and cases_tsv is None:
        raise FoldError(
            "folds.assignment sequential follows the manifest order: give the case list (--cases)"
        )
    volumes = {s["case_id"]: float(s["lesion_ml"]) for s in read_case_stats(stats_dir, cases_tsv)}
    folds = make_folds(volumes, fc.k, fc.val_fraction, cfg.seeds.split, fc.assignment)
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
