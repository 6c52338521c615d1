"""Read-only, proven on every command path at once: a capture (with --no-data and
--redact-field too), a series, a cluster capture (masters, then replicas), and a sentinel
capture (master, then replica), all under MONITOR on every data node. Every command a
connection of the tool sent is checked against the allowlist, and DEBUG DIGEST of every
node is unchanged: nothing was written, by any path.

Connections that existed before the tool ran (replication links, the sentinels' own
links) are told apart by their client address, not by guessing at command names."""
from __future__ import annotations

import redis

from conftest import RedisServer, forensics_cli, monitored, run_node
from forensics.safety import is_read_only


def test_every_command_path_is_read_only(redis_cluster, sentinel_set, tmp_path):
    (tmp_path / "single").mkdir()
    single = RedisServer(tmp_path / "single")
    try:
        run_node("fill.js", "bullmq5", single.url(), "bull", "orders", "300")
        run_node("secrets.js", "bullmq5", single.url(), "bull", "pay", "4")   # failed jobs, logs, events
        (cl, _), s = redis_cluster, sentinel_set
        s.synced()
        cl.synced()
        ports = [single.port, *(n.port for n in cl.nodes), s.primary.port, s.replica.port]
        clients = {p: redis.Redis(port=p, decode_responses=True) for p in ports}
        digests = {p: c.execute_command("DEBUG", "DIGEST") for p, c in clients.items()}
        before = {p: {c["addr"] for c in cli.client_list()} for p, cli in clients.items()}
        out = tmp_path / "out"
        single_ports, cluster_ports, sentinel_ports = [single.port], [n.port for n in cl.nodes], \
            [s.primary.port, s.replica.port]
        runs = [  # (name, the nodes it may reach, arguments)
            ("capture", single_ports, ["--redis", single.url()]),
            ("capture --no-data", single_ports, ["--redis", single.url(), "--no-data", "--redact-field", "user"]),
            ("series", single_ports, ["--redis", single.url(), "--every", "0.2", "--count", "3"]),
            ("cluster", cluster_ports, ["--redis", cl.url(0), "--prefix", "{cl}", "--prefix", "cq", "--prefix", "{bq}"]),
            ("cluster --replica", cluster_ports, ["--redis", cl.url(0), "--replica", "--prefix", "{cl}", "--prefix", "cq"]),
            ("sentinel", sentinel_ports, ["--redis", s.url()]),
            ("sentinel --replica", sentinel_ports, ["--redis", s.url(), "--replica"]),
        ]
        tool = []
        for i, (name, watch, args) in enumerate(runs):
            with monitored(watch, clients=True) as seen:
                res = forensics_cli("capture", *args, "--out", str(out / str(i)), "--quiet")
            assert res.returncode == 0, (name, res.stderr)
            mine = [(p, cmd) for p, addr, cmd in seen if addr not in before[p]]
            assert mine, f"{name}: MONITOR saw nothing of the tool"
            tool += mine
        bad = sorted({" ".join(cmd[:2]) for _, cmd in tool if not is_read_only(tuple(cmd))})
        assert not bad, f"commands outside the allowlist reached Redis: {bad}"
        assert {p for p, _ in tool} == set(ports)          # every node was read, masters and replicas
        assert len(tool) > 1000
        assert {p: c.execute_command("DEBUG", "DIGEST") for p, c in clients.items()} == digests
    finally:
        single.stop()
