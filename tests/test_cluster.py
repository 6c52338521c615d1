"""Redis Cluster: a real 3-master cluster, filled by BullMQ 5 and Bull through ioredis'
Cluster client. Every master is read, each key from the node that owns its slot; a
resharding during the capture is followed; a node that is down is recorded and the rest read.
"""
from __future__ import annotations

import json
import subprocess
import warnings

import pytest

import forensics
from forensics.capture import Progress
from forensics.safety import is_read_only

from conftest import NODE_DIR, forensics_cli, monitored

PREFIXES = ["{cl}", "cq", "{bq}"]
STATE_COLUMNS = {"waiting": "n_wait", "completed": "n_completed", "failed": "n_failed", "delayed": "n_delayed",
                 "prioritized": "n_prioritized", "active": "n_active"}


def _counts_match(snap, report, only=None):
    for key, counts in report.items():
        prefix, _, name = key.partition(":")
        if only and prefix not in only:
            continue
        row = snap.queues[(snap.queues["prefix"] == prefix) & (snap.queues["queue"] == name)]
        assert len(row) == 1, f"{key} not captured"
        for state, col in STATE_COLUMNS.items():
            if state in counts:
                assert int(row[col].iloc[0]) == counts[state], (key, state)


def test_every_master_is_read_each_key_from_its_owner(redis_cluster):
    cl, report = redis_cluster
    before = cl.digests()
    seed = next(i for i in range(3) if i != cl.owner("{cl}:mail:id"))  # any node will do, even one without queues
    with monitored([n.port for n in cl.nodes]) as sent:
        snap = forensics.capture(cl.url(seed), prefix=PREFIXES, progress=False)
    # What every master really received (MONITOR) is read-only, and there was a lot of it.
    assert len(sent) > 100 and all(is_read_only(tuple(c)) for c in sent), \
        sorted({c[0] for c in sent if not is_read_only(tuple(c))})
    assert {"HGETALL", "SCAN", "CLUSTER"} <= {c[0].upper() for c in sent}
    assert snap.complete
    _counts_match(snap, report)
    assert len(snap.jobs) == sum(sum(c.values()) for c in report.values())
    # The topology: every master, the slots each holds, the node of every queue.
    topo = snap.manifest["topology"]
    assert topo["mode"] == "cluster" and topo["slots_covered"] == 16384
    assert sorted(n["addr"] for n in topo["nodes"]) == sorted(cl.addrs[:3])  # the masters (their replicas idle)
    assert sum(n["slots"] for n in topo["nodes"]) == 16384
    for _, q in snap.queues.iterrows():
        assert q["node"] == cl.addrs[cl.owner(f"{q['prefix']}:{q['queue']}:id")]
    assert snap.queues["node"].nunique() >= 2  # the queues really are spread over masters
    # Per-node Redis figures, so memory is judged on the node that holds the queue.
    assert sorted(snap.redis["node"]) == sorted(cl.addrs[:3]) and set(snap.redis["role"]) == {"master"}
    home = snap.queues.set_index("queue")["node"]["mail"]
    assert snap.redis.set_index("node").loc[home, "measured_queue_bytes"] > 0
    # Read-only on every node.
    assert cl.digests() == before
    assert all(is_read_only(tuple(name.split())) for name in snap.manifest["commands"])
    assert snap.manifest["commands"]["CLUSTER SLOTS"] >= 1 and snap.manifest["counts"]["redirects"] == 0
    assert "Redis Cluster, 3 masters, 16384 slots covered" in forensics.summary(snap)
    from forensics.notebook import header  # the postmortem's header names the topology too
    assert "<th>topology</th>" in header(snap)._repr_html_().replace(' style="text-align:left"', "")


def test_cli_detects_the_cluster_and_no_cluster_reads_one_node(redis_cluster, tmp_path):
    cl, report = redis_cluster
    holder = cl.owner("{cl}:mail:id")
    other = next(i for i in range(3) if i != holder)
    res = forensics_cli("capture", "--redis", cl.url(other), "--prefix", "{cl}", "--out", str(tmp_path / "a"), "--quiet")
    assert res.returncode == 0, res.stderr
    assert set(forensics.load(tmp_path / "a").queues["queue"]) == {"mail", "render"}
    res = forensics_cli("capture", "--redis", cl.url(other), "--no-cluster", "--prefix", "{cl}",
                        "--out", str(tmp_path / "b"), "--quiet")
    assert res.returncode == 0, res.stderr
    snap = forensics.load(tmp_path / "b")
    assert len(snap.queues) == 0 and snap.manifest["topology"]["mode"] == "standalone"


