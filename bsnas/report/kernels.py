"""The kernel analysis (`bsnas.nn.kernels`) for people and machines: a table per stage, histograms per stage in the
manner of the paper's Figure 3, and JSON holding every per-layer and per-filter value the two are made of."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from bsnas.nn.kernels import KernelAnalysis, KernelLayer
from bsnas.report.plots import save_figure

__all__ = ["THRESHOLD", "AnalyzedModel", "StageSummary", "analysis_json", "layer_table", "orthonormal_table",
           "plot_kernels", "stage_summaries", "stage_table"]

THRESHOLD = 0.9  # the table's "share of filters above": PC1 explains more than this share of a filter's variance
JSON_FORMAT = 1


@dataclass(frozen=True)
class AnalyzedModel:
    """One analysed model: `label` names it in tables and plots, `note` says where it came from."""

    label: str
    note: str
    analysis: KernelAnalysis


@dataclass(frozen=True)
class StageSummary:
    """The filters of one stage (`stage` None: of all stages): medians over the filters whose slices have variance,
    `above` the share of them with PC1 > THRESHOLD, `cross_median_pc1` over input channels across filters."""

    stage: int | None
    resolution: tuple[int, int] | None
    layers: int
    filters: int
    median_pc1: float | None
    above: float | None
    median_pc2: float | None
    cross_median_pc1: float | None


def _defined(layers: list[KernelLayer], field: str) -> list[float]:
    return [value for layer in layers for value in getattr(layer, field) if value is not None]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _summary(stage: int | None, resolution, layers: list[KernelLayer]) -> StageSummary:
    pc1 = _defined(layers, "pc1")
    return StageSummary(stage, resolution, len(layers), len(pc1), _median(pc1),
                        sum(v > THRESHOLD for v in pc1) / len(pc1) if pc1 else None,
                        _median(_defined(layers, "pc2")), _median(_defined(layers, "cross_pc1")))


def stage_summaries(analysis: KernelAnalysis) -> list[StageSummary]:
    """One summary per stage, in stage order, then one over all stages."""
    stages = sorted({layer.stage for layer in analysis.layers})
    rows = []
    for stage in stages:
        layers = [layer for layer in analysis.layers if layer.stage == stage]
        rows.append(_summary(stage, layers[0].out_size, layers))
    return [*rows, _summary(None, None, analysis.layers)]


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _pca_name(analysis: KernelAnalysis) -> str:
    return "centered PCA, as in the paper" if analysis.centered else "uncentered PCA"


def stage_table(model: AnalyzedModel):
    """A rich Table: per stage, the filters' median PC1 share, the share of filters above THRESHOLD, the median
    share of the first two components, and the median PC1 share across filters (the DSC view)."""
    from rich.table import Table

    table = Table(title=f"{model.label}: share of a filter's variance explained by PC1 ({_pca_name(model.analysis)})",
                  title_justify="left")
    for column in ("stage", "output", "layers", "filters", "PC1 median", f"PC1 > {THRESHOLD:g}", "PC1+2 median",
                   "PC1 across filters"):
        table.add_column(column, justify="left" if column in ("stage", "output") else "right")
    for row in stage_summaries(model.analysis):
        table.add_row("all" if row.stage is None else str(row.stage),
                      "" if row.resolution is None else "x".join(map(str, row.resolution)), str(row.layers),
                      f"{row.filters:,}", _percent(row.median_pc1), _percent(row.above), _percent(row.median_pc2),
                      _percent(row.cross_median_pc1))
    return table


def layer_table(model: AnalyzedModel):
    """A rich Table with one row per analysed layer."""
    from rich.table import Table

    table = Table(title=f"{model.label}: layers", title_justify="left")
    for column in ("layer", "kind", "channels", "kernel", "stage", "PC1 median", f"PC1 > {THRESHOLD:g}",
                   "PC1 across filters"):
        table.add_column(column, justify="left" if column in ("layer", "kind") else "right")
    for layer in model.analysis.layers:
        row = _summary(layer.stage, layer.out_size, [layer])
        groups = f" /{layer.groups}" if layer.groups > 1 else ""
        table.add_row(layer.name, layer.kind, f"{layer.in_channels}->{layer.out_channels}{groups}",
                      "x".join(map(str, layer.kernel_size)), str(layer.stage), _percent(row.median_pc1),
                      _percent(row.above), _percent(row.cross_median_pc1))
    return table


def orthonormal_table(model: AnalyzedModel):
    """A rich Table of the weights with the orthonormal loss (BSConv-S's W): singular values and the loss; None
    when the model has none."""
    from rich.table import Table

    if not model.analysis.orthonormal:
        return None
    table = Table(title=f"{model.label}: BSConv-S weights W with the orthonormal loss", title_justify="left")
    for column in ("layer", "W", "largest singular value", "median", "smallest", "||W W^T - I||_F"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for weight in model.analysis.orthonormal:
        values = weight.singular_values
        table.add_row(weight.name, "x".join(map(str, weight.shape)), f"{values[0]:.3f}",
                      f"{statistics.median(values):.3f}", f"{values[-1]:.3f}", f"{weight.loss:.3f}")
    return table


def analysis_json(models: list[AnalyzedModel]) -> dict:
    """Every model's per-layer and per-filter values (`bsnas.nn.kernels.KernelLayer`), its orthonormal weights and
    the stage summaries computed from them."""
    return {"format": JSON_FORMAT, "threshold": THRESHOLD,
            "models": [{"label": model.label, "note": model.note, **model.analysis.to_dict(),
                        "stages": [asdict(row) for row in stage_summaries(model.analysis)]} for model in models]}


def plot_kernels(models: list[AnalyzedModel], path: str | Path) -> Path:
    """Histograms of the PC1 share per stage (one colour per stage, each stage's bars summing to 1): within the
    filters (the paper's Figure 3) above, across the filters (the DSC view) below, one column per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    views = (("pc1", "within each filter (BSConv's assumption)"),
             ("cross_pc1", "across filters, per input channel (DSC's)"))
    figure, axes = plt.subplots(len(views), len(models), figsize=(5.6 * len(models), 3.5 * len(views)), dpi=110,
                                squeeze=False, sharex=True, sharey="row")
    bins = [i / 20 for i in range(21)]
    for column, model in enumerate(models):
        stages = sorted({layer.stage for layer in model.analysis.layers})
        for row, (field, title) in enumerate(views):
            ax = axes[row][column]
            for stage in stages:
                layers = [layer for layer in model.analysis.layers if layer.stage == stage]
                values = _defined(layers, field)
                if not values:
                    continue
                size = "x".join(map(str, layers[0].out_size))
                ax.hist(values, bins=bins, weights=[1 / len(values)] * len(values), histtype="step", lw=1.6,
                        label=f"stage {stage} ({size}): median {statistics.median(values):.2f}")
            ax.set_title(f"{model.label}\n{title}" if row == 0 else title, fontsize=9)
            ax.set_xlim(0, 1)
            ax.grid(alpha=0.3)
            if ax.has_data():
                ax.legend(fontsize=7, loc="upper left")
            if column == 0:
                ax.set_ylabel("share of the stage's filters" if field == "pc1" else "share of the stage's channels")
            if row == len(views) - 1:
                ax.set_xlabel("variance explained by the first principal component")
    return save_figure(figure, path)
