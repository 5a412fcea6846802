"""
The xenha_xen execution module with Salt's loader mocked: cmd.run_all is a fake toolstack that
answers with Xen's formats and records every command, so each test can check both the result
and exactly what would have run (nothing, for a bad name).
"""

import json
import re
import shlex

import pytest
from salt.exceptions import CommandExecutionError

from _modules import xenha_xen

XL_HEADER = "Name                                        ID   Mem VCPUs\tState\tTime(s)"
XM_HEADER = "Name                                        ID   Mem VCPUs      State   Time(s)"


def listing(*rows, tool="xl"):
    """`xl list` / `xm list` output for (name, domid, state) rows, Domain-0 first."""
    fmt = "%-40s %5d %5d %5d     %s  %8.1f" if tool == "xl" else "%-40s %5s %5d %5d %10s %8.1f"
    lines = [
        XL_HEADER if tool == "xl" else XM_HEADER,
        fmt % ("Domain-0", 0, 1024, 2, "r-----", 9.0),
    ]
    lines += [fmt % (name, domid, 256, 1, state, 1.0) for name, domid, state in rows]
    return "\n".join(lines) + "\n"


def ok(stdout="", stderr=""):
    return {"retcode": 0, "stdout": stdout, "stderr": stderr, "pid": 1}


def failed(stderr, retcode=1):
    return {"retcode": retcode, "stdout": "", "stderr": stderr, "pid": 1}


TIMED_OUT = {"retcode": 1, "stdout": "['xl'] : Timed out after 5 seconds", "stderr": "", "pid": 1}


class FakeToolstack:
    """Answers by argv prefix; a list of answers is used in turn, its last one repeated."""

    def __init__(self):
        self.answers = {}
        self.calls = []

    def on(self, *prefix, answers):
        self.answers[prefix] = list(answers) if isinstance(answers, list) else [answers]

    def __call__(self, cmd, python_shell=None, ignore_retcode=None, timeout=None):
        assert isinstance(cmd, list), "commands must be argv lists"
        assert python_shell is False
        self.calls.append(cmd)
        for size in range(len(cmd), 0, -1):
            queue = self.answers.get(tuple(cmd[:size]))
            if queue:
                return queue.pop(0) if len(queue) > 1 else queue[0]
        raise AssertionError(f"unexpected command {shlex.join(cmd)}")

    def verbs(self):
        return [c[1] for c in self.calls]


@pytest.fixture
def xen():
    return FakeToolstack()


@pytest.fixture
def conf():
    return {"toolstack": "xl"}


@pytest.fixture
def on_path(monkeypatch):
    tools = {"xl", "xm"}
    monkeypatch.setattr(
        xenha_xen.salt.utils.path, "which", lambda t: f"/usr/sbin/{t}" if t in tools else None
    )
    return tools


@pytest.fixture
def configure_loader_modules(xen, conf, on_path):
    return {
        xenha_xen: {
            "__salt__": {
                "cmd.run_all": xen,
                "config.get": lambda key, default=None: conf if key == "xenha:xen" else default,
            },
            "__opts__": {"id": "ServVirt1"},
            "__pillar__": {},
            "__grains__": {"host": "ServVirt1", "fqdn": "ServVirt1.example"},
        }
    }


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(xenha_xen, "POLL_INTERVAL", 0.01)


# --- choosing the toolstack ---


def test_virtual_needs_a_binary(on_path):
    assert xenha_xen.__virtual__() == "xenha_xen"
    on_path.clear()
    ok_, why = xenha_xen.__virtual__()
    assert ok_ is False and "neither xl nor xm" in why


@pytest.mark.parametrize(
    ("configured", "present", "expected"),
    [
        ("xl", {"xl", "xm"}, "xl"),
        ("xm", {"xl", "xm"}, "xm"),
        (None, {"xl", "xm"}, "xl"),
        (None, {"xm"}, "xm"),
    ],
)
def test_toolstack_configured_or_detected(conf, on_path, configured, present, expected):
    conf["toolstack"] = configured
    on_path.intersection_update(present)
    assert xenha_xen.toolstack() == expected


def test_toolstack_errors(conf, on_path):
    conf["toolstack"] = "libvirt"
    with pytest.raises(CommandExecutionError, match="must be 'xl' or 'xm'"):
        xenha_xen.toolstack()
    conf["toolstack"] = "xm"
    on_path.discard("xm")
    with pytest.raises(CommandExecutionError, match="xm is not on PATH"):
        xenha_xen.toolstack()
    conf["toolstack"] = None
    on_path.clear()
    with pytest.raises(CommandExecutionError, match="neither xl nor xm"):
        xenha_xen.toolstack()


