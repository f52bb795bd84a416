"""The HTML report in a real headless browser (Debian's chromium driven by Playwright, launched as
tests/test_explainer.py does): it opens with the forest plot, which renders, and its tables fit
the page."""

import base64
from pathlib import Path

import pytest
from test_report import _report_study
from workflow_helpers import CHROMIUM, offline_page


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed")
def test_the_reports_first_figure_is_the_forest_plot_and_it_renders(tmp_path):
    from sizepenalty.report.html import run_report

    cfg, tables, figures = _report_study(tmp_path)
    page_file = tmp_path / "report.html"
    run_report(cfg, tables, figures, page_file)
    viewport = {"width": 1280, "height": 1600}
    with offline_page(viewport, allowed=("file:", "data:")) as (page, errors, requests):
        page.goto(page_file.as_uri())
        # The first figure of the page is the forest plot, and it is the figures stage's PNG.
        assert page.eval_on_selector("figure", "f => f.id") == "fig_forest"
        src = page.get_attribute("figure img", "src")
        assert base64.b64decode(src.split(",", 1)[1]) == (figures / "fig_forest.png").read_bytes()
        # It renders: decoded at its full size, shown large, at the top of the page.
        page.wait_for_function("document.querySelector('figure img').complete")
        done, width, height = page.eval_on_selector(
            "figure img", "i => [i.complete, i.naturalWidth, i.naturalHeight]"
        )
        assert done and width > 800 and height > 300, (width, height)
        box = page.locator("figure img").first.bounding_box()
        assert box["width"] > 600 and box["height"] > 200 and box["y"] < 400, box
        # then one plain sentence per compared pair
        assert page.locator("ul.lead li").count() == len(cfg.report.pairs)
        assert page.text_content("ul.lead li").startswith("DTS vs DTF (18 paired test cases)")
        # Every image decodes, and with every section opened no table scrolls sideways.
        broken = page.eval_on_selector_all(
            "img", "is => is.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt)"
        )
        assert broken == []
        page.eval_on_selector_all("details", "ds => ds.forEach(d => { d.open = true; })")
        wide = page.eval_on_selector_all(
            "table",
            "ts => ts.filter(t => t.scrollWidth > t.clientWidth + 1).map(t => t.rows[0].innerText)",
        )
        assert wide == []
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert not errors, errors
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    assert (tmp_path / "report.png").stat().st_size > 50_000
