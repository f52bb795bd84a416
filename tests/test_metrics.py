"""Metrics against panoptica (instances, PQ/SQ/RQ, ASSD) and a direct ISLES 2022 implementation."""

import json

import cc3d
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from sizepenalty.cli import main
from sizepenalty.metrics import (
    THESIS_KEYS,
    InstanceRule,
    assd_mm,
    case_metrics,
    ccc,
    evaluate_case,
    evaluate_case_isles22,
    isles22_metrics,
    match_instances,
    remove_small_components,
    surface,
)
from sizepenalty.metrics.instances import label_instances

panoptica = pytest.importorskip("panoptica")
from panoptica import (  # noqa: E402
    ConnectedComponentsInstanceApproximator,
    InputType,
    NaiveThresholdMatching,
    Panoptica_Evaluator,
)
from panoptica.metrics import Metric  # noqa: E402
from panoptica.metrics.assd import _average_symmetric_surface_distance  # noqa: E402

# panoptica as the thesis used it (§4.6), with its defaults: cc3d components (26-connectivity) and
# NaiveThresholdMatching at IoU >= 0.5. Our default metrics settings must give the same numbers.
EVALUATOR = Panoptica_Evaluator(
    expected_input=InputType.SEMANTIC,
    instance_approximator=ConnectedComponentsInstanceApproximator(),
    instance_matcher=NaiveThresholdMatching(matching_metric=Metric.IOU, matching_threshold=0.5),
    instance_metrics=[Metric.DSC, Metric.IOU, Metric.ASSD],
    global_metrics=[Metric.DSC],
)


def blob(shape, centre, radii):
    grids = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0


def random_pair(rng: np.random.Generator, shape=(24, 40, 40)):
    """A reference with several lesions and a prediction with typical errors: shifted, grown,
    shrunk, missed, split, merged (a bridge), tiny and false-positive lesions."""
    ref = np.zeros(shape, bool)
    pred = np.zeros(shape, bool)
    for _ in range(rng.integers(1, 7)):
        c = rng.integers([3, 5, 5], np.array(shape) - [3, 5, 5])
        r = rng.uniform(0.6, 4.5, size=3)
        lesion = blob(shape, c, r)
        ref |= lesion
        kind = rng.choice(["same", "shift", "grow", "shrink", "miss", "split"])
        if kind == "same":
            pred |= lesion
        elif kind == "shift":
            pred |= np.roll(lesion, rng.integers(-2, 3, size=3), axis=(0, 1, 2))
        elif kind == "grow":
            pred |= ndimage.binary_dilation(lesion)
        elif kind == "shrink":
            pred |= ndimage.binary_erosion(lesion)
        elif kind == "split":
            cut = lesion.copy()
            cut[:, int(c[1]), :] = False
            pred |= cut
    if rng.random() < 0.5:  # merge two lesions with a bridge in the prediction
        pts = np.argwhere(ref)
        if len(pts) > 2:
            a, b = pts[rng.integers(len(pts))], pts[rng.integers(len(pts))]
            for t in np.linspace(0, 1, 30):
                pred[tuple(np.round(a + t * (b - a)).astype(int))] = True
    for _ in range(rng.integers(0, 3)):  # false positives, some tiny
        c = rng.integers([2, 2, 2], np.array(shape) - 2)
        pred |= blob(shape, c, rng.uniform(0.5, 2.5, size=3))
    return ref.astype(np.uint8), pred.astype(np.uint8)


