"""Small builders over grafana-foundation-sdk (Grafana's own typed dashboard library) so the
two dashboards read as a list of panels: a title, a unit, what it shows, its queries.

Every panel gets a unit and the dashboard's ``$datasource``; every dashboard gets the same
template variables (data source, namespace, model, version). Selectors are spelled once here
so that a panel cannot forget a variable.
"""

from __future__ import annotations

from dataclasses import dataclass

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders.dashboard import Dashboard, DatasourceVariable, QueryVariable, Row
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync, DataSourceRef, VariableOption, VariableRefresh, VariableSort,
)

__all__ = ["DATASOURCE", "MESH", "BY_MODEL", "NAMESPACE", "Query", "Panel", "dashboard", "increase"]

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")

# Series scraped from the model pods (sidecars and model servers) carry the pod's namespace.
MESH = 'namespace=~"$namespace", model=~"$model", version=~"$version"'
NAMESPACE = 'namespace=~"$namespace"'
# The drift detector and the control plane are one service for every namespace: their series
# are filtered by model and version only (their `namespace` is their own).
BY_MODEL = 'model=~"$model", version=~"$version"'

# The variables list what the sidecars have answered for.
_VARIABLE_METRIC = "sidemesh_requests_total"
_REFS = "ABCDEFGH"


def increase(series: str, window: str) -> str:
    """Events in the last ``window`` of a counter created by its first event. Prometheus does
    not count a series' first value as an increase, so a rare event (an ejection, a window
    verdict) would vanish from ``increase()`` alone: a series that appeared within the window
    counts whole (it started at 0), older series by their increase."""
    return f"({series} unless {series} offset {window})\nor increase({series}[{window}])"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str

    def __post_init__(self) -> None:
        if not self.expr.strip() or not self.legend:
            raise ValueError("Query: expected a PromQL expression and a legend format")


@dataclass(frozen=True)
class Panel:
    """One time series panel. ``unit`` is a Grafana unit id (``s``, ``reqps``,
    ``percentunit``, ``suffix:rows``...); every panel must have one."""

    title: str
    unit: str
    description: str
    queries: tuple[Query, ...]
    width: int = 12
    log_scale: bool = False
    steps: bool = False  # 0/1 states: draw steps, not slopes
    max_value: float | None = None

    def __post_init__(self) -> None:
        if not self.unit:
            raise ValueError(f"panel {self.title!r}: expected a unit")
        if not 1 <= len(self.queries) <= len(_REFS):
            raise ValueError(f"panel {self.title!r}: expected 1 to {len(_REFS)} queries, got {len(self.queries)}")
        if not 1 <= self.width <= 24:
            raise ValueError(f"panel {self.title!r}: width must be 1-24 grid columns, got {self.width}")

    def builder(self, panel_id: int) -> Timeseries:
        panel = (
            Timeseries().id(panel_id).title(self.title).description(self.description).datasource(DATASOURCE)
            .unit(self.unit).min(0).span(self.width).height(8).fill_opacity(10)
            .legend(common_builders.VizLegendOptions().display_mode(common.LegendDisplayMode.LIST)
                    .placement(common.LegendPlacement.BOTTOM).show_legend(True))
            .tooltip(common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING))
        )
        if self.log_scale:
            panel = panel.scale_distribution(common_builders.ScaleDistributionConfig().type(common.ScaleDistribution.LOG).log(10))
        if self.steps:
            panel = panel.line_interpolation(common.LineInterpolation.STEP_AFTER)
        if self.max_value is not None:
            panel = panel.max(self.max_value)
        for ref, query in zip(_REFS, self.queries):
            panel = panel.with_target(Dataquery().ref_id(ref).expr(query.expr).legend_format(query.legend).range())
        return panel


def _variables() -> list:
    everything = VariableOption(selected=True, text="All", value="$__all")

    def query_variable(name: str, label: str, query: str) -> QueryVariable:
        return (QueryVariable(name).label(label).datasource(DATASOURCE).query(query)
                .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.NATURAL_ASC)
                .multi(True).include_all(True).all_value(".*").current(everything))

    return [
        DatasourceVariable("datasource").label("Data source").type("prometheus"),
        query_variable("namespace", "Namespace", f"label_values({_VARIABLE_METRIC}, namespace)"),
        query_variable("model", "Model", f'label_values({_VARIABLE_METRIC}{{{NAMESPACE}}}, model)'),
        query_variable("version", "Version", f'label_values({_VARIABLE_METRIC}{{{NAMESPACE}, model=~"$model"}}, version)'),
    ]


def dashboard(title: str, uid: str, description: str, rows: list[tuple[str, list[Panel]]]) -> Dashboard:
    """A dashboard of rows of panels; panel ids are assigned in order, rows included."""
    board = (
        Dashboard(title).uid(uid).description(description).tags(["sidemesh"]).editable()
        .time("now-1h", "now").refresh("30s").timezone("browser").tooltip(DashboardCursorSync.CROSSHAIR)
    )
    for variable in _variables():
        board = board.with_variable(variable)
    panel_id = 1
    for row_title, panels in rows:
        board = board.with_row(Row(row_title).id(panel_id))
        panel_id += 1
        for panel in panels:
            board = board.with_panel(panel.builder(panel_id))
            panel_id += 1
    return board
