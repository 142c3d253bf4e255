"""Every GS1 example, every event type, captured and exported again without loss of meaning.

Meaning is compared as the standard defines it, in RDF: each document is expanded as JSON-LD
with the EPCIS context (``server/standards/epcis-context.jsonld``) and the CBV contexts it names
(``tests/data/epcis2/contexts/``), served locally by a pyld document loader (no network: any
other URL fails the test), turned into its RDF dataset, and the part that is the events is kept:
every quad reachable from an object of ``epcis:eventList`` (the events, their readPoints,
quantity and sensor nodes, error declarations, business transaction nodes, ...). From it one
kind of quad is left out, and only one: an event's ``epcis:recordTime``, which EPCIS gives the
repository (the capture interface ignores a sender's; ours is the moment of capture). The two
sets are canonicalised with URDNA2015 (blank nodes: sensor elements, quantities, events without
an eventID get canonical labels) and compared as N-Quads, exactly.

Beside it, JSON: each exported event is the event as sent (its numbers as written), but for its
recordTime and an event-level ``@context`` holding the document's extra definitions.

The comparison is shown to see a loss: dropping any one field, at any depth, of any event of any
example changes the canonical dataset; and a capture that drops a field fails the round trip.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft7Validator, FormatChecker
from pyld import jsonld

from floorsync.server import epcisjson, epcisread, epcisstore

ROOT = Path(__file__).resolve().parents[2]
EPCIS2 = ROOT / "tests" / "data" / "epcis2"
EXAMPLES = sorted((EPCIS2 / "examples").glob("*.jsonld"))
CONTEXTS = {epcisjson.CONTEXT: ROOT / "server" / "standards" / "epcis-context.jsonld"} | {
    f"https://gs1.github.io/EPCIS/{path.name}": path
    for path in sorted((EPCIS2 / "contexts").glob("*.jsonld"))}
EPCIS = "https://ref.gs1.org/epcis/"
EVENT_LIST = f"<{EPCIS}eventList>"
RECORD_TIME = f"<{EPCIS}recordTime>"
CAPTURE = "/api/v1/epcis/capture"
EVENTS = "/api/v1/epcis/events"


def local_contexts(url: str, options: Any = None) -> dict[str, Any]:
    """pyld's document loader: the standard's contexts from files; nothing from the network."""
    path = CONTEXTS.get(url)
    if path is None:
        raise jsonld.JsonLdError(f"not served locally (no network in tests): {url}",
                                 "jsonld.LoadDocumentError", code="loading document failed")
    return {"contentType": "application/ld+json", "contextUrl": None, "documentUrl": url,
            "document": json.loads(path.read_text(encoding="utf-8"))}


def _quads(document: Any) -> list[tuple[str, str, str, str]]:
    """The document's RDF dataset as (subject, predicate, object, the rest) N-Quads terms."""
    text = jsonld.to_rdf(document, {"documentLoader": local_contexts,
                                    "format": "application/n-quads"})
    parsed = jsonld.JsonLdProcessor.parse_nquads(text)
    out = []
    for graph, triples in parsed.items():
        for t in triples:
            out.append((_term(t["subject"]), _term(t["predicate"]), _term(t["object"]),
                        "" if graph == "@default" else graph))
    return out


def _term(node: dict[str, Any]) -> str:
    if node["type"] == "IRI":
        return f"<{node['value']}>"
    if node["type"] == "blank node":
        return node["value"]
    literal = json.dumps(node["value"], ensure_ascii=False)
    if node.get("language"):
        return f"{literal}@{node['language']}"
    return f"{literal}^^<{node['datatype']}>"


def events_meaning(document: Any) -> str:
    """The canonical N-Quads (URDNA2015) of the document's events, recordTime left out."""
    quads = _quads(document)
    by_subject: dict[str, list[tuple[str, str, str, str]]] = {}
    for quad in quads:
        by_subject.setdefault(quad[0], []).append(quad)
    roots = {o for s, p, o, g in quads if p == EVENT_LIST}
    seen: set[str] = set()
    todo = list(roots)
    kept: list[tuple[str, str, str, str]] = []
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        for quad in by_subject.get(node, ()):
            if quad[1] == RECORD_TIME and quad[0] in roots:
                continue
            kept.append(quad)
            if quad[2].startswith(("<", "_:")):
                todo.append(quad[2])
    lines = "".join(f"{s} {p} {o}{' ' + g if g else ''} .\n" for s, p, o, g in kept)
    canonical: str = jsonld.normalize(lines, {
        "algorithm": "URDNA2015", "inputFormat": "application/n-quads",
        "format": "application/n-quads"})
    return canonical


