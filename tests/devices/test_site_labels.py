"""Site-specific location labels: prefixes and patterns from the site's configuration."""

from __future__ import annotations

import pytest

from floorsync.devices.codes import interpret

BINS = (r"[A-Z]-\d{2}-\d{2}", r"BIN (?P<location>[A-Z]{2}\d{3})")


@pytest.mark.parametrize(
    ("code", "location"),
    [("A-01-02", "A-01-02"), ("BIN ZZ123", "ZZ123"), ("  B-10-99\r\n", "B-10-99"),
     ("LOC:DOCK-1", "DOCK-1")],
)
def test_location_labels_by_pattern_or_prefix(code: str, location: str) -> None:
    identity = interpret(code, location_patterns=BINS)
    assert (identity.kind, identity.location, identity.error) == ("location", location, None)


@pytest.mark.parametrize("code", ["A-1-02", "a-01-02", "BIN Z1", "A-01-02-03"])
def test_near_misses_are_not_locations(code: str) -> None:
    assert interpret(code, location_patterns=BINS).kind != "location"


def test_items_still_read_as_items_beside_patterns() -> None:
    identity = interpret("0109501101530003", "]C1", location_patterns=BINS)
    assert (identity.kind, identity.gtin) == ("item", "09501101530003")


def test_a_broken_pattern_gives_unknown_not_an_exception() -> None:
    identity = interpret("A-01-02", location_patterns=("[",))
    assert identity.kind == "unknown" and identity.error
