"""``identifiers=urn|dl``: movements' GS1 keys as EPC URIs (SGLN, SGTIN, LGTIN, SSCC) where the
company prefix is configured, else GS1 Digital Links; both valid against the GS1 schema with
format checks, and the same events (every identifier the same GS1 key) either way."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft7Validator, FormatChecker

from floorsync.server import epcisjson, epcisread
from floorsync.server.app import create_app
from floorsync.server.epcisurn import EPCWriter, check_prefixes
from floorsync.server.errors import ConfigError
from floorsync.server.gs1 import GS1Key, gs1_check_digit, parse_gs1_uri
from floorsync.server.ledger import Store
from floorsync.server.settings import Settings
from tests.server.helpers import READ_TOKEN, api_settings, bearer, decoded
from tests.server.test_epcis import DOCK_GLN, LEDGER, OTHER_SITE, SITE_GLN, SSCC, TSHIRT, _master

URL = "/api/v1/epcis/events"
PREFIXES = ("9506000", "9501101", "0614141")  # our GLNs; the T-shirt's and flour's; the SSCCs'
DOCK_SGLN = f"urn:epc:id:sgln:9506000.{DOCK_GLN[7:12]}.D1"
SITE_SGLN = f"urn:epc:id:sgln:9506000.{SITE_GLN[7:12]}.0"


@pytest.fixture
def ledger(database: str | Path) -> Iterator[Store]:
    with Store(database) as store:
        _master(store)
        store.apply_batch(decoded("wh1", "hh-01", *(e for e, _ in LEDGER)), source="http")
        store.apply_batch(decoded("wh2", "hh-02", *(e for e, _ in OTHER_SITE)), source="http")
        yield store


def _client(store: Store, tmp_path: Path, prefixes: tuple[str, ...]) -> TestClient:
    app = create_app(api_settings(tmp_path / "ledger.db", gs1_company_prefixes=prefixes),
                     store=store)
    return TestClient(app, headers=bearer(READ_TOKEN))


def _export(client: TestClient, **params: Any) -> dict[str, Any]:
    answer = client.get(URL, params=params)
    assert answer.status_code == 200, answer.text
    document: dict[str, Any] = answer.json()
    checker = Draft7Validator(epcisread.schema(), format_checker=FormatChecker())
    assert not [e.message for e in checker.iter_errors(document)]
    for event in document["epcisBody"]["eventList"]:  # each alone, as a standalone event
        alone = {"@context": [epcisjson.CONTEXT], **event}
        assert not [e.message for e in checker.iter_errors(alone)], event
    return document


def _identifiers(event: dict[str, Any]) -> list[str]:
    found = [*event.get("epcList", []), *event.get("childEPCs", [])]
    found += [q["epcClass"] for q in (*event.get("quantityList", []),
                                      *event.get("childQuantityList", []))]
    found += [event[k]["id"] for k in ("readPoint", "bizLocation") if k in event]
    return found + ([event["parentID"]] if "parentID" in event else [])


def _events(document: dict[str, Any]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = document["epcisBody"]["eventList"]
    return events


def test_urn_writes_sglns_and_epc_uris_for_the_configured_prefixes(
    ledger: Store, tmp_path: Path
) -> None:
    with _client(ledger, tmp_path, PREFIXES) as client:
        urn = _export(client)  # the default: identifiers=urn
        assert _events(_export(client, identifiers="urn")) == _events(urn)
        dl = _export(client, identifiers="dl")
    events = _events(urn)
    receive, tagged, _, _, _, packed, packed_class, ship = events[:8]
    assert receive["readPoint"] == receive["bizLocation"] == {"id": DOCK_SGLN}
    assert receive["quantityList"] == [{"epcClass": "urn:epc:class:lgtin:9501101.053000.L1",
                                        "quantity": 5}]
    assert tagged["epcList"] == ["urn:epc:id:sgtin:0614141.812345.6789"]
    assert events[2]["readPoint"] == {"id": SITE_SGLN}
    assert packed["parentID"] == f"urn:epc:id:sscc:0614141.{SSCC[0]}{SSCC[8:17]}"
    assert packed["childEPCs"] == ["urn:epc:id:sgtin:9501101.053000.S%2F1"]
    assert packed_class["childQuantityList"][0]["epcClass"] == (
        "urn:epc:class:lgtin:9501101.053000.L1")
    assert ship["epcList"] == [packed["parentID"]]
    no_lot = [e for e in events if e.get("quantityList") == [
        {"epcClass": "urn:epc:idpat:sgtin:9501101.053000.*", "quantity": 2}]]
    assert len(no_lot) == 2  # the move and the receive by SKU
    # a lot outside GS1's character set 82 has no EPC URI: its Digital Link stays
    odd = [i for e in events for i in _identifiers(e) if not i.startswith("urn:epc:")]
    assert odd == [f"https://id.gs1.org/01/{TSHIRT}/10/a%22b%5Cc%20%C3%A9"]
    assert all(i.startswith("https://id.gs1.org/") for e in _events(dl) for i in _identifiers(e))
    # the same events: every identifier names the same GS1 key in both documents
    assert epcisread.read(urn).events == epcisread.read(dl).events
    for a, b in zip(events, _events(dl), strict=True):
        assert [parse_gs1_uri(i) for i in _identifiers(a)] == [
            parse_gs1_uri(i) for i in _identifiers(b)]
        assert {k for k in a} == {k for k in b}


def test_without_configured_prefixes_urn_is_the_digital_link_document(
    ledger: Store, tmp_path: Path
) -> None:
    with _client(ledger, tmp_path, ()) as client:
        urn, dl = _export(client), _export(client, identifiers="dl")
        assert client.get(URL, params={"identifiers": "epc"}).status_code == 422
    assert _events(urn) == _events(dl)
    assert _events(urn)[0]["readPoint"] == {"id": f"https://id.gs1.org/414/{DOCK_GLN}/254/D1"}


def test_a_prefix_configured_for_some_keys_writes_urns_for_those_only(
    ledger: Store, tmp_path: Path
) -> None:
    with _client(ledger, tmp_path, ("9506000",)) as client:
        events = _events(_export(client))
    assert events[0]["readPoint"] == {"id": DOCK_SGLN}
    assert events[0]["quantityList"][0]["epcClass"] == f"https://id.gs1.org/01/{TSHIRT}/10/L1"


@pytest.mark.parametrize("identifiers", ["urn", "dl"])
def test_filters_take_either_form_in_either_mode(ledger: Store, tmp_path: Path,
                                                 identifiers: str) -> None:
    with _client(ledger, tmp_path, PREFIXES) as client:
        def ids(**params: Any) -> list[str]:
            return [e["eventID"] for e in _events(_export(client, identifiers=identifiers,
                                                          **params))]
        at_dock = ids(EQ_bizLocation=DOCK_SGLN)
        assert at_dock and at_dock == ids(
            EQ_bizLocation=f"https://id.gs1.org/414/{DOCK_GLN}/254/D1")
        read_at_site = ids(EQ_readPoint=SITE_SGLN)
        assert read_at_site and read_at_site == ids(
            EQ_readPoint=f"https://id.gs1.org/414/{SITE_GLN}")
        tag = ids(MATCH_anyEPC="urn:epc:id:sgtin:0614141.812345.6789")
        assert len(tag) == 2 and tag == ids(
            MATCH_anyEPC="https://id.gs1.org/01/80614141123458/21/6789")


# --- the writer ------------------------------------------------------------------------


def _key(rng: random.Random) -> GS1Key:
    kind = rng.choice(["sgtin", "lgtin", "gtin", "sscc", "sgln"])
    chars = "!\"%&'()*+,-./0123456789:;<=>?ABCXYZ_abcxyz"
    value = "".join(rng.choice(chars) for _ in range(rng.randint(1, 20)))
    if kind == "sscc":
        body = "".join(rng.choice("0123456789") for _ in range(17))
        return GS1Key("sscc", sscc=body + str(gs1_check_digit(body)))
    if kind == "sgln":
        body = "".join(rng.choice("0123456789") for _ in range(12))
        extension = rng.choice(["", value]) if value != "0" else ""
        return GS1Key("sgln", gln=body + str(gs1_check_digit(body)), extension=extension)
    body = "".join(rng.choice("0123456789") for _ in range(13))
    gtin = body + str(gs1_check_digit(body))
    return GS1Key(kind, gtin=gtin, serial=value if kind == "sgtin" else None,
                  lot=value if kind == "lgtin" else None)


def test_every_urn_written_reads_back_as_its_key() -> None:
    """Keys of every kind with values of set 82 (escapes included), each under a company
    prefix of each length 6-12: written as a URN and read back, the same key."""
    rng = random.Random(12)
    for _ in range(3000):
        key = _key(rng)
        digits = {"sscc": (key.sscc or "")[1:17], "sgln": (key.gln or "")[:12]}.get(
            key.kind, (key.gtin or "")[1:13])
        length = rng.randint(6, 12)
        urn = EPCWriter([digits[:length]]).urn(key)
        assert urn is not None and urn.startswith("urn:epc:"), key
        assert parse_gs1_uri(urn) == key, (key, urn)
        assert EPCWriter([digits[:length]]).uri(key.digital_link()) == urn
        assert EPCWriter(["1" + digits[:length - 1]] if digits[0] != "1" else ["2" + digits[
            :length - 1]]).uri(key.digital_link()) == key.digital_link()  # not ours


def test_what_has_no_epc_uri_keeps_its_digital_link() -> None:
    writer = EPCWriter(["9506000", "950600013"])
    gln = "950600013431" + str(gs1_check_digit("950600013431"))
    assert writer.urn(GS1Key("sgln", gln=gln, extension="0")) is None  # "0" is the SGLN's none
    assert writer.urn(GS1Key("sgln", gln=gln, extension="é")) is None
    assert writer.urn(GS1Key("sgln", gln=gln, extension="A" * 21)) is None
    # the longer of two configured prefixes wins
    assert writer.urn(GS1Key("sgln", gln=gln)) == f"urn:epc:id:sgln:950600013.{gln[9:12]}.0"
    assert writer.uri("urn:epc:id:grai:4012345.55555.1") == "urn:epc:id:grai:4012345.55555.1"
    assert writer.uri("https://example.org/x") == "https://example.org/x"


def test_company_prefixes_are_checked_where_they_are_configured(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    assert check_prefixes([" 9506000", "9506000", "061414112345"]) == ("9506000",
                                                                        "061414112345")
    for bad in ("12345", "1234567890123", "95O6000", "٩٥٠٦٠٠٠"):
        with pytest.raises(ValueError, match="GS1 Company Prefix"):
            check_prefixes([bad])
    monkeypatch.setenv("FLOORSYNC_GS1_COMPANY_PREFIXES", "9506000, 0614141,")
    assert Settings.from_env(broker=None).gs1_company_prefixes == ("9506000", "0614141")
    monkeypatch.setenv("FLOORSYNC_GS1_COMPANY_PREFIXES", "9506000,12")
    with pytest.raises(ConfigError, match="gs1_company_prefixes"):
        Settings.from_env(broker=None)
    assert json.dumps(Settings(broker=None).gs1_company_prefixes) == "[]"