def _events(document: Any) -> list[Any]:
    return list(epcisread.event_list(document)[1])


def round_trip(client: TestClient, body: bytes) -> tuple[Any, Any]:
    """Capture ``body``; the export, parsed exactly (numbers as written) and as plain JSON."""
    answer = client.post(CAPTURE, content=body, headers={"Content-Type": "application/ld+json"})
    assert answer.status_code == 201, answer.text
    exported = client.get(EVENTS)
    assert exported.status_code == 200, exported.text
    return epcisstore.loads(exported.text), exported.json()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_captures_and_exports_without_loss_of_meaning(
    client: TestClient, path: Path
) -> None:
    source = json.loads(path.read_bytes())
    exact_source = epcisstore.loads(path.read_bytes())
    exact, exported = round_trip(client, path.read_bytes())
    # valid, with format checks, the document and each event alone
    checker = Draft7Validator(epcisread.schema(), format_checker=FormatChecker())
    assert not [e.message for e in checker.iter_errors(exported)]
    for event in _events(exported):
        alone = {**event, "@context": [epcisjson.CONTEXT, *event.get("@context", [])]}
        assert not [e.message for e in checker.iter_errors(alone)], event["type"]
    # RDF: the same canonical dataset (recordTime aside), and not an empty one
    meaning = events_meaning(source)
    assert meaning.count("\n") >= 5 * len(_events(source))
    assert events_meaning(exported) == meaning
    # JSON: every event as sent, numbers as written; recordTime ours; the extra definitions
    sent = _events(exact_source)
    back = _events(exact)
    assert len(back) == len(sent) and len(sent) >= 1
    context = exact_source["@context"]
    extras = [c for c in (context if isinstance(context, list) else [context])
              if c != epcisjson.CONTEXT]
    for given, out in zip(sent, back, strict=True):
        assert out.get("@context", []) == extras + given.get("@context", [])
        assert out["recordTime"] != given.get("recordTime")

        def strip(event: dict[str, Any]) -> str:
            return epcisstore.text({k: v for k, v in event.items()
                                    if k not in ("recordTime", "@context")})
        assert strip(out) == strip(given)
    # the same document again: nothing new, the same export
    again = client.post(CAPTURE, content=path.read_bytes(),
                        headers={"Content-Type": "application/ld+json"})
    assert again.status_code == 200, again.text
    assert again.json()["unchanged"] == len(sent) and again.json()["captured"] == 0
    assert _events(client.get(EVENTS).json()) == _events(exported)