def test_workers_connected_through_the_cluster_are_counted(redis_cluster):
    cl, _ = redis_cluster
    proc = subprocess.Popen(["node", str(NODE_DIR / "cluster.js"), ",".join(cl.addrs), "workers"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=NODE_DIR)
    try:
        assert proc.stdout.readline().strip() == "ready"
        snap = forensics.capture(cl.url(0), prefix=PREFIXES, progress=False)
        d = forensics.diagnose(snap)
    finally:
        proc.stdin.close()
        proc.wait(30)
    workers = snap.queues.set_index(["prefix", "queue"])["workers"]
    assert all(workers[(p, q)] == 1 for p, q in [("{cl}", "mail"), ("{cl}", "render"), ("cq", "{orders}")])
    assert workers[("{bq}", "legacy")] == 0
    assert set(snap.workers["node"]) <= set(cl.addrs[:3])
    # Waiting jobs with a worker connected: no-workers stays silent for those queues.
    nw = d.findings[d.findings["id"] == "no-workers"]
    assert set(nw["queue"]) == {"legacy"}


def _hgetall_calls(cl, i) -> int:
    return cl.client(i).info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0)


def test_replica_reads_every_masters_slots_from_its_replica(redis_cluster, tmp_path):
    cl, report = redis_cluster
    cl.synced()
    before = [_hgetall_calls(cl, i) for i in range(len(cl.nodes))]
    with monitored([n.port for n in cl.nodes]) as sent:
        res = forensics_cli("capture", "--redis", cl.url(0), "--replica", "--prefix", "{cl}", "--prefix", "cq",
                            "--prefix", "{bq}", "--out", str(tmp_path / "s"), "--quiet")
    assert res.returncode == 0, res.stderr
    after = [_hgetall_calls(cl, i) for i in range(len(cl.nodes))]
    assert after[:3] == before[:3]                             # no master served a job hash
    assert sum(after[3:]) - sum(before[3:]) >= 54              # their replicas served them all
    assert all(is_read_only(tuple(c)) for c in sent if c[0].upper() not in ("REPLCONF", "PUBLISH"))
    snap = forensics.load(tmp_path / "s")
    _counts_match(snap, report)
    nodes = snap.manifest["topology"]["nodes"]
    assert {n["role"] for n in nodes} == {"replica"}, snap.manifest["warnings"]
    assert sorted(n["replica_of"] for n in nodes) == sorted(cl.addrs[:3])
    assert all(n["lag_bytes"] is not None for n in nodes) and snap.manifest["topology"]["reads"] == "replicas"
    assert set(snap.redis["role"]) == {"replica"} and snap.redis["replication_lag_bytes"].notna().all()
    for _, q in snap.queues.iterrows():  # each queue read from the replica of the master that owns it
        owner = cl.owner(f"{q['prefix']}:{q['queue']}:id")
        assert q["node"] == cl.addrs[cl.replica_of(owner)]
    # Workers connect to the masters: CLIENT LIST was read there.
    assert snap.manifest["unavailable"] == [] and snap.manifest["commands"]["CLIENT LIST"] == 3


def test_memory_is_judged_on_the_node_that_holds_the_queue(redis_cluster, tmp_path):
    cl, _ = redis_cluster
    full = cl.owner("{cl}:mail:id")
    lru = next(i for i in range(3) if i != full)
    used = int(cl.client(full).info("memory")["used_memory"])
    cl.client(full).config_set("maxmemory", str(int(used * 1.05)))
    cl.client(lru).config_set("maxmemory-policy", "allkeys-lru")
    try:
        snap = forensics.capture(cl.url(0), prefix=PREFIXES, progress=False)
    finally:
        cl.client(full).config_set("maxmemory", "0")
        cl.client(lru).config_set("maxmemory-policy", "noeviction")
    d = forensics.diagnose(snap)
    f = d.findings.set_index("id")
    assert d.errors == []
    pressure = d.findings[d.findings["id"] == "memory-pressure"]
    assert len(pressure) == 1 and pressure["evidence"].iloc[0]["node"] == cl.addrs[full]
    assert pressure["title"].iloc[0].startswith(f"node {cl.addrs[full]}: ")
    assert set(pressure["evidence"].iloc[0]["biggest_queues"]) <= {"{cl}:mail", "{cl}:render"}
    evict = d.findings[d.findings["id"] == "eviction-policy"]
    assert len(evict) == 1 and evict["evidence"].iloc[0]["node"] == cl.addrs[lru]
    assert "memory-pressure" in f.index
    # A series of cluster captures: one redis row per master per capture, trends per node.
    series, _ = forensics.series.capture_series(cl.url(0), prefix=PREFIXES, every=0.2, count=3,
                                                out=tmp_path / "series", progress=False)
    assert len(series) == 3 and len(series.redis) == 9
    assert forensics.diagnose(series).errors == []


def _migrate(cl, key: str, dst: int, fraction: float = 1.0, finish: bool = True) -> tuple[int, int]:
    """Reshard the slot of ``key`` to node ``dst`` the way redis-cli --cluster reshard does
    (IMPORTING/MIGRATING, MIGRATE the keys, SETSLOT NODE); stop after ``fraction`` of its
    keys when ``finish`` is False, leaving the slot mid-migration (ASK)."""
    src = cl.owner(key)
    slot = cl.client(0).cluster("keyslot", key)
    s, d = cl.client(src), cl.client(dst)
    if fraction:
        d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", cl.node_id(src))
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", cl.node_id(dst))
        keys = s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100000)
        keys = keys[:max(1, int(len(keys) * fraction))]
        for i in range(0, len(keys), 50):
            s.execute_command("MIGRATE", "127.0.0.1", cl.nodes[dst].port, "", 0, 5000, "KEYS", *keys[i:i + 50])
    if finish:
        rest = s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100000)
        for i in range(0, len(rest), 50):
            s.execute_command("MIGRATE", "127.0.0.1", cl.nodes[dst].port, "", 0, 5000, "KEYS", *rest[i:i + 50])
        for n in range(3):
            cl.client(n).execute_command("CLUSTER", "SETSLOT", slot, "NODE", cl.node_id(dst))
    return src, slot