# --- reading ---


def test_list_domains_xl(xen):
    xen.on(
        "xl", "list", answers=ok(listing(("web01", 3, "-b----"), ("db01--incoming", 4, "--p---")))
    )
    result = xenha_xen.list_domains()
    assert result["toolstack"] == "xl"
    assert result["dom0"]["memory_mib"] == 1024
    assert sorted(result["domus"]) == ["db01--incoming", "web01"]
    assert result["domus"]["db01--incoming"]["transient"] == "incoming"
    assert xen.calls == [["xl", "list"]]


def test_list_domains_with_disks_from_xl_list_long(xen):
    xen.on("xl", "list", answers=ok(listing(("web01", 3, "-b----"), ("db01", 4, "-b----"))))
    long = [
        {
            "domid": 3,
            "config": {
                "c_info": {"name": "web01"},
                "disks": [{"pdev_path": "/var/lib/xen/web01.img", "vdev": "xvda"}],
            },
        },
        # db01 left between the two listings: its disks are unknown, not "none"
    ]
    xen.on("xl", "list", "-l", answers=ok(json.dumps(long)))
    result = xenha_xen.list_domains(disks=True)
    assert result["domus"]["web01"]["disks"] == ["/var/lib/xen/web01.img"]
    assert result["domus"]["db01"]["disks"] is None
    assert result["disks_error"] is None
    assert xen.calls == [["xl", "list"], ["xl", "list", "-l"]]
    # without disks=True nothing more runs and the rows have no disks key
    xen.calls.clear()
    assert "disks" not in xenha_xen.list_domains()["domus"]["web01"]
    assert xen.calls == [["xl", "list"]]


def test_list_domains_disks_unknown_when_the_toolstack_cannot_tell(xen, conf):
    xen.on("xl", "list", answers=ok(listing(("web01", 3, "-b----"))))
    xen.on("xl", "list", "-l", answers=ok("not json"))
    result = xenha_xen.list_domains(disks=True)
    assert result["domus"]["web01"]["disks"] is None
    assert "cannot parse the output of xl list -l" in result["disks_error"]
    conf["toolstack"] = "xm"
    xen.on("xm", "list", answers=ok(listing(("web01", 3, "-b----"), tool="xm")))
    result = xenha_xen.list_domains(disks=True)
    assert result["domus"]["web01"]["disks"] is None
    assert "xm cannot tell" in result["disks_error"]
    assert ["xm", "list", "-l"] not in xen.calls


def test_list_domains_xm(xen, conf):
    conf["toolstack"] = "xm"
    xen.on("xm", "list", answers=ok(listing(("web01", 3, "-b----"), tool="xm")))
    assert xenha_xen.list_domains()["domus"]["web01"]["domid"] == 3
    assert xen.calls == [["xm", "list"]]


def test_list_failure_and_garbage_name_the_command(xen):
    xen.on("xl", "list", answers=[failed("libxl_list_domain failed."), ok("garbage\n")])
    with pytest.raises(
        CommandExecutionError, match=r"xl list failed \(exit 1\): libxl_list_domain failed\."
    ):
        xenha_xen.list_domains()
    with pytest.raises(CommandExecutionError, match="cannot parse the output of xl list"):
        xenha_xen.list_domains()


def test_list_timeout(xen):
    xen.on("xl", "list", answers=TIMED_OUT)
    with pytest.raises(CommandExecutionError, match="xl list timed out after 60 s"):
        xenha_xen.list_domains()


def test_domain_exact_transient_or_none(xen):
    xen.on(
        "xl",
        "list",
        answers=ok(listing(("web01", 3, "-b----"), ("db01--migratedaway", 4, "---ss-"))),
    )
    assert xenha_xen.domain("web01")["domid"] == 3
    assert xenha_xen.domain("db01")["name"] == "db01--migratedaway"
    assert xenha_xen.domain("mail01") is None


