"""
xenha_xen and xenha_domu through two real salt-minions (xen-host-a, xen-host-b) whose PATH starts
with the xl/xm stand-ins (tests/standins) sharing one state directory: start, list, migrate
a -> b and confirm on b, shutdown with a timeout (and the forced fall-back), destroy, the state
with test=True, and a shell-injection name that is refused before anything runs.
"""

import pytest

from tests.standins.cluster import StandinCluster
from tests.support.saltconf import REPO, snippet

A, B = "xen-host-a", "xen-host-b"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = StandinCluster(tmp_path_factory.mktemp("xen"))
    cluster.add_host(A, memory_mib=2048)
    cluster.add_host(B, memory_mib=2048)
    return cluster


@pytest.fixture(scope="module")
def master(salt_factories, tmp_path_factory):
    # serve only the extension dirs: the shipped file_roots hold the whole checkout (.venv, lab
    # run dirs), which makes saltutil.sync_all crawl tens of thousands of files
    srv = tmp_path_factory.mktemp("xen-srv")
    for name in ("_modules", "_states", "_utils"):
        (srv / name).symlink_to(REPO / name)
    overrides = snippet("master")
    overrides.pop("reactor", None)
    overrides["file_roots"] = {"base": [str(srv)]}
    overrides["pillar_roots"] = {"base": [str(REPO / "tests" / "functional" / "pillar")]}
    daemon = salt_factories.salt_master_daemon("xenha-xen-master", overrides=overrides)
    with daemon.started():
        yield daemon


@pytest.fixture(scope="module")
def minions(master, cluster):
    daemons = []
    for host in (A, B):
        daemon = master.salt_minion_daemon(host, overrides=snippet("minion"))
        # salt_minion_daemon(environ=...) clashes with the factory's own environ
        daemon.environ = {**daemon.environ, **cluster.env(host, base=daemon.environ)}
        daemons.append(daemon)
    with daemons[0].started(), daemons[1].started():
        ret = master.salt_cli(timeout=300).run("saltutil.sync_all", minion_tgt="xen-host-*")
        assert ret.returncode == 0 and set(ret.data) == {A, B}, ret
        yield daemons


@pytest.fixture
def salt(master, minions):
    cli = master.salt_cli(timeout=120)

    def call(host, fun, *args):
        return cli.run(fun, *args, minion_tgt=host)

    return call


@pytest.fixture(autouse=True)
def _clean_hosts(cluster):
    yield
    for host in (A, B):
        cluster.add_host(host, memory_mib=2048)  # resets the host: no domUs, no delays
    (cluster.path / "faults.json").unlink(missing_ok=True)


def test_start_list_migrate_and_confirm_on_target(salt, cluster):
    cfg = cluster.write_config("web01", memory_mib=256)
    started = salt(A, "xenha_xen.start", cfg)
    assert started.returncode == 0, started
    assert started.data["name"] == "web01" and started.data["flags"] == ["blocked"]

    listed = salt(A, "xenha_xen.list_domains").data
    assert listed["toolstack"] == "xl"
    assert listed["dom0"]["name"] == "Domain-0"
    assert list(listed["domus"]) == ["web01"]

    moved = salt(A, "xenha_xen.migrate", "web01", B)
    assert moved.returncode == 0, moved
    assert moved.data["source_state"] == "gone" and moved.data["target"] == B
    assert moved.data["stderr"].endswith("Migration successful.")
    # the transport options come from pillar (tests/functional/pillar/xen.sls), as one argument
    migrate_call = [c for c in cluster.calls() if c["argv"][0] == "migrate"][-1]
    assert migrate_call["argv"] == [
        "migrate",
        "-s",
        "ssh -p 2222 -o BatchMode=yes -o ConnectTimeout=5 -i /root/.ssh/xenha_migrate -l root",
        "web01",
        B,
    ]
    # the runner's confirmation, done here by hand: the domU is on b and not on a
    on_b = salt(B, "xenha_xen.domain", "web01").data
    assert on_b["name"] == "web01" and on_b["transient"] is None
    assert salt(A, "xenha_xen.list_domains").data["domus"] == {}


