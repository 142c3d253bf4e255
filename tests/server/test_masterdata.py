"""Master data rules on a real SQLite file: GS1 keys, items, the location tree, CSV imports."""

from __future__ import annotations

from pathlib import Path

import pytest

from floorsync.server import db
from floorsync.server.csvimport import ImportRejected, read_csv
from floorsync.server.errors import Conflict, Invalid, NotFound
from floorsync.server.gs1 import gs1_check_digit, normalize_gtin, parse_gln_label
from floorsync.server.items import ItemSpec
from floorsync.server.ledger import Store
from floorsync.server.locations import VIRTUAL, LocationSpec
from floorsync.server.masterdata import MasterData
from floorsync.server.migrations import MIGRATIONS
from tests.server.helpers import batch, event, integrity_error

DATA = Path(__file__).parent / "data"
GLN = "0614141123452"


@pytest.fixture
def md(store: Store) -> MasterData:
    return MasterData(store)


def site(md: MasterData, name: str = "wh1") -> None:
    md.create_location(LocationSpec(name, name, "site"))


def loc(md: MasterData, code: str, kind: str, parent: str | None = None, **kw: object) -> None:
    md.create_location(LocationSpec("wh1", code, kind, parent, **kw))  # type: ignore[arg-type]


def tables(store: Store) -> dict[str, int]:
    names = ("items", "item_gtins", "locations", "location_barcodes")
    return {n: store._query(f"SELECT COUNT(*) FROM {n}")[0][0] for n in names}


# --- GS1 keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "gtin14"),
    [("09501101530003", "09501101530003"), ("4006381333931", "04006381333931"),
     ("036000291452", "00036000291452"), ("96385074", "00000096385074"),
     (" 80614141123458 ", "80614141123458")],
)
def test_gtins_of_every_length_become_gtin14(text: str, gtin14: str) -> None:
    assert normalize_gtin(text) == gtin14


@pytest.mark.parametrize(
    ("text", "why"),
    [("09501101530004", "bad check digit (expected 3)"), ("4006381333932", "bad check digit"),
     ("123", "not a GTIN"), ("0950110153000A", "not a GTIN"), ("095011015300033", "not a GTIN"),
     ("00000000000000", "all zeros"), ("٠٩٥٠١١٠١٥٣٠٠٠٣", "not a GTIN")],
)
def test_bad_gtins_are_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(Invalid) as caught:
        normalize_gtin(text)
    assert why in caught.value.detail


def test_check_digit_matches_gs1_examples() -> None:
    assert gs1_check_digit("0950110153000") == 3
    assert gs1_check_digit("061414112345") == 2  # GLN 0614141123452
    assert gs1_check_digit("8061414112345") == 8


@pytest.mark.parametrize(
    ("label", "expected"),
    [("urn:epc:id:sgln:0614141.12345.400", (GLN, "400")),
     ("urn:epc:id:sgln:0614141.12345.0", (GLN, "")),
     ("(414)0614141123452(254)400", (GLN, "400")),
     ("(414)0614141123452", (GLN, "")),
     ("]C14140614141123452254400", (GLN, "400")),
     ("4140614141123452\x1d254400", (GLN, "400")),
     ("https://id.gs1.org/414/0614141123452/254/400", (GLN, "400")),
     ("https://example.com/x/414/0614141123452", (GLN, "")),
     ("0614141123452", (GLN, "")),
     ("(414)0614141123453", None),  # bad check digit
     ("urn:epc:id:sgln:0614141.1234.400", None),  # 11 digits
     ("A-01-02", None)],
)
def test_gln_labels(label: str, expected: tuple[str, str] | None) -> None:
    assert parse_gln_label(label) == expected


# --- items ----------------------------------------------------------------------------------


def test_item_create_read_and_gtin_lookup(md: MasterData, store: Store) -> None:
    created = md.create_item(ItemSpec("TSHIRT-M", ("9501101530003", "4006381333931",
                                                   "09501101530003"), "T-shirt", "lot"))
    assert created.gtins == ("09501101530003", "04006381333931")  # padded, de-duplicated
    assert (created.tracking, created.unit) == ("lot", "EA")
    assert created.created_at == created.updated_at
    assert md.item("TSHIRT-M") == created
    assert md.item_by_gtin("4006381333931") == created
    assert md.item_by_gtin("04006381333931").sku == "TSHIRT-M"
    with pytest.raises(NotFound):
        md.item_by_gtin("036000291452")
    with pytest.raises(Invalid):
        md.item_by_gtin("036000291453")
    with pytest.raises(NotFound):
        md.item("nope")
    store.close()
    with Store(store.database) as again:  # it is on disk
        assert MasterData(again).item("TSHIRT-M").gtins == created.gtins


