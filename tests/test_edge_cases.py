"""Edge cases: every per-case metric on every case type (empty reference, empty prediction, both
empty, no matched pair) takes the value of the one table (``EDGE_CASES``), hand-checked here;
the README lists the same table; panoptica agrees where it defines the value."""

import re
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from sizepenalty.metrics import (
    EDGE_CASES,
    ISLES22_KEYS,
    PROFILES,
    THESIS_KEYS,
    CaseType,
    case_metrics,
    isles22_metrics,
)
from sizepenalty.metrics.edge_cases import FORMULA, case_type, cell_text

README = Path(__file__).resolve().parents[1] / "README.md"
SHAPE = (6, 12, 6)
U = float("nan")


def block(y0: int, y1: int) -> np.ndarray:
    m = np.zeros(SHAPE, np.uint8)
    m[1:3, y0:y1, 1:3] = 1
    return m


def brute_assd(a: np.ndarray, b: np.ndarray) -> float:
    """ASSD by all pairwise distances between scipy-eroded surfaces (unit spacing)."""
    def surf(m):
        m = m.astype(bool)
        return np.argwhere(m ^ ndimage.binary_erosion(m, border_value=0)).astype(float)

    sa, sb = surf(a), surf(b)
    d = np.sqrt(((sa[:, None, :] - sb[None, :, :]) ** 2).sum(-1))
    return (d.min(0).mean() + d.min(1).mean()) / 2


ZERO = np.zeros(SHAPE, np.uint8)
A, B = block(1, 3), block(7, 9)  # two 8-voxel lesions 4 voxels apart
TWO = A | B
GROWN = block(2, 6)  # 16 voxels sharing 4 with A: IoU 0.2, Dice 1/3

# Hand-computed values of every thesis key on one pair of each kind (spacing 1 mm: 0.001 mL).
FIXTURES = {
    "both empty": (ZERO, ZERO, dict(
        dice=1.0, rve=0.0, ave_ml=0.0, n_ref=0, n_pred=0,
        tp_overlap=0, fp_overlap=0, fn_overlap=0, detection_overlap=U,
        tp_iou=0, fp_iou=0, fn_iou=0, detection_iou=U, lesion_f1=1.0,
        pq=U, sq=U, rq=U, pq_dsc=U, sq_dsc=U, assd_mm=0.0, assd_tp_mm=U, vw_dice=U,
        count_diff=0, vol_ref_ml=0.0, vol_pred_ml=0.0)),
    "empty reference": (ZERO, TWO, dict(
        dice=0.0, rve=U, ave_ml=0.016, n_ref=0, n_pred=2,
        tp_overlap=0, fp_overlap=2, fn_overlap=0, detection_overlap=U,
        tp_iou=0, fp_iou=2, fn_iou=0, detection_iou=U, lesion_f1=0.0,
        pq=0.0, sq=0.0, rq=0.0, pq_dsc=0.0, sq_dsc=0.0, assd_mm=U, assd_tp_mm=U, vw_dice=U,
        count_diff=2, vol_ref_ml=0.0, vol_pred_ml=0.016)),
    "empty prediction": (TWO, ZERO, dict(
        dice=0.0, rve=1.0, ave_ml=0.016, n_ref=2, n_pred=0,
        tp_overlap=0, fp_overlap=0, fn_overlap=2, detection_overlap=0.0,
        tp_iou=0, fp_iou=0, fn_iou=2, detection_iou=0.0, lesion_f1=0.0,
        pq=0.0, sq=0.0, rq=0.0, pq_dsc=0.0, sq_dsc=0.0, assd_mm=U, assd_tp_mm=U, vw_dice=0.0,
        count_diff=2, vol_ref_ml=0.016, vol_pred_ml=0.0)),
    "disjoint": (A, B, dict(  # no matched pair under any rule
        dice=0.0, rve=0.0, ave_ml=0.0, n_ref=1, n_pred=1,
        tp_overlap=0, fp_overlap=1, fn_overlap=1, detection_overlap=0.0,
        tp_iou=0, fp_iou=1, fn_iou=1, detection_iou=0.0, lesion_f1=0.0,
        pq=0.0, sq=0.0, rq=0.0, pq_dsc=0.0, sq_dsc=0.0, assd_mm=5.5, assd_tp_mm=U, vw_dice=0.0,
        count_diff=0, vol_ref_ml=0.008, vol_pred_ml=0.008)),
    "touching": (A, GROWN, dict(  # found by overlap, no pair at IoU >= 0.5
        dice=1 / 3, rve=8 / (8 + 1e-5), ave_ml=0.008, n_ref=1, n_pred=1,
        tp_overlap=1, fp_overlap=0, fn_overlap=0, detection_overlap=1.0,
        tp_iou=0, fp_iou=1, fn_iou=1, detection_iou=0.0, lesion_f1=1.0,
        pq=0.0, sq=0.0, rq=0.0, pq_dsc=0.0, sq_dsc=0.0, assd_mm=brute_assd(A, GROWN),
        assd_tp_mm=U, vw_dice=0.0, count_diff=0, vol_ref_ml=0.008, vol_pred_ml=0.016)),
}  # fmt: skip
ISLES_FROM_THESIS = {"avd_ml": "ave_ml", "lesion_count_diff": "count_diff"}