def test_failed_migration_reports_xl_and_where_the_domu_is(salt, cluster):
    cfg = cluster.write_config("big", memory_mib=1400)
    assert salt(A, "xenha_xen.start", cfg).returncode == 0
    cluster.add_domain(B, "filler", memory_mib=600)
    failed = salt(A, "xenha_xen.migrate", "big", B)
    assert failed.returncode != 0
    assert "failed to free memory for the domain" in failed.stdout
    assert "Migration failed, resuming at sender." in failed.stdout
    assert "still running on the source as big" in failed.stdout
    assert "big" in cluster.domains(A)


def test_shutdown_with_timeout_and_forced_fallback(salt, cluster):
    cfg = cluster.write_config("web01")
    assert salt(B, "xenha_xen.start", cfg).returncode == 0
    cluster.update_host(B, shutdown_delay=1.0)
    done = salt(B, "xenha_xen.shutdown", "web01", "timeout=10")
    assert done.returncode == 0, done
    assert done.data["method"] == "shutdown" and done.data["seconds"] >= 1.0

    assert salt(B, "xenha_xen.start", cfg).returncode == 0
    cluster.set_fault(B, "shutdown", "ignore")
    refused = salt(B, "xenha_xen.shutdown", "web01", "timeout=1")
    assert refused.returncode != 0
    assert "did not shut down within 1 s" in refused.stdout
    assert "still running on this host" in refused.stdout
    forced = salt(B, "xenha_xen.shutdown", "web01", "timeout=1", "force=True")
    assert forced.data["method"] == "destroy"
    assert cluster.domains(B) == {}


def test_destroy_and_pause(salt, cluster):
    assert salt(A, "xenha_xen.start", cluster.write_config("web01")).returncode == 0
    assert salt(A, "xenha_xen.pause", "web01").data["flags"] == ["paused"]
    assert salt(A, "xenha_xen.unpause", "web01").data["flags"] == ["blocked"]
    assert salt(A, "xenha_xen.destroy", "web01").data == {"name": "web01", "result": True}
    assert cluster.domains(A) == {}
    missing = salt(A, "xenha_xen.destroy", "web01")
    assert missing.returncode != 0
    assert "web01 is an invalid domain identifier (rc=-6)" in missing.stdout


def test_state_running_and_absent(salt, cluster):
    cfg = cluster.write_config("web01")
    dry = salt(A, "state.single", "xenha_domu.running", "name=web01", f"config={cfg}", "test=True")
    (result,) = dry.data.values()
    assert result["result"] is None and "would be started" in result["comment"]
    assert cluster.domains(A) == {}

    real = salt(A, "state.single", "xenha_domu.running", "name=web01", f"config={cfg}")
    (result,) = real.data.values()
    assert result["result"] is True
    assert result["changes"]["state"] == {"old": "absent", "new": "running"}
    assert list(cluster.domains(A)) == ["web01"]

    again = salt(A, "state.single", "xenha_domu.running", "name=web01", f"config={cfg}")
    (result,) = again.data.values()
    assert (result["result"], result["changes"]) == (True, {})

    gone = salt(A, "state.single", "xenha_domu.absent", "name=web01", "timeout=10")
    (result,) = gone.data.values()
    assert result["result"] is True and result["changes"]["method"] == "shutdown"
    assert cluster.domains(A) == {}


def test_shell_injection_is_refused_and_nothing_runs(salt, cluster, tmp_path):
    marker = tmp_path / "x"
    before = len(cluster.calls())
    for fun, args in [
        ("xenha_xen.destroy", ["web;touch /tmp/x"]),
        ("xenha_xen.shutdown", [f"web;touch {marker}"]),
        ("xenha_xen.migrate", ["web01", f"{B};touch {marker}"]),
        ("xenha_xen.domain", ["$(touch /tmp/x)"]),
    ]:
        ret = salt(A, fun, *args)
        assert ret.returncode != 0
        assert "invalid" in ret.stdout and "name" in ret.stdout
    assert len(cluster.calls()) == before  # the toolstack was never invoked
    assert not marker.exists()
