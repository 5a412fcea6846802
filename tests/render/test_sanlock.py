"""
The sanlock formula (and the lease LUN in the iscsi formula) rendered by real Salt with the
example pillar, the watchdog found in a stand-in sysfs folder; then applied on this machine with
every path in a temp dir and a file as the lease area: test=True says what it would write and
writes nothing, a real apply initialises the lockspace once, a second apply changes nothing.
"""

import shutil

import pytest
import xenha_sanlockcfg as cfg

from tests.render.conftest import states

LOGIN = {"Debian": "open-iscsi", "Suse": "iscsi", "RedHat": "iscsi"}
JOINED = "sanlock-lockspace-xenha_sanlock-joined"


def sysfs(tmp, **devices):
    """A stand-in /sys/class/watchdog: {device: identity}."""
    root = tmp / "watchdog"
    root.mkdir(exist_ok=True)
    for dev, identity in devices.items():
        (root / dev).mkdir()
        (root / dev / "identity").write_text(f"{identity}\n")
    return {"sanlock": {"lookup": {"watchdog_sysfs": str(root)}}}


def show(salt_call, minion, family, sls, pillar, xenha=None):  # noqa: PLR0917
    code, out = salt_call(minion, family, "state.show_low_sls", sls, pillar=pillar, xenha=xenha)
    assert code == 0 and isinstance(out, list), out
    assert all(isinstance(chunk, dict) for chunk in out), out
    return states(out)


def ids(rendered):
    return {sid: fun for sid, (fun, _) in rendered.items() if sid.startswith("sanlock-")}


@pytest.mark.parametrize("family", ["Debian", "Suse", "RedHat"])
def test_init_host_states_and_boot_order(salt_call, tmp_path, family):
    rendered = show(salt_call, "ServVirt1", family, "sanlock", sysfs(tmp_path))
    assert ids(rendered) == {
        "sanlock-package-pkg-installed": "pkg.installed",
        "sanlock-config-file-managed-sanlock-conf": "file.managed",
        **({"sanlock-config-file-keyvalue-options": "file.keyvalue"} if family == "Debian" else {}),
        "sanlock-config-file-managed-softdog-load": "file.managed",
        "sanlock-config-kmod-present-softdog": "kmod.present",
        "sanlock-config-file-managed-dropin": "file.managed",
        "sanlock-service-cmd-run-daemon-reload": "cmd.run",
        "sanlock-service-service-running-wdmd": "service.running",
        "sanlock-service-service-running": "service.running",
        "sanlock-service-cmd-run-restart": "cmd.run",
        "sanlock-service-file-managed-lockspace-unit": "file.managed",
        "sanlock-service-service-enabled-lockspace-unit": "service.enabled",
        "sanlock-lockspace-xenha_sanlock-lockspace_present": "xenha_sanlock.lockspace_present",
        JOINED: "xenha_sanlock.joined",
    }
    assert rendered["sanlock-package-pkg-installed"][1]["pkgs"] == ["sanlock", "python3-sanlock"]
    login = LOGIN[family]
    dropin = rendered["sanlock-config-file-managed-dropin"][1]
    assert dropin["name"] == "/etc/systemd/system/sanlock.service.d/xenha.conf"
    assert [ln for ln in dropin["contents"].splitlines() if ln and ln[0] != "#"] == [
        "[Unit]",
        f"Wants={login}.service",
        f"After={login}.service",
    ]
    unit = rendered["sanlock-service-file-managed-lockspace-unit"][1]["contents"]
    assert f"After={login}.service" in unit.splitlines()
    assert "ExecStartPre=/usr/bin/udevadm settle --exit-if-exists=/dev/xenha-leases" in unit
    add = "ExecStart=/usr/sbin/sanlock client add_lockspace -o 10 -s xenha:1:/dev/xenha-leases:0"
    assert add in unit.splitlines()
    # the lockspace waits for the daemon, the iSCSI login and the LUN's udev link
    _, present = rendered["sanlock-lockspace-xenha_sanlock-lockspace_present"]
    assert present["require"] == [
        {"sls": s}
        for s in ("sanlock.package", "sanlock.service", "iscsi.initiator", "iscsi.lease_device")
    ]
    _, joined = rendered[JOINED]
    assert {"xenha_sanlock": "sanlock-lockspace-xenha_sanlock-lockspace_present"} in joined[
        "require"
    ]
    assert "retry" not in joined
    # restarted on a configuration change only while no lockspace is joined
    _, restart = rendered["sanlock-service-cmd-run-restart"]
    assert restart["unless"] == "/usr/sbin/sanlock client status | grep -q '^s '"
    assert restart["onchanges"] == [{"sls": "sanlock.config"}]
    if family == "Debian":  # its /etc/default/sanlock would pass -w 0
        options = rendered["sanlock-config-file-keyvalue-options"][1]
        assert (options["name"], options["key_values"]) == (
            "/etc/default/sanlock",
            {"sanlock_opts": '""'},
        )


