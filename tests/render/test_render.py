"""
Every formula rendered by real Salt for Debian 12, openSUSE Leap 15 and Rocky 9 with the example
pillar (pillar/xenha/cluster.yaml plus stand-in secrets), and the rendered states checked.
"""

import json
import shutil
import subprocess

import pytest
import xenha_hbproto

from tests.render.conftest import states

FAMILIES = ["Debian", "Suse", "RedHat"]
VMHOSTS = ["ServVirt1", "ServVirt2"]

PACKAGES = {  # (chrony, tgt, initiator, xen) per family
    "Debian": ("chrony", "tgt", "open-iscsi", ["xen-system-amd64"]),
    "Suse": ("chrony", "tgt", "open-iscsi", ["xen", "xen-tools"]),
    "RedHat": ("chrony", "scsi-target-utils", "iscsi-initiator-utils", ["xen", "xen-runtime"]),
}
SERVICES = {  # (chrony, tgt, initiator services, xen services)
    "Debian": ("chrony", "tgt", ["iscsid", "open-iscsi"], ["xen"]),
    "Suse": ("chronyd", "tgtd", ["iscsid", "iscsi"], ["xencommons"]),
    "RedHat": ("chronyd", "tgtd", ["iscsid", "iscsi"], ["xencommons"]),
}
CHRONY_CONF = {
    "Debian": ("/etc/chrony/chrony.conf", "/var/lib/chrony/chrony.drift"),
    "Suse": ("/etc/chrony.conf", "/var/lib/chrony/drift"),
    "RedHat": ("/etc/chrony.conf", "/var/lib/chrony/drift"),
}
O2CB_CONFIG = {"Debian": "/etc/default/o2cb", "Suse": "/etc/sysconfig/o2cb",
               "RedHat": "/etc/sysconfig/o2cb"}  # fmt: skip
O2CB_INIT = {"Debian": "/etc/init.d/o2cb", "Suse": "/sbin/o2cb.init", "RedHat": "/sbin/o2cb.init"}
LOGIN_UNIT = {"Debian": "open-iscsi.service", "Suse": "iscsi.service", "RedHat": "iscsi.service"}


def lines(text):
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def by_function(rendered, function):
    return {sid: args for sid, (fun, args) in rendered.items() if fun == function}


@pytest.mark.parametrize("family", FAMILIES)
def test_top_targets_by_role(highstate, family):
    sls = {
        minion: {sid.split("-")[0] for sid in highstate(family, minion)}
        for minion in ("ServDB", *VMHOSTS)
    }
    assert sls["ServDB"] == {"xenha", "ntp", "hosts", "iscsi"}
    for minion in VMHOSTS:
        assert sls[minion] == {"xenha", "ntp", "hosts", "iscsi", "ocfs2", "xen", "sanlock"}
    assert "iscsi-tgt-file-managed-xenha-conf" in highstate(family, "ServDB")
    assert "iscsi-initiator-cmd-run-login" in highstate(family, "ServVirt1")
    assert "iscsi-initiator-cmd-run-login" not in highstate(family, "ServDB")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("minion", ["ServDB", *VMHOSTS])
