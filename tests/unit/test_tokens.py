"""The server's tokens (tags, branches, ETags): 64 random bits as hex, never repeated, and a
forked worker does not replay its parent's unused ones."""

from __future__ import annotations

import os
import re

from presenced.sip.tokens import make_token


def test_tokens_are_16_hex_digits_and_distinct_across_refills() -> None:
    tokens = [make_token() for _ in range(3000)]  # several 512-token refills
    assert all(re.fullmatch(r"[0-9a-f]{16}", t) for t in tokens)
    assert len(set(tokens)) == len(tokens)


def test_a_forked_child_draws_its_own_tokens() -> None:
    make_token()  # the parent holds a partly used pool
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next tokens and leave at once
        os.close(read)
        os.write(write, ",".join(make_token() for _ in range(4)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        child = f.read().decode().split(",")
    os.waitpid(pid, 0)
    parent = [make_token() for _ in range(4)]
    assert len(child) == 4
    assert not set(child) & set(parent)
