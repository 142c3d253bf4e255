"""``/kpi``: warehouse KPIs from the ledger, the counts and the orders, per period of a time zone:
inventory record accuracy, dock-to-stock, order cycle time, pick accuracy, fill rate. Each answer
carries the definition it used and the parameters as understood (the range as instants in the
time zone asked for). Read-only (scope ``read``); a parameter that cannot be used is a 422."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from floorsync.edge import wire
from floorsync.server import docktostock as d2s
from floorsync.server import orderkpis as ok
from floorsync.server import recordaccuracy as ira
from floorsync.server.api.deps import StoreDep
from floorsync.server.auth import READ
from floorsync.server.kpi import Span, span
from floorsync.server.schemas import Problem

router = APIRouter(tags=["kpi"])

_PROBLEM: dict[str, Any] = {"model": Problem, "content": {"application/problem+json": {}}}
_ERRORS: dict[int | str, dict[str, Any]] = {422: _PROBLEM}

Site = Annotated[str, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                            description="the site (its name, as the edges send it)")]
From = Annotated[str, Query(alias="from", min_length=10, max_length=40,
                            description="start (inclusive): a date YYYY-MM-DD (the start of"
                            " that day in tz) or a time with its UTC offset")]
To = Annotated[str, Query(min_length=10, max_length=40,
                          description="end (exclusive), as from")]
Period = Annotated[Literal["day", "week", "month"], Query(
    description="the buckets: days, ISO weeks (from Monday) or calendar months of tz")]
Tz = Annotated[str, Query(min_length=1, max_length=64,
                          description="an IANA time zone (Europe/Berlin) or UTC")]


class Parameters(BaseModel):
    site: str
    from_: str = Field(serialization_alias="from", description="the start, in tz")
    to: str = Field(description="the end (exclusive), in tz")
    period: str
    tz: str


class AccuracyParameters(Parameters):
    tolerance: float
    tolerance_pct: float
    group: str


class DockToStockParameters(Parameters):
    horizon_days: int


class PeriodBounds(BaseModel):
    period: str = Field(description="2026-03-05 (day), 2026-W10 (ISO week), 2026-03 (month)")
    start: str = Field(description="in tz; the first and last periods are clipped to the range")
    end: str = Field(description="exclusive")


class ZoneAccuracy(BaseModel):
    zone: str | None = Field(description="the zone's code; null: locations under no zone")
    counts: int = Field(description="final counts")
    lines: int = Field(description="counted lines (the count or the record not zero)")
    matched: int = Field(description="lines whose record matched the count within tolerance")
    accuracy: float | None = Field(description="matched / lines; null without lines")


class AccuracyTotal(BaseModel):
    counts: int
    lines: int
    matched: int
    accuracy: float | None
    zones: list[ZoneAccuracy] | None = Field(description="by zone (group=zone), else null")


class PeriodAccuracy(AccuracyTotal, PeriodBounds):  # period, start, end first
    pass


class AccuracyOut(BaseModel):
    kpi: Literal["inventory_accuracy"] = "inventory_accuracy"
    definition: str
    parameters: AccuracyParameters
    total: AccuracyTotal
    periods: list[PeriodAccuracy] = Field(description="every period of the range, in order")


class DockToStockTotal(BaseModel):
    units: float = Field(description="units put away in the period, out of any place")
    timed_units: float = Field(description="of them: matched to their receive")
    untimed_units: float = Field(description="of them: no receive found (see the definition)")
    mean_s: float | None
    median_s: float | None
    p90_s: float | None
    max_s: float | None


class PeriodDockToStock(DockToStockTotal, PeriodBounds):
    pass


class DockToStockOut(BaseModel):
    kpi: Literal["dock_to_stock"] = "dock_to_stock"
    definition: str
    parameters: DockToStockParameters
    total: DockToStockTotal
    periods: list[PeriodDockToStock]


class CycleTimeTotal(BaseModel):
    orders: int = Field(description="orders whose last ship is dated in the period")
    mean_s: float | None
    median_s: float | None
    p90_s: float | None
    max_s: float | None


class PeriodCycleTime(CycleTimeTotal, PeriodBounds):
    pass


class CycleTimeOut(BaseModel):
    kpi: Literal["order_cycle_time"] = "order_cycle_time"
    definition: str
    parameters: Parameters
    total: CycleTimeTotal
    periods: list[PeriodCycleTime]


class EdgeChecks(BaseModel):
    expected: int
    over: int
    unexpected: int
    unknown: int


class PickAccuracyTotal(BaseModel):
    picks: int = Field(description="pick events against an order, dated in the period")
    accurate: int = Field(description="of them: no order_over/unexpected/unknown raised")
    accuracy: float | None = Field(description="accurate / picks; null without picks")
    edge_checks: EdgeChecks = Field(description="what the edges said of the same picks")


class PeriodPickAccuracy(PickAccuracyTotal, PeriodBounds):
    pass


class PickAccuracyOut(BaseModel):
    kpi: Literal["pick_accuracy"] = "pick_accuracy"
    definition: str
    parameters: Parameters
    total: PickAccuracyTotal
    periods: list[PeriodPickAccuracy]


class FillRateTotal(BaseModel):
    orders: int = Field(description="orders accepted in the period, not cancelled")
    filled_orders: int
    order_fill_rate: float | None
    lines: int
    filled_lines: int = Field(description="lines that never had a backorder")
    line_fill_rate: float | None
    units: float = Field(description="units ordered")
    filled_units: float = Field(description="ordered less ever backordered, per line")
    unit_fill_rate: float | None


class PeriodFillRate(FillRateTotal, PeriodBounds):
    pass


class FillRateOut(BaseModel):
    kpi: Literal["fill_rate"] = "fill_rate"
    definition: str
    parameters: Parameters
    total: FillRateTotal
    periods: list[PeriodFillRate]


def _common(site: str, window: Span) -> dict[str, Any]:
    return {"site": site, "from_": window.local(window.start), "to": window.local(window.end),
            "period": window.period, "tz": window.zone_name}


def _zones(tallies: tuple[ira.Tally, ...], grouped: bool) -> list[ZoneAccuracy] | None:
    if not grouped:
        return None
    return [ZoneAccuracy(zone=t.zone, counts=t.counts, lines=t.lines, matched=t.matched,
                         accuracy=t.accuracy) for t in tallies]


@router.get("/kpi/inventory-accuracy", response_model=AccuracyOut, dependencies=READ,
            responses=_ERRORS, response_model_by_alias=True)
def inventory_accuracy(
    store: StoreDep, site: Site, start: From, to: To, period: Period = "day", tz: Tz = "UTC",
    tolerance: Annotated[float, Query(ge=0, le=wire.MAX_QTY, allow_inf_nan=False,
                                      description="units a line may be off and match")] = 0,
    tolerance_pct: Annotated[float, Query(ge=0, le=100, allow_inf_nan=False,
                                          description="percent of the record a line may be"
                                          " off and match")] = 0,
    group: Annotated[Literal["site", "zone"], Query(
        description="zone: each total also by zone")] = "site",
) -> AccuracyOut:
    """Inventory record accuracy: the share of counted lines whose record matched the count."""
    window = span(start, to, period, tz)
    grouped = group == "zone"
    found = ira.record_accuracy(store, site, window, tolerance=tolerance,
                                tolerance_pct=tolerance_pct, by_zone=grouped)
    t = found.total
    return AccuracyOut(
        definition=ira.DEFINITION,
        parameters=AccuracyParameters(**_common(site, window), tolerance=tolerance,
                                      tolerance_pct=tolerance_pct, group=group),
        total=AccuracyTotal(counts=t.counts, lines=t.lines, matched=t.matched,
                            accuracy=t.accuracy, zones=_zones(found.zones, grouped)),
        periods=[PeriodAccuracy(
            period=p.period, start=window.local(p.start), end=window.local(p.end),
            counts=p.total.counts, lines=p.total.lines, matched=p.total.matched,
            accuracy=p.total.accuracy, zones=_zones(p.zones, grouped),
        ) for p in found.periods],
    )


@router.get("/kpi/dock-to-stock", response_model=DockToStockOut, dependencies=READ,
            responses=_ERRORS, response_model_by_alias=True)
def dock_to_stock(
    store: StoreDep, site: Site, start: From, to: To, period: Period = "day", tz: Tz = "UTC",
    horizon_days: Annotated[int, Query(
        ge=0, le=d2s.MAX_HORIZON_DAYS,
        description="how far before from receives are looked for")] = d2s.HORIZON_DAYS,
) -> DockToStockOut:
    """Dock-to-stock time: receive to put-away, per unit, first in first out."""
    window = span(start, to, period, tz)
    found = d2s.dock_to_stock(store, site, window, horizon_days=horizon_days)
    return DockToStockOut(
        definition=d2s.DEFINITION,
        parameters=DockToStockParameters(**_common(site, window), horizon_days=horizon_days),
        total=DockToStockTotal(**_stats(found.total)),
        periods=[PeriodDockToStock(period=p.period, start=window.local(p.start),
                                   end=window.local(p.end), **_stats(p.total))
                 for p in found.periods],
    )


def _stats(total: d2s.DockToStock) -> dict[str, Any]:
    return {"units": total.units, "timed_units": total.timed_units,
            "untimed_units": total.untimed_units, "mean_s": total.mean_s,
            "median_s": total.median_s, "p90_s": total.p90_s, "max_s": total.max_s}


def _periodic(found: ok.Periodic[Any], window: Span) -> dict[str, Any]:
    """``total`` and ``periods`` of an order KPI, its dataclasses as dicts."""
    return {"total": asdict(found.total), "periods": [
        {"period": label, "start": window.local(start), "end": window.local(end), **asdict(v)}
        for label, start, end, v in found.periods]}


@router.get("/kpi/order-cycle-time", response_model=CycleTimeOut, dependencies=READ,
            responses=_ERRORS, response_model_by_alias=True)
def order_cycle_time(
    store: StoreDep, site: Site, start: From, to: To, period: Period = "day", tz: Tz = "UTC",
) -> CycleTimeOut:
    """Order cycle time: accepted to last line shipped, per order closed by its ships."""
    window = span(start, to, period, tz)
    return CycleTimeOut.model_validate({
        "definition": ok.CYCLE_DEFINITION, "parameters": Parameters(**_common(site, window)),
        **_periodic(ok.order_cycle_time(store, site, window), window)})


@router.get("/kpi/pick-accuracy", response_model=PickAccuracyOut, dependencies=READ,
            responses=_ERRORS, response_model_by_alias=True)
def pick_accuracy(
    store: StoreDep, site: Site, start: From, to: To, period: Period = "day", tz: Tz = "UTC",
) -> PickAccuracyOut:
    """Pick accuracy: the share of picks against orders that raised no order exception."""
    window = span(start, to, period, tz)
    return PickAccuracyOut.model_validate({
        "definition": ok.PICK_DEFINITION, "parameters": Parameters(**_common(site, window)),
        **_periodic(ok.pick_accuracy(store, site, window), window)})


@router.get("/kpi/fill-rate", response_model=FillRateOut, dependencies=READ,
            responses=_ERRORS, response_model_by_alias=True)
def fill_rate(
    store: StoreDep, site: Site, start: From, to: To, period: Period = "day", tz: Tz = "UTC",
) -> FillRateOut:
    """Fill rate: lines, units and orders filled from stock as first allocated."""
    window = span(start, to, period, tz)
    return FillRateOut.model_validate({
        "definition": ok.FILL_DEFINITION, "parameters": Parameters(**_common(site, window)),
        **_periodic(ok.fill_rate(store, site, window), window)})