def test_sku_and_gtin_are_unique(md: MasterData, store: Store) -> None:
    md.create_item(ItemSpec("A", ("09501101530003",)))
    with pytest.raises(Conflict, match="item exists"):
        md.create_item(ItemSpec("A"))
    with pytest.raises(Conflict) as caught:
        md.create_item(ItemSpec("B", ("036000291452", "9501101530003")))
    assert caught.value.detail == "GTIN 09501101530003 belongs to SKU A"
    assert tables(store)["items"] == 1 and tables(store)["item_gtins"] == 1  # B not half-made


def test_update_replaces_fields_and_frees_gtins(md: MasterData) -> None:
    first = md.create_item(ItemSpec("A", ("09501101530003",), "old"))
    updated = md.update_item(ItemSpec("A", ("036000291452",), "new", "serial", "PCE"))
    assert updated.gtins == ("00036000291452",) and updated.description == "new"
    assert (updated.tracking, updated.unit) == ("serial", "PCE")
    assert updated.created_at == first.created_at and updated.updated_at >= first.updated_at
    assert md.create_item(ItemSpec("B", ("09501101530003",))).gtins == ("09501101530003",)
    with pytest.raises(Conflict):
        md.update_item(ItemSpec("B", ("036000291452",)))
    with pytest.raises(NotFound):
        md.update_item(ItemSpec("C"))


@pytest.mark.parametrize(
    ("spec", "title"),
    [(ItemSpec("has space"), "invalid SKU"), (ItemSpec("A/B"), "invalid SKU"),
     (ItemSpec("A", tracking="batch"), "invalid tracking"),
     (ItemSpec("A", unit="each piece"), "invalid unit"),
     (ItemSpec("A", description="x" * 257), "invalid description"),
     (ItemSpec("A", description="tab\there"), "invalid description")],
)
def test_invalid_items(md: MasterData, spec: ItemSpec, title: str) -> None:
    with pytest.raises(Invalid) as caught:
        md.create_item(spec)
    assert caught.value.title == title and caught.value.status == 400


def test_items_page_in_sku_order(md: MasterData) -> None:
    for sku in ("C", "A", "E", "B", "D"):
        md.create_item(ItemSpec(sku, tracking="lot" if sku in "BD" else "none"))
    assert [i.sku for i in md.items(limit=2)] == ["A", "B"]
    assert [i.sku for i in md.items(after="B", limit=2)] == ["C", "D"]
    assert [i.sku for i in md.items(after="D")] == ["E"]
    assert [i.sku for i in md.items(tracking="lot")] == ["B", "D"]


# --- locations ------------------------------------------------------------------------------


def test_a_new_site_gets_its_virtual_locations(md: MasterData) -> None:
    site(md)
    virtual = md.locations(site="wh1", kind="virtual")
    assert sorted(v.code for v in virtual) == sorted(VIRTUAL)
    assert {(v.parent, v.kind) for v in virtual} == {("wh1", "virtual")}
    assert md.location("wh1", "wh1").parent is None


def test_virtual_locations_on_call_are_idempotent(md: MasterData, store: Store) -> None:
    made = md.ensure_virtual("wh7")  # the site's root comes with them
    assert sorted(v.code for v in made) == sorted(VIRTUAL)
    assert md.location("wh7", "wh7").kind == "site"
    assert md.ensure_virtual("wh7") == made
    assert tables(store)["locations"] == 6
    with pytest.raises(Invalid):
        md.ensure_virtual("no/slash")


