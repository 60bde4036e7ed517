"""``presenced rules set|get|delete [--config FILE] AOR ...``: the operator's presence rules.

    presenced rules set alice@example.com allow bob@example.com '*@example.org'
    presenced rules set alice@example.com --file rules.xml
    presenced rules get alice@example.com
    presenced rules delete alice@example.com

Writes go through the same `RulesService` as XCAP (validated, with a new entity tag) into the
configured storage. `set` with a sub-handling replaces the user's whole document with one rule
(identity "*": every watcher, "*@domain": a domain). A running server reads storage again on
SIGUSR1 (`kill -USR1 PID`): with SQLite the tool may run beside it (WAL), with `memory:` it
has nothing to share. Exit codes: 0 done, 1 refused (invalid document, none to delete), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from presenced.cluster.store import ClusterStore
from presenced.config import ConfigError, load_config, load_default_config
from presenced.pa.policy.evaluate import Policy
from presenced.pa.policy.rules import SUB_HANDLING_VALUE, simple_rules
from presenced.services.ports import RulesInvalid
from presenced.services.rules import RulesService
from presenced.storage import open_storage
from presenced.storage.base import Storage
from presenced.storage.redis import DEFAULT_PREFIX, split_prefix


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="presenced rules",
                                     description="Set, show or delete a user's presence rules.")
    parser.add_argument("--config", metavar="FILE", help="TOML configuration (its [storage])")
    parser.add_argument("action", choices=("set", "get", "delete"))
    parser.add_argument("aor", help="the presentity, user@domain")
    parser.add_argument("handling", nargs="?", choices=tuple(SUB_HANDLING_VALUE))
    parser.add_argument("identities", nargs="*", help="watchers: user@domain, *@domain, *")
    parser.add_argument("--file", help="set: a whole application/auth-policy+xml document")
    return parser


async def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else load_default_config()
    storage: Storage
    if config.clustered:
        # In a cluster the write is announced on the change feed: every node applies it at
        # once, no signal needed (docs/design.md "Running a cluster").
        url, prefix = split_prefix(config.storage.url)
        storage = ClusterStore(url, prefix or DEFAULT_PREFIX, "rules-cli")
    else:
        storage = open_storage(config.storage.url, Path(config.server.data_dir))
    await storage.open()
    try:
        rules = RulesService(storage, Policy())
        await rules.load()
        if args.action == "get":
            found = await rules.get_rules(args.aor)
            if found is None:
                print(f"{args.aor}: no rules (the default policy applies)", file=sys.stderr)
                return 1
            sys.stdout.write(found[0].decode("utf-8", "replace"))
            return 0
        if args.action == "delete":
            if not await rules.delete_rules(args.aor):
                print(f"{args.aor}: no rules", file=sys.stderr)
                return 1
            print(f"{args.aor}: rules deleted")
            return 0
        if args.file:
            document = Path(args.file).read_bytes()
        elif args.handling:
            document = simple_rules([("cli", args.handling, args.identities or ["*"])])
        else:
            print("set needs a sub-handling and identities, or --file", file=sys.stderr)
            return 2
        try:
            etag = await rules.put_rules(args.aor, document)
        except RulesInvalid as exc:
            print(f"{args.aor}: invalid rules: {exc.detail}", file=sys.stderr)
            return 1
        how = ("every node applies them now" if config.clustered
               else "a running server applies them on SIGUSR1")
        print(f"{args.aor}: rules set (etag {etag}); {how}")
        return 0
    finally:
        await storage.close()


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except ConfigError as exc:
        print(f"{args.config or 'default config'}: {exc}", file=sys.stderr)
        return 2
