"""MLflow as a user opens it (issue 13, part 5): `mlflow ui` on a finished tiny study's store, in a
real headless browser (Debian's chromium driven by Playwright).

What MLflow 3.17's UI does (read from its bundle, mlflow/server/js/build, and seen here): a
global "GenAI | Model training" switch, not the experiment's ``mlflow.experimentKind`` tag,
decides which pages an experiment opens on. It starts on GenAI (the traces overview), takes
``?workflowType=machine_learning`` from the URL, and the browser remembers a click on "Model
training". The README gives that link; this test opens it, and the switch, and finds the runs
table with the study's parent run."""

from pathlib import Path

import pytest
from workflow_helpers import CHROMIUM, LAUNCH_ARGS, MlflowServer

# The README's link to a study's runs (experiment id filled in).
RUNS_LINK = "{uri}/#/experiments/{id}/runs?workflowType=machine_learning"


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed")
def test_mlflow_ui_shows_the_studys_runs_table(killed_study, tmp_path):
    from mlflow.tracking import MlflowClient
    from playwright.sync_api import sync_playwright

    store = f"sqlite:///{killed_study.study / 'mlflow.db'}"
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("sizepenalty")
    # The tag MLflow's own kind selector writes for a model-training experiment.
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    parent = client.get_run((killed_study.study / "mlflow_parent_run.txt").read_text().strip())
    assert parent.info.status == "FINISHED"
    runs = len(client.search_runs([exp.experiment_id]))  # the parent and its trainings
    ui = MlflowServer(store, tmp_path, command="ui")
    try:
        uri = ui.up()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)

            def runs_table(page, shot: str) -> None:
                page.get_by_role("columnheader", name="Run Name").first.wait_for(timeout=60_000)
                page.get_by_text(parent.info.run_name, exact=True).wait_for()
                page.get_by_text(f"{runs} matching runs").wait_for()
                assert "/runs" in page.url and "workflowType=machine_learning" in page.url
                page.screenshot(path=str(tmp_path / f"{shot}.png"))

            # The README's link, in a fresh browser.
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(RUNS_LINK.format(uri=uri, id=exp.experiment_id))
            runs_table(page, "runs_link")
            # The experiment's plain address opens on the GenAI pages until "Model training" is
            # picked, which this browser then remembers.
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{uri}/#/experiments/{exp.experiment_id}")
            page.get_by_text("Model training", exact=True).wait_for()
            try:  # a first visit shows a GenAI tip over the page
                page.get_by_role("button", name="Got it").click(timeout=10_000)
            except Exception:  # noqa: BLE001 - no tip this time
                pass
            page.get_by_text("Model training", exact=True).click()
            runs_table(page, "switched")
            page.goto(f"{uri}/#/experiments/{exp.experiment_id}")
            runs_table(page, "remembered")
            browser.close()
    finally:
        ui.stop()
    assert (tmp_path / "runs_link.png").stat().st_size > 10_000