def same(value, expected) -> bool:
    if expected != expected:
        return value != value
    return value == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_the_fixtures_cover_every_key_of_both_profiles():
    for _, _, expected in FIXTURES.values():
        assert set(expected) == set(THESIS_KEYS)
    assert set(EDGE_CASES) == set(THESIS_KEYS) | set(ISLES22_KEYS)
    for profile in PROFILES.values():
        assert set(profile.keys) <= set(EDGE_CASES), profile.name


EMPTY = ("both empty", "empty reference", "empty prediction")


@pytest.mark.parametrize(
    "name,ndim", [(n, 3) for n in FIXTURES] + [(n, 2) for n in EMPTY]
)  # fmt: skip
def test_every_metric_has_its_hand_computed_value(name, ndim):
    ref, pred, expected = FIXTURES[name]
    if ndim == 2:  # the empty cases as 2D masks (one slice of the blocks: half the volumes)
        ref, pred = ref[1], pred[1]
        expected = {k: (v / 2 if k.endswith("_ml") else v) for k, v in expected.items()}
    thesis = case_metrics(ref, pred, (1.0,) * ndim)
    assert set(thesis) == set(THESIS_KEYS)
    for key, value in expected.items():
        assert same(thesis[key], value), (key, thesis[key], value)
    isles = isles22_metrics(ref, pred, (1.0,) * ndim)
    for key in ISLES22_KEYS:
        assert same(isles[key], expected[ISLES_FROM_THESIS.get(key, key)]), key


def _rule_tp(metrics: dict, rule: str | None) -> int | None:
    """The TP count of a metric's rule (the default ``metrics.matching`` is the IoU rule)."""
    tps = {"overlap": "tp_overlap", "iou": "tp_iou", "matching": "tp_iou"}
    return metrics[tps[rule]] if rule else None


CASES = [(key, case) for key in EDGE_CASES for case in CaseType]


@pytest.mark.parametrize("key,case", CASES, ids=[f"{k}-{c.value}" for k, c in CASES])
def test_every_metric_on_every_case_type_takes_the_tables_value(key, case):
    rule = EDGE_CASES[key].rule
    compute = isles22_metrics if key in ISLES22_KEYS and key not in THESIS_KEYS else case_metrics
    seen = 0
    for ref, pred, _ in FIXTURES.values():
        m = case_metrics(ref, pred, (1, 1, 1))
        if case_type(m["n_ref"], m["n_pred"], _rule_tp(m, rule)) is not case:
            continue
        seen += 1
        value, want = compute(ref, pred, (1, 1, 1))[key], EDGE_CASES[key].value(case)
        if want is FORMULA:
            assert np.isfinite(value)
        else:
            assert same(value, want), (value, want)
    # A metric that does not depend on matching has no "no matched pair" case of its own.
    assert seen or (case is CaseType.NO_MATCH and rule is None)


