"""The metrics API checks its inputs: each bad mask, label image, spacing or option raises an
error naming the argument and what is wrong; 0/1 masks of any dtype and torch tensors work."""

import re

import numpy as np
import pytest
import torch

from sizepenalty.metrics import (
    InstanceRule,
    assd_mm,
    case_metrics,
    dice_score,
    evaluate_case,
    evaluate_case_isles22,
    isles22_metrics,
    label_instances,
    match_instances,
    remove_small_components,
    surface,
)

REF = np.zeros((6, 8, 8), np.uint8)
REF[1:4, 2:5, 2:5] = 1
PRED = np.roll(REF, 1, axis=2)
SP = (2.0, 1.0, 1.0)

# Every public function taking two masks, called as (gt, pred) with a valid spacing.
PAIR_FUNCTIONS = {
    "evaluate_case": lambda g, p, s=SP: evaluate_case(g, p, s),
    "case_metrics": lambda g, p, s=SP: case_metrics(g, p, s),
    "evaluate_case_isles22": lambda g, p, s=SP: evaluate_case_isles22(g, p, s),
    "isles22_metrics": lambda g, p, s=SP: isles22_metrics(g, p, s),
    "assd_mm": lambda g, p, s=SP: assd_mm(g, p, s),
    "dice_score": lambda g, p, s=SP: dice_score(g, p),
}
# Every public function taking one mask.
MASK_FUNCTIONS = {
    "label_instances": lambda m: label_instances(m),
    "remove_small_components": lambda m: remove_small_components(m, 5),
    "surface": lambda m: surface(m),
}
SPACING_FUNCTIONS = [k for k in PAIR_FUNCTIONS if k != "dice_score"]


def _bad_masks():
    probs = REF * 0.7
    two = REF * 2
    nan = REF.astype(float)
    nan[0, 0, 0] = np.nan
    return [
        (probs, ValueError, r"values 0, 0.7 .*threshold it first"),
        (two, ValueError, r"values 0, 2 \(dtype uint8\)"),
        (REF.astype(np.int16) - 1, ValueError, r"values -1, 0"),
        (nan, ValueError, r"values 0, 1, nan"),
        (REF[None], ValueError, r"2D or 3D mask, got a 4D array of shape \(1, 6, 8, 8\)"),
        (REF[0, 0], ValueError, r"2D or 3D mask, got a 1D array"),
        (REF[:, :0], ValueError, r"empty dimension"),
        (REF.astype(complex), TypeError, r"bool, integer or float mask, got dtype complex128"),
        (REF.tolist(), TypeError, r"numpy array or a torch tensor, got list"),
    ]


def _raises(call, error, argument, message):
    """``call()`` raises ``error`` with a message that starts with the argument's name."""
    with pytest.raises(error) as exc:
        call()
    text = str(exc.value)
    assert text.startswith(f"{argument} ") and re.search(message, text), text


@pytest.mark.parametrize("name", PAIR_FUNCTIONS)
def test_pair_functions_reject_masks_that_are_not_binary_2d_or_3d(name):
    fn = PAIR_FUNCTIONS[name]
    first, second = ("reference", "prediction") if name == "assd_mm" else ("gt", "pred")
    for bad, error, message in _bad_masks():
        _raises(lambda: fn(bad, PRED), error, first, message)  # noqa: B023
        _raises(lambda: fn(REF, bad), error, second, message)  # noqa: B023


@pytest.mark.parametrize("name", MASK_FUNCTIONS)
def test_mask_functions_reject_masks_that_are_not_binary_2d_or_3d(name):
    for bad, error, message in _bad_masks():
        _raises(lambda: MASK_FUNCTIONS[name](bad), error, "mask", message)  # noqa: B023


@pytest.mark.parametrize("name", PAIR_FUNCTIONS)
def test_pair_functions_reject_two_grids(name):
    with pytest.raises(ValueError, match=r"shape \(6, 8, 8\) != .* shape \(6, 8, 9\)"):
        PAIR_FUNCTIONS[name](REF, np.zeros((6, 8, 9), np.uint8))