@pytest.mark.parametrize(
    ("spec", "title"),
    [(LocationSpec("wh1", "zone-a", "site"), "invalid site location"),
     (LocationSpec("wh1", "wh1", "site", "X"), "invalid site location"),
     (LocationSpec("wh1", "wh1", "zone"), "invalid code"),
     (LocationSpec("wh1", "dock", "virtual"), "invalid virtual location"),
     (LocationSpec("wh1", "lost", "bin"), "invalid code"),
     (LocationSpec("wh1", "Z", "room"), "invalid kind"),
     (LocationSpec("by-barcode", "by-barcode", "site"), "invalid site"),
     (LocationSpec("wh1", "Z", "zone", gln="0614141123453"), "invalid GLN"),
     (LocationSpec("wh1", "Z", "zone", gln_extension="X"), "invalid GLN extension"),
     (LocationSpec("wh1", "Z", "zone", barcodes=("ok", "bad\x1dgs")), "invalid barcode")],
)
def test_invalid_locations(md: MasterData, spec: LocationSpec, title: str) -> None:
    with pytest.raises(Invalid) as caught:
        md.create_location(spec)
    assert caught.value.title == title


def test_tree_parents_must_exist_and_rank(md: MasterData) -> None:
    with pytest.raises(NotFound, match="unknown site"):
        loc(md, "Z1", "zone")
    site(md)
    loc(md, "Z1", "zone")
    loc(md, "Z1a", "zone", "Z1")  # a zone in a zone
    loc(md, "A-01", "aisle", "Z1")
    loc(md, "A-01-02", "bin", "A-01")
    loc(md, "B-9", "bin", "Z1")  # a bin directly in a zone
    with pytest.raises(NotFound, match="unknown parent") as caught:
        loc(md, "B-1", "bin", "NOPE")
    assert caught.value.status == 404
    with pytest.raises(Conflict, match="a zone cannot sit inside a bin"):
        loc(md, "Z2", "zone", "B-9")
    with pytest.raises(Conflict, match="virtual"):
        loc(md, "B-2", "bin", "receiving")
    with pytest.raises(Conflict, match="location exists"):
        loc(md, "Z1", "zone")
    assert md.location("wh1", "A-01-02").parent == "A-01"


def test_cycles_are_refused(md: MasterData, store: Store) -> None:
    site(md)
    loc(md, "Z1", "zone")
    loc(md, "Z2", "zone", "Z1")
    loc(md, "Z3", "zone", "Z2")
    before = md.location("wh1", "Z1")
    with pytest.raises(Conflict) as caught:
        md.update_location(LocationSpec("wh1", "Z1", "zone", "Z3"))
    assert caught.value.title == "cycle" and caught.value.status == 409
    assert "Z1 in Z3 in Z2 in Z1" in caught.value.detail
    with pytest.raises(Conflict, match="cycle"):
        md.update_location(LocationSpec("wh1", "Z1", "zone", "Z1"))
    assert md.location("wh1", "Z1") == before  # rolled back


def test_kind_change_must_fit_children(md: MasterData) -> None:
    site(md)
    loc(md, "Z1", "zone")
    loc(md, "A-01", "aisle", "Z1")
    with pytest.raises(Conflict, match="Z1 holds an aisle; it cannot become a bin"):
        md.update_location(LocationSpec("wh1", "Z1", "bin"))
    moved = md.update_location(LocationSpec("wh1", "A-01", "bin", "Z1", "now a bin"))
    assert (moved.kind, moved.name) == ("bin", "now a bin")


def test_path_and_children(md: MasterData) -> None:
    site(md)
    loc(md, "Z1", "zone")
    loc(md, "A-01", "aisle", "Z1")
    for n in (3, 1, 2):
        loc(md, f"A-01-0{n}", "bin", "A-01")
    assert [p.code for p in md.path("wh1", "A-01-02")] == ["wh1", "Z1", "A-01", "A-01-02"]
    assert [p.code for p in md.path("wh1", "wh1")] == ["wh1"]
    assert [c.code for c in md.children("wh1", "A-01")] == ["A-01-01", "A-01-02", "A-01-03"]
    assert [c.code for c in md.children("wh1", "A-01", after="A-01-01", limit=1)] == ["A-01-02"]
    assert md.children("wh1", "A-01-01") == []
    with pytest.raises(NotFound):
        md.path("wh1", "nope")
    with pytest.raises(NotFound):
        md.children("wh1", "nope")


