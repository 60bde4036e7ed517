"""REGISTER decisions (RFC 3261 §10.3) as a pure function of request, bindings and `now`."""

from __future__ import annotations

import pytest

from presenced.pa.records import Binding
from presenced.registrar.bindings import (
    RegisterOutcome,
    RegistrarPolicy,
    contact_header_values,
    contact_key,
    process_register,
)
from presenced.sip.headers import parse_name_addr
from presenced.sip.message import Request, parse_message

AOR = "alice@example.com"
NOW = 1_700_000_000.0
PEER = "udp:192.0.2.10:5070"
POLICY = RegistrarPolicy()  # default 3600, min 60, max 86400, 32 contacts
C1 = "sip:alice@192.0.2.10:5070"
C2 = "sip:alice@198.51.100.1:5060;transport=tcp"


def register(
    *contacts: str, expires: int | str | None = None, call_id: str = "reg-1", cseq: int = 2
) -> Request:
    lines = [
        "REGISTER sip:example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKr",
        "From: <sip:alice@example.com>;tag=a1",
        "To: <sip:alice@example.com>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        "User-Agent: phone/1.0",
        *(f"Contact: {c}" for c in contacts),
    ]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    req = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(req, Request)
    return req


def binding(
    contact: str = C1,
    *,
    expires_in: float = 1000,
    call_id: str = "reg-1",
    cseq: int = 1,
    q: float | None = None,
) -> Binding:
    return Binding(AOR, contact, NOW + expires_in, call_id, cseq, q=q, peer=PEER)


def decide(
    req: Request, current: list[Binding] | None = None, policy: RegistrarPolicy = POLICY
) -> RegisterOutcome:
    return process_register(req, AOR, current or [], policy, NOW, PEER)


def assert_unchanged(out: RegisterOutcome, current: list[Binding]) -> None:
    assert out.puts == [] and out.deletes == []
    assert out.bindings == current


# --- adding and refreshing (§10.3 step 7) -------------------------------------------------


def test_new_contact_is_added_with_its_expiry() -> None:
    out = decide(register(f"<{C1}>", expires=1800))
    assert out.status == 200
    (b,) = out.puts
    assert b == Binding(
        AOR, C1, NOW + 1800, "reg-1", 2, q=None, peer=PEER, instance=None, user_agent="phone/1.0"
    )
    assert out.deletes == []
    assert out.bindings == [b]


def test_refresh_replaces_the_binding_with_the_new_expiry_and_cseq() -> None:
    old = binding()
    out = decide(register(f"<{C1}>", expires=600, cseq=2), [old])
    assert out.status == 200
    (b,) = out.puts
    assert (b.contact, b.expires_at, b.cseq) == (C1, NOW + 600, 2)
    assert out.deletes == []
    assert out.bindings == [b]


def test_other_bindings_are_kept() -> None:
    other = binding(C2)
    out = decide(register(f"<{C1}>", expires=600), [other])
    assert out.status == 200
    assert out.bindings == [other, *out.puts]


def test_refresh_from_another_call_id_ignores_the_stored_cseq() -> None:
    """§10.3 step 7: the CSeq check applies only when the Call-ID agrees."""
    old = binding(call_id="reg-0", cseq=99)
    out = decide(register(f"<{C1}>", cseq=1), [old])
    assert out.status == 200
    assert out.puts[0].call_id == "reg-1"


def test_contact_matching_ignores_host_case() -> None:
    """§19.1.4: the host part compares case-insensitively."""
    old = binding("sip:alice@host.example.com")
    out = decide(register("<sip:alice@HOST.Example.COM>"), [old])
    assert [b.contact for b in out.bindings] == ["sip:alice@host.example.com"]


def test_contact_key_changes_only_the_host() -> None:
    """The user part keeps its case even when it spells the host."""
    assert contact_key(parse_name_addr("<sip:HOST@HOST>")) == "sip:HOST@host"
    assert contact_key(parse_name_addr("<sip:a@EX.com.:5070;Transport=TCP>")) == (
        "sip:a@ex.com:5070;transport=TCP"
    )
    assert contact_key(parse_name_addr("<tel:+123>")) == "tel:+123"


def test_instance_id_is_kept_without_quotes() -> None:
    """RFC 5626 §4.1: +sip.instance is a quoted string."""
    out = decide(
        register(f'<{C1}>;+sip.instance="<urn:uuid:00000000-0000-0000-0000-000000000001>"')
    )
    assert out.puts[0].instance == "<urn:uuid:00000000-0000-0000-0000-000000000001>"


