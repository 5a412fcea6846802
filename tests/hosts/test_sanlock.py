"""xenha_sanlock against real sanlock daemons in two lab hosts sharing one lease area.

Two bare lab hosts (no Salt: the module's ``cmd.run_all`` runs its commands inside its host),
each with its own sanlock daemon; the lease area is a file in the run folder's shared folder and
the Xen toolstack is the stand-in (tests/standins/xl), whose calls log shows what the killpath
ran. io_timeout 1, sanlock's shortest, keeps joins at about 3 s.
"""

import importlib.util
import os
import shlex
import threading
import time

import pytest
from salt.exceptions import CommandExecutionError

from lab import REPO, RUN_ROOT
from lab.hosts import Segment, wait_for
from lab.sanlock import Sanlock
from tests.standins.cluster import STANDINS, StandinCluster

pytestmark = pytest.mark.root

PREFIX = "xsl"
IO_TIMEOUT = 1
SLOTS = 8
HOST_IDS = {"A": 1, "B": 2, "C": 3}


def load_module(host, pillar, env, name="xenha_sanlock"):
    """A fresh copy of execution module ``name`` whose commands run inside ``host``; with
    xenha_sanlock, a copy of xenha_xen (on the stand-in xl) comes along, each calling the
    other as the Salt loader would."""
    path = REPO / "_modules" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_{host.name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def run_all(argv, python_shell=False, ignore_retcode=False, timeout=None):
        assert isinstance(argv, list) and python_shell is False
        proc = host.run(argv, check=False, timeout=timeout or 60, env=env)
        return {"retcode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}

    xen_conf = {"toolstack": "xl"}
    mod.__salt__ = {
        "cmd.run_all": run_all,
        "config.get": lambda key, default=None: xen_conf if key == "xenha:xen" else default,
    }
    mod.__pillar__ = pillar
    mod.__opts__ = {"id": host.name}
    if name == "xenha_sanlock":
        xen = load_module(host, pillar, env, "xenha_xen")
        mod.__salt__.update({f"xenha_xen.{f}": getattr(xen, f) for f in ("read_config", "start")})
        xen.__salt__.update({f"xenha_sanlock.{f}": getattr(mod, f) for f in ("acquire", "release")})
    return mod


class Cluster:
    def __init__(self):
        self.run_dir = RUN_ROOT / f"test-{PREFIX}"
        self.segment = Segment(self.run_dir, prefix=PREFIX, subnet="10.97.0")
        self.hosts = {
            name: self.segment.host(name, f"10.97.0.{10 + i}", "vmhost")
            for i, name in enumerate(HOST_IDS)
        }
        self.xen = None  # made at up(): the segment starts from an empty run folder
        xen_dir = self.run_dir / "shared" / "xen"
        # the stand-in xl first on PATH: xenha_xen runs "xl"
        path = f"{STANDINS}:{os.environ['PATH']}"
        env = {
            n: {"XENHA_STANDIN_DIR": str(xen_dir), "XENHA_STANDIN_HOST": n, "PATH": path}
            for n in HOST_IDS
        }
        self.env = env
        self.sanlock = Sanlock(self.run_dir, self.hosts.values(), env=env)
        self.pillar = {
            "xenha": {
                "sanlock": {
                    "lease_path": str(self.sanlock.lease_path),
                    "io_timeout": IO_TIMEOUT,
                    "slots": SLOTS,
                    "toolstack_path": str(STANDINS / "xl"),
                },
                "hosts": {n: {"role": "vmhost", "host_id": i} for n, i in HOST_IDS.items()},
                "domus": {"web01": {}, "db01": {}},
            }
        }
        self.mods = {}

    def up(self):
        self.segment.up()
        self.xen = StandinCluster(self.run_dir / "shared" / "xen")
        for name in HOST_IDS:
            self.xen.add_host(name)
        self.sanlock.make_area((1 + SLOTS) << 20)
        self.sanlock.attach()  # every later power-on starts the daemon again
        self.sanlock.start_all()
        self.mods = {n: load_module(h, self.pillar, self.env[n]) for n, h in self.hosts.items()}

    def down(self):
        try:
            self.sanlock.stop_all()
        finally:
            self.segment.down()

    def config(self, domu):
        """A domU config file on the shared folder, as the hosts read it."""
        path = self.run_dir / "shared" / "domus" / f"{domu}.cfg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'name = "{domu}"\nmemory = 128\n')
        return str(path)

    def drop_domain(self, host, domu):
        """The domU leaves ``host`` (as after a migration or a power-off)."""
        with self.xen.state.lock():
            data = self.xen.state.load(host)
            data["domains"].pop(domu, None)
            self.xen.state.save(data)

    def calls(self, verb):
        """(time, host, argv) of every stand-in toolstack call of ``verb``."""
        return [
            (c["time"], c["host"], c["argv"]) for c in self.xen.calls() if c["argv"][:1] == [verb]
        ]


@pytest.fixture(scope="module")
def cluster():
    cluster = Cluster()
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="module")
def joined(cluster):
    a, b = cluster.mods["A"], cluster.mods["B"]
    first = a.init()
    assert first["lockspace"] == "initialised"
    assert sorted(first["resources"]) == ["db01", "web01"]
    # a second init keeps what is there and writes nothing
    assert a.init() == {"lockspace": "kept", "resources": {}}
    took = {}

    def join(name):
        start = time.monotonic()
        took[name] = (cluster.mods[name].join(), time.monotonic() - start)

    threads = [threading.Thread(target=join, args=(n,)) for n in HOST_IDS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {n: r["host_id"] for n, (r, _) in took.items()} == HOST_IDS
    print(
        f"add_lockspace with io_timeout {IO_TIMEOUT}: "
        + ", ".join(f"{n} {s:.1f} s" for n, (_, s) in sorted(took.items()))
    )
    assert b.join()["changed"] is False  # joining again is a no-op
    return cluster


def test_both_hosts_see_each_other_live(joined):
    def both_live():
        seen = joined.mods["A"].hosts()
        return seen if all(seen[i]["state"] == "live" for i in (1, 2)) else None

    seen = wait_for(both_live, 30, "A to see host_ids 1 and 2 live", interval=0.5)
    assert seen[1]["host"] == "A" and seen[2]["host"] == "B"
    assert seen[2]["timestamp"] > 0


def test_a_lease_is_held_by_one_host_at_a_time(joined):
    a, b = joined.mods["A"], joined.mods["B"]
    start = time.monotonic()
    got = a.acquire("db01")
    print(f"acquire (keeper start to lease held): {time.monotonic() - start:.2f} s")
    assert got["changed"] is True and a.held()["db01"]["pid"] == got["pid"]
    assert a.acquire("db01")["changed"] is False
    with pytest.raises(CommandExecutionError, match=r"-243 .*held by host_id 1 \(A\)"):
        b.acquire("db01")
    assert "db01" not in b.held()
    assert a.release("db01")["changed"] is True
    assert "db01" not in a.held()
    assert b.acquire("db01")["changed"] is True
    with pytest.raises(CommandExecutionError, match="held by host_id 2"):
        a.acquire("db01")
    assert b.release("db01")["changed"] is True
    assert b.release("db01")["changed"] is False


def test_release_is_refused_while_the_domu_runs_here(joined):
    a = joined.mods["A"]
    joined.xen.add_domain("A", "web01")
    try:
        # a keeper that never saw its domU listed holds on for start_grace (a start may be
        # slow); under load its first listing can come after this test removed the domU
        a.acquire("web01", start_grace=20)
        with pytest.raises(CommandExecutionError, match="web01: the domU runs on this host"):
            a.release("web01")
        assert "web01" in a.held()
        with pytest.raises(CommandExecutionError, match="holds the leases of web01"):
            a.leave()
    finally:
        # the domU leaves (as after a migration): its keeper lets the lease go by itself
        with joined.xen.state.lock():
            data = joined.xen.state.load("A")
            data["domains"].pop("web01", None)
            joined.xen.state.save(data)
        wait_for(lambda: "web01" not in a.held(), 60, "A's keeper to release web01")


def test_a_requested_lease_runs_the_killpath_and_moves(joined):
    a, b = joined.mods["A"], joined.mods["B"]
    host_b = joined.hosts["B"]
    joined.xen.add_domain("A", "web01")
    a.acquire("web01")
    before = len(joined.calls("destroy"))
    # B asks A to give the lease up gracefully (force mode 2: run the holder's killpath)
    path = joined.sanlock.lease_path
    slot = a.acquire("web01")["slot"]
    resource = f"xenha:web01:{path}:{(1 + slot) << 20}"
    leader = host_b.run(["sanlock", "direct", "read_leader", "-r", resource]).stdout
    lver = int(dict(line.split(" ", 1) for line in leader.splitlines() if " " in line)["lver"])
    asked = time.time()
    argv = ["sanlock", "client", "request", "-r", f"{resource}:{lver + 1}", "-f", "2"]
    out = host_b.run(argv)
    assert "done 0" in out.stdout + out.stderr, shlex.join(argv)
    destroyed = wait_for(
        lambda: joined.calls("destroy")[before:], 30, "A's killpath to destroy web01", interval=0.2
    )
    assert destroyed[0][1:] == ("A", ["destroy", "web01"])
    assert "web01" not in joined.xen.domains("A")
    wait_for(lambda: "web01" not in a.held(), 30, "A's keeper to let web01 go")
    released = time.time()
    assert b.acquire("web01", start_grace=5)["changed"] is True
    print(
        f"request -> killpath {destroyed[0][0] - asked:.2f} s, "
        f"-> lease free {released - asked:.2f} s"
    )
    assert b.release("web01")["changed"] is True


def test_holders_and_observe_read_the_lease_area(joined, monkeypatch):
    a, b = joined.mods["A"], joined.mods["B"]
    monkeypatch.setenv("PATH", f"{STANDINS}:{os.environ['PATH']}")  # xenha_xen's which("xl")
    config = joined.config("db01")
    started = a.start_domu("db01", config)
    try:
        assert started["domu"]["name"] == "db01" and "db01" in joined.xen.domains("A")
        assert started["lease"]["pid"] == a.held()["db01"]["pid"]
        assert b.holders() == {"db01": {"mode": "ex", "hosts": ["A"]}}
        assert b.holders(host="A") == {"db01": {"mode": "ex", "hosts": ["A"]}}
        assert b.holders(host="B") == {}
        seen = b.observe("A")
        assert seen["state"] == "advancing" and seen["host_id"] == 1
        assert seen["sanlock"]["state"] == "live" and seen["sanlock"]["host"] == "A"
        print(f"observe A (live): a renewal seen after {seen['unchanged_for']} s")
        with pytest.raises(CommandExecutionError, match=r"at least 3 s \(3 x io_timeout\)"):
            b.observe("A", duration=2)
        # a second start is refused by the lease before the toolstack runs
        with pytest.raises(CommandExecutionError, match=r"-243 .*held by host_id 1 \(A\)"):
            b.start_domu("db01", config)
        # a host still renewing its delta lease is not fenced, whatever the caller says
        with pytest.raises(CommandExecutionError, match="A still renews its sanlock delta lease"):
            b.start_domu("db01", config, fenced="A")
        assert "db01" not in joined.xen.domains("B")
        assert b.holders(host="A") == {"db01": {"mode": "ex", "hosts": ["A"]}}
        with pytest.raises(CommandExecutionError, match="defines domU 'db01', not 'web01'"):
            b.start_domu("web01", config)
    finally:
        joined.drop_domain("A", "db01")
        wait_for(lambda: "db01" not in a.held(), 30, "A's keeper to release db01")
    assert b.holders() == {}


def test_a_fenced_hosts_lease_is_freed_only_once_its_delta_lease_stopped(joined, monkeypatch):
    """A's sanlock daemon frozen (as in a host whose power-off the BMC confirmed): its delta
    lease stops; B proves that over 3 x io_timeout, frees the one lease and starts the domU."""
    a, b, host_a = joined.mods["A"], joined.mods["B"], joined.hosts["A"]
    monkeypatch.setenv("PATH", f"{STANDINS}:{os.environ['PATH']}")
    config = joined.config("db01")
    a.start_domu("db01", config)
    pids = host_a.run(["pidof", "sanlock"]).stdout.split()
    host_a.run(["kill", "-STOP", *pids])
    try:
        start = time.monotonic()
        got = b.start_domu("db01", config, fenced="A")
        took = time.monotonic() - start
        fenced = got["lease"]["fenced"]
        assert fenced["freed"] is True and fenced["observed"]["state"] == "stopped"
        assert fenced["observed"]["unchanged_for"] >= 3 * IO_TIMEOUT
        assert fenced["observed"]["sanlock"]["state"] in ("live", "fail")  # not dead yet
        assert "db01" in joined.xen.domains("B")
        assert b.holders() == {"db01": {"mode": "ex", "hosts": ["B"]}}
        print(f"start_domu fenced=A (frozen daemon): {took:.1f} s")
    finally:
        host_a.power_off()  # the "confirmed" power-off: A's domU and keeper go with it
        joined.drop_domain("A", "db01")
    host_a.power_on()
    joined.sanlock.wait(host_a)
    a.join()
    # A is back and sees B holding db01: A cannot take it
    with pytest.raises(CommandExecutionError, match=r"held by host_id 2 \(B\)"):
        a.acquire("db01")
    joined.drop_domain("B", "db01")
    wait_for(lambda: "db01" not in b.held(), 30, "B's keeper to release db01")


def test_a_fenced_host_back_under_a_new_generation_leaves_its_lease_free(joined, monkeypatch):
    """A powered off by its BMC and on again before the restart (a nemesis trial): A renews
    again, but holds db01's lease from its old generation, which sanlock grants to anyone.
    B takes it as it is (no watch, no freeing); a lease A took anew is still refused."""
    a, b, host_a = joined.mods["A"], joined.mods["B"], joined.hosts["A"]
    monkeypatch.setenv("PATH", f"{STANDINS}:{os.environ['PATH']}")
    config = joined.config("db01")
    a.start_domu("db01", config)
    host_a.power_off()
    joined.drop_domain("A", "db01")
    host_a.power_on()
    joined.sanlock.wait(host_a)
    a.join()
    wait_for(lambda: b.observe("A")["state"] == "advancing", 30, "A renewing again")
    assert b.holders() == {"db01": {"mode": "ex", "hosts": ["A"], "stale": True}}
    try:
        got = b.start_domu("db01", config, fenced="A")
        assert got["lease"]["fenced"] == {
            "freed": False,
            "why": "A holds it from an older sanlock generation",
        }
        assert "db01" in joined.xen.domains("B")
        assert b.holders() == {"db01": {"mode": "ex", "hosts": ["B"]}}
    finally:
        # the keeper may not have looked while it ran (it polls each second): let it go now
        joined.drop_domain("B", "db01")
        b.release("db01")
    a.start_domu("db01", config)  # A's own lease of its new generation: not B's to take
    try:
        with pytest.raises(CommandExecutionError, match="A still renews its sanlock delta lease"):
            b.start_domu("db01", config, fenced="A")
    finally:
        joined.drop_domain("A", "db01")
        a.release("db01")


def test_the_migration_hand_over_shares_the_lease_and_keeps_a_third_host_out(joined, monkeypatch):
    """The shared-mode bridge: source ex -> sh, target sh, the domU moves, target sh -> ex.
    From the source's share to the target's exclusive, C can take the lease in no way."""
    a, b, c = (joined.mods[n] for n in "ABC")
    monkeypatch.setenv("PATH", f"{STANDINS}:{os.environ['PATH']}")
    config = joined.config("web01")
    a.start_domu("web01", config)
    try:
        assert a.share("web01")["mode"] == "sh" and a.held()["web01"]["mode"] == "sh"
        assert b.acquire("web01", shared=True)["mode"] == "sh"
        assert c.holders() == {"web01": {"mode": "sh", "hosts": ["A", "B"]}}
        with pytest.raises(CommandExecutionError, match="sanlock refused the lease"):
            c.acquire("web01")
        with pytest.raises(CommandExecutionError, match=r"also held \(sh\) by B"):
            c.start_domu("web01", config, fenced="A")
        assert "web01" not in joined.xen.domains("C")
        with pytest.raises(CommandExecutionError, match="another host still shares its lease"):
            b.exclusive("web01", wait=1)
        # the migration: the domU appears on B and leaves A; A's keeper lets its share go
        joined.xen.add_domain("B", "web01")
        joined.drop_domain("A", "web01")
        start = time.monotonic()
        assert b.exclusive("web01", wait=30)["changed"] is True
        print(f"exclusive on the target after the source left: {time.monotonic() - start:.1f} s")
        assert "web01" not in a.held()
        assert c.holders() == {"web01": {"mode": "ex", "hosts": ["B"]}}
        with pytest.raises(CommandExecutionError, match=r"held by host_id 2 \(B\)"):
            c.acquire("web01")
        # a failed migration back: A shares, the domU never arrives, A lets go, B takes it back
        assert b.share("web01")["changed"] is True
        a.acquire("web01", shared=True)
        with pytest.raises(CommandExecutionError, match="sanlock refused the lease"):
            c.acquire("web01")
        assert a.release("web01")["changed"] is True
        assert b.unshare("web01", wait=30)["mode"] == "ex"
        assert c.holders() == {"web01": {"mode": "ex", "hosts": ["B"]}}
    finally:
        for host in "AB":
            joined.drop_domain(host, "web01")
        for name in "AB":
            wait_for(lambda m=joined.mods[name]: "web01" not in m.held(), 30, "web01 released")


def test_a_power_cycled_host_gets_its_daemon_back_and_rejoins(joined):
    """Power-off kills B's daemon with everything else; power-on starts it again (a service),
    and B takes its host_id back at once: same daemon name (-e), sanlock's fast reacquire."""
    a, b, host_b = joined.mods["A"], joined.mods["B"], joined.hosts["B"]
    generation = a.hosts()[2]["generation"]
    host_b.power_off()
    host_b.power_on()
    joined.sanlock.wait(host_b)
    start = time.monotonic()
    assert b.join()["changed"] is True
    print(f"rejoin after a power cycle: {time.monotonic() - start:.1f} s")

    def new_generation():
        row = a.hosts()[2]
        return row["state"] == "live" and row["generation"] > generation

    wait_for(new_generation, 30, "A to see B's host_id 2 live with a new generation", interval=0.5)


def test_with_its_host_id_a_power_cycled_host_joins_by_itself(joined):
    """Given B's host_id, the lab starts a join at B's boot (the xenha-lockspace unit of a real
    host): B is live again without anyone calling join."""
    a, b, host_b = joined.mods["A"], joined.mods["B"], joined.hosts["B"]
    joined.sanlock.host_ids = {"B": HOST_IDS["B"]}
    joined.sanlock.io_timeout = IO_TIMEOUT
    joined.sanlock.attach()
    generation = a.hosts()[2]["generation"]
    host_b.power_off()
    host_b.power_on()

    def new_generation():
        row = a.hosts()[2]
        return row["state"] == "live" and row["generation"] > generation

    wait_for(new_generation, 30, "B to join by itself with a new generation", interval=0.5)

    # the boot job's add_lockspace returns once the join is complete; then join has no work
    def boot_join_returned():
        return "done 0" in host_b.run(["cat", "/var/log/sanlock-join.log"], check=False).stdout

    wait_for(boot_join_returned, 30, "B's boot-time add_lockspace to return", interval=0.5)
    assert b.join()["changed"] is False


def test_a_storage_cut_fails_the_daemons_io_runs_the_killpath_and_leaves(joined):
    """The lab's storage cut (lab/failover.py): while /run/xenha-lab/storage-cut exists in C,
    the shim fails its daemon's disk I/O; 8 x io_timeout after its last renewal sanlock runs
    the killpath of the domU C holds and drops the lockspace; C joins again afterwards."""
    a, c, host_c = joined.mods["A"], joined.mods["C"], joined.hosts["C"]
    joined.xen.add_domain("C", "db01")
    c.acquire("db01")
    before = len(joined.calls("destroy"))
    cut = time.time()
    host_c.run(["sh", "-c", "mkdir -p /run/xenha-lab && touch /run/xenha-lab/storage-cut"])
    try:
        destroyed = wait_for(
            lambda: joined.calls("destroy")[before:], 60, "C's killpath for db01", interval=0.2
        )
        assert destroyed[0][1:] == ("C", ["destroy", "db01"])
        print(f"storage cut -> killpath {destroyed[0][0] - cut:.1f} s")
        wait_for(lambda: c.join(test=True)["changed"], 60, "C's sanlock to drop the lockspace")
        assert a.observe("C")["state"] in ("stopped", "dead")
    finally:
        host_c.run(["rm", "-f", "/run/xenha-lab/storage-cut"])
    assert c.join()["changed"] is True
    wait_for(lambda: a.observe("C")["state"] == "advancing", 30, "C renewing again")
    assert "db01" not in c.held()


def test_leaving_the_lockspace_fences_the_domus_it_holds(joined):
    """rem_lockspace makes sanlock kill the lease holders with SIGKILL; the keeper restricted
    SIGKILL, so it gets SIGTERM and destroys its domU itself before the lease goes."""
    a, host_a = joined.mods["A"], joined.hosts["A"]
    joined.xen.add_domain("A", "web01")
    a.acquire("web01")
    before = len(joined.calls("destroy"))
    assert a.leave(force=True)["changed"] is True
    wait_for(lambda: joined.calls("destroy")[before:], 30, "A's keeper to destroy web01")
    assert "web01" not in joined.xen.domains("A")
    log = host_a.run(["cat", "/run/xenha/sanlock/web01.log"]).stdout.splitlines()
    assert log[-2:] == [
        log[-2][:20] + "web01: SIGTERM: destroying the domU",
        log[-1][:20] + "web01: releasing: fenced: the domU is gone",
    ]
    wait_for(lambda: not a.held(), 30, "A's lease on web01 to go")
    assert a.leave()["changed"] is False
