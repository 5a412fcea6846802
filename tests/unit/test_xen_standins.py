"""
The xl/xm stand-ins (tests/standins): Xen's formats and messages, shared per-host state,
migration with the renames in flight and its failure modes, fault injection; and the
xenha_xen module driving them through a subprocess-backed cmd.run_all.
"""

import shutil
import subprocess
import time

import pytest
import xenha_xenparse as xp
from salt.exceptions import CommandExecutionError

from _modules import xenha_xen
from tests.standins import xenstandin
from tests.standins.cluster import StandinCluster

A, B = "xen-host-a", "xen-host-b"


@pytest.fixture
def cluster(tmp_path):
    cluster = StandinCluster(tmp_path / "xen")
    cluster.add_host(A, memory_mib=2048)
    cluster.add_host(B, memory_mib=1024)
    return cluster


def run(cluster, host, *argv, timeout=20):
    return subprocess.run(
        list(argv),
        env=cluster.env(host),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def names(cluster, host):
    return sorted(cluster.domains(host))


@pytest.fixture
def web01(cluster):
    cfg = cluster.write_config("web01", memory_mib=256, vcpus=2)
    assert run(cluster, A, "xl", "create", cfg).returncode == 0
    return cfg


def test_xl_list_is_byte_exact(cluster, web01):
    out = run(cluster, A, "xl", "list").stdout.splitlines()
    assert out[0] == "Name                                        ID   Mem VCPUs\tState\tTime(s)"
    assert out[1].startswith(
        "Domain-0                                     0   512     2     r-----  "
    )
    assert out[2].startswith(
        "web01                                        1   256     2     -b----  "
    )
    assert len(out[2]) == 40 + 1 + 5 + 1 + 5 + 1 + 5 + 5 + 6 + 2 + 8


def test_outputs_parse_with_xenhas_parsers(cluster, web01):
    long_cfg = cluster.write_config("a-domain-name-that-is-longer-than-forty-columns", 128)
    run(cluster, A, "xl", "create", "-p", long_cfg)
    for tool, parser in (("xl", xp.parse_xl_list), ("xm", xp.parse_xm_list)):
        rows = xp.split_dom0(parser(run(cluster, A, tool, "list").stdout))
        assert rows["dom0"]["memory_mib"] == 512
        assert rows["domus"]["web01"]["vcpus"] == 2
        assert rows["domus"]["a-domain-name-that-is-longer-than-forty-columns"]["flags"] == [
            "paused"
        ]
        info = xp.summarize_info(xp.parse_info(run(cluster, A, tool, "info").stdout))
        assert (info["total_memory_mib"], info["free_memory_mib"]) == (2048, 2048 - 512 - 256 - 128)
    details = xp.parse_xl_list_json(run(cluster, A, "xl", "list", "-l").stdout)
    assert details["web01"]["max_memkb"] == 256 * 1024


@pytest.mark.parametrize(
    ("spec", "record"),
    [
        (
            "phy:/dev/xenha/disk,xvda,w",
            {"pdev_path": "/dev/xenha/disk", "vdev": "xvda", "backend": "phy", "readwrite": 1},
        ),
        (
            "format=raw, vdev=xvda, access=rw, target=/cluster/domus/web01.img",
            {"pdev_path": "/cluster/domus/web01.img", "vdev": "xvda", "format": "raw"},
        ),
        (
            "/var/lib/xen/images/db01.qcow2,qcow2,xvdb,r",
            {"pdev_path": "/var/lib/xen/images/db01.qcow2", "format": "qcow2", "readwrite": 0},
        ),
        (",,xvdc,cdrom", {"pdev_path": None, "vdev": "xvdc", "is_cdrom": 1}),
    ],
)
def test_disk_specs_become_libxl_records(spec, record):
    parsed = xenstandin.parse_disk(spec)
    assert {k: parsed[k] for k in record} == record


def test_xl_list_long_shows_the_disks_of_the_config_and_keeps_them_on_migration(cluster):
    cfg = cluster.path / "configs" / "db01.cfg"
    cfg.parent.mkdir(exist_ok=True)
    cfg.write_text(
        'name = "db01"\nmemory = 128\ndisk = [ "phy:/dev/vg0/db01,xvda,w",\n'
        "         'format=raw, vdev=xvdb, target=/cluster/domus/db01-data.img' ]\n"
    )
    assert run(cluster, A, "xl", "create", str(cfg)).returncode == 0
    details = xp.parse_xl_list_json(run(cluster, A, "xl", "list", "-l").stdout)
    assert details["db01"]["disks"] == ["/dev/vg0/db01", "/cluster/domus/db01-data.img"]
    assert details["db01"]["config"]["disks"][0]["backend"] == "phy"
    assert run(cluster, A, "xl", "migrate", "db01", B).returncode == 0
    details = xp.parse_xl_list_json(run(cluster, B, "xl", "list", "-l", "db01").stdout)
    assert details["db01"]["disks"] == ["/dev/vg0/db01", "/cluster/domus/db01-data.img"]


def test_create_messages(cluster, web01):
    again = run(cluster, A, "xl", "create", web01)
    assert again.returncode == 1
    assert again.stderr.startswith(f"Parsing config from {web01}\n")
    assert 'Domain with name "web01" already exists.' in again.stderr
    big = cluster.write_config("big", memory_mib=4096)
    assert run(cluster, A, "xl", "create", big).stderr.endswith(
        "failed to free memory for the domain\n"
    )
    missing = run(cluster, A, "xl", "create", "/nonexistent.cfg")
    assert (
        "Failed to read config file: /nonexistent.cfg: No such file or directory" in missing.stderr
    )
    xm = run(cluster, B, "xm", "create", web01)
    assert xm.stdout == f'Using config file "{web01}".\nStarted domain web01 (id=1)\n'


def test_unknown_domain_messages(cluster):
    xl = run(cluster, A, "xl", "destroy", "nosuch")
    assert (xl.returncode, xl.stderr) == (1, "nosuch is an invalid domain identifier (rc=-6)\n")
    xm = run(cluster, A, "xm", "destroy", "nosuch")
    assert (xm.returncode, xm.stderr) == (3, "Error: Domain 'nosuch' does not exist.\n")


def test_shutdown_takes_the_hosts_delay_and_w_waits(cluster, web01):
    cluster.update_host(A, shutdown_delay=0.5)
    assert run(cluster, A, "xl", "shutdown", "web01").stderr == "Shutting down domain 1\n"
    assert names(cluster, A) == ["web01"]
    time.sleep(0.6)
    assert names(cluster, A) == []
    run(cluster, A, "xl", "create", web01)
    waited = run(cluster, A, "xm", "shutdown", "-w", "web01")
    assert waited.stdout == "Domain web01 terminated\nAll domains terminated\n"
    assert names(cluster, A) == []


def test_faults_fail_ignore_and_hang(cluster, web01):
    cluster.set_fault(A, "list", "fail")
    failed = run(cluster, A, "xl", "list")
    assert (failed.returncode, failed.stderr) == (1, "libxl_list_domain failed.\n")
    cluster.set_fault(A, "list", None)
    cluster.set_fault(A, "shutdown", "ignore")
    assert run(cluster, A, "xl", "shutdown", "web01").returncode == 0
    time.sleep(0.1)
    assert names(cluster, A) == ["web01"]
    cluster.set_fault(A, "info", "hang")
    with pytest.raises(subprocess.TimeoutExpired):
        run(cluster, A, "xl", "info", timeout=1)


def test_calls_are_logged(cluster, web01):
    run(cluster, B, "xl", "list")
    assert [(c["host"], c["tool"], c["argv"]) for c in cluster.calls()] == [
        (A, "xl", ["create", web01]),
        (B, "xl", ["list"]),
    ]


# --- migration ---


def test_xl_migrate_moves_the_domain(cluster, web01):
    done = run(cluster, A, "xl", "migrate", "-s", "ssh -p 2222", "web01", B)
    assert done.returncode == 0
    assert done.stderr.endswith(
        "migration sender: Target reports successful startup.\nMigration successful.\n"
    )
    assert names(cluster, A) == [] and names(cluster, B) == ["web01"]
    assert cluster.domains(B)["web01"]["state"] == "-b----"


def test_xl_migrate_renames_while_in_flight(cluster, web01):
    cluster.update_host(A, migrate_delay=1.6)
    proc = subprocess.Popen(
        ["xl", "migrate", "web01", B], env=cluster.env(A), stderr=subprocess.PIPE, text=True
    )
    seen = set()
    try:
        while proc.poll() is None:
            seen.add((tuple(names(cluster, A)), tuple(names(cluster, B))))
            time.sleep(0.05)
    finally:
        proc.wait(timeout=20)
    assert proc.returncode == 0
    assert (("web01",), ("web01--incoming",)) in seen
    assert (("web01--migratedaway",), ("web01--incoming",)) in seen
    assert names(cluster, A) == [] and names(cluster, B) == ["web01"]


def test_xl_migrate_unreachable_targets(cluster, web01):
    unknown = run(cluster, A, "xl", "migrate", "web01", "nosuch")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith(
        "ssh: Could not resolve hostname nosuch: Name or service not known\n"
    )
    assert "truncated reading banner from migration receiver stream" in unknown.stderr
    cluster.set_up(B, False)
    down = run(cluster, A, "xl", "migrate", "-s", "ssh -p 2222 -o BatchMode=yes", "web01", B)
    assert down.stderr.startswith(f"ssh: connect to host {B} port 2222: No route to host\n")
    assert names(cluster, A) == ["web01"] and names(cluster, B) == []


def test_xl_migrate_target_out_of_memory(cluster):
    cfg = cluster.write_config("big", memory_mib=768)
    run(cluster, A, "xl", "create", cfg)
    done = run(cluster, A, "xl", "migrate", "big", B)
    assert done.returncode == 1
    assert (
        "failed to free memory for the domain\n"
        "migration target: Domain creation failed (code -3).\n" in done.stderr
    )
    assert done.stderr.endswith("Migration failed, resuming at sender.\n")
    assert names(cluster, A) == ["big"] and names(cluster, B) == []


def test_xl_migrate_unknown_domain(cluster):
    done = run(cluster, A, "xl", "migrate", "nosuch", B)
    assert (done.returncode, done.stderr) == (1, "nosuch is an invalid domain identifier (rc=-6)\n")


@pytest.mark.parametrize("why", ["receive-fault", "name-taken"])
def test_xl_migrate_target_startup_failure_resumes_at_sender(cluster, web01, why):
    if why == "receive-fault":
        cluster.set_fault(B, "migrate-receive", "fail")
    else:
        cluster.add_domain(B, "web01", 64)
    done = run(cluster, A, "xl", "migrate", "web01", B)
    assert done.returncode == 1
    assert (
        "migration sender: Resumed OK.\nMigration failed due to problems at target.\n"
        in done.stderr
    )
    assert names(cluster, A) == ["web01"]
    assert cluster.domains(A)["web01"]["state"] == "-b----"
    assert names(cluster, B) == ([] if why == "receive-fault" else ["web01"])


def test_xl_migrate_broken_handshake_leaves_both_copies(cluster, web01):
    cluster.set_fault(A, "migrate", "break")
    done = run(cluster, A, "xl", "migrate", "web01", B)
    assert done.returncode == 1
    assert "** Migration failed during final handshake **" in done.stderr
    assert names(cluster, A) == ["web01--migratedaway"] and names(cluster, B) == ["web01--incoming"]


def test_xm_migrate(cluster, web01):
    refused = run(cluster, A, "xm", "migrate", "-l", "-p", "8003", "web01", B)
    assert refused.stderr == "Error: can't connect: Connection refused\n"
    no_ssl = run(cluster, A, "xm", "migrate", "-l", "-s", "web01", B)
    assert no_ssl.stderr == "Error: can't connect: Connection refused\n"
    unknown = run(cluster, A, "xm", "migrate", "-l", "nosuch", B)
    assert (unknown.returncode, unknown.stderr) == (3, "Error: Domain 'nosuch' does not exist.\n")
    cluster.update_host(A, migrate_delay=1.0)
    proc = subprocess.Popen(["xm", "migrate", "-l", "-p", "8002", "web01", B], env=cluster.env(A))
    seen = set()
    while proc.poll() is None:
        seen.add(tuple(names(cluster, A)))
        time.sleep(0.05)
    assert proc.wait(timeout=20) == 0
    assert ("migrating-web01",) in seen
    assert names(cluster, A) == [] and names(cluster, B) == ["web01"]


# --- the module against the stand-ins ---


@pytest.fixture
def configure_loader_modules(cluster, monkeypatch):
    def run_all(cmd, python_shell=None, ignore_retcode=None, timeout=None):
        assert python_shell is False
        try:
            proc = subprocess.run(
                cmd,
                env=cluster.env(A),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:  # what cmd.run_all returns when it kills a command
            return {
                "retcode": 1,
                "stdout": f"{cmd} : Timed out after {timeout} seconds",
                "stderr": "",
            }
        return {"retcode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}

    env_path = cluster.env(A)["PATH"]

    monkeypatch.setattr(
        xenha_xen.salt.utils.path, "which", lambda tool: shutil.which(tool, path=env_path)
    )
    return {
        xenha_xen: {
            "__salt__": {"cmd.run_all": run_all, "config.get": lambda key, default=None: default},
            "__opts__": {"id": A},
            "__grains__": {"host": A},
        }
    }


def test_module_lifecycle_on_standins(cluster):
    cfg = cluster.write_config("web01", memory_mib=256)
    assert xenha_xen.toolstack() == "xl"
    assert xenha_xen.start(cfg)["name"] == "web01"
    assert xenha_xen.info()["free_memory_mib"] == 2048 - 512 - 256
    moved = xenha_xen.migrate("web01", B)
    assert moved["source_state"] == "gone" and names(cluster, B) == ["web01"]
    with pytest.raises(CommandExecutionError, match="not on this host"):
        xenha_xen.shutdown("web01")


def test_module_explains_a_broken_handshake(cluster):
    xenha_xen.start(cluster.write_config("web01"))
    cluster.set_fault(A, "migrate", "break")
    with pytest.raises(CommandExecutionError) as exc:
        xenha_xen.migrate("web01", B)
    message = str(exc.value)
    assert "** Migration failed during final handshake **" in message
    assert "left on the source as web01--migratedaway" in message


def test_module_shutdown_falls_back_to_destroy(cluster, monkeypatch):
    monkeypatch.setattr(xenha_xen, "POLL_INTERVAL", 0.05)
    xenha_xen.start(cluster.write_config("web01"))
    cluster.set_fault(A, "shutdown", "ignore")
    with pytest.raises(CommandExecutionError, match="still running on this host"):
        xenha_xen.shutdown("web01", timeout=0.5)
    assert xenha_xen.shutdown("web01", timeout=0.5, force=True)["method"] == "destroy"
    assert names(cluster, A) == []


def test_module_hung_toolstack_times_out(cluster, monkeypatch):
    monkeypatch.setattr(xenha_xen, "COMMAND_TIMEOUT", 1)
    cluster.set_fault(A, "list", "hang")
    with pytest.raises(CommandExecutionError, match="xl list timed out after 1 s"):
        xenha_xen.list_domains()
