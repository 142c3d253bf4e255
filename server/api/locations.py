"""Locations: the tree site → zone → aisle → bin, virtual locations, labels, CSV import."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from floorsync.server.api.audit import AuditDep
from floorsync.server.api.items import (
    Limit,
    MasterDataDep,
    MasterDataRoute,
    csv_body,
    decode_cursor,
    encode_cursor,
    import_responses,
    problems,
    read_csv_body,
)
from floorsync.server.auth import READ, WRITE
from floorsync.server.gs1 import resolve_gln
from floorsync.server.locations import Location, LocationSpec
from floorsync.server.schemas import (
    ImportResult,
    LocationCreate,
    LocationFields,
    LocationKind,
    LocationOut,
    LocationPage,
)

router = APIRouter(tags=["locations"], route_class=MasterDataRoute)

LOCATION_CSV = (
    "Header row required. Columns: site, code, kind (required; kind is site, zone, aisle, bin"
    " or virtual), parent (empty: the site's root), name, barcodes (several separated by | or"
    " ;), gln, gln_extension, sgln (instead of gln/gln_extension). Rows in any order. Upsert"
    " by (site, code): a column left out keeps an existing location's value; an empty cell"
    " sets the default. All rows or none."
)


def location_out(location: Location) -> LocationOut:
    return LocationOut(**asdict(location))


def location_spec(site: str, code: str, body: LocationFields) -> LocationSpec:
    gln, extension = resolve_gln(body.gln, body.gln_extension, body.sgln)
    return LocationSpec(
        site, code, body.kind, body.parent, body.name, tuple(body.barcodes), gln, extension
    )


def page_of(rows: list[Location], limit: int, *, site_in_cursor: bool) -> LocationPage:
    page = rows[:limit]
    cursor = None
    if len(rows) > limit:
        last = page[-1]
        cursor = encode_cursor(last.site, last.code) if site_in_cursor else encode_cursor(last.code)
    return LocationPage(items=[location_out(r) for r in page], next_cursor=cursor)


@router.post(
    "/locations", status_code=201, response_model=LocationOut, responses=problems(400, 404, 409),
    dependencies=WRITE,
)
def create_location(body: LocationCreate, masterdata: MasterDataDep, audit: AuditDep
                    ) -> LocationOut:
    """A new location. Its parent must exist (404); a new site gets its virtual locations."""
    location = masterdata.create_location(location_spec(body.site, body.code, body))
    audit("location.create", f"location/{location.site}/{location.code}", **asdict(location))
    return location_out(location)


@router.get("/locations", response_model=LocationPage, responses=problems(400), dependencies=READ)
def list_locations(
    masterdata: MasterDataDep,
    site: str | None = None,
    parent: str | None = None,
    kind: LocationKind | None = None,
    cursor: str | None = None,
    limit: Limit = 100,
) -> LocationPage:
    """Locations by site and code, a page at a time, optionally filtered."""
    after = decode_cursor(cursor, 2)
    rows = masterdata.locations(
        site=site, parent=parent, kind=kind,
        after=None if after is None else (after[0], after[1]), limit=limit + 1,
    )
    return page_of(rows, limit, site_in_cursor=True)


@router.get(
    "/locations/by-barcode/{text:path}", response_model=LocationOut,
    responses=problems(404, 409),
    dependencies=READ,
)
def location_by_barcode(
    text: str, masterdata: MasterDataDep, site: str | None = None
) -> LocationOut:
    """The location a scanned label names: one of its barcodes; else its GLN (+ extension)
    as an SGLN URI, a GS1 element string (414/254) or a Digital Link; else its code.
    409 when the label names locations in several sites and ``site`` is not given."""
    return location_out(masterdata.by_barcode(text, site))


@router.post(
    "/locations/import",
    response_model=ImportResult,
    responses=import_responses(),
    openapi_extra=csv_body(LOCATION_CSV, "site,code,kind,parent,name,barcodes\n"
                                         "wh1,wh1,site,,Main warehouse,\n"
                                         "wh1,Z1,zone,,Zone 1,\n"
                                         "wh1,A-01,aisle,Z1,,\n"
                                         "wh1,A-01-02,bin,A-01,,LOC:A-01-02|A-01-02\n"),
    dependencies=WRITE,
)
async def import_locations(request: Request, masterdata: MasterDataDep, audit: AuditDep
                           ) -> ImportResult:
    """Upsert locations from a CSV file in one transaction: every row or none."""
    text = await read_csv_body(request)
    summary = await run_in_threadpool(masterdata.import_locations, text)
    await audit.later("location.import", "locations", characters=len(text), **asdict(summary))
    return ImportResult(**asdict(summary))


@router.post(
    "/locations/{site}/virtual", response_model=list[LocationOut], responses=problems(400),
    dependencies=WRITE,
)
def ensure_virtual(site: str, masterdata: MasterDataDep, audit: AuditDep
                   ) -> list[LocationOut]:
    """The site's virtual locations (receiving, shipping, customer, supplier, lost), made if
    missing, with the site's root. Idempotent."""
    made = masterdata.ensure_virtual(site)
    audit("location.virtual", f"site/{site}", codes=[v.code for v in made])
    return [location_out(v) for v in made]


@router.get(
    "/locations/{site}/{code}", response_model=LocationOut, responses=problems(404),
    dependencies=READ,
)
def get_location(site: str, code: str, masterdata: MasterDataDep) -> LocationOut:
    return location_out(masterdata.location(site, code))


@router.put(
    "/locations/{site}/{code}", response_model=LocationOut, responses=problems(400, 404, 409),
    dependencies=WRITE,
)
def update_location(
    site: str, code: str, body: LocationFields, masterdata: MasterDataDep, audit: AuditDep
) -> LocationOut:
    """Replace an existing location's fields; a move that would put it inside itself is 409."""
    location = masterdata.update_location(location_spec(site, code, body))
    audit("location.update", f"location/{location.site}/{location.code}", **asdict(location))
    return location_out(location)


@router.get(
    "/locations/{site}/{code}/children", response_model=LocationPage,
    responses=problems(400, 404),
    dependencies=READ,
)
def location_children(
    site: str, code: str, masterdata: MasterDataDep, cursor: str | None = None,
    limit: Limit = 100,
) -> LocationPage:
    """The locations directly inside this one, by code."""
    after = decode_cursor(cursor, 1)
    rows = masterdata.children(site, code, after=after[0] if after else None, limit=limit + 1)
    return page_of(rows, limit, site_in_cursor=False)


@router.get(
    "/locations/{site}/{code}/path", response_model=list[LocationOut], responses=problems(404),
    dependencies=READ,
)
def location_path(site: str, code: str, masterdata: MasterDataDep) -> list[LocationOut]:
    """Its ancestors from the site's root down, ending with the location itself."""
    return [location_out(loc) for loc in masterdata.path(site, code)]