def small_lesion_pair(rng: np.random.Generator, shape=(16, 24, 24)):
    """Small lesions where panoptica's ">= 0.5" decides: predictions that are a 2x superset or a
    half subset (IoU exactly 0.5), corner-touching components (one instance at 26-connectivity,
    two at 6/18), a prediction merging two lesions and one splitting a lesion, plus a stray FP."""
    ref = np.zeros(shape, bool)
    pred = np.zeros(shape, bool)
    slots = [(2, 2, 2), (2, 2, 12), (2, 12, 2), (2, 12, 12), (9, 2, 2), (9, 12, 12)]
    kinds = rng.permutation(["superset", "subset", "corner", "merge", "split", "same"])
    for (z, y, x), kind in zip(slots, kinds):
        n = int(rng.integers(2, 5))  # lesion of 2 x n x 1 ... a few voxels
        lesion = np.zeros(shape, bool)
        lesion[z : z + 2, y : y + n, x] = True
        ref |= lesion
        if kind == "superset":  # the same number of voxels beside it: IoU = 1/2
            pred[z : z + 2, y : y + n, x : x + 2] = True
        elif kind == "subset":  # half of it: IoU = 1/2
            pred[z, y : y + n, x] = True
        elif kind == "corner":  # a second lesion touching the first only at a corner
            ref[z + 2, y + n, x + 1] = True
            pred |= lesion
            pred[z + 2, y + n, x + 1] = True
        elif kind == "merge":  # a second lesion one voxel away, bridged in the prediction
            ref[z : z + 2, y : y + n, x + 2] = True
            pred[z : z + 2, y : y + n, x : x + 3] = True
        elif kind == "split":  # the prediction cut in two across the lesion
            longer = np.zeros(shape, bool)
            longer[z : z + 2, y : y + n + 3, x] = True
            ref |= longer
            pred |= longer
            pred[z : z + 2, y + (n + 3) // 2, x] = False
        else:
            pred |= lesion
    c = rng.integers([3, 5, 5], np.array(shape) - 3)
    pred[c[0], c[1], c[2]] = True  # a one-voxel false positive (min-size filtering is separate)
    return ref.astype(np.uint8), pred.astype(np.uint8)


PAIRS = [("random", s) for s in range(40)] + [("small", s) for s in range(20)]


def _pair(kind, seed):
    rng = np.random.default_rng(seed)
    return random_pair(rng) if kind == "random" else small_lesion_pair(rng)


@pytest.mark.parametrize("kind,seed", PAIRS)
def test_default_instances_and_panoptic_quality_equal_panoptica(kind, seed):
    ref, pred = _pair(kind, seed)
    if not ref.any() or not pred.any():
        pytest.skip("edge cases are tested separately")
    spacing = (2.0, 1.0, 1.5)
    ours = case_metrics(ref, pred, spacing)  # default settings = the thesis's panoptica
    res = EVALUATOR.evaluate(pred, ref, voxelspacing=spacing, verbose=False)["ungrouped"]
    assert (ours["n_ref"], ours["n_pred"]) == (res.n_ref_instances, res.n_pred_instances)
    assert (ours["tp_iou"], ours["fp_iou"], ours["fn_iou"]) == (res.tp, res.fp, res.fn)
    for key in ("pq", "sq", "rq", "pq_dsc", "sq_dsc"):
        assert ours[key] == pytest.approx(getattr(res, key), abs=1e-12), key
    assert ours["dice"] == pytest.approx(res.global_bin_dsc, abs=1e-12)
    if res.tp:
        assert ours["assd_tp_mm"] == pytest.approx(res.sq_assd, rel=1e-9)
    else:  # panoptica: inf (no matched pair); ours: NaN, left out of means
        assert np.isinf(res.sq_assd) and np.isnan(ours["assd_tp_mm"])


def test_small_lesion_pairs_exercise_the_half_iou_boundary():
    """The generated small-lesion cases really contain IoU == 0.5 pairs and 26-only contacts."""
    exact_half = corner = 0
    for seed in range(20):
        ref, pred = small_lesion_pair(np.random.default_rng(seed))
        rl, nr = label_instances(ref, 26)
        pl, np_ = label_instances(pred, 26)
        m = match_instances(rl, pl, nr, np_)
        exact_half += sum(1 for _, _, iou, _ in m.pairs if iou == 0.5)
        corner += label_instances(ref, 18)[1] > nr
    assert exact_half >= 20 and corner == 20


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (6.0, 0.9, 0.9), (2.0, 0.5, 1.25)])
@pytest.mark.parametrize("seed", range(8))
def test_assd_mm_matches_panoptica_with_spacing(seed, spacing):
    rng = np.random.default_rng(100 + seed)
    ref, pred = random_pair(rng)
    if not ref.any() or not pred.any():
        pytest.skip("edge cases are tested separately")
    expected = _average_symmetric_surface_distance(ref, pred, voxelspacing=spacing)
    assert assd_mm(ref, pred, spacing) == pytest.approx(expected, rel=1e-9)
    assert case_metrics(ref, pred, spacing)["assd_mm"] == pytest.approx(expected, rel=1e-9)