def test_other_hosts_only_join_and_wait_for_the_init_host(salt_call, tmp_path):
    rendered = show(salt_call, "ServVirt2", "Debian", "sanlock", sysfs(tmp_path))
    assert "sanlock-lockspace-xenha_sanlock-lockspace_present" not in rendered
    _, joined = rendered[JOINED]
    assert joined["retry"] == {"attempts": 10, "interval": 6}
    unit = rendered["sanlock-service-file-managed-lockspace-unit"][1]["contents"]
    assert "-s xenha:2:/dev/xenha-leases:0" in unit


def test_sanlock_conf_names_the_host_and_takes_extra_settings(salt_call, tmp_path):
    pillar = sysfs(tmp_path)
    pillar["sanlock"]["lookup"]["settings"] = {"mlock_level": 1, "high_priority": 1}
    rendered = show(salt_call, "ServVirt2", "Debian", "sanlock.config", pillar)
    conf = rendered["sanlock-config-file-managed-sanlock-conf"][1]
    assert conf["name"] == "/etc/sanlock/sanlock.conf"
    assert conf["contents"].startswith("# Managed by Salt (formula sanlock)")
    assert [ln for ln in conf["contents"].splitlines() if ln and ln[0] != "#"] == [
        "our_host_name = ServVirt2",
        "use_watchdog = 1",
        "high_priority = 1",
        "mlock_level = 1",
    ]


@pytest.mark.parametrize(
    ("devices", "setting", "softdog"),
    [
        ({}, "auto", True),
        ({"watchdog0": "Software Watchdog"}, "auto", True),  # softdog loaded earlier
        ({"watchdog0": "iTCO_wdt"}, "auto", False),
        ({"watchdog0": "Software Watchdog", "watchdog1": "IPMI"}, "hardware", False),
        ({"watchdog0": "iTCO_wdt"}, "softdog", True),
    ],
)
def test_softdog_only_where_no_hardware_watchdog(salt_call, tmp_path, devices, setting, softdog):
    xenha = {"sanlock": {"watchdog": setting}}
    rendered = show(salt_call, "ServVirt1", "Debian", "sanlock", sysfs(tmp_path, **devices), xenha)
    assert ("sanlock-config-kmod-present-softdog" in rendered) is softdog
    assert ("sanlock-config-file-managed-softdog-load" in rendered) is softdog
    if softdog:
        load = rendered["sanlock-config-file-managed-softdog-load"][1]
        assert load["name"] == "/etc/modules-load.d/xenha-softdog.conf"
        assert load["contents"].splitlines()[1:] == ["softdog"]
        assert rendered["sanlock-config-kmod-present-softdog"][1]["name"] == "softdog"
    assert rendered["sanlock-service-service-running-wdmd"][1]["name"] == "wdmd"


def test_no_watchdog_switches_wdmd_off(salt_call, tmp_path):
    rendered = show(salt_call, "ServVirt1", "Debian", "sanlock", sysfs(tmp_path),
                    {"sanlock": {"watchdog": "none"}})  # fmt: skip
    assert "sanlock-service-service-running-wdmd" not in rendered
    assert "sanlock-config-kmod-present-softdog" not in rendered
    conf = rendered["sanlock-config-file-managed-sanlock-conf"][1]["contents"]
    assert "use_watchdog = 0" in conf.splitlines()


def test_hardware_watchdog_demanded_but_missing_is_refused(salt_call, tmp_path):
    code, out = salt_call("ServVirt1", "Debian", "state.show_low_sls", "sanlock",
                          pillar=sysfs(tmp_path, watchdog0="Software Watchdog"),
                          xenha={"sanlock": {"watchdog": "hardware"}})  # fmt: skip
    assert code != 0
    assert "xenha:sanlock:watchdog: hardware, but ServVirt1 has no watchdog device other " in (
        str(out)
    )