def test_info(xen):
    text = "".join(
        f"{key:<23}: {value}\n"
        for key, value in [
            ("host", "ServVirt1"),
            ("total_memory", 2047),
            ("free_memory", 1011),
            ("nr_cpus", 2),
            ("xen_version", "4.17.3"),
        ]
    )
    xen.on("xl", "info", answers=ok(text))
    result = xenha_xen.info()
    assert result["total_memory_mib"] == 2047 and result["free_memory_mib"] == 1011
    assert result["nr_cpus"] == 2 and result["xen_version"] == "4.17.3"
    assert result["toolstack"] == "xl" and result["fields"]["host"] == "ServVirt1"


def test_details_xl_only(xen, conf):
    xen.on(
        "xl", "list", "-l", answers=ok('[{"domid": 3, "config": {"c_info": {"name": "web01"}}}]')
    )
    assert xenha_xen.details("web01")["web01"]["domid"] == 3
    assert xen.calls == [["xl", "list", "-l", "web01"]]
    conf["toolstack"] = "xm"
    with pytest.raises(CommandExecutionError, match="needs the xl toolstack"):
        xenha_xen.details()


def test_read_config(tmp_path):
    cfg = tmp_path / "web01.cfg"
    cfg.write_text('name = "web01"\nmemory = 512\n')
    assert xenha_xen.read_config(str(cfg)) == {
        "name": "web01",
        "memory_mib": 512,
        "vcpus": 1,
        "path": str(cfg),
    }
    with pytest.raises(CommandExecutionError, match="must be absolute"):
        xenha_xen.read_config("web01.cfg")
    with pytest.raises(CommandExecutionError, match="cannot read"):
        xenha_xen.read_config(str(tmp_path / "missing.cfg"))
    cfg.write_text("memory = 512\n")
    with pytest.raises(CommandExecutionError, match="no name"):
        xenha_xen.read_config(str(cfg))
    cfg.write_text('name = "web;rm -rf /"\n')
    with pytest.raises(CommandExecutionError, match="invalid domain name"):
        xenha_xen.read_config(str(cfg))
    # xl's syntax: quoted numbers, ';' separators; an error names the file and the line
    cfg.write_text('name = "web01"; memory = "0x200"\nvcpus = "2"\n')
    assert xenha_xen.read_config(str(cfg))["memory_mib"] == 512
    cfg.write_text('name = "web01"\nmemory = "lots"\n')
    where = re.escape(str(cfg))
    with pytest.raises(CommandExecutionError, match=rf"^bad domU config {where}:2: memory = "):
        xenha_xen.read_config(str(cfg))
    cfg.write_text('name = "VM%d" % vmid\n')
    with pytest.raises(CommandExecutionError, match=rf"{where}:1: .* only as plain data"):
        xenha_xen.read_config(str(cfg))


# --- names are checked before anything runs ---

BAD_NAMES = ["web;touch /tmp/x", "web01 && reboot", "$(id)", "`id`", "web|x", "-rf", "a\nb", ""]


@pytest.mark.parametrize("bad", BAD_NAMES)
@pytest.mark.parametrize(
    "function", ["domain", "destroy", "shutdown", "pause", "unpause", "details"]
)
def test_bad_domain_names_run_nothing(xen, function, bad):
    with pytest.raises(CommandExecutionError, match="invalid domain name"):
        getattr(xenha_xen, function)(bad)
    assert xen.calls == []


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_bad_migration_names_run_nothing(xen, bad):
    with pytest.raises(CommandExecutionError, match="invalid domain name"):
        xenha_xen.migrate(bad, "ServVirt2")
    with pytest.raises(CommandExecutionError, match="invalid host name"):
        xenha_xen.migrate("web01", bad)
    assert xen.calls == []


# --- starting and stopping ---


@pytest.fixture
def web01_cfg(tmp_path):
    cfg = tmp_path / "web01.cfg"
    cfg.write_text('name = "web01"\nmemory = 256\n')
    return str(cfg)


def test_start(xen, web01_cfg):
    xen.on("xl", "list", answers=[ok(listing()), ok(listing(("web01", 5, "-b----")))])
    xen.on("xl", "create", answers=ok(stderr=f"Parsing config from {web01_cfg}\n"))
    assert xenha_xen.start(web01_cfg)["domid"] == 5
    assert ["xl", "create", web01_cfg] in xen.calls


def test_start_paused_with_xm(xen, conf, web01_cfg):
    conf["toolstack"] = "xm"
    xen.on(
        "xm",
        "list",
        answers=[ok(listing(tool="xm")), ok(listing(("web01", 5, "--p---"), tool="xm"))],
    )
    xen.on("xm", "create", answers=ok("Started domain web01 (id=5)\n"))
    assert xenha_xen.start(web01_cfg, paused=True)["flags"] == ["paused"]
    assert ["xm", "create", "-p", web01_cfg] in xen.calls