def test_lookup_by_barcode_gln_or_code(md: MasterData) -> None:
    site(md)
    site(md, "wh2")
    loc(md, "A-01-02", "bin", barcodes=("LOC:A-01-02", "LOC:A-01-02", "https://x/y"))
    loc(md, "DOCK-1", "bin", gln=GLN, gln_extension="400")
    md.create_location(LocationSpec("wh2", "A-01-02", "bin", barcodes=("W2:A-01-02",)))
    assert md.location("wh1", "A-01-02").barcodes == ("LOC:A-01-02", "https://x/y")
    assert md.by_barcode(" LOC:A-01-02 ").site == "wh1"
    assert md.by_barcode("https://x/y").code == "A-01-02"
    assert md.by_barcode("W2:A-01-02").site == "wh2"
    assert md.by_barcode("urn:epc:id:sgln:0614141.12345.400").code == "DOCK-1"
    assert md.by_barcode("(414)0614141123452(254)400").code == "DOCK-1"
    with pytest.raises(NotFound):
        md.by_barcode("(414)0614141123452")  # no location without the extension
    with pytest.raises(Conflict, match="wh1, wh2; pass \\?site="):
        md.by_barcode("A-01-02")  # a code in both sites
    assert md.by_barcode("A-01-02", site="wh2").site == "wh2"
    with pytest.raises(NotFound):
        md.by_barcode("W2:A-01-02", site="wh1")


def test_labels_are_unique(md: MasterData) -> None:
    site(md)
    site(md, "wh2")
    loc(md, "B-1", "bin", barcodes=("LOC:1",), gln=GLN)
    with pytest.raises(Conflict, match="barcode in use"):
        loc(md, "B-2", "bin", barcodes=("LOC:2", "LOC:1"))
    with pytest.raises(Conflict, match="GLN in use"):
        loc(md, "B-3", "bin", gln=GLN)
    loc(md, "B-4", "bin", gln=GLN, gln_extension="1")  # another extension: another place
    md.create_location(LocationSpec("wh2", "B-1", "bin", barcodes=("LOC:1",)))  # other site
    relabelled = md.update_location(LocationSpec("wh1", "B-1", "bin", barcodes=("LOC:9",)))
    assert relabelled.barcodes == ("LOC:9",) and relabelled.gln is None
    loc(md, "B-2", "bin", barcodes=("LOC:1",), gln=GLN)  # both freed by the update


def test_listing_filters_and_pages(md: MasterData) -> None:
    site(md)
    site(md, "wh2")
    loc(md, "Z1", "zone")
    loc(md, "B-1", "bin", "Z1")
    loc(md, "B-2", "bin", "Z1")
    assert [x.code for x in md.locations(site="wh1", parent="Z1")] == ["B-1", "B-2"]
    assert [x.code for x in md.locations(kind="site")] == ["wh1", "wh2"]
    everything = md.locations(limit=1000)
    assert len(everything) == 2 + 2 * len(VIRTUAL) + 3
    paged, after = [], None
    while page := md.locations(after=after, limit=4):
        paged += page
        after = (page[-1].site, page[-1].code)
    assert paged == everything


# --- CSV ------------------------------------------------------------------------------------


def test_items_import_good_file_then_upsert(md: MasterData) -> None:
    text = (DATA / "items_good.csv").read_text()
    assert md.import_items(text).created == 4
    assert md.item("SENSOR-X").gtins == ("80614141123458", "00000096385074")
    assert md.item("SENSOR-X").unit == "EA"  # empty cell: the default
    assert md.item("TSHIRT-M").description == "T-shirt, size M"
    assert md.item("FLOUR-25").gtins == () and md.item("FLOUR-25").unit == "KGM"
    again = md.import_items(text)
    assert (again.created, again.updated) == (0, 4)
    # columns left out keep their values; GTINs may move between items of one file
    moved = md.import_items("sku;gtins\nCABLE-2M;4006381333931\nTSHIRT-M;09501101530003\n")
    assert (moved.created, moved.updated) == (0, 2)
    assert md.item("CABLE-2M").gtins == ("04006381333931",)
    assert md.item("CABLE-2M").description == "USB cable 2 m"
    assert md.item("TSHIRT-M").tracking == "lot"


