"""The security group runs the real server through the shared integration harness."""

from harness import SipClient


def test_security_group_reaches_the_real_server(server, sip_client) -> None:
    c: SipClient = sip_client("udp")
    r = c.request("OPTIONS", server.uri())
    assert r.status == 200