def test_start_refuses_a_second_copy(xen, web01_cfg):
    xen.on("xl", "list", answers=ok(listing(("web01--incoming", 5, "--p---"))))
    with pytest.raises(CommandExecutionError, match="already on this host as web01--incoming"):
        xenha_xen.start(web01_cfg)
    assert "create" not in xen.verbs()


def test_start_failure_carries_stderr(xen, web01_cfg):
    xen.on("xl", "list", answers=ok(listing()))
    xen.on(
        "xl",
        "create",
        answers=failed(f"Parsing config from {web01_cfg}\nfailed to free memory for the domain\n"),
    )
    with pytest.raises(CommandExecutionError, match="failed to free memory for the domain"):
        xenha_xen.start(web01_cfg)


def test_start_not_listed_afterwards(xen, web01_cfg):
    xen.on("xl", "list", answers=ok(listing()))
    xen.on("xl", "create", answers=ok())
    with pytest.raises(CommandExecutionError, match="not listed afterwards"):
        xenha_xen.start(web01_cfg)


def test_shutdown_waits_until_gone(xen, fast):
    running = ok(listing(("web01", 3, "-b----")))
    xen.on("xl", "list", answers=[running, running, running, ok(listing())])
    xen.on("xl", "shutdown", answers=ok(stderr="Shutting down domain 3\n"))
    result = xenha_xen.shutdown("web01", timeout=5)
    assert result["method"] == "shutdown" and result["result"] is True
    assert ["xl", "shutdown", "web01"] in xen.calls and "destroy" not in xen.verbs()


def test_shutdown_timeout_without_force_says_where_it_is(xen, fast):
    xen.on("xl", "list", answers=ok(listing(("web01", 3, "-b----"))))
    xen.on("xl", "shutdown", answers=ok())
    with pytest.raises(
        CommandExecutionError, match=r"within 0.2 s; web01 \(domid 3.*still running"
    ):
        xenha_xen.shutdown("web01", timeout=0.2)
    assert "destroy" not in xen.verbs()


def test_shutdown_timeout_with_force_destroys(xen, fast):
    running = ok(listing(("web01", 3, "-b----")))
    xen.on("xl", "list", answers=[running] * 8 + [ok(listing())])
    xen.on("xl", "shutdown", answers=ok())
    xen.on("xl", "destroy", answers=ok())
    result = xenha_xen.shutdown("web01", timeout=0.05, force=True)
    assert result["method"] == "destroy" and "did not shut down within" in result["reason"]
    assert ["xl", "destroy", "web01"] in xen.calls


def test_shutdown_refused_falls_back_to_destroy_only_with_force(xen, fast):
    refused = failed(
        "PV control interface not available: external graceful shutdown not possible.\n"
    )
    xen.on("xl", "list", answers=ok(listing(("web01", 3, "-b----"))))
    xen.on("xl", "shutdown", answers=refused)
    with pytest.raises(CommandExecutionError, match="PV control interface not available"):
        xenha_xen.shutdown("web01")
    xen.on("xl", "list", answers=[ok(listing(("web01", 3, "-b----"))), ok(listing())])
    xen.on("xl", "destroy", answers=ok())
    assert xenha_xen.shutdown("web01", force=True)["method"] == "destroy"


def test_shutdown_of_absent_or_migrating_domain(xen):
    xen.on("xl", "list", answers=[ok(listing()), ok(listing(("web01--incoming", 3, "--p---")))])
    with pytest.raises(CommandExecutionError, match="not on this host"):
        xenha_xen.shutdown("web01")
    with pytest.raises(CommandExecutionError, match="mid-migration"):
        xenha_xen.shutdown("web01")
    assert "shutdown" not in xen.verbs()


def test_destroy(xen, fast):
    xen.on(
        "xl", "destroy", answers=[ok(), failed("web02 is an invalid domain identifier (rc=-6)\n")]
    )
    xen.on("xl", "list", answers=[ok(listing(("web01", 3, "-----d"))), ok(listing())])
    assert xenha_xen.destroy("web01") == {"name": "web01", "result": True}
    with pytest.raises(
        CommandExecutionError, match=r"xl destroy web02 failed.*invalid domain identifier"
    ):
        xenha_xen.destroy("web02")


