"""The atheris harnesses (atheris_targets.py, which `make fuzz` runs where atheris installs) run in
CI without atheris: every target on each of its seeds and on a few edge inputs, so a harness
that an API change broke fails here rather than at the next `make fuzz`. The seeds are also
the corpus `make fuzz` starts from."""

from __future__ import annotations

import re
import shutil
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from floorsync.devices.keymap import KeyDecoder
from tests.fuzz import atheris_targets as harness

ROOT = Path(__file__).resolve().parents[2]
EDGES = [b"", b"\x00", b"\n", b"\xff" * 64, bytes(range(256)), b"{" * 2000 + b"}" * 2000]


@pytest.fixture(scope="module", autouse=True)
def prepared() -> Iterator[None]:
    harness.prepare()
    yield
    shutil.rmtree(harness._TMP, ignore_errors=True)


def test_the_harness_imports_without_atheris() -> None:
    """Imported above, prepared, every target run below: atheris is imported by main only."""
    assert "atheris" not in sys.modules


def test_every_target_has_seeds_and_make_fuzz_runs_it() -> None:
    assert set(harness.SEEDS) == set(harness.TARGETS)
    assert all(harness.SEEDS[name] for name in harness.TARGETS)
    makefile = (ROOT / "Makefile").read_text()
    found = re.search(r"^FUZZ_TARGETS\s*\?=\s*(.+)$", makefile, re.MULTILINE)
    assert found and found.group(1).split() == list(harness.TARGETS)


@pytest.mark.parametrize("name", harness.TARGETS)
def test_target_runs_on_its_seeds_and_edge_inputs(name: str) -> None:
    target = harness.TARGETS[name]
    for data in [*harness.SEEDS[name], *EDGES]:
        target(data)  # an AssertionError or any exception here is what atheris calls a crash


def test_the_wedge_seed_is_a_scan() -> None:
    """The one seed made here rather than written out: it decodes to a code, so the fuzzer
    starts from the path that succeeds."""
    seed = harness.SEEDS["wedge"][0]
    body = seed[1:]
    events = [struct.unpack_from("<BHhf", body, i) for i in range(0, len(body) - 8, 9)]
    codes = KeyDecoder("us", terminators=("enter", "tab")).feed_events(events)
    assert [(c.text, c.error) for c in codes] == [("123", None)]


def test_a_broken_target_fails_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """What this test catches: a target whose module lost a name it uses."""
    import floorsync.edge.wire

    monkeypatch.delattr(floorsync.edge.wire, "decode_ack")
    with pytest.raises(AttributeError, match="decode_ack"):
        harness.TARGETS["wire"](harness.SEEDS["wire"][0])


def test_main_names_the_targets_without_atheris(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match=r"usage: .* TARGET.*targets: framing, wedge"):
        harness.main(["atheris_targets", "no-such-target"])
