"""The interactive explainer: its data come from the package's losses, and it works in a real
headless browser (Debian's chromium driven by Playwright; `.ci/run` installs chromium)."""

from pathlib import Path

import pytest
from workflow_helpers import CHROMIUM, offline_page

from sizepenalty.report.explainer import (
    blindspot_trajectories,
    build_explainer,
    gradient_spectra,
    spl_value,
)


def test_blindspot_compares_like_with_like_in_one_sample():
    t = blindspot_trajectories()
    d, s = t["D"], t["S+D"]
    assert len(d.large) == len(s.small) == len(d.dice) == len(s.background) == 151
    assert (d.large[0], d.small[0], d.background[0]) == (s.large[0], s.small[0], s.background[0])
    assert d.large[-1] / 800 > 0.95 and s.large[-1] / 800 > 0.95  # both find the large lesion
    # One sample, the training's reductions: SPL only sees the sample's total volume, so its help
    # for the small lesion is modest (measured: 18.7 vs 24.2 of 50 voxels), not a rescue.
    assert d.small[-1] == pytest.approx(18.7, abs=0.05)
    assert s.small[-1] == pytest.approx(24.2, abs=0.05)


def test_blindspot_dice_is_the_samples_soft_dice():
    # The Dice the page shows is 1 - the package's Dice term; from the volumes it must be
    # 2 |P n G| / (|P| + |G|) with the sample's 850 reference voxels (smooth = 1e-5 is negligible).
    for t in blindspot_trajectories().values():
        for large, small, bg, dice in zip(t.large, t.small, t.background, t.dice):
            inside = large + small
            assert dice == pytest.approx(2 * inside / (inside + bg + 850), abs=2e-5)
        assert t.dice[-1] > t.dice[0]


def test_blindspot_follows_the_studys_loss_settings():
    weak = blindspot_trajectories(steps=20, weights={"size": 0.0})
    assert weak["S+D"] == weak["D"]  # lambda_S = 0: Dice + SPL is Dice


def test_gradient_spectra_in_one_sample():
    s = gradient_spectra()
    d, spl = s["D"]["mean"], s["S"]["mean"]
    # Summed over each lesion, Dice moves the missed small lesion far less than the found one.
    assert s["D"]["total"]["small lesion"] < 0.1 * s["D"]["total"]["large lesion"]
    # SPL's per-voxel push has one size weight for the whole sample: per voxel it differs between
    # regions only through p(1 - p).
    ratio = spl["small lesion"] / spl["large lesion"]
    assert ratio == pytest.approx((0.05 * 0.95) / (0.9 * 0.1), rel=1e-4)
    assert d["small lesion"] > 0 and spl["background"] > 0


def test_the_explainer_stage_runs_with_the_size_gate_on(tmp_path):
    from sizepenalty.config import from_dict
    from sizepenalty.report.explainer import run_explainer

    cfg = from_dict({"losses": {"gate": {"enabled": True}}})  # the page shows the ungated loss
    run_explainer(cfg, tmp_path / "explainer.html")
    assert "DATA = {" in (tmp_path / "explainer.html").read_text()


def test_page_is_offline():
    html = build_explainer()
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    assert "<script src" not in html and "DATA = {" in html


# An SVG shape's rendered width in CSS pixels (its geometry on screen, without the stroke).
WIDTH = "e => e.getBBox().width * e.getScreenCTM().a"


def _numbers_at(page, step):
    """What panel 1 shows at ``step``: per network tag, the voxel counts and the Dice as displayed,
    and the rendered diameters (px) of the filled discs and of their reference outlines."""
    page.fill("#step", str(step))
    out = {}
    for tag in ("d", "sd"):
        keys = ("large", "small", "dice")
        shown = {k: float(page.text_content(f"#blind-{tag}-{k}")) for k in keys}
        for lesion in ("large", "small"):
            for shape, name in (("disc", "lesion"), ("ref", "ref")):
                shown[f"{shape}-{lesion}"] = page.eval_on_selector(f"#{name}-{tag}-{lesion}", WIDTH)
        out[tag] = shown
    return out


