"""Size Penalty Loss and the loss combinations, checked against hand computations."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sizepenalty.losses import (
    COMBINATIONS,
    LossCodeError,
    SizePenaltyLoss,
    TermContext,
    build_loss,
    canonical_name,
    combo_id,
    estimate_tau,
    parse_combo,
    spl_curves,
)


def logits_for(p: torch.Tensor) -> torch.Tensor:
    return torch.logit(p.double()).float()


def test_spl_closed_form_single_sample():
    # 1x1x2x3 "image": target has 2 voxels, predicted probabilities sum to 3.5.
    y = torch.tensor([[[[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]]])
    p = torch.tensor([[[[0.9, 0.8, 0.6], [0.5, 0.4, 0.3]]]])
    loss = SizePenaltyLoss(tau=600, eps=1e-5, cap=10)(logits_for(p), y)
    expected = math.exp(-2 / 600) * abs(3.5 - 2) / (2 + 1e-5)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_spl_batch_mean_over_positive_samples_only():
    y = torch.zeros(3, 1, 4, 4, 4)
    y[0, 0, :2, :2, :2] = 1  # V_g = 8
    y[2, 0, 0, 0, :3] = 1  # V_g = 3; sample 1 is empty
    p = torch.full((3, 1, 4, 4, 4), 0.25)  # V_p = 16 everywhere
    spl = SizePenaltyLoss(tau=10.0)
    values, positive = spl.per_sample(logits_for(p), y)
    l0 = math.exp(-8 / 10) * 8 / (8 + 1e-5)
    l2 = min(10.0, math.exp(-3 / 10) * 13 / (3 + 1e-5))
    assert positive.tolist() == [True, False, True]
    assert values.tolist() == pytest.approx([l0, 0.0, l2], rel=1e-5)
    assert spl(logits_for(p), y).item() == pytest.approx((l0 + l2) / 2, rel=1e-5)


def test_spl_cap_saturates():
    y = torch.zeros(1, 1, 10, 10)
    y[0, 0, 0, 0] = 1  # V_g = 1
    p = torch.full((1, 1, 10, 10), 0.9)  # V_p = 90 -> relative error 89
    assert SizePenaltyLoss(cap=10)(logits_for(p), y).item() == pytest.approx(10.0)


@pytest.mark.parametrize("shape", [(1, 1, 6, 7), (1, 1, 4, 5, 6)], ids=["2d", "3d"])
@pytest.mark.parametrize("over", [True, False], ids=["over", "under"])
def test_spl_gradient_below_cap_matches_formula(shape, over):
    torch.manual_seed(0)
    y = (torch.rand(shape) > 0.6).float()
    v_g = y.sum().item()
    base = 0.8 if over else 0.05
    z = logits_for(torch.full(shape, base) + 0.05 * torch.rand(shape)).requires_grad_(True)
    spl = SizePenaltyLoss(tau=50.0)
    loss = spl(z, y)
    assert loss.item() < spl.cap
    loss.backward()
    p = torch.sigmoid(z.detach())
    v_p = p.sum().item()
    expected = math.exp(-v_g / 50.0) * np.sign(v_p - v_g) / (v_g + 1e-5) * p * (1 - p)
    torch.testing.assert_close(z.grad, expected, rtol=1e-4, atol=1e-9)


def test_spl_gradient_divided_by_number_of_positive_samples():
    y = torch.zeros(2, 1, 3, 3)
    y[:, 0, 0, 0] = 1
    z = torch.zeros(2, 1, 3, 3, requires_grad=True)  # p = 0.5, V_p = 4.5, V_g = 1
    SizePenaltyLoss(tau=1000.0, cap=1e6)(z, y).backward()
    w = math.exp(-1 / 1000.0) / (1 + 1e-5)
    torch.testing.assert_close(z.grad, torch.full_like(z, w * 0.25 / 2))


def test_spl_gradient_exactly_zero_past_cap():
    y = torch.zeros(1, 1, 8, 8)
    y[0, 0, 0, 0] = 1
    z = logits_for(torch.full((1, 1, 8, 8), 0.95)).requires_grad_(True)
    loss = SizePenaltyLoss(cap=10)(z, y)
    loss.backward()
    assert loss.item() == 10.0
    assert torch.count_nonzero(z.grad) == 0


def test_spl_all_empty_batch_is_zero_with_finite_gradients():
    y = torch.zeros(3, 1, 4, 4, 4)
    z = torch.randn(3, 1, 4, 4, 4, requires_grad=True)
    loss = SizePenaltyLoss()(z, y)
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert torch.isfinite(z.grad).all()
    assert torch.count_nonzero(z.grad) == 0


def test_spl_empty_samples_do_not_change_the_value():
    torch.manual_seed(1)
    y = (torch.rand(1, 1, 5, 5, 5) > 0.7).float()
    z = torch.randn(1, 1, 5, 5, 5)
    alone = SizePenaltyLoss(tau=30.0)(z, y)
    with_empty = SizePenaltyLoss(tau=30.0)(
        torch.cat([z, torch.randn_like(z)]), torch.cat([y, torch.zeros_like(y)])
    )
    assert with_empty.item() == pytest.approx(alone.item(), rel=1e-6)


def test_spl_invariant_to_voxel_permutation():
    torch.manual_seed(2)
    y = (torch.rand(2, 1, 6, 6, 6) > 0.8).float()
    z = torch.randn(2, 1, 6, 6, 6)
    perm_z = torch.randperm(216)
    perm_y = torch.randperm(216)
    zp = z.reshape(2, 1, -1)[..., perm_z].reshape(z.shape)
    yp = y.reshape(2, 1, -1)[..., perm_y].reshape(y.shape)
    spl = SizePenaltyLoss(tau=40.0)
    assert spl(zp, yp).item() == pytest.approx(spl(z, y).item(), rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_spl_half_precision_under_autocast_is_float32(dtype):
    torch.manual_seed(3)
    y = (torch.rand(2, 1, 16, 32, 32) > 0.9).float()
    z32 = torch.randn(2, 1, 16, 32, 32) * 2
    zh = z32.to(dtype)
    spl = SizePenaltyLoss(tau=3000.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = spl(zh, y)
    ref = spl(zh.float(), y)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    # And within half-precision input rounding of the full float32 computation.
    torch.testing.assert_close(out, spl(z32, y), rtol=2e-2, atol=1e-3)


def test_spl_rejects_bad_shapes_and_parameters():
    with pytest.raises(ValueError, match="tau"):
        SizePenaltyLoss(tau=-1)
    with pytest.raises(ValueError, match=r"\(B, 1"):
        SizePenaltyLoss()(torch.zeros(2, 2, 4, 4), torch.zeros(2, 2, 4, 4))
    with pytest.raises(ValueError, match="target shape"):
        SizePenaltyLoss()(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 5))


def _loss_calls():
    """Every public entry point that takes (logits, target)."""
    spl = SizePenaltyLoss()
    return {"SizePenaltyLoss": spl, "per_sample": spl.per_sample, "DTS": build_loss("DTS"),
            "DTF": build_loss("DTF")}  # fmt: skip


@pytest.mark.parametrize("call", ["SizePenaltyLoss", "per_sample", "DTS", "DTF"])
def test_losses_reject_targets_that_are_not_binary(call):
    fn = _loss_calls()[call]
    z = torch.zeros(2, 1, 4, 4)
    for bad, shown in ((z.clone().index_fill_(2, torch.tensor([0]), 2.0), r"\[0.0, 2.0\]"),
                       (torch.full_like(z, 0.5), r"\[0.5\]"),
                       (z.clone().index_fill_(3, torch.tensor([1]), float("nan")), "nan"),
                       (z.long() - 1, r"\[-1.0\]")):  # fmt: skip
        with pytest.raises(ValueError, match=f"target must be binary.*{shown}"):
            fn(z, bad)
    with pytest.raises(ValueError, match="target shape"):
        fn(z, torch.zeros(2, 1, 4, 5))
    with pytest.raises(TypeError, match="target must be a torch.Tensor, got ndarray"):
        fn(z, np.zeros((2, 1, 4, 4)))
    with pytest.raises(TypeError, match="logits must be a floating-point tensor, got .*int64"):
        fn(z.long(), z)


@pytest.mark.parametrize("call", ["SizePenaltyLoss", "per_sample", "DTS", "DTF"])
def test_losses_accept_binary_targets_of_any_dtype(call):
    fn = _loss_calls()[call]
    logits = torch.randn(2, 1, 4, 4)
    y = (torch.rand(2, 1, 4, 4) > 0.5).float()
    expected = fn(logits, y)
    for same in (y.bool(), y.long(), y.to(torch.uint8), y.double()):
        out = fn(logits, same)
        first = out[0] if isinstance(out, tuple) else out
        torch.testing.assert_close(first, expected[0] if isinstance(expected, tuple) else expected)


def test_gated_spl_fades_above_threshold():
    spl = SizePenaltyLoss.gated(threshold_ml=5.0, voxel_ml=0.008, tau=600)  # 625 voxels
    w = spl.weight(torch.tensor([10.0, 625.0, 2000.0]))
    plain = torch.exp(-torch.tensor([10.0, 625.0, 2000.0]) / 600)
    assert w[0].item() == pytest.approx(plain[0].item(), rel=1e-4)  # small lesion: ~unchanged
    assert w[1].item() == pytest.approx(plain[1].item() / 2, rel=1e-6)  # at the threshold: half
    assert w[2].item() < 1e-9  # far above: off


def test_estimate_tau_is_median_of_positive_volumes():
    assert estimate_tau([0, 10, 20, 30, 1000]) == pytest.approx(25.0)
    assert estimate_tau([5, 7, 9], quantile=0.5) == 7
    with pytest.raises(ValueError, match="no lesion-positive"):
        estimate_tau([0, 0])
    with pytest.raises(ValueError, match="quantile"):
        estimate_tau([1, 2], quantile=1.5)


def test_spl_curves_use_the_loss():
    c = spl_curves([50, 800], [0.5, 1.0, 2.0], tau=600)
    assert c["weight"][0, 0] == pytest.approx(math.exp(-50 / 600))
    assert c["loss"][1, 2] == pytest.approx(math.exp(-800 / 600) * 800 / (800 + 1e-5))
    assert c["grad"][0, 2] == pytest.approx(math.exp(-50 / 600) / (50 + 1e-5))
    assert c["grad"][0, 0] == pytest.approx(-math.exp(-50 / 600) / (50 + 1e-5))
    # Past the cap the gradient is zero, the pre-cap gradient is not.
    c2 = spl_curves([2], [100.0], tau=600)
    assert c2["loss"][0, 0] == 10.0 and c2["grad"][0, 0] == 0.0 and c2["grad_precap"][0, 0] > 0


# ----------------------------------------------------------------------- spatial terms


def test_dice_term_matches_hand_computation():
    torch.manual_seed(4)
    y = (torch.rand(2, 1, 4, 4, 4) > 0.5).float()
    z = torch.randn(2, 1, 4, 4, 4)
    p = torch.sigmoid(z)
    s = 1e-5
    inter = (p * y).flatten(1).sum(1)
    per = 1 - (2 * inter + s) / (p.flatten(1).sum(1) + y.flatten(1).sum(1) + s)
    _, terms = build_loss("D")(z, y)
    assert terms["D"].item() == pytest.approx(per.mean().item(), rel=1e-5)


def test_tversky_term_alpha_weights_false_positives():
    torch.manual_seed(5)
    y = (torch.rand(2, 1, 4, 4, 4) > 0.5).float()
    z = torch.randn(2, 1, 4, 4, 4)
    p = torch.sigmoid(z)
    tp = (p * y).flatten(1).sum(1)
    fp = (p * (1 - y)).flatten(1).sum(1)
    fn = ((1 - p) * y).flatten(1).sum(1)
    s = 1e-5
    per = 1 - (tp + s) / (tp + 0.3 * fp + 0.7 * fn + s)
    _, terms = build_loss("T")(z, y)
    assert terms["T"].item() == pytest.approx(per.mean().item(), rel=1e-5)


def test_focal_term_matches_lin_et_al():
    torch.manual_seed(6)
    y = (torch.rand(2, 1, 4, 4, 4) > 0.5).float()
    z = torch.randn(2, 1, 4, 4, 4)
    p = torch.sigmoid(z)
    pt = torch.where(y == 1, p, 1 - p)
    at = torch.where(y == 1, torch.tensor(0.25), torch.tensor(0.75))
    expected = (-at * (1 - pt) ** 2 * torch.log(pt)).mean()
    _, terms = build_loss("F")(z, y)
    assert terms["F"].item() == pytest.approx(expected.item(), rel=1e-5)
    bce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    assert terms["F"].item() < bce.mean().item()


# ----------------------------------------------------------------------- combinations


def test_fourteen_canonical_combinations_in_thesis_order():
    assert COMBINATIONS == (
        "D",
        "D+T",
        "DTF",
        "DTS",
        "F",
        "F+D",
        "F+S",
        "FSD",
        "S",
        "S+D",
        "S+T",
        "T",
        "T+F",
        "TFS",
    )
    letter_sets = {parse_combo(c) for c in COMBINATIONS}
    assert len(letter_sets) == 14
    assert frozenset("DTFS") not in letter_sets


@pytest.mark.parametrize("code", COMBINATIONS)
def test_every_combination_builds_is_finite_and_backpropagates(code):
    torch.manual_seed(7)
    y = torch.zeros(2, 1, 8, 8, 8)
    y[0, 0, 2:4, 2:4, 2:4] = 1
    # Mostly-background logits keep S below its cap, where it has a gradient.
    z = (torch.randn(2, 1, 8, 8, 8) - 4).requires_grad_(True)
    loss = build_loss(code)
    total, terms = loss(z, y)
    assert torch.isfinite(total)
    assert set(terms) == set(parse_combo(code))
    assert total.item() == pytest.approx(sum(t.item() for t in terms.values()), rel=1e-6)
    total.backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_weights_as_specified():
    assert build_loss("S").weights == {"S": 1.0}
    assert build_loss("DTS").weights == {"D": 1.0, "T": 1.0, "S": 0.3}
    assert build_loss("F+S").weights == {"F": 1.0, "S": 0.3}
    assert build_loss("DTF").weights == {"D": 1.0, "T": 1.0, "F": 1.0}
    torch.manual_seed(8)
    y = torch.zeros(1, 1, 6, 6, 6)
    y[0, 0, :2, :2, :2] = 1
    z = torch.randn(1, 1, 6, 6, 6)
    _, combined = build_loss("S+D")(z, y)
    _, alone = build_loss("S")(z, y)
    assert combined["S"].item() == pytest.approx(0.3 * alone["S"].item(), rel=1e-6)


@pytest.mark.parametrize(
    ("code", "name", "cid"),
    [
        ("DTS", "DTS", "DTS"),
        ("STD", "DTS", "DTS"),
        ("f+s", "F+S", "FS"),
        ("S+T", "S+T", "ST"),
        ("TS", "S+T", "ST"),
        ("DSF", "FSD", "FSD"),
        ("D+T+F+S", "DTFS", "DTFS"),
    ],
)
def test_any_letter_order_and_plus(code, name, cid):
    assert canonical_name(code) == name
    assert combo_id(code) == cid
    assert build_loss(code).name == name


@pytest.mark.parametrize("code", ["", "DX", "DD", "+", "Q+S"])
def test_bad_code_names_code_and_valid_letters(code):
    with pytest.raises(LossCodeError) as exc:
        build_loss(code)
    assert repr(code) in str(exc.value)
    assert "D (Dice), T (Tversky), F (Focal), S (Size Penalty)" in str(exc.value)


def test_overrides_and_unknown_hyperparameter():
    assert build_loss("DTS", {"size": {"tau": 300}}).terms["S"].tau == 300
    assert build_loss("DTS", weights={"size": 0.5}).weights["S"] == 0.5
    gated = build_loss(
        "S", {"size": {"gate": {"enabled": True}}}, context=TermContext(voxel_ml=0.008)
    )
    assert gated.terms["S"].gate_voxels == pytest.approx(625.0)  # 5 mL default threshold
    with pytest.raises(TypeError, match="unknown loss hyper-parameter.*size.taux"):
        build_loss("DTS", {"size": {"taux": 300}})
    with pytest.raises(TypeError, match="unknown loss term.*boundary"):
        build_loss("DTS", {"boundary": {}})


def test_size_warmup_ramps_only_the_combined_size_term():
    from sizepenalty.losses import size_warmup_scale

    assert size_warmup_scale(0, 100, 0.0) == 1.0  # thesis: full weight from the first step
    assert size_warmup_scale(0, 100, 0.5) == 0.0
    assert size_warmup_scale(25, 100, 0.5) == 0.5
    assert size_warmup_scale(80, 100, 0.5) == 1.0
    torch.manual_seed(0)
    z = torch.randn(2, 1, 4, 8, 8)
    y = (torch.rand(2, 1, 4, 8, 8) > 0.8).float()
    dts = build_loss("DTS")
    full = dts(z, y)[1]["S"]
    dts.size_scale = 0.25
    total, parts = dts(z, y)
    assert torch.isclose(parts["S"], 0.25 * full)
    assert torch.isclose(total, parts["D"] + parts["T"] + parts["S"])
    alone = build_loss("S")
    alone.size_scale = 0.0  # never silences S on its own: it would have no gradient at all
    assert torch.isclose(alone(z, y)[0], build_loss("S")(z, y)[0])