def test_assd_anisotropy_matters():
    ref = np.zeros((10, 10, 10), bool)
    ref[4:6, 4:6, 4:6] = True
    pred = np.roll(ref, 2, axis=0)
    iso = assd_mm(ref, pred, (1, 1, 1))
    aniso = assd_mm(ref, pred, (5, 1, 1))
    assert aniso > 3 * iso


def test_iou_exactly_half_matches_by_default_and_not_when_strict():
    ref = np.zeros((3, 12, 3), np.uint8)
    ref[1, 0:6, 1] = 1  # a 6-voxel lesion ...
    pred = np.zeros_like(ref)
    pred[1, 0:12, 1] = 1  # ... predicted as its 12-voxel superset: IoU exactly 0.5
    default = case_metrics(ref, pred, (1, 1, 1))
    assert (default["tp_iou"], default["fp_iou"], default["fn_iou"]) == (1, 0, 0)
    assert default["pq"] == 0.5
    strict = case_metrics(ref, pred, (1, 1, 1), InstanceRule(strict=True))
    assert (strict["tp_iou"], strict["fp_iou"], strict["fn_iou"], strict["pq"]) == (0, 1, 1, 0.0)
    strict_panoptica = Panoptica_Evaluator(
        expected_input=InputType.SEMANTIC,
        instance_approximator=ConnectedComponentsInstanceApproximator(),
        instance_matcher=NaiveThresholdMatching(
            matching_metric=Metric.IOU, matching_threshold=0.5, strict_threshold=True
        ),
    )
    assert strict_panoptica.evaluate(pred, ref, verbose=False)["ungrouped"].tp == 0
    assert EVALUATOR.evaluate(pred, ref, verbose=False)["ungrouped"].pq == 0.5


def test_connectivity_is_an_option():
    ref = np.zeros((4, 4, 4), np.uint8)
    ref[0, 0, 0] = ref[1, 1, 1] = 1  # corner contact: one lesion at 26, two at 18 and 6
    assert case_metrics(ref, ref, (1, 1, 1))["n_ref"] == 1
    assert case_metrics(ref, ref, (1, 1, 1), InstanceRule(connectivity=18))["n_ref"] == 2


def test_a_prediction_merging_two_lesions_under_each_rule():
    ref = np.zeros((5, 20, 5), np.uint8)
    ref[2, 2:6, 2] = 1
    ref[2, 10:14, 2] = 1
    pred = np.zeros_like(ref)
    pred[2, 3:13, 2] = 1  # one prediction bridging both lesions (IoU 3/11 with each)
    iou = case_metrics(ref, pred, (1, 1, 1))
    assert (iou["tp_iou"], iou["fp_iou"], iou["fn_iou"]) == (0, 1, 2) and iou["rq"] == 0.0
    # The overlap rule (many-to-one) finds both lesions and has no false positive ...
    assert (iou["tp_overlap"], iou["fp_overlap"], iou["fn_overlap"]) == (2, 0, 0)
    assert iou["detection_overlap"] == 1.0 and iou["lesion_f1"] == 1.0
    # ... while one-to-one matching by any overlap (metrics.matching: overlap) pairs it with one
    # of them for PQ/SQ/RQ; the *_iou counts stay IoU whatever the matching.
    ovl = case_metrics(ref, pred, (1, 1, 1), InstanceRule(criterion="overlap"))
    assert ovl["rq"] == pytest.approx(1 / 1.5) and ovl["sq"] == pytest.approx(3 / 11)
    assert (ovl["tp_iou"], ovl["tp_overlap"]) == (0, 2)


def test_min_size_removes_small_components_with_18_connectivity():
    m = np.zeros((6, 6, 6), np.uint8)
    m[0, 0, 0:4] = 1  # 4 voxels: removed
    m[3, 3, 3] = m[4, 4, 3] = 1  # edge-connected pair (18-connected): 2 voxels, removed
    m[0:2, 4:6, 4:6] = 1  # 8 voxels: kept
    out = remove_small_components(m, 5, 18)
    assert out.sum() == 8
    labels, n = label_instances(m, 18)
    assert n == 3 and label_instances(m, 6)[1] == 4