def test_items_import_bad_file_reports_each_row_and_imports_nothing(
    md: MasterData, store: Store
) -> None:
    md.create_item(ItemSpec("KEEP", ("80614141123458",)))
    before = tables(store)
    with pytest.raises(ImportRejected) as caught:
        md.import_items((DATA / "items_bad.csv").read_text())
    errors = {e.line: e.reason for e in caught.value.errors}
    assert errors == {
        3: "09501101530004: bad check digit (expected 3)",
        5: "duplicate SKU GOOD-1 (also on line 2)",
        6: "tracking must be one of none, lot, serial (got 'batch')",
        7: "description holds control characters",
        9: "GTIN 00036000291452 is also on line 4 (SKU GOOD-2)",
        10: "2 cells, the header has 5",
        11: "SKU must be 1-64 characters of A-Z a-z 0-9 . _ - (got 'bad sku!')",
    }
    assert caught.value.status == 400 and "7 rows" in caught.value.detail
    assert tables(store) == before
    with pytest.raises(ImportRejected) as taken:
        md.import_items("sku,gtin\nNEW,80614141123458\n")  # "gtin" is accepted for "gtins"
    assert taken.value.errors[0].reason == "GTIN 80614141123458 belongs to SKU KEEP"


@pytest.mark.parametrize(
    ("text", "reason"),
    [("", "a header row naming the columns is required"),
     ("TSHIRT,09501101530003\n", "unknown column 'tshirt'"),
     ("gtins,description\n", "required column 'sku' missing"),
     ("sku,SKU\n", "column 'sku' twice"),
     ('sku,description\nA,"unclosed\n', "unreadable CSV")],
)
def test_bad_headers_reject_the_file(md: MasterData, text: str, reason: str) -> None:
    with pytest.raises(ImportRejected) as caught:
        md.import_items(text)
    assert reason in caught.value.errors[0].reason


def test_csv_lines_count_physical_lines() -> None:
    rows = read_csv('\ufeffsku,description\r\nA,"two\r\nlines"\r\n\r\nB,x\r\n', "items",
                    ("sku", "description"), ("sku",))
    assert [(line, row["sku"]) for line, row in rows.rows] == [(2, "A"), (5, "B")]


def test_locations_import_good_file_any_order(md: MasterData) -> None:
    result = md.import_locations((DATA / "locations_good.csv").read_text())
    assert (result.created, result.updated) == (8, 0)
    assert [p.code for p in md.path("wh1", "A-01-02")] == ["wh1", "Z1", "A-01", "A-01-02"]
    assert md.location("wh1", "A-01-02").barcodes == ("LOC:A-01-02", "A-01-02")
    assert md.location("wh1", "receiving").barcodes == ("RECV",)
    assert md.by_barcode("(414)0614141123452(254)400").code == "DOCK-1"
    assert md.by_barcode("urn:epc:id:sgln:0614141.12345.0").code == "wh1"
    assert len(md.locations(site="wh2", kind="virtual")) == len(VIRTUAL)
    # upsert: move a bin, keep the barcodes its row leaves out
    moved = md.import_locations("site,code,kind,parent\nwh1,A-01-02,bin,Z1\nwh1,Z2,zone,\n")
    assert (moved.created, moved.updated) == (1, 1)
    assert md.location("wh1", "A-01-02").parent == "Z1"
    assert md.location("wh1", "A-01-02").barcodes == ("LOC:A-01-02", "A-01-02")
    with pytest.raises(ImportRejected) as caught:  # a cycle through stored locations
        md.import_locations("site,code,kind,parent\nwh1,Z1,zone,Z2\nwh1,Z2,zone,Z1\n")
    assert [e.line for e in caught.value.errors] == [2, 3]
    assert md.location("wh1", "Z2").parent == "wh1"


def test_locations_import_bad_file_reports_each_row_and_imports_nothing(
    md: MasterData, store: Store
) -> None:
    before = tables(store)
    with pytest.raises(ImportRejected) as caught:
        md.import_locations((DATA / "locations_bad.csv").read_text())
    errors = {e.line: e.reason for e in caught.value.errors}
    assert errors == {
        4: "parent wh1/NOPE does not exist",
        5: "wh1/Z2 would sit inside itself: Z2 in Z3 in Z2",
        6: "wh1/Z3 would sit inside itself: Z3 in Z2 in Z3",
        7: "an aisle cannot sit inside a bin (B-2)",
        10: "barcode 'LOC:B-3' is also on line 9",
        11: "0614141123453: bad check digit (expected 2)",
        12: "parent wh1/B-BAD is on line 13, which has errors",
        13: "a GLN extension needs a GLN",
        14: "virtual locations are receiving, shipping, customer, supplier, lost (got 'dock')",
        15: "site wh9 does not exist: create its site location (kind site, code wh9) first",
    }
    assert tables(store) == before