def test_destroy_that_does_not_take(xen, fast):
    xen.on("xl", "destroy", answers=ok())
    xen.on("xl", "list", answers=ok(listing(("web01", 3, "-----d"))))
    with pytest.raises(CommandExecutionError, match="still listed"):
        xenha_xen.destroy("web01", timeout=0.05)


def test_pause_and_unpause_check_the_state(xen):
    xen.on(
        "xl",
        "list",
        answers=[ok(listing(("web01", 3, "-b----"))), ok(listing(("web01", 3, "--p---")))],
    )
    xen.on("xl", "pause", answers=ok())
    assert xenha_xen.pause("web01")["flags"] == ["paused"]
    xen.on(
        "xl",
        "list",
        answers=[ok(listing(("web01", 3, "--p---"))), ok(listing(("web01", 3, "-b----")))],
    )
    xen.on("xl", "unpause", answers=ok())
    assert xenha_xen.unpause("web01")["flags"] == ["blocked"]


def test_pause_that_did_nothing_is_an_error(xen):
    # xl pause exits 0 even when libxl fails: the module must look at the state
    xen.on("xl", "list", answers=ok(listing(("web01", 3, "-b----"))))
    xen.on(
        "xl",
        "pause",
        answers=ok(stderr="libxl: error: libxl_domain.c:621:libxl_domain_pause: failed\n"),
    )
    with pytest.raises(CommandExecutionError, match="did not take effect.*libxl_domain_pause"):
        xenha_xen.pause("web01")


# --- migration ---


def test_ssh_command_from_pillar_and_defaults(conf):
    assert xenha_xen.ssh_command() == (
        "ssh -p 22 -o BatchMode=yes -o ConnectTimeout=10 -i /root/.ssh/xenha_migrate -l root"
    )
    conf["ssh"] = {"port": 2222, "identity_file": "/root/.ssh/xenha_ed25519", "user": "root"}
    assert xenha_xen.ssh_command() == (
        "ssh -p 2222 -o BatchMode=yes -o ConnectTimeout=10 -i /root/.ssh/xenha_ed25519 -l root"
    )


@pytest.mark.parametrize(
    ("ssh", "problem"),
    [
        ({"port": "22; reboot"}, "TCP port"),
        ({"port": 70000}, "TCP port"),
        ({"identity_file": "/root/key;reboot"}, "identity_file"),
        ({"identity_file": "relative/key"}, "identity_file"),
        ({"user": "root$(id)"}, "user"),
        ({"connect_timeout": "soon"}, "connect_timeout"),
    ],
)
def test_ssh_settings_with_shell_metacharacters_are_refused(xen, conf, ssh, problem):
    conf["ssh"] = ssh
    with pytest.raises(CommandExecutionError, match=problem):
        xenha_xen.migrate("web01", "ServVirt2")
    assert xen.calls == []


def test_migrate_xl_success(xen, conf):
    conf["ssh"] = {"port": 2222}
    xen.on("xl", "list", answers=ok(listing()))
    xen.on(
        "xl",
        "migrate",
        answers=ok(
            stderr="migration sender: Target reports successful startup.\nMigration successful.\n"
        ),
    )
    result = xenha_xen.migrate("web01", "ServVirt2")
    argv = [
        "xl",
        "migrate",
        "-s",
        "ssh -p 2222 -o BatchMode=yes -o ConnectTimeout=10 -i /root/.ssh/xenha_migrate -l root",
        "web01",
        "ServVirt2",
    ]
    # one listing per move: the one after xl, which must no longer show the domU
    assert xen.calls == [argv, ["xl", "list"]]
    assert result["result"] is True and result["source_state"] == "gone"
    assert result["confirmed_on_target"] is False
    assert (result["source"], result["target"], result["command"]) == (
        "ServVirt1",
        "ServVirt2",
        argv,
    )
    assert result["stderr"].endswith("Migration successful.\n")
    timeline = result["timeline"]
    assert timeline["entry"] <= timeline["toolstack_done"] <= timeline["listed"]


def test_migrate_xm_uses_the_relocation_server(xen, conf):
    conf.update(toolstack="xm", relocation={"port": 8002, "ssl": True, "ssl_port": 8443})
    xen.on("xm", "list", answers=ok(listing(tool="xm")))
    xen.on("xm", "migrate", answers=ok())
    xenha_xen.migrate("web01", "ServVirt2")
    assert xen.calls[0] == ["xm", "migrate", "-l", "-p", "8443", "-s", "web01", "ServVirt2"]
    conf["relocation"] = {}
    xenha_xen.migrate("web01", "ServVirt2", live=False)
    assert xen.calls[2] == ["xm", "migrate", "-p", "8002", "web01", "ServVirt2"]