def test_vw_dice_weights_by_reference_volume():
    ref = np.zeros((4, 30, 4), np.uint8)
    ref[1, 0:20, 1] = 1  # 20 voxels, predicted exactly
    ref[1, 25:27, 1] = 1  # 2 voxels, missed
    pred = ref.copy()
    pred[1, 25:27, 1] = 0
    assert case_metrics(ref, pred, (1, 1, 1))["vw_dice"] == pytest.approx(20 / 22)


# ----------------------------------------------------------------------------- the two rules

# panoptica can express the overlap rule when no predicted component touches two reference
# lesions: every prediction matched, many-to-one, to a reference it shares a voxel with (IoU > 0).
OVERLAP_PANOPTICA = Panoptica_Evaluator(
    expected_input=InputType.SEMANTIC,
    instance_approximator=ConnectedComponentsInstanceApproximator(),
    instance_matcher=NaiveThresholdMatching(
        matching_metric=Metric.IOU, matching_threshold=0.0, strict_threshold=True,
        allow_many_to_one=True,
    ),
)  # fmt: skip


def overlap_rule_brute_force(ref, pred, connectivity=26):
    """The ISLES 2022 lesion-wise rule, one full-volume comparison per component (scipy's
    labelling, not cc3d): (TP, FP, FN) and the set of reference labels found."""
    rank = {6: 1, 18: 2, 26: 3}[connectivity]
    structure = ndimage.generate_binary_structure(3, rank)
    gl, ng = ndimage.label(ref > 0, structure)
    pl, npred = ndimage.label(pred > 0, structure)
    found = {i for i in range(1, ng + 1) if np.any((gl == i) & (pred > 0))}
    fp = sum(1 for j in range(1, npred + 1) if not np.any((pl == j) & (ref > 0)))
    return len(found), fp, ng - len(found), found


def _merges(ref, pred):
    """Whether some predicted component touches two or more reference lesions."""
    gl, _ = label_instances(ref, 26)
    pl, npred = label_instances(pred, 26)
    return any(np.unique(gl[(pl == j) & (gl > 0)]).size > 1 for j in range(1, npred + 1))


@pytest.mark.parametrize("kind,seed", PAIRS)
def test_overlap_rule_equals_a_brute_force_count_and_panoptica_where_it_applies(kind, seed):
    ref, pred = _pair(kind, seed)
    ours = evaluate_case(ref, pred, (2.0, 1.0, 1.5))
    m = ours.metrics
    tp, fp, fn, found = overlap_rule_brute_force(ref, pred)
    assert (m["tp_overlap"], m["fp_overlap"], m["fn_overlap"]) == (tp, fp, fn)
    assert {r.lesion for r in ours.lesions if r.detected_overlap} == found
    if ref.any():
        assert m["detection_overlap"] == tp / (tp + fn)
    if ref.any() and pred.any() and not _merges(ref, pred):
        res = OVERLAP_PANOPTICA.evaluate(pred, ref, verbose=False)["ungrouped"]
        assert (m["tp_overlap"], m["fp_overlap"], m["fn_overlap"]) == (res.tp, res.fp, res.fn)


def test_the_panoptica_overlap_evaluator_is_compared_on_pairs_without_merges():
    """The comparison above is not vacuous: most generated pairs have no merging prediction."""
    assert sum(not _merges(*_pair(k, s)) for k, s in PAIRS) >= 25