def _drops(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in an event one could drop: each key of each object, each list item."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if path == () and key in ("recordTime", "@context"):
                continue
            yield (*path, key)
            yield from _drops(inner, (*path, key))
    elif isinstance(value, list):
        for n, inner in enumerate(value):
            yield (*path, n)
            yield from _drops(inner, (*path, n))


def _without(event: Any, place: tuple[Any, ...]) -> Any:
    out = copy.deepcopy(event)
    holder = out
    for step in place[:-1]:
        holder = holder[step]
    del holder[place[-1]]
    return out


MARKER = "urn:floorsync:unmapped-marker"


def _unmapped(context: Any, event: Any, place: tuple[Any, ...]) -> bool:
    """Whether the key at (or holding) ``place`` is one the context does not define there:
    JSON-LD expansion drops such a key, so its value, replaced by a marker, is nowhere in the
    event's dataset."""
    keyed = place if isinstance(place[-1], str) else place[:-1]
    marked = copy.deepcopy(event)
    holder = marked
    for step in keyed[:-1]:
        holder = holder[step]
    holder[keyed[-1]] = MARKER
    try:
        quads = jsonld.to_rdf({**marked, "@context": context}, {
            "documentLoader": local_contexts, "format": "application/n-quads"})
    except jsonld.JsonLdError:
        return False
    return MARKER not in quads and "unmapped-marker" not in quads


def _no_statement_in_rdf(document: Any, n: int, place: tuple[Any, ...]) -> bool:
    """Whether dropping ``place`` leaves the dataset as it is, by JSON-LD's own rules: an empty
    list or object states nothing; a key the context does not define where it stands is
    dropped by expansion (``_unmapped``); a bizTransaction's type is a property of the transaction's
    node (its IRI), not of the event's reference to it, so when another event of the document
    gives the same transaction the same type, the dataset still holds it."""
    events = _events(document)
    value: Any = events[n]
    for step in place:
        value = value[step]
    if value in ([], {}):
        return True
    if _unmapped(document["@context"], events[n], place):
        return True
    if not (len(place) == 3 and place[0] == "bizTransactionList" and place[2] == "type"):
        return False
    given = events[n]["bizTransactionList"][place[1]]
    return any(t.get("bizTransaction") == given["bizTransaction"]
               and t.get("type") == given["type"]
               for m, other in enumerate(events) if m != n
               for t in other.get("bizTransactionList", ()))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_dropping_any_field_of_any_event_changes_the_meaning(path: Path) -> None:
    """The comparison sees every field: each key (at any depth) and each list item of each
    event, dropped alone, gives another canonical dataset, unless it stated nothing in RDF
    (``_no_statement_in_rdf``): those the JSON comparison of the round trip sees."""
    source = json.loads(path.read_bytes())
    meaning = events_meaning(source)
    events = _events(source)
    tried = 0
    for n, event in enumerate(events):
        for place in _drops(event):
            mutated = copy.deepcopy(source)
            _events_in(mutated)[n] = _without(event, place)
            tried += 1
            if events_meaning(mutated) == meaning:
                assert _no_statement_in_rdf(source, n, place), (path.name, n, place)
                assert epcisstore.text(_events(mutated)) != epcisstore.text(events)
    assert tried >= 5 * len(events)


def _events_in(document: Any) -> list[Any]:
    body = document["epcisBody"]
    if document["type"] == "EPCISQueryDocument":
        found: list[Any] = body["queryResults"]["resultsBody"]["eventList"]
        return found
    events: list[Any] = body["eventList"]
    return events


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
@pytest.mark.parametrize("dropped", ["sensorElementList", "ilmd", "errorDeclaration",
                                     "persistentDisposition", "example:myField"])
def test_a_capture_that_drops_a_field_fails_the_round_trip(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, dropped: str
) -> None:
    """The check above, against a capture made to drop one field: it fails."""
    path = next(p for p in EXAMPLES if any(dropped in e for e in _events(json.loads(
        p.read_bytes()))))
    monkeypatch.setattr(epcisstore, "_NOT_KEPT", ("recordTime", "@context", dropped))
    source = json.loads(path.read_bytes())
    _, exported = round_trip(client, path.read_bytes())
    assert all(dropped not in e for e in _events(exported))
    assert events_meaning(exported) != events_meaning(source)


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_events_of_documents_binding_a_prefix_differently_keep_their_meaning(
    client: TestClient,
) -> None:
    """Two documents bind ``example:`` to different IRIs; in one export document each event
    keeps its own (its event-level @context)."""
    base = json.loads((EPCIS2 / "examples" / "Example_9.6.1-ObjectEvent.jsonld").read_bytes())
    other = copy.deepcopy(base)
    other["@context"] = [epcisjson.CONTEXT, {"example": "https://other.example.org/voc#"}]
    for event in _events_in(other):
        event["eventID"] = event["eventID"].replace("sha-256;", "sha-256;f")
    for document in (base, other):
        answer = client.post(CAPTURE, json=document)
        assert answer.status_code == 201, answer.text
    exported = client.get(EVENTS).json()
    expected = set(events_meaning(base).splitlines()) | set(events_meaning(other).splitlines())
    assert set(events_meaning(exported).splitlines()) == expected
    assert "<https://other.example.org/voc#myField>" in events_meaning(exported)