def test_migrate_failure_reports_stderr_and_the_domain_still_on_source(xen):
    stderr = "failed to free memory for the domain\nMigration failed, resuming at sender.\n"
    xen.on("xl", "list", answers=ok(listing(("web01", 3, "-b----"))))
    xen.on("xl", "migrate", answers=failed(stderr))
    with pytest.raises(CommandExecutionError) as exc:
        xenha_xen.migrate("web01", "ServVirt2")
    message = str(exc.value)
    assert stderr.strip() in message
    assert "still running on the source as web01 (domid 3" in message


def test_migrate_failure_leaving_migratedaway_says_so(xen):
    xen.on("xl", "list", answers=ok(listing(("web01--migratedaway", 3, "---ss-"))))
    xen.on("xl", "migrate", answers=failed("** Migration failed during final handshake **\n"))
    with pytest.raises(CommandExecutionError) as exc:
        xenha_xen.migrate("web01", "ServVirt2")
    message = str(exc.value)
    assert "Migration failed during final handshake" in message
    assert "left on the source as web01--migratedaway" in message
    assert "ServVirt2 as web01 or web01--incoming" in message


def test_migrate_success_but_still_listed_is_an_error(xen):
    xen.on("xl", "list", answers=ok(listing(("web01", 3, "-b----"))))
    xen.on("xl", "migrate", answers=ok(stderr="Migration successful.\n"))
    with pytest.raises(
        CommandExecutionError, match="reported success, but web01 is still running on the source"
    ):
        xenha_xen.migrate("web01", "ServVirt2")


def test_migrate_failed_but_gone_points_at_the_target(xen):
    xen.on("xl", "list", answers=ok(listing()))
    xen.on("xl", "migrate", answers=TIMED_OUT)
    with pytest.raises(
        CommandExecutionError, match=r"timed out after 300 s(.|\n)*may be running on ServVirt2"
    ):
        xenha_xen.migrate("web01", "ServVirt2")


def test_migrate_refuses_self_absent_and_migrating(xen):
    with pytest.raises(CommandExecutionError, match="that is this host"):
        xenha_xen.migrate("web01", "ServVirt1")
    assert xen.calls == []
    # xl looks the name up first and stops there (tools/xl find_domain): a domU that is not
    # here, or only as a migration's transient copy, is never sent anywhere
    unknown = failed("web01 is an invalid domain identifier (rc=-6)\n")
    xen.on("xl", "migrate", answers=unknown)
    xen.on("xl", "list", answers=[ok(listing()), ok(listing(("web01--incoming", 3, "--p---")))])
    with pytest.raises(CommandExecutionError, match="domU web01 is not on this host: xl migrate"):
        xenha_xen.migrate("web01", "ServVirt2")
    with pytest.raises(
        CommandExecutionError, match=r"mid-migration here as web01--incoming \(domid 3"
    ) as exc:
        xenha_xen.migrate("web01", "ServVirt2")
    assert "invalid domain identifier" in str(exc.value)
    assert "may be running on ServVirt2" not in str(exc.value)


def test_migrate_of_a_domain_xm_does_not_know(xen, conf):
    conf["toolstack"] = "xm"
    xen.on("xm", "migrate", answers=failed("Error: Domain 'web01' does not exist.\n"))
    xen.on("xm", "list", answers=ok(listing(tool="xm")))
    with pytest.raises(CommandExecutionError, match="domU web01 is not on this host: xm migrate"):
        xenha_xen.migrate("web01", "ServVirt2")


def test_info_and_details_errors_name_the_command(xen):
    xen.on("xl", "info", answers=[failed("libxl_physinfo failed.\n"), ok("host : x\n")])
    with pytest.raises(
        CommandExecutionError, match=r"xl info failed \(exit 1\): libxl_physinfo failed"
    ):
        xenha_xen.info()
    with pytest.raises(
        CommandExecutionError, match="cannot parse the output of xl info: .*total_memory"
    ):
        xenha_xen.info()
    xen.on("xl", "list", "-l", answers=ok("[{"))
    with pytest.raises(
        CommandExecutionError, match="cannot parse the output of xl list -l: .*not JSON"
    ):
        xenha_xen.details()