def test_the_rules_differ_on_a_prediction_touching_a_lesion_at_iou_0_2():
    ref = np.zeros((3, 12, 3), np.uint8)
    ref[1, 0:5, 1] = 1  # a 5-voxel lesion ...
    pred = np.zeros_like(ref)
    pred[1, 4:10, 1] = 1  # ... touched by a 6-voxel prediction sharing 1 voxel: IoU 1/10
    pred[1, 3:10, 1] = 1  # now 7 voxels sharing 2: IoU 2/10 = 0.2
    res = evaluate_case(ref, pred, (1, 1, 1))
    m = res.metrics
    assert (m["tp_overlap"], m["fp_overlap"], m["fn_overlap"]) == (1, 0, 0)
    assert m["detection_overlap"] == 1.0
    assert (m["tp_iou"], m["fp_iou"], m["fn_iou"], m["detection_iou"]) == (0, 1, 1, 0.0)
    assert m["lesion_f1"] == 1.0 and m["rq"] == 0.0 and m["pq"] == 0.0
    (lesion,) = res.lesions
    assert lesion.detected_overlap and not lesion.detected_iou and np.isnan(lesion.iou)
    panoptica_res = EVALUATOR.evaluate(pred, ref, verbose=False)["ungrouped"]
    assert (panoptica_res.tp, panoptica_res.fp, panoptica_res.fn) == (0, 1, 1)
    assert overlap_rule_brute_force(ref, pred)[:3] == (1, 0, 0)


def s_like_pair(rng, shape=(24, 40, 40)):
    """The thesis's S failure: many small predicted blobs scattered over and around the
    reference lesions, none a good match (the thesis's S row: Det. 0.78 with RQ 0)."""
    ref = np.zeros(shape, bool)
    for c in ((6, 10, 10), (12, 28, 12), (18, 14, 30)):
        ref |= blob(shape, c, (3.0, 4.0, 4.0))
    pred = np.zeros(shape, bool)
    for _ in range(60):
        z, y, x = rng.integers([1, 1, 1], np.array(shape) - 1)
        pred[z, y, x] = True  # isolated one-voxel blobs
    for p in np.argwhere(ref)[rng.choice(int(ref.sum()), 12, replace=False)]:
        pred[tuple(p)] = True  # a few voxels inside each lesion, far from IoU 0.5
    return ref.astype(np.uint8), pred.astype(np.uint8)


@pytest.mark.parametrize("seed", range(5))
def test_an_s_like_prediction_detects_lesions_by_overlap_with_rq_zero(seed):
    ref, pred = s_like_pair(np.random.default_rng(seed))
    m = case_metrics(ref, pred, (1, 1, 1))
    tp, fp, fn, _ = overlap_rule_brute_force(ref, pred)
    assert (m["tp_overlap"], m["fp_overlap"], m["fn_overlap"]) == (tp, fp, fn)
    assert m["detection_overlap"] == tp / 3 >= 2 / 3 and m["fp_overlap"] > 20
    assert m["tp_iou"] == 0 and m["detection_iou"] == 0.0 and m["fn_iou"] == 3
    assert m["rq"] == 0.0 and m["pq"] == 0.0
    res = EVALUATOR.evaluate(pred, ref, verbose=False)["ungrouped"]
    assert (res.tp, res.rq, res.pq) == (0, 0.0, 0.0)


def test_lesion_f1_is_the_isles_rule_not_rq():
    """It used to be 2TP/(2TP+FP+FN) of the IoU matching: RQ again."""
    ref = np.zeros((3, 30, 3), np.uint8)
    ref[1, 0:5, 1] = 1
    ref[1, 10:15, 1] = 1
    pred = np.zeros_like(ref)
    pred[1, 0:5, 1] = 1  # lesion 1 exact (IoU 1)
    pred[1, 12:22, 1] = 1  # lesion 2 touched at IoU 3/12
    pred[1, 26:28, 1] = 1  # a false positive
    m = case_metrics(ref, pred, (1, 1, 1))
    # IoU rule: TP 1, FP 2, FN 1 -> RQ 1/2.5; overlap rule: TP 2, FP 1, FN 0 -> F1 2/2.5
    assert m["rq"] == pytest.approx(0.4) and m["lesion_f1"] == pytest.approx(2 / 2.5)
    assert m["lesion_f1"] == isles22_metrics(ref, pred, (1, 1, 1))["lesion_f1"]
    assert m["lesion_f1"] == isles_reference(ref, pred, 0.001)["lesion_f1"]


