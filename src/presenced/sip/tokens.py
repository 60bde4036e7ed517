"""Tags, branches and ETags: 64 random bits each, as hex.

The bits are os.urandom's, as secrets.token_hex(8) would give, drawn 4 KiB at a time: one
getrandom() system call per 512 tokens instead of one each (a subscribe cycle draws four).
"""

from __future__ import annotations

import os


class Tokens:
    __slots__ = ("_at", "_hex")

    def __init__(self) -> None:
        self._hex: str = ""
        self._at: int = 0

    def __call__(self) -> str:
        at = self._at
        if at >= len(self._hex):
            self._hex = os.urandom(4096).hex()
            at = 0
        self._at = at + 16
        return self._hex[at:at + 16]

    def reset(self) -> None:
        self._hex = ""
        self._at = 0


make_token = Tokens()
# A forked worker must not hand out its parent's unused tokens too.
os.register_at_fork(after_in_child=make_token.reset)