def test_unpause_that_did_nothing_is_an_error(xen):
    xen.on("xl", "list", answers=ok(listing(("web01", 3, "--p---"))))
    xen.on("xl", "unpause", answers=ok())
    with pytest.raises(
        CommandExecutionError, match=r"xl unpause web01 did not take effect \(web01"
    ):
        xenha_xen.unpause("web01")


def test_read_config_that_is_not_text(tmp_path):
    cfg = tmp_path / "web01.cfg"
    cfg.write_bytes(b"name = \xff\xfe\n")
    with pytest.raises(CommandExecutionError, match="cannot read domU config"):
        xenha_xen.read_config(str(cfg))


def test_migrate_when_the_source_cannot_be_listed_afterwards(xen):
    xen.on("xl", "list", answers=failed("libxl_list_domain failed."))
    xen.on("xl", "migrate", answers=failed("Migration failed, failed to suspend at sender.\n"))
    with pytest.raises(CommandExecutionError) as exc:
        xenha_xen.migrate("web01", "ServVirt2")
    assert "Migration failed, failed to suspend at sender." in str(exc.value)
    assert "where web01 is now is unknown: listing this host failed" in str(exc.value)


@pytest.mark.parametrize("function", ["domain", "destroy", "shutdown", "pause", "migrate"])
@pytest.mark.parametrize("name", ["Domain-0", "0", "17", "Xenstore", "web01--incoming", "web01-dm"])
def test_dom0_and_domids_are_not_domu_names(xen, function, name):
    args = (name, "ServVirt2") if function == "migrate" else (name,)
    with pytest.raises(CommandExecutionError, match="not a domU name"):
        getattr(xenha_xen, function)(*args)
    assert xen.calls == []


@pytest.fixture
def leased(monkeypatch, xen):
    """A lease-managed cluster member: the sanlock lease calls are recorded in ``events``,
    each with the toolstack verbs run before it, so the order is checked."""
    events = []

    def acquire(name):
        events.append(("acquire", name, xen.verbs()))
        if name == "busy":
            raise CommandExecutionError("acquire busy: sanlock refused the lease: -243")
        return {"domu": name, "changed": True}

    salt = dict(xenha_xen.__salt__)
    salt["xenha_sanlock.acquire"] = acquire
    salt["xenha_sanlock.release"] = lambda name: events.append(("release", name))
    pillar = {"xenha": {"sanlock": {"lease_path": "/dev/xenha-leases"}, "hosts": {"ServVirt1": {}}}}
    monkeypatch.setattr(xenha_xen, "__salt__", salt)
    monkeypatch.setattr(xenha_xen, "__pillar__", pillar)
    return events


def test_start_takes_the_lease_before_the_toolstack_runs(xen, web01_cfg, leased):
    xen.on("xl", "list", answers=[ok(listing()), ok(listing(("web01", 5, "-b----")))])
    xen.on("xl", "create", answers=ok())
    assert xenha_xen.start(web01_cfg)["domid"] == 5
    assert leased == [("acquire", "web01", ["list"])]
    assert xen.verbs() == ["list", "create", "list"]


def test_start_refused_lease_never_runs_the_toolstack(xen, tmp_path, leased):
    cfg = tmp_path / "busy.cfg"
    cfg.write_text('name = "busy"\n')
    xen.on("xl", "list", answers=ok(listing()))
    with pytest.raises(CommandExecutionError, match="-243"):
        xenha_xen.start(str(cfg))
    assert "create" not in xen.verbs()


def test_start_failure_releases_the_lease_it_took(xen, web01_cfg, leased):
    xen.on("xl", "list", answers=ok(listing()))
    xen.on("xl", "create", answers=failed("failed to free memory for the domain\n"))
    with pytest.raises(CommandExecutionError, match="failed to free memory"):
        xenha_xen.start(web01_cfg)
    assert leased == [("acquire", "web01", ["list"]), ("release", "web01")]


def test_start_on_a_lease_managed_host_without_the_module_refuses(xen, web01_cfg, leased):
    del xenha_xen.__salt__["xenha_sanlock.acquire"]
    xen.on("xl", "list", answers=ok(listing()))
    with pytest.raises(CommandExecutionError, match="xenha_sanlock module is not loaded"):
        xenha_xen.start(web01_cfg)
    assert "create" not in xen.verbs()