@pytest.mark.parametrize("kind,seed", PAIRS[::3])
def test_both_profiles_give_the_same_lesion_f1_and_lesion_records(kind, seed):
    ref, pred = _pair(kind, seed)
    thesis, isles = evaluate_case(ref, pred, (1, 1, 1)), evaluate_case_isles22(ref, pred, (1, 1, 1))
    assert thesis.metrics["lesion_f1"] == isles.metrics["lesion_f1"]
    assert thesis.lesions == isles.lesions
    assert thesis.metrics["lesion_f1"] == pytest.approx(
        isles_reference(ref, pred, 0.001)["lesion_f1"], abs=1e-12
    )


def test_lesion_records_carry_both_rules_and_the_iou_of_the_iou_match():
    ref, pred = _pair("random", 3)
    res = evaluate_case(ref, pred, (1, 1, 1))
    m = res.metrics
    assert len(res.lesions) == m["n_ref"]
    assert sum(r.detected_overlap for r in res.lesions) == m["tp_overlap"]
    assert sum(r.detected_iou for r in res.lesions) == m["tp_iou"]
    for r in res.lesions:
        assert r.detected_iou == (r.iou == r.iou) and (not r.detected_iou or r.iou >= 0.5)
        assert r.detected_overlap or not r.detected_iou  # an IoU match always overlaps


