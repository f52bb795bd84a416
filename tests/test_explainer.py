"""The interactive explainer: its data come from the package's losses, and it works in a real
headless browser (Debian's chromium driven by Playwright; `.ci/run` installs chromium)."""

import shutil
from pathlib import Path

import pytest

from sizepenalty.report.explainer import (
    blindspot_trajectories,
    build_explainer,
    gradient_spectra,
    spl_value,
)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run"]  # fmt: skip


def test_blindspot_small_lesion_stalls_with_dice_and_not_with_spl():
    t = blindspot_trajectories()
    assert len(t["D"]) == len(t["S+D"]) == 151
    large_d, small_d = t["D"][-1]
    large_s, small_s = t["S+D"][-1]
    assert large_d / 800 > 0.95 and large_s / 800 > 0.95  # both find the large lesion
    assert small_d / 50 < 0.5 < small_s / 50  # only Dice + SPL grows the small one past half
    assert t["D"][0] == t["S+D"][0]  # same start


def test_gradient_spectra_show_dice_ignoring_the_missed_lesion():
    s = gradient_spectra()
    d, spl = s["D"]["mean"], s["S"]["mean"]
    # Summed over each lesion (what changes its volume) Dice pulls the missed one ~30x less...
    assert s["D"]["total"]["small lesion"] < 0.1 * s["D"]["total"]["large lesion"]
    # ...while SPL's per-voxel push on it is an order of magnitude above Dice's, and above its own
    # push on the large lesion (the size weight).
    assert (
        spl["small lesion"] > 10 * d["small lesion"] and spl["small lesion"] > spl["large lesion"]
    )


def test_page_is_offline():
    html = build_explainer()
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    assert "<script src" not in html and "DATA = {" in html


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed")
def test_explainer_in_headless_chromium(tmp_path):
    from playwright.sync_api import sync_playwright

    page_file = tmp_path / "explainer.html"
    page_file.write_text(build_explainer(tau=600.0, eps=1e-5, cap=10.0))
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
        # The blindspot panel shows the embedded trajectories.
        page.fill("#epoch", "150")
        small_dice = float(page.text_content("#blind-d-small"))
        small_spl = float(page.text_content("#blind-sd-small"))
        assert small_spl > small_dice
        page.screenshot(path=str(tmp_path / "explainer.png"), full_page=True)
        browser.close()
    assert not errors, errors
    assert (tmp_path / "explainer.png").stat().st_size > 10_000
