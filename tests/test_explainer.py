"""The interactive explainer: its data come from the package's losses, and it works in a real
headless browser (Debian's chromium driven by Playwright; `.ci/run` installs chromium)."""

from pathlib import Path

import pytest
from workflow_helpers import CHROMIUM, LAUNCH_ARGS

from sizepenalty.report.explainer import (
    blindspot_trajectories,
    build_explainer,
    gradient_spectra,
    spl_value,
)


def test_blindspot_compares_like_with_like_in_one_sample():
    t = blindspot_trajectories()
    assert len(t["D"]) == len(t["S+D"]) == 151 and t["D"][0] == t["S+D"][0]  # same start
    large_d, small_d = t["D"][-1]
    large_s, small_s = t["S+D"][-1]
    assert large_d / 800 > 0.95 and large_s / 800 > 0.95  # both find the large lesion
    # One sample, the training's reductions: SPL only sees the sample's total volume, so its help
    # for the small lesion is modest (measured: 18.7 vs 24.2 of 50 voxels), not a rescue.
    assert small_d == pytest.approx(18.7, abs=0.05) and small_s == pytest.approx(24.2, abs=0.05)


def test_blindspot_follows_the_studys_loss_settings():
    weak = blindspot_trajectories(weights={"size": 0.0})
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


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed")
def test_explainer_in_headless_chromium(tmp_path):
    from playwright.sync_api import sync_playwright

    page_file = tmp_path / "explainer.html"
    page_file.write_text(build_explainer({"size": {"tau": 600.0, "eps": 1e-5, "cap": 10.0}}))
    errors = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 2400})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.route(
            "**/*",
            lambda route: (
                route.abort() if not route.request.url.startswith("file:") else route.continue_()
            ),
        )
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
        # Click the landscape: a particle appears.
        assert page.text_content("#particle-count") == "0"
        page.click("#land", position={"x": 120, "y": 60})
        page.click("#land", position={"x": 500, "y": 250})
        assert page.text_content("#particle-count") == "2"
        # The blindspot panel shows exactly what a Python run of the same setting computes.
        traj = blindspot_trajectories()
        for epoch in (0, 40, 150):
            page.fill("#epoch", str(epoch))
            for code, tag in (("D", "d"), ("S+D", "sd")):
                for j, region in enumerate(("large", "small")):
                    shown = float(page.text_content(f"#blind-{tag}-{region}"))
                    assert shown == pytest.approx(traj[code][epoch][j], abs=0.05), (epoch, code)
        summary = page.text_content("#blind-summary")
        assert f"{traj['D'][150][1]:.1f} of 50 voxels with Dice alone" in summary
        assert f"{traj['S+D'][150][1]:.1f} with Dice + SPL" in summary
        assert "800-voxel" in page.text_content("#blind-setup")
        page.screenshot(path=str(tmp_path / "explainer.png"), full_page=True)
        browser.close()
    assert not errors, errors
    assert (tmp_path / "explainer.png").stat().st_size > 10_000