def test_locations_import_labels_taken_outside_the_file(md: MasterData) -> None:
    site(md)
    loc(md, "B-1", "bin", barcodes=("LOC:1",), gln=GLN)
    with pytest.raises(ImportRejected) as caught:
        md.import_locations(
            "site,code,kind,barcodes,sgln\n"
            "wh1,B-2,bin,LOC:1,\n"
            "wh1,B-3,bin,,urn:epc:id:sgln:0614141.12345.0\n"
            "wh1,B-4,bin,,(414)0614141123452(254)7\n"
        )
    assert {e.line: e.reason for e in caught.value.errors} == {
        2: "barcode 'LOC:1' labels wh1/B-1", 3: "GLN 0614141123452 names wh1/B-1"}
    # labels moving between locations of one file are fine
    md.import_locations("site,code,kind,barcodes,gln\nwh1,B-1,bin,,\nwh1,B-2,bin,LOC:1,"
                        f"{GLN}\n")
    assert md.by_barcode("LOC:1").code == "B-2" and md.by_barcode(GLN).code == "B-2"


# --- schema ---------------------------------------------------------------------------------


def test_master_data_migration_upgrades_a_ledger_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    with monkeypatch.context() as patch:
        patch.setattr(db, "MIGRATIONS", MIGRATIONS[:1])
        with Store(path) as old, old._transaction() as cur:  # what the first schema held
            cur.execute(
                "INSERT INTO events (id, site, device, seq, type, event_time, received_at,"
                " source, item, qty, to_location) VALUES ('e-1', 'wh1', 'hh-1', 1, 'receive',"
                " '2026-01-01T00:00:00Z', '2026-01-01T00:00:01Z', 'http', 'SKU-1', 1, 'DOCK-1')"
            )
    with Store(path) as store:
        assert store.summary()["events"] == 1
        names = [r[0] for r in store._query("SELECT name FROM schema_migrations ORDER BY name")]
        assert names == [name for name, _ in MIGRATIONS]
        MasterData(store).ensure_virtual("wh1")
        # the ledger still applies events (master data raises exceptions, never refuses)
        store.apply_batch(batch("wh1", "hh-1", event("receive", dst="nowhere")), source="http")
        assert store.summary()["events"] == 2


def test_stock_is_rebuilt_per_site_from_the_ledger_by_the_upgrade(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before 0004 stock had no site: the upgrade derives it from the movements, per site."""
    path = tmp_path / "old.db"
    with monkeypatch.context() as patch:
        patch.setattr(db, "MIGRATIONS", MIGRATIONS[:3])
        with Store(path) as old, old._transaction() as cur:
            for n, (site, qty) in enumerate((("wh1", 5), ("wh2", 2), ("wh1", -1))):
                cur.execute(
                    "INSERT INTO events (id, site, device, seq, type, event_time, received_at,"
                    " source, item, qty, to_location) VALUES (?, ?, 'hh', ?, 'adjust',"
                    " '2026-01-01T00:00:00Z', '2026-01-01T00:00:01Z', 'http', 'SKU-1', ?, 'A')",
                    (f"e-{n}", site, n + 1, qty))
                cur.execute(
                    "INSERT INTO movements (event_id, site, device, type, item, lot, location,"
                    " qty, event_time, received_at) VALUES (?, ?, 'hh', 'adjust', 'SKU-1', '',"
                    " 'A', ?, '2026-01-01T00:00:00Z', '2026-01-01T00:00:01Z')",
                    (f"e-{n}", site, qty))
            cur.execute("INSERT INTO stock (item, location, lot, quantity)"
                        " VALUES ('SKU-1', 'A', '', 6)")  # the old cache, sites mixed
    with Store(path) as store:
        assert {(r.site, r.location): r.quantity for r in store.stock()} == {
            ("wh1", "A"): 4, ("wh2", "A"): 2}


def test_database_refuses_what_the_code_refuses(store: Store) -> None:
    """The schema's own checks, for writers other than this module."""
    with pytest.raises(integrity_error(store)):
        store._writer.execute(
            "INSERT INTO locations (site, code, kind, parent, created_at, updated_at)"
            " VALUES ('wh1', 'Z', 'zone', NULL, '', '')"
        )
    with pytest.raises(integrity_error(store)):
        store._writer.execute(
            "INSERT INTO items (sku, tracking, created_at, updated_at) VALUES ('A', 'x', '', '')"
        )