def test_query_without_contact_changes_nothing() -> None:
    """§10.3 step 8 / §10.2.3: a REGISTER without Contact just lists the bindings."""
    current = [binding(), binding(C2)]
    out = decide(register(), current)
    assert out.status == 200
    assert_unchanged(out, current)


# --- removing ------------------------------------------------------------------------------


def test_expires_zero_parameter_removes_the_binding() -> None:
    old, other = binding(), binding(C2)
    out = decide(register(f"<{C1}>;expires=0"), [old, other])
    assert out.status == 200
    assert out.deletes == [old]
    assert out.puts == []
    assert out.bindings == [other]


def test_expires_zero_header_removes_the_binding() -> None:
    old = binding()
    out = decide(register(f"<{C1}>", expires=0), [old])
    assert (out.status, out.deletes, out.bindings) == (200, [old], [])


def test_removing_an_unknown_contact_is_fine() -> None:
    out = decide(register(f"<{C1}>", expires=0))
    assert (out.status, out.puts, out.deletes, out.bindings) == (200, [], [], [])


# --- expiry interval (§10.2.1, §10.3 step 7) ------------------------------------------------


def test_contact_expires_parameter_beats_the_expires_header() -> None:
    old = binding()
    out = decide(register(f"<{C1}>;expires=120", expires=0), [old])
    assert out.puts[0].expires_at == NOW + 120
    assert out.deletes == []
    out = decide(register(f"<{C1}>;expires=0", expires=3600), [old])
    assert out.deletes == [old]


def test_each_contact_takes_its_own_parameter_or_the_header() -> None:
    out = decide(register(f"<{C1}>;expires=120", f"<{C2}>", expires=900))
    assert {b.contact: b.expires_at - NOW for b in out.puts} == {C1: 120, C2: 900}


def test_default_expires_applies_without_parameter_or_header() -> None:
    out = decide(register(f"<{C1}>"), policy=RegistrarPolicy(default_expires=1234))
    assert out.puts[0].expires_at == NOW + 1234


def test_too_brief_interval_gets_423_with_min_expires() -> None:
    current = [binding(C2)]
    out = decide(register(f"<{C1}>", expires=59), current)
    assert out.status == 423
    assert out.min_expires == 60
    assert_unchanged(out, current)
    assert decide(register(f"<{C1}>", expires=60)).status == 200


def test_no_423_at_one_hour_or_more_whatever_the_minimum() -> None:
    """§10.3 step 7: 423 only if the interval is smaller than one hour."""
    strict = RegistrarPolicy(min_expires=7200)
    assert decide(register(f"<{C1}>", expires=3599), policy=strict).status == 423
    out = decide(register(f"<{C1}>", expires=3600), policy=strict)
    assert out.status == 200
    assert out.puts[0].expires_at == NOW + 3600


def test_long_interval_is_capped_at_the_maximum() -> None:
    """§10.3 step 7: the registrar MAY shorten the interval."""
    out = decide(register(f"<{C1}>;expires=4294967296"), policy=RegistrarPolicy(max_expires=7200))
    assert out.puts[0].expires_at == NOW + 7200


@pytest.mark.parametrize("contact", [f"<{C1}>;expires=soon", f"<{C1}>;expires"])
def test_bad_expires_parameter_is_400(contact: str) -> None:
    out = decide(register(contact))
    assert out.status == 400


def test_bad_expires_header_is_400() -> None:
    current = [binding()]
    out = decide(register(f"<{C1}>", expires="later"), current)
    assert out.status == 400
    assert_unchanged(out, current)


# --- Contact: * (§10.3 step 6) ------------------------------------------------------------


def test_star_with_expires_zero_removes_every_binding() -> None:
    current = [binding(call_id="old"), binding(C2, call_id="other")]
    out = decide(register("*", expires=0), current)
    assert out.status == 200
    assert out.deletes == current
    assert out.puts == [] and out.bindings == []


def test_star_from_the_same_call_id_with_a_higher_cseq_removes() -> None:
    current = [binding(call_id="reg-1", cseq=1)]
    out = decide(register("*", expires=0, cseq=2), current)
    assert (out.status, out.deletes) == (200, current)


