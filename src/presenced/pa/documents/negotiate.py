"""Choosing the body format of a presence subscription from its Accept header, and encoding it.

Rules (RFC 3261 §20.1 for Accept; RFC 3856 and RFC 6665 for the presence package's default):

- No Accept header (`None`): `application/pidf+xml`, the format every presence watcher must
  support (RFC 3856, NOTIFY bodies).
- An Accept header with no usable element: nothing is acceptable (RFC 3261 §20.1: "an empty
  Accept header field means that no formats are acceptable"), so `None` and the caller answers 406.
- Each element is a media range with optional parameters; `q` (0 to 1, default 1) weighs it and
  `q=0` excludes. Other parameters (charset, ...) do not affect matching. Malformed elements are
  skipped.
- The most specific range that matches a type decides its q: `type/subtype` over `type/*` over
  `*/*` (the precedence of RFC 7231 §5.3.2, which SIP's Accept borrows from HTTP).
- Among the supported types with the highest q > 0, the one earliest in `SUPPORTED` wins: PIDF
  first, then the legacy formats in SER's order of preference.
"""

from __future__ import annotations

from presenced.pa.documents.lpidf import encode_lpidf
from presenced.pa.documents.pidf import encode_cpim_pidf, encode_pidf
from presenced.pa.documents.xpidf import encode_xpidf
from presenced.pa.model import PresenceDoc

PIDF = "application/pidf+xml"
CPIM_PIDF = "application/cpim-pidf+xml"
XPIDF = "application/xpidf+xml"
LPIDF = "text/lpidf"

# Server preference order, used to break q ties.
SUPPORTED: tuple[str, ...] = (PIDF, CPIM_PIDF, XPIDF, LPIDF)
DEFAULT = PIDF

def _split(ctype: str) -> tuple[str, str]:
    mtype, _, subtype = ctype.partition("/")
    return mtype, subtype


_SPLIT: dict[str, tuple[str, str]] = {t: _split(t) for t in SUPPORTED}


def _parse_range(element: str) -> tuple[str, str, float] | None:
    """(type, subtype, q) from one Accept element, or None when it is malformed."""
    params = element.split(";")
    media = params[0].strip().lower()
    mtype, slash, subtype = media.partition("/")
    mtype, subtype = mtype.strip(), subtype.strip()
    if not slash or not mtype or not subtype or (mtype == "*" and subtype != "*"):
        return None
    q = 1.0
    for param in params[1:]:
        name, eq, value = param.partition("=")
        if name.strip().lower() != "q":
            continue
        try:
            q = float(value.strip()) if eq else -1.0
        except ValueError:
            return None
        if not 0.0 <= q <= 1.0:  # also rejects nan
            return None
        break  # parameters after q are accept-extensions (RFC 3261 §20.1)
    return mtype, subtype, q


def choose_format(accept: list[str] | None, supported: tuple[str, ...] = SUPPORTED) -> str | None:
    """The content type to NOTIFY with, or None when no supported type is acceptable (406).

    `supported` is the event package's formats in its order of preference; the first is the
    default when there is no Accept (RFC 6665 §4.1.2: each package names its default)."""
    if accept is None:
        return supported[0]
    ranges = [r for r in map(_parse_range, accept) if r is not None]
    best: str | None = None
    best_q = 0.0
    for ctype in supported:
        split = _SPLIT.get(ctype)
        if split is None:
            split = _SPLIT[ctype] = _split(ctype)
        mtype, subtype = split
        q: float | None = None
        specificity = -1
        for rtype, rsub, rq in ranges:
            if rtype == mtype and rsub == subtype:
                spec = 2
            elif rtype == mtype and rsub == "*":
                spec = 1
            elif rtype == "*" and rsub == "*":
                spec = 0
            else:
                continue
            if spec > specificity or (spec == specificity and q is not None and rq > q):
                specificity, q = spec, rq
        if q is not None and q > best_q:
            best, best_q = ctype, q
    return best


def encode(doc: PresenceDoc, content_type: str, now: float | None = None) -> bytes:
    """Encode `doc` as `content_type` (one of `SUPPORTED`; parameters are ignored).

    Raises ValueError for an unsupported type: callers pass what `choose_format` returned.
    """
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype == PIDF:
        return encode_pidf(doc, now=now)
    if ctype == XPIDF:
        return encode_xpidf(doc)
    if ctype == CPIM_PIDF:
        return encode_cpim_pidf(doc, now=now)
    if ctype == LPIDF:
        return encode_lpidf(doc)
    raise ValueError(f"unsupported presence content type {content_type!r}")