class _ReshardOnce(Progress):
    """Reshards {cl}'s slot when the capture starts reading the {cl} queues' ids: the
    capture learnt the slot map before, so it meets MOVED (or ASK, half-way) mid-read."""

    def __init__(self, cl, dst, fraction, finish):
        super().__init__(False)
        self.args = (cl, dst, fraction, finish)
        self.done_at = None

    def update(self, text, jobs=0, force=False):
        super().update(text, jobs, force)
        if self.done_at is None and text.startswith("mail: reading"):
            cl, dst, fraction, finish = self.args
            self.done_at = _migrate(cl, "{cl}", dst, fraction, finish)


@pytest.mark.parametrize("finish", [True, False], ids=["moved", "ask"])
def test_a_resharding_during_the_capture_is_followed(redis_cluster, finish):
    cl, report = redis_cluster
    src = cl.owner("{cl}")
    dst = next(i for i in range(3) if i not in (src, cl.owner("cq:{orders}:id")))
    prog = _ReshardOnce(cl, dst, 1.0 if finish else 0.5, finish)
    try:
        snap = forensics.capture(cl.url(src), prefix="{cl}", progress=prog)
    finally:
        if not finish and prog.done_at:  # complete the half-done migration for the next tests
            _migrate(cl, "{cl}", dst, fraction=0, finish=True)
    assert prog.done_at is not None
    assert snap.complete
    assert snap.manifest["counts"]["redirects"] > 0
    _counts_match(snap, report, only=["{cl}"])
    assert not snap.jobs["state"].isin(["orphan", "missing-hash"]).any()
    # Where the queue was read: its new owner after MOVED; mid-migration (ASK) the slot is still the source's.
    assert set(snap.queues["node"]) == {cl.addrs[dst if finish else src]}


def test_a_master_that_is_down_is_recorded_and_the_rest_read(redis_cluster, tmp_path):
    cl, report = redis_cluster
    down = cl.owner("cq:{orders}:id")
    assert cl.owner("{cl}:mail:id") != down
    up = next(i for i in range(3) if i != down)
    cl.client(down).save()  # so that it comes back with its queues (the test servers keep nothing otherwise)
    cl.nodes[down].stop()
    try:
        res = forensics_cli("capture", "--redis", cl.url(up), "--prefix", "{cl}", "--prefix", "cq",
                            "--out", str(tmp_path / "s"), "--quiet")
    finally:
        cl.nodes[down].start()
        cl.wait_ok()
    assert res.returncode == 4, res.stderr
    assert f"cluster node {cl.addrs[down]}" in res.stderr
    snap = forensics.load(tmp_path / "s")
    assert not snap.complete and cl.addrs[down] in snap.manifest["incomplete_reason"]
    assert set(snap.queues["queue"]) == {"mail", "render"}  # the queues of the nodes that answered
    _counts_match(snap, report, only=["{cl}"])
    gone = [n for n in snap.manifest["topology"]["nodes"] if n["addr"] == cl.addrs[down]]
    assert gone and "error" in gone[0]
    json.dumps(snap.manifest)  # the manifest stays plain JSON


class _KillWhenReading(Progress):
    """SIGKILLs a master when the capture starts reading the first queue it holds."""

    def __init__(self, cl, victim):
        super().__init__(False)
        self.cl, self.victim, self.killed = cl, victim, False

    def update(self, text, jobs=0, force=False):
        super().update(text, jobs, force)
        if not self.killed and text.startswith("queue ") and text.endswith("{orders}"):
            self.cl.nodes[self.victim].stop()
            self.killed = True


def test_a_master_lost_mid_capture_costs_only_its_queues(redis_cluster):
    cl, report = redis_cluster
    victim = cl.owner("cq:{orders}:id")
    assert cl.owner("{cl}:mail:id") != victim
    prog = _KillWhenReading(cl, victim)
    cl.client(victim).save()  # so that it comes back with its queues
    try:
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            snap = forensics.capture(cl.url(cl.owner("{cl}:mail:id")), prefix=["cq", "{cl}"], progress=prog,
                                     socket_timeout=5)
    finally:
        cl.nodes[victim].start()
        cl.wait_ok()
    assert prog.killed and not snap.complete, snap.manifest["warnings"]
    assert any("capture incomplete" in str(w.message) for w in said)
    assert "was lost during the capture" in snap.manifest["incomplete_reason"]
    _counts_match(snap, report, only=["{cl}"])  # read after the loss, from the masters still up
    lost = [n for n in snap.manifest["topology"]["nodes"] if n["addr"] == cl.addrs[victim]]
    assert lost and "lost during the capture" in lost[0]["error"]
