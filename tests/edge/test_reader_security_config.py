"""The network readers' credentials and TLS files in the edge TOML: loaded, checked, wired."""

from __future__ import annotations

from pathlib import Path

import pytest

from floorsync.devices.rfid.http_receiver import HttpTagReceiver
from floorsync.devices.rfid.mqtt_reader import MqttTagReader
from floorsync.edge import config as edge_config
from floorsync.edge.errors import ConfigError
from floorsync.edge.readers import make_tag_reader
from tests.security.pki import TestCA


def load(tmp_path: Path, portal: str) -> edge_config.EdgeConfig:
    path = tmp_path / "edge.toml"
    path.write_text('site = "wh1"\ndevice = "door-01"\n[[portals]]\nname = "door-01"\n'
                    f'location = "DOCK-1"\n{portal}\n')
    return edge_config.load(path)


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA.create(tmp_path / "pki")


def test_mqtt_reader_with_tls_and_login(tmp_path: Path, ca: TestCA) -> None:
    device = ca.client("door-01")
    config = load(tmp_path, f'''reader = "zebra-mqtt"
broker = "mqtts://reader-broker.dock:8883"
topic = "wh1/zebra/door-01/data"
username = "door-01"
password = "reader-broker-pw"
ca_file = "{ca.cert}"
cert_file = "{device.cert}"
key_file = "{device.key}"''')
    portal = config.portals[0]
    assert "reader-broker-pw" not in repr(portal) and "reader-broker-pw" not in repr(config)
    reader = make_tag_reader(portal, lambda reason, raw: None, config.reader_client_id(portal))
    assert isinstance(reader, MqttTagReader)
    assert (reader.host, reader.port) == ("reader-broker.dock", 8883)
    assert reader.username == "door-01" and reader.password == "reader-broker-pw"
    assert reader.tls_context is not None and reader.tls_context.check_hostname


def test_http_receiver_with_https_and_credentials(tmp_path: Path, ca: TestCA) -> None:
    server = ca.server("edge-host")
    config = load(tmp_path, f'''reader = "impinj-http"
http_port = 8443
username = "impinj"
password = "webhook-pw"
token = "tok-1234567890abcdef"
cert_file = "{server.cert}"
key_file = "{server.key}"
max_body_mb = 2''')
    portal = config.portals[0]
    assert "tok-1234567890abcdef" not in repr(portal)
    reader = make_tag_reader(portal, lambda reason, raw: None)
    assert isinstance(reader, HttpTagReceiver)
    assert reader.scheme == "https" and reader.max_body == 2 * 1024 * 1024
    assert reader._unauthorized("Bearer tok-1234567890abcdef") is None
    assert reader._unauthorized("Bearer nope") == "wrong token"


@pytest.mark.parametrize(("portal", "message"), [
    ('reader = "impinj-mqtt"\nbroker = "mqtt://127.0.0.1"\ntopic = "t"\ntoken = "abcdefgh"',
     "token is for HTTP readers"),
    ('reader = "impinj-mqtt"\nbroker = "mqtt://127.0.0.1"\ntopic = "t"\nca_file = "{ca}"',
     "ca_file need an mqtts:// broker"),
    ('reader = "zebra-http"\nca_file = "{ca}"', "ca_file is for MQTT readers"),
    ('reader = "zebra-http"\nusername = "fx"', "username and password go together"),
    ('reader = "zebra-http"\nkey_file = "{ca}"', "key_file needs cert_file"),
    ('reader = "serial"\nport = "/dev/ttyUSB0"\npassword = "x"\nusername = "y"',
     "only apply to the network readers"),
    ('reader = "zebra-http"\ncert_file = "/nonexistent/edge.crt"', "no such file"),
    ('reader = "zebra-http"\nmax_body_mb = 0', "max_body_mb must be a number of MiB"),
    ('reader = "zebra-http"\ntoken = ""', "token must be non-empty text"),
    ('reader = "zebra-http"\npassword = 5\nusername = "u"',
     "password must be text, not a value of type int"),
])
def test_settings_that_cannot_work_are_refused(tmp_path: Path, ca: TestCA, portal: str,
                                               message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, portal.replace("{ca}", str(ca.cert)))


def test_a_certificate_that_does_not_match_its_key_is_a_config_error(
    tmp_path: Path, ca: TestCA
) -> None:
    one, other = ca.server("one"), ca.server("other")
    config = load(tmp_path, f'reader = "zebra-http"\ncert_file = "{one.cert}"\n'
                            f'key_file = "{other.key}"')
    with pytest.raises(ConfigError, match=r"portal door-01: .*cannot use certificate"):
        make_tag_reader(config.portals[0], lambda reason, raw: None)


def test_a_secret_of_the_wrong_type_is_not_echoed(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text('[[portals]]\nname = "d1"\nlocation = "DOOR-1"\nreader = "zebra-mqtt"\n'
                    'broker = "mqtt://127.0.0.1:1883"\ntopic = "t"\nusername = "u"\n'
                    'password = 918273645\n')
    with pytest.raises(ConfigError) as caught:
        edge_config.load(path)
    assert "password must be text" in str(caught.value)
    assert "918273645" not in str(caught.value)
