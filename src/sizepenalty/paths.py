"""Where a study keeps everything: one declaration of every path, used by the Snakemake rules
and by the code (a rule passes ``layout.run_dir(RunKey.wildcards())`` as a pattern; the code
calls the same method with a run's :class:`~sizepenalty.runs.RunKey`). A run's files live under
each stage's folder at the run's id, ``<combo>/<variant>/seed<s>/fold<k>``.

Everything lives under ``<results>/<study>/``; paths are relative when the config's ``results``
is, as Snakemake expects.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sizepenalty.keys import RunKey

TABLES = (
    "table_main",
    "table_extra",
    "table_pairs",
    "table_strata",
    "table_strata_stats",
    "table_lesions",
    "table_thesis",
    "table_seeds",
    "table_variance",
    "table_ablation",
)
"""The aggregate stage's tables, each written as ``<name>.csv``, ``.md`` and ``.tex``."""


FIGURES = {
    "forest": "fig_forest",
    "volume": "fig_volume",
    "bland_altman": "fig_bland_altman",
    "case_metrics": "fig_case_metrics",
    "dice_box": "fig_dice_box",
    "spl": "fig_3_1_spl",
    "improvement": "fig_5_1_improvement",
    "curves": "fig_5_2_curves",
    "tau_ablation": "fig_tau_ablation",
}
"""The figures stage's study-level figures, by role: the forest plot of the compared pairs'
effects by size stratum (the report's first figure), volume fidelity (predicted vs reference
volume, Bland–Altman, per-case Dice and RVE against reference volume, per-case Dice of every arm),
Figs. 3.1, 5.1, 5.2 and the τ ablation."""


def gallery_figure(pair: int) -> str:
    """The case gallery of the ``pair``-th comparison pair (1-based): the test cases where its
    two arms differ most, per size stratum (Figs. 5.3/5.4 analogue)."""
    return f"fig_gallery_{pair}"


def figure_names(n_pairs: int) -> list[str]:
    """Every figure of the figures stage (each ``.png`` and ``.pdf``): :data:`FIGURES` and one
    case gallery per configured comparison pair."""
    return [*FIGURES.values(), *(gallery_figure(i) for i in range(1, n_pairs + 1))]


@dataclass(frozen=True)
class StudyLayout:
    root: Path

    # ---------------------------------------------------------------- study-level files
    @property
    def effective_config(self) -> Path:
        """The merged, defaults-filled configuration every job reads (written when a run starts,
        never when the workflow is only parsed or dry-run)."""
        return self.root / "config.effective.yaml"

    @property
    def parent_run(self) -> Path:
        """The study's MLflow parent run id."""
        return self.root / "mlflow_parent_run.txt"

    # ---------------------------------------------------------------- data
    @property
    def raw(self) -> Path:
        return self.root / "data" / "raw"

    @property
    def participants(self) -> Path:
        return self.raw / "participants.tsv"

    @property
    def cases(self) -> Path:
        return self.root / "data" / "cases.tsv"

    @property
    def preprocessed(self) -> Path:
        return self.root / "data" / "preprocessed"

    def preprocessed_case(self, case: str, ext: str = "npz") -> Path:
        return self.preprocessed / f"{case}.{ext}"

    @property
    def folds(self) -> Path:
        return self.root / "data" / "folds.json"

    # ---------------------------------------------------------------- per run (RunKey)
    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def probs_root(self) -> Path:
        return self.root / "probs"

    @property
    def metrics_root(self) -> Path:
        return self.root / "metrics"

    def run_dir(self, key: RunKey) -> Path:
        """A training's folder: checkpoints (last.pt, best.pt), epochs.csv, run record."""
        return self.runs / key.id

    def done(self, key: RunKey) -> Path:
        return self.run_dir(key) / "done.json"

    def probs(self, key: RunKey) -> Path:
        """Probability maps (float16) of the run's validation and test cases: val/, test/."""
        return self.probs_root / key.id

    def metrics(self, key: RunKey) -> Path:
        return self.metrics_root / f"{key.id}.csv"

    def lesions(self, key: RunKey) -> Path:
        return self.metrics_root / f"{key.id}_lesions.csv"

    def threshold(self, key: RunKey) -> Path:
        return self.metrics_root / f"{key.id}_threshold.json"

    def method_metrics(self, name: str, fold: int | str) -> Path:
        """An external method's per-case metrics on one fold's test cases (``methods:``; the
        per-lesion rows go beside it, ``fold<k>_lesions.csv``)."""
        return self.metrics_root / "methods" / name / f"fold{fold}.csv"

    def method_lesions(self, name: str, fold: int | str) -> Path:
        return self.metrics_root / "methods" / name / f"fold{fold}_lesions.csv"

    def predictions(self, key: RunKey) -> Path:
        """Thresholded test predictions as NIfTI in each case's original geometry."""
        return self.root / "predictions" / key.id

    # ---------------------------------------------------------------- tables, figures, pages
    @property
    def tables(self) -> Path:
        return self.root / "tables"

    def table(self, name: str, ext: str = "csv") -> Path:
        return self.tables / f"{name}.{ext}"

    def all_tables(self, ext: str) -> list[Path]:
        return [self.table(name, ext) for name in TABLES]

    @property
    def per_case(self) -> Path:
        return self.table("per_case_metrics")

    @property
    def per_lesion(self) -> Path:
        return self.table("per_lesion_metrics")

    def summary(self, ext: str) -> Path:
        return self.table("dataset_summary", ext)

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    def figure(self, name: str, ext: str = "png") -> Path:
        return self.figures / f"{name}.{ext}"

    def all_figures(self, n_pairs: int, ext: str) -> list[Path]:
        return [self.figure(name, ext) for name in figure_names(n_pairs)]

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def explainer(self) -> Path:
        return self.root / "explainer.html"

    # ---------------------------------------------------------------- fingerprint stamps
    @property
    def stamps(self) -> Path:
        """Each job's stamp (:mod:`sizepenalty.provenance`): it moves with the study folder."""
        return self.root / ".fingerprints"

    def stamp(self, stage: str, job: str, fingerprint: str) -> Path:
        """The stamp of a job (a run id, a case id, or the stage's name for a one-job stage)
        made with ``fingerprint`` (its settings and data)."""
        return self.stamps / stage / f"{job}.{fingerprint}"

    # ---------------------------------------------------------------- logs
    def log(self, stage: str, job: str | None = None) -> Path:
        return self.root / "logs" / (f"{stage}/{job}.log" if job else f"{stage}.log")

    def benchmark(self, stage: str, job: str) -> Path:
        return self.root / "benchmarks" / stage / f"{job}.tsv"