@pytest.mark.parametrize(
    ("xenha", "message"),
    [
        ({"sanlock": {"watchdog": "on"}}, "xenha:sanlock:watchdog: must be one of auto,"),
        ({"hosts": {"ServVirt2": {"host_id": 1}}}, "xenha:hosts:ServVirt2:host_id: 1 is also"),
        ({"sanlock": {"init_host": "ServDB"}}, "xenha:sanlock:init_h"),
        ({"sanlock": {"io_timeout": 0}}, "xenha:sanlock:io_timeout: must be an integer from 1"),
    ],
)
def test_bad_sanlock_pillar_stops_the_render(salt_call, tmp_path, xenha, message):
    code, out = salt_call("ServVirt1", "Debian", "state.show_low_sls", "sanlock",
                          pillar=sysfs(tmp_path), xenha=xenha)  # fmt: skip
    assert code != 0
    assert message in str(out)


def test_lease_lun_on_lio_and_its_udev_link(salt_call, tmp_path):
    rendered = show(salt_call, "ServDB", "RedHat", "iscsi.target", {},
                    {"storage": {"implementation": "lio"}})  # fmt: skip
    tpg = "/iscsi/iqn.2009-06.br.example:storage.cluster/tpg1"
    assert rendered["iscsi-lio-cmd-run-create-lease-backstore"][1]["name"] == (
        "targetcli /backstores/block create name=xenha-leases dev=/dev/sda5"
    )
    assert rendered["iscsi-lio-cmd-run-create-lease-lun"][1]["name"] == (
        f"targetcli {tpg}/luns create /backstores/block/xenha-leases lun=2"
    )
    order = list(rendered)  # the LUN exists before the ACLs, which then map it
    assert order.index("iscsi-lio-cmd-run-create-lease-lun") < order.index(
        "iscsi-lio-cmd-run-create-acl-ServVirt1"
    )
    rendered = show(salt_call, "ServVirt2", "Debian", "iscsi.lease_device", {})
    rule = rendered["iscsi-lease_device-file-managed-udev-rule"][1]
    assert rule["name"] == "/etc/udev/rules.d/61-xenha-leases.rules"
    assert rule["contents"].splitlines()[2] == (
        'SUBSYSTEM=="block", ENV{DEVTYPE}=="disk", ENV{ID_PATH}=="ip-192.168.25.12:3260-iscsi-'
        'iqn.2009-06.br.example:storage.cluster-lun-2", SYMLINK+="xenha-leases"'
    )
    assert rendered["iscsi-lease_device-cmd-run-rescan"][1]["unless"] == "test -b /dev/xenha-leases"


def test_a_file_backed_lease_lun_is_made_once_at_its_size(salt_call):
    lun = {"backing_device": "/srv/iscsi/leases.img", "size_mib": 100}
    rendered = show(salt_call, "ServDB", "Debian", "iscsi.target", {},
                    {"sanlock": {"lease_lun": lun}})  # fmt: skip
    create = rendered["iscsi-lease_lun-cmd-run-create-backing"][1]
    assert create["name"] == "fallocate -l 100MiB /srv/iscsi/leases.img"
    assert create["creates"] == "/srv/iscsi/leases.img"
    conf = rendered["iscsi-tgt-file-managed-xenha-conf"][1]["contents"]
    assert "<backing-store /srv/iscsi/leases.img>" in conf


def test_without_a_lease_lun_the_target_exports_one_lun(salt_call):
    rendered = show(salt_call, "ServDB", "Debian", "iscsi.target", {},
                    {"sanlock": {"lease_lun": None, "lease_path": "/srv/leases"}})  # fmt: skip
    conf = rendered["iscsi-tgt-file-managed-xenha-conf"][1]["contents"]
    assert conf.count("<backing-store") == 1
    assert not any(sid.startswith("iscsi-lease") for sid in rendered)


# --- applied on this machine -------------------------------------------------------------------

needs_sanlock = pytest.mark.skipif(not shutil.which("sanlock"), reason="sanlock not installed")


