"""The records that write their `__init__` out (init=False, so mypyc compiles it) must still
take and set every field, in the declared order, with the declared defaults: a field added to
the class and forgotten in `__init__` would otherwise be missing at run time."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from presenced.pa import routing, subscription
from presenced.sip import dialog, endpoint, headers, transaction, uri

WRITTEN_OUT = [
    endpoint.Peer, endpoint.Transmit, endpoint.RequestReceived, endpoint.ResponseReceived,
    uri.SipUri, headers.NameAddr, headers.Via, headers.CSeq, headers.EventHeader,
    dialog.InDialogRoute, transaction.ClientResult, subscription.Reply, subscription.Persist,
    subscription.Forget, subscription.SendNotify, subscription.WatchStarted,
    subscription.WatchStopped, routing.Route,
]


def _modules() -> list[object]:
    return [endpoint, uri, headers, dialog, transaction, subscription, routing]


def test_the_list_holds_every_record_with_a_written_out_init() -> None:
    """So the parametrized test below cannot miss one added later."""
    found = {cls for mod in _modules() for cls in vars(mod).values()
             if isinstance(cls, type) and dataclasses.is_dataclass(cls)
             and cls.__module__ == mod.__name__  # type: ignore[attr-defined]
             and not cls.__dataclass_params__.init}  # type: ignore[attr-defined]
    assert found == set(WRITTEN_OUT)


@pytest.mark.pure_python  # a compiled __init__ shows no signature; it is the same source
@pytest.mark.parametrize("cls", WRITTEN_OUT, ids=lambda c: c.__name__)
def test_init_takes_every_field_in_order_with_its_default(cls: type) -> None:
    fields = dataclasses.fields(cls)
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert [p.name for p in params] == [f.name for f in fields]
    for f, p in zip(fields, params, strict=True):
        if f.default is not dataclasses.MISSING:
            assert p.default == f.default, f.name
        elif f.default_factory is not dataclasses.MISSING:
            assert p.default is None, f.name  # None stands for a fresh one
        else:
            assert p.default is inspect.Parameter.empty, f.name


@pytest.mark.pure_python  # hands each field a bare object(), which compiled code refuses
@pytest.mark.parametrize("cls", WRITTEN_OUT, ids=lambda c: c.__name__)
def test_init_sets_every_field(cls: type) -> None:
    fields = dataclasses.fields(cls)
    values = {f.name: object() for f in fields}
    obj = cls(**values)
    for f in fields:
        assert getattr(obj, f.name) is values[f.name], f.name