def test_star_from_the_same_call_id_without_a_higher_cseq_fails_as_a_whole() -> None:
    """§10.3 step 6: otherwise "the update MUST be aborted and the request fails"."""
    current = [binding(C2, call_id="other"), binding(call_id="reg-1", cseq=5)]
    out = decide(register("*", expires=0, cseq=5), current)
    assert out.status == 500
    assert_unchanged(out, current)


@pytest.mark.parametrize("expires", [None, 60, 3600])
def test_star_with_a_nonzero_or_missing_expires_is_400(expires: int | None) -> None:
    current = [binding()]
    out = decide(register("*", expires=expires), current)
    assert out.status == 400
    assert_unchanged(out, current)


def test_star_with_another_contact_is_400() -> None:
    current = [binding()]
    out = decide(register("*", f"<{C2}>", expires=0), current)
    assert out.status == 400
    assert_unchanged(out, current)
    out = decide(register(f"*, <{C2}>", expires=0), current)
    assert out.status == 400


def test_star_with_expires_parameter_but_no_header_is_400() -> None:
    """The Expires *header* must be zero; "*" has no parameters of its own."""
    out = decide(register("*;expires=0"))
    assert out.status == 400


# --- ordering (§10.3 step 7) ----------------------------------------------------------------


@pytest.mark.parametrize("cseq", [4, 5])
def test_out_of_order_cseq_for_the_same_call_id_is_500(cseq: int) -> None:
    current = [binding(call_id="reg-1", cseq=5)]
    out = decide(register(f"<{C1}>", cseq=cseq), current)
    assert out.status == 500
    assert_unchanged(out, current)


def test_out_of_order_removal_is_500_too() -> None:
    current = [binding(call_id="reg-1", cseq=5)]
    out = decide(register(f"<{C1}>", expires=0, cseq=3), current)
    assert out.status == 500
    assert_unchanged(out, current)


# --- q-values (§20.10) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0.0), ("0.5", 0.5), ("0.125", 0.125), ("1", 1.0), ("1.000", 1.0), ("0.", 0.0)],
)
def test_q_value_is_kept(text: str, value: float) -> None:
    out = decide(register(f"<{C1}>;q={text}"))
    assert out.status == 200
    assert out.puts[0].q == value


def test_missing_q_is_none() -> None:
    assert decide(register(f"<{C1}>")).puts[0].q is None


@pytest.mark.parametrize(
    "text", ["1.5", "2", "abc", "nan", "1e-1", "0.5000", "-0", "0_1", "inf", None]
)
def test_bad_q_value_is_400(text: str | None) -> None:
    """qvalue = ("0" ["." 0*3DIGIT]) / ("1" ["." 0*3("0")]) (§25.1)."""
    current = [binding()]
    param = "q" if text is None else f"q={text}"
    out = decide(register(f"<{C1}>;{param}"), current)
    assert out.status == 400
    assert_unchanged(out, current)


# --- limits and bad input -----------------------------------------------------------------


def test_too_many_contacts_is_403() -> None:
    policy = RegistrarPolicy(max_contacts=2)
    current = [binding(C1), binding(C2)]
    out = decide(register("<sip:alice@203.0.113.5>"), current, policy)
    assert out.status == 403
    assert_unchanged(out, current)
    # Refreshing an existing one, or replacing one while removing another, stays in bounds.
    assert decide(register(f"<{C1}>"), current, policy).status == 200
    out = decide(register("<sip:alice@203.0.113.5>", f"<{C2}>;expires=0"), current, policy)
    assert out.status == 200
    assert len(out.bindings) == 2


def test_unparseable_contact_is_400() -> None:
    current = [binding()]
    out = decide(register("<sip:alice@"), current)
    assert out.status == 400
    assert out.reason is not None and out.reason.startswith("Bad Request (")
    assert_unchanged(out, current)


# --- the 200's Contact list (§10.3 step 8) -------------------------------------------------


def test_contact_header_values_list_the_remaining_seconds() -> None:
    bindings = [
        binding(C1, expires_in=100.4),
        binding(C2, expires_in=100.6, q=0.5),
        binding("sip:gone@h", expires_in=-3),
    ]
    assert contact_header_values(bindings, NOW) == [
        f"<{C1}>;expires=100",
        f"<{C2}>;expires=101;q=0.5",
        "<sip:gone@h>;expires=0",
    ]


def test_contact_header_values_parse_back_as_contacts() -> None:
    (value,) = contact_header_values([binding(C2, q=1.0)], NOW)
    na = parse_name_addr(value)
    assert str(na.uri) == C2
    assert na.params == {"expires": "1000", "q": "1"}
