"""[cluster] and [server] workers (docs/configuration.md): what needs Redis says so."""

from __future__ import annotations

from pathlib import Path

from test_config import error_of

from presenced.config import parse_config

BASE = Path("/srv/presenced")
REDIS = '[storage]\nurl = "redis://127.0.0.1:6379/0"\n'


def test_no_cluster_by_default_and_redis_alone_is_one_node() -> None:
    assert not parse_config("", BASE).clustered
    cfg = parse_config(REDIS, BASE)
    assert cfg.cluster is None and cfg.server.workers == 1 and not cfg.clustered


def test_cluster_section_defaults() -> None:
    cfg = parse_config(REDIS + '[cluster]\nnode_id = "a1"\n', BASE)
    assert cfg.clustered and cfg.cluster is not None
    assert (cfg.cluster.node_id, cfg.cluster.lease_time, cfg.cluster.advertise) == ("a1", 5.0, None)


def test_workers_need_redis() -> None:
    assert "server.workers" in error_of("[server]\nworkers = 2\n")
    assert "shared store" in error_of('[server]\nworkers = 2\n[storage]\nurl = "memory:"\n')
    assert parse_config(REDIS + "[server]\nworkers = 2\n", BASE).clustered


def test_cluster_needs_redis_and_a_sane_node_id_and_advertise() -> None:
    assert error_of('[cluster]\nnode_id = "a"\n').startswith("cluster:")
    assert error_of(REDIS + '[cluster]\nnode_id = "a b"\n').startswith("cluster.node_id:")
    assert error_of(REDIS + '[cluster]\nadvertise = "nope"\n').startswith("cluster.advertise:")
    assert error_of(REDIS + "[cluster]\nlease_time = 0.1\n").startswith("cluster.lease_time")
    assert error_of(REDIS + "[cluster]\nbogus = 1\n").startswith("cluster.bogus")