@pytest.mark.parametrize("name", SPACING_FUNCTIONS)
def test_spacing_needs_one_positive_finite_entry_per_axis(name):
    fn = PAIR_FUNCTIONS[name]
    for spacing, error, message in (
        ((2.0, 2.0), ValueError,
         r"spacing must have one entry per mask dimension \(3 for a 3D mask\), got \(2.0, 2.0\)"),
        ((1.0, 1.0, 1.0, 1.0), ValueError, r"one entry per mask dimension"),
        ((1.0, 0.0, 1.0), ValueError, r"positive and finite .*\(1.0, 0.0, 1.0\)"),
        ((1.0, -2.0, 1.0), ValueError, r"positive and finite"),
        ((1.0, float("inf"), 1.0), ValueError, r"positive and finite"),
        ((1.0, float("nan"), 1.0), ValueError, r"positive and finite"),
        ("2mm", TypeError, r"spacing must be a sequence of 3 voxel sizes in mm"),
        ((1.0, "a", 1.0), TypeError, r"spacing must be a sequence of 3 voxel sizes"),
        (2.0, ValueError, r"one entry per mask dimension"),
    ):  # fmt: skip
        with pytest.raises(error, match=message):
            fn(REF, PRED, spacing)


def test_2d_masks_take_two_spacings():
    m = case_metrics(REF[2], PRED[2], (1.0, 0.5))
    assert m["n_ref"] == 1 and 0 < m["dice"] < 1
    with pytest.raises(ValueError, match=r"\(2 for a 2D mask\)"):
        case_metrics(REF[2], PRED[2], SP)


@pytest.mark.parametrize("name", PAIR_FUNCTIONS)
def test_binary_masks_of_every_dtype_and_torch_tensors_give_the_same_values(name):
    fn = PAIR_FUNCTIONS[name]

    def values(out):
        out = out.metrics if hasattr(out, "metrics") else out
        return out if isinstance(out, dict) else {"value": out}

    expected = values(fn(REF, PRED))
    variants = [REF.astype(bool), REF.astype(np.int64), REF.astype(np.float32), REF.astype(float),
                torch.from_numpy(REF), torch.from_numpy(REF).bool(), torch.from_numpy(REF).float(),
                torch.from_numpy(REF).to(torch.bfloat16), np.asfortranarray(REF)]  # fmt: skip
    for g in variants:
        got = values(fn(g, torch.from_numpy(PRED).double()))
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert got[key] == value or (value != value and got[key] != got[key]), (key, type(g))
    torch_spacing = values(fn(REF, PRED, torch.tensor(SP)))
    assert torch_spacing.keys() == expected.keys()


def test_evaluate_case_checks_its_options():
    with pytest.raises(TypeError, match="rule must be an InstanceRule, got str"):
        evaluate_case(REF, PRED, SP, rule="iou")
    for eps in (0, -1e-5, float("inf"), "1e-5", True):
        with pytest.raises(ValueError, match="eps must be a positive finite number"):
            evaluate_case(REF, PRED, SP, eps=eps)
    for min_size in (-1, 2.5, True):
        with pytest.raises(ValueError, match="min_size must be a non-negative integer"):
            evaluate_case(REF, PRED, SP, min_size=min_size)
    with pytest.raises(ValueError, match="removal_connectivity must be 6, 18 or 26, got 8"):
        evaluate_case(REF, PRED, SP, removal_connectivity=8)
    with pytest.raises(ValueError, match="connectivity must be 6, 18 or 26"):
        InstanceRule(connectivity=4)
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\)"):
        InstanceRule(threshold=1.5)


def test_min_size_filtering_inside_evaluate_case_equals_filtering_first():
    pred = PRED.copy()
    pred[5, 0, 0:3] = 1  # a 3-voxel component
    filtered = case_metrics(REF, remove_small_components(pred, 5, 18), SP)
    assert case_metrics(REF, pred, SP, min_size=5) == filtered
    assert case_metrics(REF, pred, SP)["n_pred"] == filtered["n_pred"] + 1


def test_label_and_matching_functions_check_their_arguments():
    with pytest.raises(ValueError, match="connectivity must be 6, 18 or 26, got 4"):
        label_instances(REF, 4)
    with pytest.raises(TypeError, match="min_size must be an integer"):
        remove_small_components(REF, 2.5)
    labels, n = label_instances(REF)
    with pytest.raises(TypeError, match="ref_labels must be an integer label image, got .*float64"):
        match_instances(labels.astype(float), labels, n, n)
    with pytest.raises(ValueError, match="pred_labels has negative labels"):
        match_instances(labels, labels - 1, n, n)
    with pytest.raises(ValueError, match="ref_labels has label 1 but the number of instances .* 0"):
        match_instances(labels, labels, 0, n)
    with pytest.raises(ValueError, match=r"ref_labels shape \(6, 8, 8\) != pred_labels shape"):
        match_instances(labels, labels[:, :, :4], n, n)
    with pytest.raises(TypeError, match="rule must be an InstanceRule"):
        match_instances(labels, labels, n, n, rule=0.5)
    assert match_instances(torch.from_numpy(labels), labels, n, n).tp == 1