def test_the_matched_pair_assd_is_measured_within_each_pair():
    """A prediction matched to lesion A whose surface lies nearer to lesion B for some voxels:
    its ASSD is to A's surface alone (panoptica's per-pair ASSD)."""
    shape = (12, 30, 12)
    ref = np.zeros(shape, np.uint8)
    ref[4:8, 2:10, 4:8] = 1  # lesion A
    ref[4:8, 14:18, 4:8] = 1  # lesion B, 4 voxels beyond A's end
    pred = np.zeros_like(ref)
    pred[4:8, 3:13, 4:8] = 1  # A grown towards B: IoU 28/44 with A, no contact with B
    pred[4:8, 15:18, 4:8] = 1  # B shrunk
    spacing = (2.0, 1.0, 1.5)
    m = case_metrics(ref, pred, spacing)
    res = EVALUATOR.evaluate(pred, ref, voxelspacing=spacing, verbose=False)["ungrouped"]
    assert m["tp_iou"] == res.tp == 2
    assert m["assd_tp_mm"] == pytest.approx(res.sq_assd, rel=1e-12)
    left = (np.arange(30) < 13)[None, :, None]  # A and its prediction alone
    a = assd_mm(ref * left, pred * left, spacing)
    b = assd_mm(ref * ~left, pred * ~left, spacing)
    assert m["assd_tp_mm"] == pytest.approx((a + b) / 2, rel=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_surface_equals_scipys_face_connected_erosion(seed):
    rng = np.random.default_rng(seed)
    for ndim in (2, 3):
        mask = ndimage.binary_dilation(rng.random((9,) * ndim) < 0.15)  # touches the image edge
        expected = mask ^ ndimage.binary_erosion(
            mask, ndimage.generate_binary_structure(ndim, 1), border_value=0
        )
        assert np.array_equal(surface(mask), expected)
    assert not surface(np.zeros((4, 4, 4), bool)).any()


# ----------------------------------------------------------------------------- ISLES 2022 profile


def isles_reference(gt, pred, voxel_ml):
    """Direct transcription of the ISLES 2022 definitions: loop over every component."""
    gt, pred = gt.astype(bool), pred.astype(bool)
    inter = gt & pred
    dice = 1.0 if gt.sum() + pred.sum() == 0 else 2 * inter.sum() / (gt.sum() + pred.sum())
    gl, ng = cc3d.connected_components(gt, connectivity=26, return_N=True)
    pl, npred = cc3d.connected_components(pred, connectivity=26, return_N=True)
    tp = fn = fp = 0
    for i in range(1, ng + 1):
        if np.logical_and(gl == i, inter).any():
            tp += 1
        else:
            fn += 1
    for j in range(1, npred + 1):
        if not np.logical_and(pl == j, gt).any():
            fp += 1
    denom = tp + (fp + fn) / 2
    return {
        "dice": dice,
        "avd_ml": abs(int(gt.sum()) - int(pred.sum())) * voxel_ml,
        "lesion_count_diff": abs(ng - npred),
        "lesion_f1": tp / denom if denom else 1.0,
    }


@pytest.mark.parametrize("seed", range(15))
def test_isles22_profile_matches_direct_definitions(seed):
    rng = np.random.default_rng(500 + seed)
    ref, pred = random_pair(rng)
    ours = isles22_metrics(ref, pred, (2.0, 2.0, 2.0))
    for key, value in isles_reference(ref, pred, 0.008).items():
        assert ours[key] == pytest.approx(value, abs=1e-12), key


def test_isles22_empty_cases():
    z = np.zeros((5, 5, 5), np.uint8)
    assert isles22_metrics(z, z, (1, 1, 1))["dice"] == 1.0
    assert isles22_metrics(z, z, (1, 1, 1))["lesion_f1"] == 1.0


# ----------------------------------------------------------------------------- across cases


def test_ccc_known_values():
    assert ccc([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y = x + 1
    expected = 2 * x.var() / (2 * x.var() + 1.0)
    assert ccc(x, y) == pytest.approx(expected)
    assert ccc([2, 2], [2, 2]) == 1.0 and ccc([2, 2], [3, 3]) == 0.0
    assert ccc([1.0], [1.0]) == 1.0


def test_matching_is_one_to_one_at_a_tie():
    ref = np.zeros((3, 12, 3), np.int32)
    ref[1, 0:6, 1] = 1
    ref[1, 6:12, 1] = 2
    pred = np.zeros_like(ref)
    pred[1, 0:12, 1] = 1  # IoU exactly 0.5 with both reference lesions
    m = match_instances(ref, pred, 2, 1, InstanceRule())
    assert (m.tp, m.fp, m.fn) == (1, 0, 1) and m.pairs[0][:2] == (1, 1)  # panoptica's order
    strict = match_instances(ref, pred, 2, 1, InstanceRule(strict=True))
    assert (strict.tp, strict.fp, strict.fn) == (0, 1, 2)


# ----------------------------------------------------------------------------- evaluate CLI


def _nifti(path, arr, zooms=(1.0, 1.0, 2.0)):
    nib.Nifti1Image(arr.astype(np.uint8), np.diag([*zooms, 1.0])).to_filename(path)
    return str(path)


def test_evaluate_cli_prints_the_documented_keys(tmp_path, capsys):
    rng = np.random.default_rng(9)
    ref, pred = random_pair(rng)
    gt = _nifti(tmp_path / "gt.nii.gz", ref.transpose(2, 1, 0))
    pr = _nifti(tmp_path / "pred.nii.gz", pred.transpose(2, 1, 0))
    assert main(["evaluate", "--gt", gt, "--pred", pr, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)  # strict JSON: NaN is written as null
    assert set(THESIS_KEYS) == set(out)
    direct = case_metrics(ref.transpose(2, 1, 0), pred.transpose(2, 1, 0), (1.0, 1.0, 2.0))
    assert out["pq"] == pytest.approx(direct["pq"]) and out["assd_mm"] == pytest.approx(
        direct["assd_mm"]
    )
    assert out["ave_ml"] == pytest.approx(direct["ave_ml"])


def test_evaluate_cli_errors_are_one_line(tmp_path, capsys):
    a = _nifti(tmp_path / "a.nii.gz", np.zeros((4, 4, 4)))
    b = _nifti(tmp_path / "b.nii.gz", np.zeros((4, 4, 5)))
    c = _nifti(tmp_path / "c.nii.gz", np.zeros((4, 4, 4)), zooms=(2.0, 1.0, 2.0))
    nb = tmp_path / "nb.nii.gz"
    nib.Nifti1Image(np.full((4, 4, 4), 3, np.uint8), np.eye(4)).to_filename(nb)
    (tmp_path / "bad.nii.gz").write_bytes(b"junk")
    cases = [
        (b, "shape (4,4,5) != reference shape (4,4,4)"),
        (c, "affine differs"),
        (str(nb), "not binary"),
        (str(tmp_path / "bad.nii.gz"), "not a readable NIfTI"),
        (str(tmp_path / "missing.nii.gz"), "not found"),
    ]
    for pred, msg in cases:
        assert main(["evaluate", "--gt", a, "--pred", pred, "--json"]) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err
