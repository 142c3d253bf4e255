"""The GS1 EPCIS 2.0 files the service and its tests use are the published ones, byte for byte:
pinned by SHA-256 here, and equal to the project's shared copy
(``../shared/standards/epcis2/``) where that folder is beside the repository. A changed file
fails here before any test that relies on it can pass on a different standard."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from floorsync.server import epcisread

ROOT = Path(__file__).resolve().parents[2]
STANDARDS = ROOT / "server" / "standards"
DATA = ROOT / "tests" / "data" / "epcis2"
SHARED = ROOT.parent / "shared" / "standards" / "epcis2"

# GS1 EPCIS repository, commit 2b888be
PINNED = {
    STANDARDS / "EPCIS-JSON-Schema.json":
        "ed3228d7867198b4a5be9748fe77f473457c6ed98224fab28a950b4ce634a041",
    STANDARDS / "epcis-context.jsonld":  # JSON-LD-Context/epcis-context-root.jsonld
        "e75ba2186bc4b12a1cf575f2d2038d84bfa60b3e5950895686d11ef37c99b772",
    DATA / "contexts" / "cbv-context-bizstep.jsonld":
        "d3af98b70b5aefa5b3879ab706ebd74d32a3eaaf0aeb4345adf8ed8bb316cd25",
    DATA / "contexts" / "cbv-context-biztransaction-type.jsonld":
        "4c61e71959d24620a03e26bb02dc431953944cd44bd7289dcad3fd5244b376ed",
    DATA / "contexts" / "cbv-context-component.jsonld":
        "0e110668b205a9c158bc4ddacea9074004f0c46c10e4d8aee6b2eb8a39b039d4",
    DATA / "contexts" / "cbv-context-disposition.jsonld":
        "5f2a5ca9218d76a822d705eb7d8fc3ac11f764b3471b0408c903a2eacccb027a",
    DATA / "contexts" / "cbv-context-error-reason.jsonld":
        "1f18de2b6dbd747b10ece6be5a5eff35ef94a51df46ce856d25a7c6319ff1628",
    DATA / "contexts" / "cbv-context-sourcedest-type.jsonld":
        "547100c43e6b15fd0c82b063aae18e4911b560fe634c3e16320e18984f66b930",
    DATA / "contexts" / "gs1-context-measurement-type.jsonld":
        "a2bbf724dfc4330215afeefd02567a71238f2f5ff11261ec2d1b7acbf84763c8",
    DATA / "contexts" / "gs1-context-sensor-alert-type.jsonld":
        "b3ee3138945d1f6482dff16d67a66bc4ceec90a5f50e4d2460bfed526101b23d",
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("path", sorted(PINNED), ids=lambda p: p.name)
def test_each_file_is_the_published_one(path: Path) -> None:
    assert _sha256(path) == PINNED[path]


def test_every_context_the_epcis_context_names_is_pinned() -> None:
    text = (STANDARDS / "epcis-context.jsonld").read_text(encoding="utf-8")
    named = {part.split('"')[0] for part in text.split('"https://gs1.github.io/EPCIS/')[1:]}
    assert named == {p.name for p in PINNED if p.parent == DATA / "contexts"}


def test_the_service_validates_with_the_pinned_schema() -> None:
    """What the installed package reads (importlib.resources) is the pinned file."""
    digest = hashlib.sha256(
        (STANDARDS / "EPCIS-JSON-Schema.json").read_bytes()).hexdigest()
    assert digest == PINNED[STANDARDS / "EPCIS-JSON-Schema.json"]
    assert epcisread.schema() == json.loads(
        (STANDARDS / "EPCIS-JSON-Schema.json").read_text(encoding="utf-8"))


def test_the_shipped_files_and_examples_equal_the_shared_copy() -> None:
    if not SHARED.is_dir():
        pytest.skip(f"no shared standards folder at {SHARED}: the SHA-256 pins above hold")
    for name in ("EPCIS-JSON-Schema.json", "epcis-context.jsonld"):
        assert (STANDARDS / name).read_bytes() == (SHARED / name).read_bytes(), name
    ours = sorted(p.name for p in (DATA / "examples").iterdir())
    theirs = sorted(p.name for p in (SHARED / "examples").iterdir())
    assert ours == theirs
    for name in ours:
        assert (DATA / "examples" / name).read_bytes() == (
            SHARED / "examples" / name).read_bytes(), name
