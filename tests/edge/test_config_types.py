"""A setting of the wrong type is refused with its name and what it must be."""

from __future__ import annotations

from pathlib import Path

import pytest

from floorsync.edge import config
from floorsync.edge.errors import ConfigError


@pytest.mark.parametrize(("text", "message"), [
    ("[outbox]\ncap_mb = []", "[outbox] cap_mb must be a number, not []"),
    ("[outbox]\npath = false", "[outbox] path must be text, not False"),
    ('[journal]\ncap_mb = "big"', "[journal] cap_mb must be a number, not 'big'"),
    ("[sync]\nbroker = []", "[sync]: broker must be text, not []"),
    ("[sync]\nbatch_size = true", "[sync]: batch_size must be a whole number, not True"),
    ("[sync]\nbatch_size = 2.5", "[sync]: batch_size must be a whole number, not 2.5"),
    ('[[scanners]]\nname = "s1"\nport = "/dev/ttyACM0"\nbaudrate = "fast"',
     "[[scanners]] #1: baudrate must be a whole number, not 'fast'"),
    ("site = 5", "top level: site must be text, not 5"),
    ("[workflow]\ncommand_prefix = 3", "[workflow] command_prefix must be text, not 3"),
])
def test_a_setting_of_the_wrong_type_is_named(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert message in str(caught.value)


@pytest.mark.parametrize("text", [
    "[outbox]\ncap_mb = 64",  # a whole number where a number is asked
    "[sync]\nlinger_s = 1",
    '[journal]\ndir = "/var/lib/floorsync/journal"',
])
def test_values_of_the_right_type_load(text: str, tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(text + "\n")
    config.load(path)


def test_a_long_value_is_shown_shortened(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text("[sync]\nbatch_size = '" + "y" * 100 + "'\n")
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert "batch_size must be a whole number, not 'yyyy" in str(caught.value)
    assert str(caught.value).endswith("...") and "y" * 40 not in str(caught.value)
