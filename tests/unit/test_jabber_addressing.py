"""SIP <-> XMPP addressing of the jabber gateway (Kamailio xmpp module compatible)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from presenced.jabber.addressing import Addressing, Unmappable, bare_jid, split_jid

GW = "sip-gw.example.com"
COMP = "gw.jabber.test"


@pytest.fixture
def addr() -> Addressing:
    return Addressing(GW, COMP, domains={"sip.example.org": "xmpp.example.org"})


# -- XMPP users seen from SIP (separator scheme) ----------------------------------------------


@pytest.mark.parametrize(
    ("sip", "jid"),
    [
        (f"sip:juliet*jabber.test@{GW}", "juliet@jabber.test"),
        (f"sips:juliet*jabber.test@{GW}", "juliet@jabber.test"),
        (f"juliet*jabber.test@{GW}", "juliet@jabber.test"),
        (f"<sip:juliet*jabber.test@{GW}>", "juliet@jabber.test"),
        # scheme and host are case-insensitive; the user part is not (see below)
        ("SIP:juliet*jabber.test@SIP-GW.example.com", "juliet@jabber.test"),
        (f"sip:juliet*jabber.test@{GW}:5060;transport=tcp?subject=x", "juliet@jabber.test"),
        # the last separator splits: the user may contain the separator itself
        (f"sip:ro*meo*jabber.test@{GW}", "ro*meo@jabber.test"),
        # percent-escapes in the SIP user part (RFC 3261 §19.1.2) are decoded
        (f"sip:j%C3%BCliet*jabber.test@{GW}", "jüliet@jabber.test"),
    ],
)
def test_sip_to_jid_separator_scheme(addr: Addressing, sip: str, jid: str) -> None:
    assert addr.sip_to_jid(sip) == jid


@pytest.mark.parametrize(
    ("jid", "sip"),
    [
        ("juliet@jabber.test", f"sip:juliet*jabber.test@{GW}"),
        ("Juliet@Jabber.Test/balcony", f"sip:juliet*jabber.test@{GW}"),
        ("jüliet@jabber.test", f"sip:j%C3%BCliet*jabber.test@{GW}"),
        ("a#b@jabber.test", f"sip:a%23b*jabber.test@{GW}"),
    ],
)
def test_jid_to_sip_separator_scheme(addr: Addressing, jid: str, sip: str) -> None:
    assert addr.jid_to_sip(jid) == sip
    assert addr.sip_to_jid(sip) == bare_jid(jid)


def test_custom_separator_is_escaped_in_sip_and_split_on_the_way_back() -> None:
    a = Addressing(GW, COMP, separator="#")
    sip = a.jid_to_sip("juliet@jabber.test")
    assert sip == f"sip:juliet%23jabber.test@{GW}"
    assert a.sip_to_jid(sip) == "juliet@jabber.test"
    assert a.sip_user_as_jid("sip:alice@example.com") == f"alice#example.com@{COMP}"
    assert a.jid_as_sip_user(f"alice#example.com@{COMP}") == "sip:alice@example.com"
    # with "#" as separator, "*" is an ordinary character
    assert a.sip_to_jid(f"sip:juliet*jabber.test@{GW}") is None


# -- direct addressing -------------------------------------------------------------------------


def test_direct_domains_map_both_ways_and_win_over_the_separator_form(addr: Addressing) -> None:
    assert addr.sip_to_jid("sip:juliet@sip.example.org") == "juliet@xmpp.example.org"
    assert addr.jid_to_sip("juliet@xmpp.example.org/phone") == "sip:juliet@sip.example.org"
    # the separator form still works for the same XMPP domain
    assert addr.sip_to_jid(f"sip:juliet*xmpp.example.org@{GW}") == "juliet@xmpp.example.org"


def test_sip_domain_that_is_neither_gateway_nor_mapped_is_not_an_xmpp_user(
    addr: Addressing,
) -> None:
    assert addr.sip_to_jid("sip:juliet*jabber.test@example.com") is None
    assert addr.sip_to_jid("sip:alice@example.com") is None


# -- SIP users seen from XMPP ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aor", "jid"),
    [
        ("sip:alice@example.com", f"alice*example.com@{COMP}"),
        ("alice@example.com", f"alice*example.com@{COMP}"),
        ("sip:alice@Example.COM;transport=udp", f"alice*example.com@{COMP}"),
        ("sip:Alice@example.com", None),  # RFC 3261 §19.1.4: "Alice" is not "alice"
        ("sip:al%20ice@example.com", None),  # a space cannot be in a JID localpart
        ("sip:alice@[::1]", None),  # ':' cannot be in a JID localpart
    ],
)
def test_sip_user_as_jid(addr: Addressing, aor: str, jid: str | None) -> None:
    assert addr.sip_user_as_jid(aor) == jid


@pytest.mark.parametrize(
    ("jid", "aor"),
    [
        (f"alice*example.com@{COMP}", "sip:alice@example.com"),
        ("Alice*Example.com@GW.Jabber.Test/res", "sip:alice@example.com"),
        (f"a*b*example.com@{COMP}", "sip:a*b@example.com"),
        (f"alice@{COMP}", None),  # no separator
        (f"*example.com@{COMP}", None),  # empty user
        (f"alice*@{COMP}", None),  # empty domain
        ("alice*example.com@jabber.test", None),  # not our component
        (COMP, None),  # the component itself
    ],
)
def test_jid_as_sip_user(addr: Addressing, jid: str, aor: str | None) -> None:
    assert addr.jid_as_sip_user(jid) == aor


def test_component_jids_are_not_xmpp_users_and_do_not_loop(addr: Addressing) -> None:
    assert addr.jid_to_sip(f"alice*example.com@{COMP}") is None
    assert addr.sip_to_jid(f"sip:alice*example.com*{COMP}@{GW}") is None


# -- garbage -----------------------------------------------------------------------------------

GARBAGE = [
    "",
    "sip:",
    "sip:@",
    f"sip:@{GW}",
    f"sip:juliet@{GW}",
    f"sip:*jabber.test@{GW}",
    f"sip:juliet*@{GW}",
    f"sip:juliet*bad domain@{GW}",
    f"sip:juliet*bad..domain@{GW}",
    f"sip:ju<liet*jabber.test@{GW}",
    f"sip:juliet%ZZ*jabber.test@{GW}",
    f"sip:juliet%FF*jabber.test@{GW}",  # not UTF-8 once decoded
    "tel:+15551234",
    "xmpp:juliet@jabber.test",
    "sip:juliet*jabber.test@[::1",
    "@@@",
    "/",
    "\x00",
]


@pytest.mark.parametrize("text", GARBAGE)
def test_garbage_gives_none_never_an_exception(addr: Addressing, text: str) -> None:
    assert addr.sip_to_jid(text) is None
    assert addr.jid_as_sip_user(text) is None
    # the same strings read as JIDs
    result = addr.jid_to_sip(text)
    assert result is None or result.startswith("sip:")


@pytest.mark.parametrize(
    "jid", ["a@b/", "@b", "a b@c", "a@b c", "a@", "a\x01@b", "x" * 1100 + "@b"]
)
def test_invalid_jids_are_rejected(jid: str) -> None:
    assert split_jid(jid) is None
    assert Addressing(GW, COMP).jid_to_sip(jid) is None


def test_non_string_input_gives_none(addr: Addressing) -> None:
    assert addr.sip_to_jid(None) is None
    assert addr.jid_to_sip(None) is None
    assert addr.sip_user_as_jid(42) is None
    assert addr.jid_as_sip_user(b"x@y") is None


@pytest.mark.parametrize("sep", ["", "**", "@", "/", ".", "-", "a", "1", " ", "%"])
def test_unusable_separator_is_a_configuration_error(sep: str) -> None:
    with pytest.raises(ValueError, match="separator"):
        Addressing(GW, COMP, separator=sep)


def test_invalid_domains_are_configuration_errors() -> None:
    with pytest.raises(ValueError, match="gateway_domain"):
        Addressing("bad domain", COMP)
    with pytest.raises(ValueError, match="component"):
        Addressing(GW, "")
    with pytest.raises(ValueError, match="domains"):
        Addressing(GW, COMP, domains={"ok.example": "not ok"})


# -- properties --------------------------------------------------------------------------------

_label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
_domain = st.lists(_label, min_size=1, max_size=4).map(".".join)
_local = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp", "Lu", "Lt"),
        blacklist_characters="\"&'/:<>@\x85\xa0",
    ),
    min_size=1,
    max_size=20,
).filter(lambda s: s == s.casefold() and not any(c.isspace() for c in s))


@given(_local, _domain)
def test_xmpp_user_round_trips_through_sip(local: str, domain: str) -> None:
    a = Addressing(GW, COMP)
    jid = f"{local}@{domain}"
    sip = a.jid_to_sip(jid)
    assert sip is not None
    assert a.sip_to_jid(sip) == jid


@given(_local.filter(lambda s: "*" not in s), _domain)
def test_sip_user_round_trips_through_the_component(user: str, domain: str) -> None:
    a = Addressing(GW, COMP)
    jid = a.sip_user_as_jid(f"{user}@{domain}")
    if jid is None:  # users with characters a JID cannot hold have no JID
        return
    aor = a.jid_as_sip_user(jid)
    assert aor is not None
    assert a.sip_user_as_jid(aor) == jid


@given(st.text(max_size=60))
def test_arbitrary_text_never_raises(text: str) -> None:
    a = Addressing(GW, COMP, domains={"sip.example.org": "xmpp.example.org"})
    for fn in (a.sip_to_jid, a.jid_to_sip, a.sip_user_as_jid, a.jid_as_sip_user):
        out = fn(text)
        assert out is None or isinstance(out, str)
    for fn2 in (split_jid, bare_jid):
        fn2(text)


# -- faithful mapping or a refusal (RFC 3261 §19.1.4 vs RFC 7622 §3.3) -------------------------


@pytest.mark.parametrize(
    ("sip", "status"),
    [
        (f"sip:Juliet*jabber.test@{GW}", 404),  # would fold onto juliet@jabber.test
        (f"sip:juliet*Jabber.TEST@{GW}", 404),  # the domain inside the user part too
        (f"sip:stra%C3%9Fe*jabber.test@{GW}", 404),  # "ß" folds to "ss": not faithful
        (f"sip:ju%22liet*jabber.test@{GW}", 404),  # '"' cannot be in a localpart
        (f"sip:ju%2Fliet*jabber.test@{GW}", 404),
        (f"sip:juliet%00*jabber.test@{GW}", 400),  # %00 decodes to NUL
        (f"sip:juliet%0D%0A*jabber.test@{GW}", 400),
        (f"sip:juliet%ZZ*jabber.test@{GW}", 400),
        (f"sip:juliet@{GW}", 404),  # no separator: no XMPP user
        ("sip:Juliet@sip.example.org", 404),  # direct addressing keeps the rule
        ("sip:juliet@example.net", 404),
    ],
)
def test_unfaithful_sip_user_parts_are_refused_with_a_status(
    addr: Addressing, sip: str, status: int
) -> None:
    found = addr.lookup_jid(sip)
    assert isinstance(found, Unmappable), found
    assert found.status == status
    assert addr.sip_to_jid(sip) is None


def test_two_sip_users_differing_in_case_never_share_a_jid(addr: Addressing) -> None:
    assert addr.sip_to_jid(f"sip:juliet*jabber.test@{GW}") == "juliet@jabber.test"
    assert addr.sip_to_jid(f"sip:JULIET*jabber.test@{GW}") is None
    assert addr.sip_user_as_jid("sip:alice@example.com") == f"alice*example.com@{COMP}"
    assert addr.sip_user_as_jid("sip:ALICE@example.com") is None


def test_presentity_keys_are_not_decoded_twice(addr: Addressing) -> None:
    # SipUri.aor already decoded "jul%2569et" into "jul%69et": a second decoding would make
    # it "juliet", another SIP user.
    assert addr.presentity_to_jid(f"juliet*jabber.test@{GW}") == "juliet@jabber.test"
    found = addr.presentity_to_jid(f"jul%69et*jabber.test@{GW}")
    assert found == "jul%69et@jabber.test"
    assert addr.presentity_to_jid(f"jul\x00iet*jabber.test@{GW}") == Unmappable(
        400, "control character in user part"
    )
    assert isinstance(addr.presentity_to_jid(f"Juliet*jabber.test@{GW}"), Unmappable)
    assert isinstance(addr.presentity_to_jid("no-host"), Unmappable)


def test_reverse_direction_refuses_localparts_xmpp_would_not_fold_like_us(
    addr: Addressing,
) -> None:
    # XMPP keeps "ß" (RFC 8265 toLower); casefold would turn it into "ss", another user.
    assert addr.jid_to_sip("straße@jabber.test") is None
    assert addr.jid_as_sip_user(f"straße*example.com@{COMP}") is None
    # Upper case in a JID is the same JID (RFC 7622 §3.3): mapped to the lower-case SIP user.
    assert addr.jid_as_sip_user(f"ALICE*example.com@{COMP}") == "sip:alice@example.com"


def test_routed_presentity_in_a_served_domain_maps_by_separator_or_domains_map(
    addr: Addressing,
) -> None:
    """A routing script chose "jabber" for an address in a served SIP domain: the JID comes
    from the user part's separator form, or the [jabber.domains] map, whatever the host."""
    assert isinstance(addr.presentity_to_jid("viola*jabber.test@example.com"), Unmappable)
    assert addr.presentity_to_jid("viola*jabber.test@example.com", routed=True) == "viola@jabber.test"
    assert addr.presentity_to_jid("viola@sip.example.org", routed=True) == "viola@xmpp.example.org"
    # No separator and no mapped domain: still no XMPP address; our component never loops.
    assert isinstance(addr.presentity_to_jid("viola@example.com", routed=True), Unmappable)
    assert isinstance(addr.presentity_to_jid(f"a*{COMP}@example.com", routed=True), Unmappable)