def test_ntp_chrony_peers_with_the_other_members(highstate, family, minion):
    rendered = highstate(family, minion)
    chrony, _, _, _ = PACKAGES[family]
    assert rendered["ntp-package-pkg-installed"] == ("pkg.installed", {"name": chrony})
    service, args = rendered["ntp-service-service-running"]
    assert (service, args["name"], args["enable"]) == ("service.running", SERVICES[family][0], True)
    path, drift = CHRONY_CONF[family]
    _, config = rendered["ntp-config-file-managed-config"]
    assert config["name"] == path
    assert config["contents"].startswith("# Managed by Salt (formula ntp)")
    others = {"ServDB": "192.168.25.12", "ServVirt1": "192.168.25.10", "ServVirt2": "192.168.25.11"}
    del others[minion]
    peers = [ip for _, ip in sorted(others.items())]  # by minion id
    assert lines(config["contents"]) == [
        "server a.ntp.br iburst",
        "server b.ntp.br iburst",
        "server c.ntp.br iburst",
        *(f"{kind} {ip}{' iburst' if kind == 'peer' else ''}" for ip in peers
          for kind in ("peer", "allow")),
        "local stratum 10 orphan",
        f"driftfile {drift}",
        "makestep 1.0 3",
        "rtcsync",
    ]  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_hosts_lists_every_member_and_sets_the_hostname(highstate, family):
    rendered = highstate(family, "ServVirt2")
    present = by_function(rendered, "host.present")
    assert {(a["name"], a["ip"], a["clean"]) for a in present.values()} == {
        ("ServDB", "192.168.25.12", True),
        ("ServVirt1", "192.168.25.10", True),
        ("ServVirt2", "192.168.25.11", True),
    }
    assert rendered["hosts-hostname-file-managed-hostname-file"][1]["contents"] == "ServVirt2"
    assert rendered["hosts-hostname-cmd-run-hostname"][1] == {
        "name": "hostname ServVirt2",
        "unless": 'test "$(hostname)" = ServVirt2',
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_tgt_target_limited_to_the_vm_hosts_with_chap(highstate, family):
    rendered = highstate(family, "ServDB")
    _, tgt, _, _ = PACKAGES[family]
    assert rendered["iscsi-target-pkg-installed"][1]["name"] == tgt
    assert rendered["iscsi-tgt-service-running"][1]["name"] == SERVICES[family][1]
    _, conf = rendered["iscsi-tgt-file-managed-xenha-conf"]
    assert conf["name"] == "/etc/tgt/conf.d/xenha.conf"
    assert (conf["mode"], conf["show_changes"]) == ("0600", False)
    assert [line.strip() for line in lines(conf["contents"])] == [
        "<target iqn.2009-06.br.example:storage.cluster>",
        "<backing-store /dev/sda4>",
        "lun 1",
        "</backing-store>",
        "<backing-store /dev/sda5>",  # the sanlock lease LUN
        "lun 2",
        "</backing-store>",
        "initiator-address 192.168.25.10",
        "initiator-address 192.168.25.11",
        "incominguser xenha render-test-chap-secret",
        "</target>",
    ]
    assert rendered["iscsi-tgt-file-append-include-config-dir"][1]["text"] == (
        "include /etc/tgt/conf.d/*.conf"
    )
    # applied live, for this target only, and only when the configuration changed
    _, update = rendered["iscsi-tgt-cmd-run-tgt-admin-update"]
    assert update["name"] == (
        "tgt-admin -C 0 -c /etc/tgt/targets.conf --update iqn.2009-06.br.example:storage.cluster"
    )
    assert update["onchanges"] == [
        {"file": "iscsi-tgt-file-append-include-config-dir"},
        {"file": "iscsi-tgt-file-managed-xenha-conf"},
    ]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("minion", VMHOSTS)
def test_initiator_name_chap_discovery_login(highstate, family, minion):
    rendered = highstate(family, minion)
    _, _, pkg, _ = PACKAGES[family]
    assert rendered["iscsi-initiator-pkg-installed"][1]["name"] == pkg
    iqn = f"iqn.2009-06.br.example:{minion.lower()}"
    name = rendered["iscsi-initiator-file-managed-initiatorname"][1]
    assert (name["name"], lines(name["contents"])) == (
        "/etc/iscsi/initiatorname.iscsi",
        [f"InitiatorName={iqn}"],
    )
    guard = rendered["iscsi-initiator-file-managed-iscsid-conf"][1]
    assert (guard["name"], guard["replace"], guard["mode"]) == ("/etc/iscsi/iscsid.conf", False,
                                                                "0600")  # fmt: skip
    settings = by_function(rendered, "file.replace")
    assert sorted(a["not_found_content"] for a in settings.values()) == [
        "node.session.auth.authmethod = CHAP",
        "node.session.auth.password = render-test-chap-secret",
        "node.session.auth.username = xenha",
        "node.startup = automatic",
    ]
    assert {(a["name"], a["show_changes"]) for a in settings.values()} == {
        ("/etc/iscsi/iscsid.conf", False)
    }
    assert settings["iscsi-initiator-file-replace-iscsid-conf-node-startup"]["pattern"] == (
        "^[ \t]*node\\.startup[ \t]*=.*$"
    )
    services = by_function(rendered, "service.running")
    assert {a["name"] for a in services.values() if "iscsi" in a["name"]} == set(
        SERVICES[family][2]
    )
    # iscsid rereads the initiator name on restart; the login service is never restarted
    # (stopping it logs out and pulls the shared disk from under OCFS2)
    assert services["iscsi-initiator-service-running-daemon"]["watch"] == [
        {"file": "iscsi-initiator-file-managed-initiatorname"}
    ]
    assert "watch" not in services["iscsi-initiator-service-running-login"]
    node = "iscsiadm -m node -T iqn.2009-06.br.example:storage.cluster -p 192.168.25.12:3260"
    assert rendered["iscsi-initiator-cmd-run-discovery"][1]["name"] == (
        "iscsiadm -m discovery -t sendtargets -p 192.168.25.12:3260"
    )
    assert rendered["iscsi-initiator-cmd-run-discovery"][1]["unless"] == node
    # the node records take iscsid.conf's settings again when it changed, no value on argv
    update = rendered["iscsi-initiator-cmd-run-node-update"][1]
    assert update["name"] == "iscsiadm -m discovery -t sendtargets -p 192.168.25.12:3260 -o update"
    assert update["onchanges"] == [{"file": sid} for sid in sorted(settings)]
    assert "env" not in update
    login = rendered["iscsi-initiator-cmd-run-login"][1]
    assert (login["name"], login["unless"]) == (
        f"{node} --login",
        "iscsiadm -m session | grep -qwF iqn.2009-06.br.example:storage.cluster",
    )
    assert {"cmd": "iscsi-initiator-cmd-run-discovery"} in login["require"]
    assert {"cmd": "iscsi-initiator-cmd-run-node-update"} in login["require"]


# the render tests' stand-in secrets (tests/render/pillar/xenha/secrets.yaml) and xm's below
SECRET_VALUES = ("render-test-chap-secret", "render-test-heartbeat-key", "render-test-placeholder",
                 "XM-SSL-KEY")  # fmt: skip
SECRET_CASES = [  # (minion, family, SLS or None for the highstate, xenha pillar overrides)
    ("ServVirt1", "Debian", None, None),
    ("ServVirt2", "RedHat", None, None),
    ("ServDB", "Suse", None, None),
    ("ServDB", "Suse", "iscsi.target", {"storage": {"implementation": "iet", "lun": 0}}),
    ("ServVirt2", "Suse", "xen", {"xen": {"toolstack": "xm", "relocation": {
        "ssl": True, "ssl_key": "XM-SSL-KEY", "ssl_cert": "CERT"}}}),
]  # fmt: skip


@pytest.mark.parametrize("case", SECRET_CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
def test_secrets_only_in_root_only_files(highstate, salt_call, case):
    """Every state that carries a secret writes a file owned by root with mode 0600 (enforced
    by a file.managed of that path); no command carries one, not even in its environment."""
    minion, family, sls, xenha = case
    if sls is None:
        rendered = highstate(family, minion)
    else:
        rendered = show(salt_call, minion, family, sls, xenha=xenha)
    managed = by_function(rendered, "file.managed")
    holders = {
        sid: (fun, args) for sid, (fun, args) in rendered.items()
        if any(secret in json.dumps(args) for secret in SECRET_VALUES)
    }  # fmt: skip
    assert holders, "no secret rendered at all: the test would prove nothing"
    for sid, (fun, args) in holders.items():
        assert fun in ("file.managed", "file.replace"), (sid, fun)
        guards = [a for a in managed.values() if a["name"] == args["name"]]
        assert [(a["user"], a["group"], a["mode"]) for a in guards] == [("root", "root", "0600")]
        assert args.get("show_changes") is False, sid
    # the heartbeat key reaches the beacon through the pillar: no state writes it anywhere
    assert "render-test-heartbeat-key" not in json.dumps(rendered)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("minion", VMHOSTS)
def test_ocfs2_cluster_o2cb_format_once_and_ordered_mount(highstate, family, minion):
    rendered = highstate(family, minion)
    assert rendered["ocfs2-package-pkg-installed"][1]["pkgs"] == (
        ["ocfs2-tools", "ocfs2-tools-o2cb"] if family == "Suse" else ["ocfs2-tools"]
    )
    fun, cluster = rendered["ocfs2-config-xenha_o2cb-cluster_present"]
    assert fun == "xenha_o2cb.cluster_present"
    assert cluster == {
        "name": "ocfs2",
        "nodes": {
            "ServVirt1": {"ip": "192.168.25.10", "number": 0, "port": 7777},
            "ServVirt2": {"ip": "192.168.25.11", "number": 1, "port": 7777},
        },
        "heartbeat_mode": "local",
        "config_file": "/etc/ocfs2/cluster.conf",
        "require": [{"file": "ocfs2-config-file-directory-cluster-conf-dir"}],
    }
    o2cb = rendered["ocfs2-config-file-managed-o2cb-config"][1]
    assert o2cb["name"] == O2CB_CONFIG[family]
    assert lines(o2cb["contents"]) == [
        "O2CB_ENABLED=true",
        "O2CB_STACK=o2cb",
        "O2CB_BOOTCLUSTER=ocfs2",
        "O2CB_HEARTBEAT_THRESHOLD=31",
        "O2CB_IDLE_TIMEOUT_MS=30000",
        "O2CB_KEEPALIVE_DELAY_MS=2000",
        "O2CB_RECONNECT_DELAY_MS=2000",
    ]
    o2cb_service = rendered["ocfs2-service-service-running"][1]
    assert (o2cb_service["name"], "watch" in o2cb_service) == ("o2cb", False)  # never restarted
    # a service that ran before O2CB_ENABLED=true is active and offline: the init script onlines
    fun, online = rendered["ocfs2-service-xenha_o2cb-online"]
    assert (fun, online) == (
        "xenha_o2cb.online",
        {
            "name": "ocfs2",
            "init_script": O2CB_INIT[family],
            "require": [{"service": "ocfs2-service-service-running"}],
        },
    )
    device = (
        "/dev/disk/by-path/ip-192.168.25.12:3260-iscsi-iqn.2009-06.br.example:storage.cluster-lun-1"
    )
    if minion == "ServVirt1":  # the pillar's format_host, and only it
        fun, fmt = rendered["ocfs2-format-xenha_o2cb-formatted"]
        assert fun == "xenha_o2cb.formatted"
        assert {k: fmt[k] for k in ("name", "label", "slots", "block_size", "cluster_size",
                                    "feature_level")} == {
            "name": device, "label": "cluster_home", "slots": 2, "block_size": "4K",
            "cluster_size": "32K", "feature_level": "max-compat",
        }  # fmt: skip
        assert {"sls": "iscsi.initiator"} in fmt["require"]
    else:
        assert "ocfs2-format-xenha_o2cb-formatted" not in rendered
    fun, mount = rendered["ocfs2-mount-mount-mounted"]
    assert (fun, mount["name"], mount["device"], mount["fstype"]) == (
        "mount.mounted", "/cluster", device, "ocfs2"
    )  # fmt: skip
    assert mount["opts"] == [
        "_netdev",
        f"x-systemd.requires={LOGIN_UNIT[family]}",
        "x-systemd.requires=o2cb.service",
    ]
    assert mount["persist"] is True
    assert {"sls": "ocfs2.service"} in mount["require"]
    assert {"sls": "iscsi.initiator"} in mount["require"]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_old_lease_renewer_is_retired_on_vm_hosts(highstate, family):
    # its module is gone: a renewer left enabled would fail to start and reboot the host
    rendered = highstate(family, "ServVirt2")
    fun, service = rendered["xenha-retired-service-dead-leased"]
    assert (fun, service["name"], service["enable"]) == ("service.dead", "xenha-leased", False)
    fun, unit = rendered["xenha-retired-file-absent-leased-unit"]
    assert (fun, unit["name"]) == ("file.absent", "/etc/systemd/system/xenha-leased.service")
    assert {"service": "xenha-retired-service-dead-leased"} in unit["require"]
    assert not [sid for sid in rendered if sid.startswith(("xenha-leases-", "xenha-leased-"))]
    assert "xenha-retired-service-dead-leased" not in highstate(family, "ServDB")


@pytest.mark.parametrize("family", FAMILIES)
def test_xen_xl_ssh_pinned_and_forced_command(highstate, family):
    rendered = highstate(family, "ServVirt1")
    assert rendered["xen-package-pkg-installed"][1]["pkgs"] == PACKAGES[family][3]
    services = {sid: a["name"] for sid, a in by_function(rendered, "service.running").items()}
    assert [name for sid, name in services.items() if sid.startswith("xen-")] == (
        SERVICES[family][3]
    )
    # xenstored and friends are never restarted under running domains
    assert not any("watch" in a for sid, (f, a) in rendered.items() if sid.startswith("xen-"))
    auth = rendered["xen-migration-ssh_auth-present-migrate-key"][1]
    assert (auth["enc"], auth["user"], auth.get("config")) == ("ssh-ed25519", "root", None)
    assert auth["options"] == [
        'from="192.168.25.11"',
        "restrict",
        'command="/usr/local/sbin/xenha-migrate-receive"',
    ]
    client = rendered["xen-migration-file-managed-client-config"][1]
    assert lines(client["contents"]) == [
        "Host ServVirt2 192.168.25.11",
        "    User root",
        "    Port 22",
        "    IdentityFile /root/.ssh/xenha_migrate",
        "    IdentitiesOnly yes",
        "    UserKnownHostsFile /etc/ssh/xenha_known_hosts",
        "    StrictHostKeyChecking yes",
    ]
    known = lines(rendered["xen-migration-file-managed-known-hosts"][1]["contents"])
    assert [line.split(" ", 1)[0] for line in known] == [
        "ServVirt1,192.168.25.10",
        "ServVirt2,192.168.25.11",
    ]
    key = rendered["xen-migration-file-managed-private-key"][1]
    assert (key["name"], key["mode"], key["show_changes"]) == ("/root/.ssh/xenha_migrate", "0600",
                                                               False)  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_xen_autostart_disabled_for_cluster_domus(highstate, family):
    rendered = highstate(family, "ServVirt2")
    xendomains = rendered["xen-autostart-file-keyvalue-xendomains"][1]
    assert xendomains["name"] == (
        "/etc/default/xendomains" if family == "Debian" else "/etc/sysconfig/xendomains"
    )
    assert xendomains["key_values"] == {"XENDOMAINS_RESTORE": "false", "XENDOMAINS_SAVE": '""'}
    assert rendered["xen-autostart-file-absent-web01"][1]["names"] == [
        "/etc/xen/auto/web01",
        "/etc/xen/auto/web01.cfg",
    ]
    assert "xen-autostart-file-absent-db01" in rendered


def test_beacon_pillar_for_vm_hosts_only(salt_call):
    code, beacons = salt_call("ServVirt2", "Debian", "pillar.get", "beacons", "unmask=True")
    assert code == 0
    config = {k: v for item in beacons["xenha_heartbeat"] for k, v in item.items()}
    assert config == {
        "bind": "192.168.25.11",
        "peers": {"ServVirt1": "192.168.25.10"},
        "key": "render-test-heartbeat-key",
        "port": 7788,
        "send_interval": 0.25,
        "dead_time": 2.0,
        "cluster": "ocfs2",
        "toolstack": "xl",
    }
    # and the heartbeat's own configuration check accepts it as it is
    assert xenha_hbproto.parse_config(config)["peers"] == {"ServVirt1": "192.168.25.10"}
    code, beacons = salt_call("ServDB", "Debian", "pillar.get", "beacons", "unmask=True")
    assert (code, beacons) == (0, "")


# The alternatives behind the same pillar.
def show(salt_call, minion, family, sls, **pillar):
    code, out = salt_call(minion, family, "state.show_low_sls", sls, **pillar)
    assert code == 0 and isinstance(out, list), out
    assert all(isinstance(chunk, dict) for chunk in out), out
    return states(out)


@pytest.mark.parametrize(("family", "implementation", "path", "service"), [
    ("Suse", "ntpd", "/etc/ntp.conf", "ntpd"),
    ("Debian", "ntpsec", "/etc/ntpsec/ntp.conf", "ntpsec"),
])  # fmt: skip
def test_ntp_alternatives(salt_call, family, implementation, path, service):
    rendered = show(salt_call, "ServVirt1", family, "ntp",
                    xenha={"ntp": {"implementation": implementation}})  # fmt: skip
    config = rendered["ntp-config-file-managed-config"][1]
    assert config["name"] == path
    assert rendered["ntp-service-service-running"][1]["name"] == service
    text = lines(config["contents"])
    assert "tos orphan 10" in text
    assert "peer 192.168.25.12 iburst" in text
    assert "restrict 192.168.25.11 nomodify notrap noquery" in text


def test_unpackaged_alternative_is_refused(salt_call):
    code, out = salt_call("ServVirt1", "RedHat", "state.show_low_sls", "ntp",
                          xenha={"ntp": {"implementation": "ntpd"}})  # fmt: skip
    assert code != 0
    assert "xenha:ntp:implementation: ntpd is not packaged for os_family RedHat" in str(out)


def test_lio_target(salt_call):
    rendered = show(salt_call, "ServDB", "RedHat", "iscsi.target",
                    xenha={"storage": {"implementation": "lio"}})  # fmt: skip
    assert rendered["iscsi-target-pkg-installed"][1]["name"] == "targetcli"
    tpg = "/iscsi/iqn.2009-06.br.example:storage.cluster/tpg1"
    commands = {sid: (a["name"], a.get("unless")) for sid, (f, a) in rendered.items()
                if f == "cmd.run"}  # fmt: skip
    assert commands["iscsi-lio-cmd-run-create-backstore"] == (
        "targetcli /backstores/block create name=xenha dev=/dev/sda4",
        "targetcli /backstores/block/xenha ls",
    )
    assert commands["iscsi-lio-cmd-run-create-lun"] == (
        f"targetcli {tpg}/luns create /backstores/block/xenha lun=1",
        f"targetcli {tpg}/luns/lun1 ls",
    )
    assert commands["iscsi-lio-cmd-run-create-acl-ServVirt2"] == (
        f"targetcli {tpg}/acls create iqn.2009-06.br.example:servvirt2",
        f"targetcli {tpg}/acls/iqn.2009-06.br.example:servvirt2 ls",
    )
    chap = rendered["iscsi-lio-cmd-run-chap-ServVirt1"][1]
    assert chap["env"] == [{"XENHA_CHAP": "render-test-chap-secret"}]
    acl_auth = (
        "/sys/kernel/config/target/iscsi/iqn.2009-06.br.example:storage.cluster/tpgt_1/acls/"
        "iqn.2009-06.br.example:servvirt1/auth"
    )
    assert chap["name"].endswith(f"printf '%s' \"$XENHA_CHAP\" > {acl_auth}/password")
    assert commands["iscsi-lio-cmd-run-saveconfig"] == ("targetcli saveconfig", None)
    assert rendered["iscsi-lio-service-enabled"][1]["name"] == "target"


def test_lio_chap_secret_never_on_a_command_line(salt_call, tmp_path):
    """The rendered CHAP commands run by sh with a stand-in targetcli and configfs: the
    password lands in the ACL's auth/password, no started command sees it in its argv, and
    the unless check then holds."""
    secret = r"lio-secret\1&x$y"  # noqa: S105
    configfs = tmp_path / "configfs"
    rendered = show(
        salt_call, "ServDB", "RedHat", "iscsi.target",
        xenha={"storage": {"implementation": "lio", "chap": {"secret": secret}}},
        pillar={"iscsi": {"lookup": {"target": {"lio": {"configfs": str(configfs)}}}}},
    )  # fmt: skip
    chap = rendered["iscsi-lio-cmd-run-chap-ServVirt1"][1]
    auth = configfs / "iscsi/iqn.2009-06.br.example:storage.cluster/tpgt_1/acls"
    auth = auth / "iqn.2009-06.br.example:servvirt1/auth"
    auth.mkdir(parents=True)
    (auth / "password").write_text("NULL\n")  # as LIO shows an unset password
    # PATH holds only spies that log their argv: every command the shell starts is one of
    # them (anything else would not be found), and targetcli answers as LIO would
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "argv.log"
    spies = {"targetcli": "echo userid=xenha", "grep": f'exec {shutil.which("grep")} "$@"',
             "cat": f'exec {shutil.which("cat")} "$@"'}  # fmt: skip
    for name, body in spies.items():
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n{body}\n')
        (bin_dir / name).chmod(0o755)
    env = {"PATH": str(bin_dir), **chap["env"][0]}
    assert env["XENHA_CHAP"] == secret

    def run(command):  # as cmd.run runs it (python_shell): /bin/sh -c
        return subprocess.run(["/bin/sh", "-c", command], env=env, check=False).returncode

    assert run(chap["unless"]) != 0  # not set yet: the state would run
    assert run(chap["name"]) == 0
    assert (auth / "password").read_text() == secret
    assert run(chap["unless"]) == 0  # set: the next apply leaves it alone
    started = log.read_text()
    assert secret not in started
    assert {line.split()[0] for line in started.splitlines()} == {"targetcli", "grep", "cat"}


def test_iet_target(salt_call):
    rendered = show(salt_call, "ServDB", "Suse", "iscsi.target",
                    xenha={"storage": {"implementation": "iet", "lun": 0}})  # fmt: skip
    config = rendered["iscsi-iet-file-managed-config"][1]
    assert config["name"] == "/etc/ietd.conf"
    assert [line.strip() for line in lines(config["contents"])] == [
        "Target iqn.2009-06.br.example:storage.cluster",
        "IncomingUser xenha render-test-chap-secret",
        "Lun 0 Path=/dev/sda4,Type=blockio",
        "Lun 2 Path=/dev/sda5,Type=blockio",  # the sanlock lease LUN
    ]
    allow = rendered["iscsi-iet-file-managed-initiators-allow"][1]
    assert lines(allow["contents"]) == [
        "iqn.2009-06.br.example:storage.cluster 192.168.25.10, 192.168.25.11"
    ]
    assert rendered["iscsi-iet-service-running"][1]["name"] == "iscsitarget"


def test_xm_relocation_limited_to_peers_over_ssl(salt_call):
    rendered = show(
        salt_call, "ServVirt2", "Suse", "xen",
        xenha={"xen": {"toolstack": "xm", "relocation": {
            "ssl": True, "ssl_key": "KEY", "ssl_cert": "CERT"}}},
    )  # fmt: skip
    assert rendered["xen-package-pkg-installed"][1]["pkgs"] == ["xen", "xen-tools"]
    xend = rendered["xen-service-service-running-xend"][1]
    assert (xend["name"], xend["watch"]) == ("xend", [{"sls": "xen.migration"}])
    sxp = lines(rendered["xen-migration-file-managed-xend-config"][1]["contents"])
    assert sxp == [
        "(xend-unix-server yes)",
        "(xend-relocation-server no)",
        "(xend-relocation-port 8002)",
        "(xend-relocation-address '192.168.25.11')",
        "(xend-relocation-hosts-allow '^ServVirt1$ ^192\\\\.168\\\\.25\\\\.10$')",
        "(xend-relocation-ssl-server yes)",
        "(xend-relocation-ssl yes)",
        "(xend-relocation-ssl-port 8003)",
        "(xend-relocation-server-ssl-key-file /etc/xen/xenha-relocation.key)",
        "(xend-relocation-server-ssl-cert-file /etc/xen/xenha-relocation.crt)",
        "(dom0-min-mem 256)",
    ]
    key = rendered["xen-migration-file-managed-ssl-key"][1]
    assert (key["contents"], key["mode"], key["show_changes"]) == ("KEY", "0600", False)
    assert not any(sid.startswith("xen-migration-ssh_auth") for sid in rendered)


def test_xm_is_not_packaged_on_debian_12(salt_call):
    code, out = salt_call("ServVirt1", "Debian", "state.show_low_sls", "xen",
                          xenha={"xen": {"toolstack": "xm"}})  # fmt: skip
    assert code != 0
    assert "xenha:xen:toolstack: xm is not packaged for os_family Debian" in str(out)


# A bad pillar stops the run while rendering, before any state runs.
@pytest.mark.parametrize(("xenha", "message"), [
    ({"hosts": {"ServVirt2": {"ip": "192.168.25.10"}}},
     "xenha:hosts:ServVirt2:ip: duplicate IP address '192.168.25.10'"),
    ({"ocfs2": {"cluster": "a_cluster_name_too_long"}}, "xenha:ocfs2:cluster: invalid cluster"),
    ({"storage": {"chap": {"secret": "short"}}}, "xenha:storage:chap:secret: CHAP secret is 5"),
])  # fmt: skip
def test_bad_pillar_aborts_the_highstate(salt_call, xenha, message):
    code, out = salt_call("ServVirt1", "Debian", "state.apply", "test=True", xenha=xenha)
    assert code != 0
    assert isinstance(out, list), out  # render errors, not state results
    assert any(message in error for error in out)


def test_the_shipped_pillar_without_secrets_names_the_first_missing_one(salt_call):
    _, out = salt_call("ServVirt1", "Debian", "state.show_lowstate", secrets=False)
    assert any(
        "xenha:storage:chap:secret: missing (a secret: set it in the secrets pillar"
        " (pillar/xenha/secrets.yaml, docs/pillar.md))" in error
        for error in out
        if isinstance(error, str)  # render errors, not compiled chunks
    ), out


@pytest.mark.parametrize("family", FAMILIES)
def test_clean_states_render(salt_call, family):
    rendered = show(salt_call, "ServVirt1", family,
                    "ntp.clean,hosts.clean,ocfs2.clean,xen.clean,xenha.clean")  # fmt: skip
    assert rendered["ocfs2-clean-mount-unmounted"][1]["name"] == "/cluster"
    assert rendered["xen-clean-file-absent-migration-files"][1]["names"][0] == (
        "/root/.ssh/xenha_migrate"
    )
    assert rendered["xenha-retired-service-dead-leased"][1]["name"] == "xenha-leased"
    assert rendered["ntp-clean-file-absent-config"][1]["name"] == CHRONY_CONF[family][0]


# The lab's knobs (lab/pillar/lab_lookups.sls): xl from elsewhere, no services, paths moved.
LAB_XEN = {"lookup": {
    "service_manager": "none",
    "toolstacks": {"xl": {"pkgs": []}},
    "ssh": {"authorized_keys": "/etc/xenha/ssh/authorized_keys",
            "receiver": "/etc/xenha/migrate-receive"},
}}  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_xen_without_packages_or_services_and_moved_paths(salt_call, family):
    identity = {"xen": {"ssh": {"identity_file": "/etc/xenha/ssh/xenha_migrate"}}}
    rendered = show(salt_call, "ServVirt1", family, "xen", pillar={"xen": LAB_XEN}, xenha=identity)
    assert not by_function(rendered, "pkg.installed")
    assert not by_function(rendered, "service.running")
    assert "require" not in rendered["xen-autostart-file-keyvalue-xendomains"][1]
    auth = rendered["xen-migration-ssh_auth-present-migrate-key"][1]
    assert auth["config"] == "/etc/xenha/ssh/authorized_keys"
    assert auth["options"][-1] == 'command="/etc/xenha/migrate-receive"'
    assert rendered["xen-migration-file-managed-receiver"][1]["name"] == (
        "/etc/xenha/migrate-receive"
    )
    assert rendered["xen-migration-file-managed-private-key"][1]["name"] == (
        "/etc/xenha/ssh/xenha_migrate"
    )
    client = rendered["xen-migration-file-managed-client-config"][1]
    assert "    IdentityFile /etc/xenha/ssh/xenha_migrate" in lines(client["contents"])


def test_xen_services_without_packages_still_render(salt_call):
    # xl installed by other means, its services still run by systemd
    rendered = show(salt_call, "ServVirt1", "Suse", "xen",
                    pillar={"xen": {"lookup": {"toolstacks": {"xl": {"pkgs": []}}}}})  # fmt: skip
    assert not by_function(rendered, "pkg.installed")
    service = rendered["xen-service-service-running-xencommons"][1]
    assert (service["enable"], "require" in service) == (True, False)


@pytest.mark.parametrize("service_manager", ["systemd", "none"])
def test_initiator_without_login_stops_at_its_files(salt_call, service_manager):
    lookup = {"service_manager": service_manager, "initiator": {"login": False}}
    rendered = show(salt_call, "ServVirt2", "Debian", "iscsi.initiator",
                    pillar={"iscsi": {"lookup": lookup}})  # fmt: skip
    assert not by_function(rendered, "cmd.run")
    assert rendered["iscsi-initiator-file-managed-initiatorname"][1]["contents"].endswith(
        "InitiatorName=iqn.2009-06.br.example:servvirt2\n"
    )
    assert "iscsi-initiator-file-replace-iscsid-conf-node-startup" in rendered
    services = by_function(rendered, "service.running")
    assert len(services) == (2 if service_manager == "systemd" else 0)
