"""[server] listen for tls:, ws:, wss: and the [tls] section: paths resolved against the config
file, one error naming the key for a missing, broken or mismatched file."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from presenced.config import ConfigError, ListenAddress, parse_config, parse_listen


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    other = trustme.CA().issue_cert("127.0.0.1")
    other.private_key_pem.write_to_path(str(tmp_path / "other.key"))
    return tmp_path


@pytest.mark.parametrize("text", ["tls:127.0.0.1:5061", "ws:127.0.0.1:8080", "wss:[::1]:8443"])
def test_stream_listen_entries_round_trip(text: str) -> None:
    addr = parse_listen(text)
    assert str(addr) == text
    assert addr.transport == text.split(":", 1)[0]


def test_tls_paths_resolve_against_the_config_directory(pem: Path) -> None:
    cfg = parse_config('[server]\nlisten = ["tls:127.0.0.1:5061", "wss:127.0.0.1:8443"]\n'
                       '[tls]\ncertificate = "cert.pem"\nprivate_key = "key.pem"\n'
                       'ca_file = "ca.pem"\nverify_client = true\n', pem)
    assert cfg.tls is not None
    assert cfg.tls.certificate == str(pem / "cert.pem")
    assert cfg.tls.ca_file == str(pem / "ca.pem")
    assert cfg.tls.verify_server is True
    assert cfg.server.listen_addresses[0] == ListenAddress("tls", "127.0.0.1", 5061)


@pytest.mark.parametrize(("tls", "key"), [
    ('certificate = "nope.pem"\nprivate_key = "key.pem"', "tls.certificate"),
    ('certificate = "key.pem"\nprivate_key = "key.pem"', "tls.certificate"),
    ('certificate = "cert.pem"\nprivate_key = "cert.pem"', "tls.private_key"),
    ('certificate = "cert.pem"\nprivate_key = "other.key"', "tls.private_key"),
    ('certificate = "cert.pem"\nprivate_key = "key.pem"\nca_file = "key.pem"', "tls.ca_file"),
    ('certificate = "cert.pem"\nprivate_key = "key.pem"\nverify_client = true', "tls.verify_client"),
    ('certificate = "cert.pem"', "tls.private_key"),
])
def test_bad_tls_files_are_one_error_naming_the_key(pem: Path, tls: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f'[server]\nlisten = ["tls:127.0.0.1:5061"]\n[tls]\n{tls}\n', pem)
    assert err.value.key == key, str(err.value)


@pytest.mark.parametrize("transport", ["tls", "wss"])
def test_secure_listener_without_tls_section_is_refused(transport: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f'[server]\nlisten = ["{transport}:127.0.0.1:5061"]\n', tmp_path)
    assert err.value.key == "tls"


def test_plain_websocket_needs_no_certificate(tmp_path: Path) -> None:
    cfg = parse_config('[server]\nlisten = ["ws:127.0.0.1:8080"]\nwebsocket_ping_interval = 20\n',
                       tmp_path)
    assert cfg.tls is None and cfg.server.websocket_ping_interval == 20


@pytest.mark.parametrize(("uri", "flow", "expected"), [
    ("sips:proxy@10.0.0.1:5061", "tcp", "tls"),
    ("sips:proxy@10.0.0.1:5061;transport=tcp", "udp", "tls"),
    ("sips:proxy@10.0.0.1:8443;transport=ws", "ws", "wss"),
    ("sip:proxy@10.0.0.1:5061", "tls", "tls"),
    ("sip:proxy@10.0.0.1;transport=tcp", "tls", "tcp"),
])
def test_hop_of_a_sips_uri_is_reached_over_tls_or_wss(uri: str, flow: str, expected: str) -> None:
    from presenced.sip.dialog import hop_of
    from presenced.sip.endpoint import Peer

    assert hop_of(uri, Peer(flow, "10.9.9.9", 5060)).transport == expected