def test_no_metric_is_ever_infinite_and_nan_only_where_the_table_says():
    rng = np.random.default_rng(0)
    pairs = [(ref, pred) for ref, pred, _ in FIXTURES.values()]
    for _ in range(20):
        ref = ndimage.binary_dilation(rng.random(SHAPE) < 0.02).astype(np.uint8)
        pred = ndimage.binary_dilation(rng.random(SHAPE) < 0.02).astype(np.uint8)
        pairs += [(ref, pred), (ref, ref), (ref * 0, pred)]
    for ref, pred in pairs:
        m = case_metrics(ref, pred, (2.0, 1.0, 0.5))
        for key, value in m.items():
            assert not np.isinf(value), key
            if value != value:
                case = case_type(m["n_ref"], m["n_pred"], _rule_tp(m, EDGE_CASES[key].rule))
                want = EDGE_CASES[key].value(case) if case else FORMULA
                assert want is not FORMULA and np.isnan(want), key


@pytest.mark.parametrize("name", ["both empty", "empty reference", "empty prediction", "disjoint"])
def test_instance_metrics_equal_panoptica_on_edge_cases(name):
    """panoptica's edge-case handler gives these values too (both empty: NaN; else 0); its
    matched-pair ASSD is inf without a pair, where ours is undefined."""
    from panoptica import (
        ConnectedComponentsInstanceApproximator,
        InputType,
        NaiveThresholdMatching,
        Panoptica_Evaluator,
    )
    from panoptica.metrics import Metric

    evaluator = Panoptica_Evaluator(
        expected_input=InputType.SEMANTIC,
        instance_approximator=ConnectedComponentsInstanceApproximator(),
        instance_matcher=NaiveThresholdMatching(matching_metric=Metric.IOU, matching_threshold=0.5),
        instance_metrics=[Metric.DSC, Metric.IOU, Metric.ASSD],
    )
    ref, pred, _ = FIXTURES[name]
    ours = case_metrics(ref, pred, (1, 1, 1))
    res = evaluator.evaluate(pred, ref, verbose=False)["ungrouped"]
    assert (ours["tp_iou"], ours["fp_iou"], ours["fn_iou"]) == (res.tp, res.fp, res.fn)
    for key in ("pq", "sq", "rq", "pq_dsc", "sq_dsc"):
        assert same(ours[key], getattr(res, key)), key
    assert np.isnan(ours["assd_tp_mm"]) and (np.isinf(res.sq_assd) or np.isnan(res.sq_assd))


# ----------------------------------------------------------------------------- the README's table

RULE_TEXT = {
    None: "–", "overlap": "overlap rule", "iou": "IoU rule", "matching": "`metrics.matching`"
}  # fmt: skip


def readme_edge_rows() -> dict[str, list[str]]:
    """The README's edge-case table: key -> its cells after the key."""
    rows = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\|\s*`([a-z_0-9]+)`\s*\|(.*)\|\s*$", line)
        if m and m.group(1) in EDGE_CASES:
            rows[m.group(1)] = [c.strip() for c in m.group(2).split("|")]
    return rows


def test_the_readme_lists_every_metric_and_case_type_with_the_codes_value():
    rows = readme_edge_rows()
    assert set(rows) == set(EDGE_CASES)
    for key, conv in EDGE_CASES.items():
        expected = [RULE_TEXT[conv.rule]] + [cell_text(conv.value(c)) for c in CaseType]
        assert rows[key][:5] == expected, key
    header = next(line for line in README.read_text(encoding="utf-8").splitlines()
                  if line.startswith("| per-case key |"))  # fmt: skip
    assert [c.strip() for c in header.strip("|").split("|")][2:6] == [c.value for c in CaseType]