def applied(salt_call, tmp, *args):
    """state.apply sanlock on ServVirt1 with every path in tmp, no service manager, a file as
    the lease area; the join is left out (it needs a running daemon: tests/hosts)."""
    pillar = sysfs(tmp)
    pillar["sanlock"]["lookup"].update(
        service_manager="none",
        device_sls=None,
        config=str(tmp / "sanlock.conf"),
        options_file=str(tmp / "default-sanlock"),
    )
    xenha = {"sanlock": {"lease_lun": None, "lease_path": str(tmp / "shared/leases"),
                         "io_timeout": 1, "slots": 8, "watchdog": "none"}}  # fmt: skip
    code, out = salt_call("ServVirt1", "Debian", "state.apply", "sanlock", *args,
                          f"exclude=[{{id: {JOINED}}}]", pillar=pillar, xenha=xenha)  # fmt: skip
    assert isinstance(out, dict), out
    return code, {key.split("_|-")[1]: value for key, value in out.items()}


@needs_sanlock
def test_test_mode_says_what_it_would_write_and_writes_nothing(salt_call, tmp_path):
    (tmp_path / "default-sanlock").write_text('enabled=1\nsanlock_opts="-w 0"\n')
    code, out = applied(salt_call, tmp_path, "test=True")
    failed = {k: v["comment"] for k, v in out.items() if v["result"] is False}
    assert list(failed) == ["sanlock-lockspace-xenha_sanlock-lockspace_present"], failed
    assert out["sanlock-lockspace-cmd-run-create-area"]["comment"] == (
        f'Command "fallocate -l 9MiB {tmp_path}/shared/leases" would have been executed'
    )
    assert out["sanlock-config-file-managed-sanlock-conf"]["changes"] == {
        "newfile": str(tmp_path / "sanlock.conf")
    }
    assert out["sanlock-config-file-keyvalue-options"]["result"] is None
    # without the area the lockspace state cannot read it yet: it says so, naming the key
    present = out["sanlock-lockspace-xenha_sanlock-lockspace_present"]
    assert (
        present["comment"] == f"xenha:sanlock:lease_path: {tmp_path}/shared/leases does not exist"
    )
    # with an empty area it lists what it would write
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared/leases").write_bytes(b"\0" * cfg.area_size(8))
    code, out = applied(salt_call, tmp_path, "test=True")
    assert code == 0, {k: v["comment"] for k, v in out.items() if v["result"] is False}
    present = out["sanlock-lockspace-xenha_sanlock-lockspace_present"]
    placed = cfg.plan(["web01", "db01"], {}, 8)
    slots = ", ".join(f"{d} (slot {s})" for d, s in sorted(placed.items()))
    assert (present["result"], present["comment"]) == (
        None,
        f"would initialise lockspace xenha, {slots}",
    )
    assert not (tmp_path / "sanlock.conf").exists()
    assert (tmp_path / "default-sanlock").read_text() == 'enabled=1\nsanlock_opts="-w 0"\n'
    assert (tmp_path / "shared/leases").read_bytes() == b"\0" * cfg.area_size(8)


@needs_sanlock
def test_apply_initialises_once_and_changes_nothing_the_second_time(salt_call, tmp_path):
    (tmp_path / "default-sanlock").write_text('enabled=1\nsanlock_opts="-w 0"\n')
    code, first = applied(salt_call, tmp_path)
    assert code == 0, {k: v["comment"] for k, v in first.items() if v["result"] is False}
    present = first["sanlock-lockspace-xenha_sanlock-lockspace_present"]
    assert present["changes"]["lockspace"] == "initialised"
    assert sorted(present["changes"]["resources"]) == ["db01", "web01"]
    assert (tmp_path / "shared/leases").stat().st_size == cfg.area_size(8)
    conf = (tmp_path / "sanlock.conf").read_text().splitlines()
    assert [ln for ln in conf if not ln.startswith("#")] == [
        "our_host_name = ServVirt1",
        "use_watchdog = 0",
    ]
    assert (tmp_path / "default-sanlock").read_text() == 'enabled=1\nsanlock_opts=""\n'

    code, second = applied(salt_call, tmp_path)
    assert code == 0
    assert {sid: ret["changes"] for sid, ret in second.items() if ret["changes"]} == {}
    assert second["sanlock-lockspace-xenha_sanlock-lockspace_present"]["comment"] == (
        "lockspace xenha and every domU's lease area are initialised"
    )