def _check_axes(page, plot):
    """Each axis of ``plot`` (an SVG id; one or more frames) has >= 3 tick labels placed in the
    order of their values, and axis labels that name a unit; the plot has a legend."""
    frames = page.eval_on_selector_all(
        f"#{plot} g.axes",
        """gs => gs.map(g => [...g.querySelectorAll(".tick[data-axis]")].map(e => ({
               axis: e.dataset.axis, value: +e.dataset.value, text: e.textContent,
               x: e.getBoundingClientRect().x, y: e.getBoundingClientRect().y})))""",
    )
    assert frames, plot
    for ticks in frames:
        for axis in ("x", "y"):
            mine = sorted((t for t in ticks if t["axis"] == axis), key=lambda t: t["value"])
            assert len(mine) >= 3 and all(t["text"].strip() for t in mine), (plot, axis, mine)
            pos = [t["x"] if axis == "x" else -t["y"] for t in mine]  # y grows upward on a plot
            assert all(a < b for a, b in zip(pos, pos[1:])), (plot, axis, mine)
    labels = page.eval_on_selector_all(f"#{plot} .axis-label", "els => els.map(e => e.textContent)")
    assert len(labels) >= 2 * len(frames), (plot, labels)
    assert all("(" in text and ")" in text for text in labels), (plot, labels)
    assert page.locator(f"#{plot} .legend text").count() >= 1, plot


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed")
def test_explainer_in_headless_chromium(tmp_path):
    page_file = tmp_path / "explainer.html"
    page_file.write_text(build_explainer({"size": {"tau": 600.0, "eps": 1e-5, "cap": 10.0}}))
    with offline_page({"width": 1200, "height": 2400}) as (page, errors, requests):
        page.goto(page_file.as_uri())
        # Move the sliders; the displayed loss must equal the Python loss for those inputs.
        for vg, ratio, tau in ((50, 2.0, 600), (800, 0.25, 300), (3, 4.0, 600)):
            page.fill("#vg", str(vg))
            page.fill("#ratio", str(ratio))
            page.fill("#tau", str(tau))
            shown = float(page.get_attribute("#out-loss", "data-value"))
            assert shown == pytest.approx(spl_value(vg, ratio, tau), rel=1e-9, abs=1e-12), (
                vg,
                ratio,
                tau,
            )
            text = page.text_content("#out-loss")
            assert float(text) == pytest.approx(spl_value(vg, ratio, tau), rel=1e-4)
        # Click the landscape's plot area: a particle appears for each click.
        assert page.text_content("#particle-count") == "0"
        page.click("#land", position={"x": 150, "y": 80})
        page.click("#land", position={"x": 560, "y": 300})
        assert page.text_content("#particle-count") == "2"
        # Panel 1 shows exactly what a Python run of the same setting computes, and each filled
        # disc's area relative to its reference outline is the predicted share of that lesion.
        traj = blindspot_trajectories()
        sizes = {"large": 800, "small": 50}
        cursor = {}
        for step in (0, 10, 40, 150):
            numbers = _numbers_at(page, step)
            for code, tag in (("D", "d"), ("S+D", "sd")):
                t, shown = traj[code], numbers[tag]
                assert shown["dice"] == pytest.approx(t.dice[step], abs=5e-4), (step, code)
                for lesion, size in sizes.items():
                    volume = getattr(t, lesion)[step]
                    assert shown[lesion] == pytest.approx(volume, abs=0.05), (step, code, lesion)
                    area = (shown[f"disc-{lesion}"] / shown[f"ref-{lesion}"]) ** 2
                    assert area == pytest.approx(volume / size, rel=1e-3), (step, code, lesion)
            # One area scale for both lesions: the outlines' areas are 800 : 50.
            ref = numbers["d"]
            assert (ref["ref-large"] / ref["ref-small"]) ** 2 == pytest.approx(16, rel=1e-3)
            cursor[step] = page.locator("#blind-cursor").bounding_box()["x"]
        # The curves' marker follows the step.
        moved = (cursor[40] - cursor[0]) / (cursor[150] - cursor[0])
        assert moved == pytest.approx(40 / 150, rel=1e-2)
        # Play animates the steps; paused anywhere, the numbers are still the Python run's.
        page.fill("#step", "0")
        page.click("#play")
        page.wait_for_function("+document.getElementById('step').value >= 5")
        page.click("#play")
        step = int(page.input_value("#step"))
        assert 5 <= step <= 150 and page.text_content("#step-out") == str(step)
        assert float(page.text_content("#blind-d-small")) == pytest.approx(
            traj["D"].small[step], abs=0.05
        )
        summary = page.text_content("#blind-summary")
        assert f"{traj['D'].small[150]:.1f} of 50 voxels with Dice alone" in summary
        assert f"{traj['S+D'].small[150]:.1f} with Dice + SPL" in summary
        setup = page.text_content("#blind-setup")
        assert "800-voxel" in setup and "150 steps, learning rate 3" in setup
        # Every plot has readable axes and a legend, and the networks differ in colour, not grey.
        for plot in ("blind", "curve", "land", "spectra"):
            _check_axes(page, plot)
        strokes = [
            page.eval_on_selector(f"#blind .curve-{tag}-large", "e => getComputedStyle(e).stroke")
            for tag in ("d", "sd")
        ]
        rgb = [tuple(int(v) for v in s[s.index("(") + 1 : -1].split(",")) for s in strokes]
        assert rgb[0] != rgb[1] and all(len(set(c)) > 1 for c in rgb), strokes
        page.screenshot(path=str(tmp_path / "explainer.png"), full_page=True)
    assert not errors, errors
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    assert (tmp_path / "explainer.png").stat().st_size > 10_000
