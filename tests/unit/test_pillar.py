"""The xenha pillar checks (_utils/xenha_pillarcheck.py) on the example and broken copies of it."""

import copy

import pytest
import xenha_failover
import xenha_pillarcheck
import yaml
from salt.exceptions import CommandExecutionError

from tests.support.saltconf import REPO


def _error(tree):
    with pytest.raises(CommandExecutionError) as err:
        xenha_pillarcheck.check(tree)
    return str(err.value)


def test_example_is_valid_and_normalised(tree):
    cluster = xenha_pillarcheck.check(tree)
    assert cluster["vmhosts"] == ["ServVirt1", "ServVirt2"]
    assert cluster["storage_host"] == "ServDB"
    assert cluster["hosts"]["ServVirt2"]["id"] == "ServVirt2"
    assert cluster["hosts"]["ServVirt1"]["bmc"] is None
    assert cluster["ocfs2"]["device"] == (
        "/dev/disk/by-path/ip-192.168.25.12:3260-iscsi-iqn.2009-06.br.example:storage.cluster-lun-1"
    )
    assert cluster["domus"]["db01"]["anti_affinity"] == []
    # the input is not modified
    assert "vmhosts" not in tree and "id" not in tree["hosts"]["ServVirt1"]


def test_defaults_fill_a_minimal_tree(tree):
    for key in ("ocfs2", "ntp", "domus"):
        del tree[key]
    del tree["xen"]["relocation"]
    cluster = xenha_pillarcheck.check(tree)
    assert cluster["ocfs2"]["cluster"] == "ocfs2"
    assert cluster["ocfs2"]["format_host"] == "ServVirt1"
    assert cluster["ocfs2"]["slots"] == 2
    assert cluster["ocfs2"]["timeouts"]["heartbeat_dead_threshold"] == 31
    assert cluster["ntp"] == {"implementation": "chrony", "servers": []}
    assert cluster["xen"]["relocation"]["port"] == 8002
    assert cluster["xen"]["ssh"]["identity_file"] == "/root/.ssh/xenha_migrate"
    assert cluster["xen"]["ssh"]["user"] == "root"
    assert cluster["domus"] == {}
    assert cluster["failover"] == {}  # the failover engine's own defaults apply


def test_vmhosts_are_ordered_by_node_number(tree):
    tree["hosts"]["ServVirt1"]["ocfs2_node"] = 5
    assert xenha_pillarcheck.check(tree)["vmhosts"] == ["ServVirt2", "ServVirt1"]


# The bad-pillar cases of the issue, each with the message that names the key.
def test_missing_ip(tree):
    del tree["hosts"]["ServVirt2"]["ip"]
    assert _error(tree) == "xenha:hosts:ServVirt2:ip: missing"


def test_duplicate_ip(tree):
    tree["hosts"]["ServVirt2"]["ip"] = "192.168.25.10"
    assert _error(tree) == (
        "xenha:hosts:ServVirt2:ip: duplicate IP address '192.168.25.10'"
        " (also used by xenha:hosts:ServVirt1:ip)"
    )


def test_duplicate_ocfs2_node_number(tree):
    tree["hosts"]["ServVirt2"]["ocfs2_node"] = 0
    assert _error(tree) == (
        "xenha:hosts:ServVirt2:ocfs2_node: duplicate node number 0"
        " (also used by xenha:hosts:ServVirt1:ocfs2_node)"
    )


@pytest.mark.parametrize("name", ["clusterofseventeen", "ocfs_2", "clu ster", ""])
def test_bad_ocfs2_cluster_name(tree, name):
    tree["ocfs2"]["cluster"] = name
    if name == "":  # empty means unset: the default applies
        assert xenha_pillarcheck.check(tree)["ocfs2"]["cluster"] == "ocfs2"
        return
    assert _error(tree) == (
        f"xenha:ocfs2:cluster: invalid cluster name {name!r}: must be 1 to 16 letters or digits"
    )


def test_no_storage_host(tree):
    del tree["hosts"]["ServDB"]
    assert _error(tree) == "xenha:hosts: no host has role 'storage' (the iSCSI target)"


def test_unknown_role(tree):
    tree["hosts"]["ServDB"]["role"] = "nas"
    assert _error(tree) == (
        "xenha:hosts:ServDB:role: unknown value 'nas': must be one of vmhost, storage"
    )


def test_domu_memory_fits_no_host(tree):
    tree["domus"]["db01"]["memory_mib"] = 1793
    assert _error(tree) == (
        "xenha:domus:db01:memory_mib: 1793 MiB fits no VM host (the largest offers 1792 MiB"
        " after its memory_reserve_mib)"
    )
    tree["domus"]["db01"]["memory_mib"] = 1792
    assert xenha_pillarcheck.check(tree)["domus"]["db01"]["memory_mib"] == 1792


def test_short_chap_secret(tree):
    tree["storage"]["chap"]["secret"] = "elevenchars"  # noqa: S105
    assert _error(tree) == (
        "xenha:storage:chap:secret: CHAP secret is 11 characters, at least 12 are required"
        " (RFC 3720 and most initiators)"
    )


def test_hostname_differs_from_ocfs2_node_name(tree):
    tree["hosts"]["ServVirt2"]["ocfs2_name"] = "servvirt2"
    assert _error(tree) == (
        "xenha:hosts:ServVirt2:ocfs2_name: OCFS2 node name 'servvirt2' differs from hostname"
        " 'ServVirt2' (o2cb finds its own node by hostname)"
    )


# Secrets live outside the repository: a missing one is named as such.
@pytest.mark.parametrize(
    ("path", "key"),
    [
        (("heartbeat",), "key"),
        (("storage", "chap"), "secret"),
        (("xen", "ssh"), "private_key"),
    ],
)
def test_missing_secret(tree, path, key):
    parent = tree
    for part in path:
        parent = parent[part]
    del parent[key]
    message = _error(tree)
    assert message.startswith(f"xenha:{':'.join(path)}:{key}: missing (a secret: ")
    assert "pillar/xenha/secrets.yaml" in message


# The storage host's pillar holds only its own secret (pillar/xenha/init.sls): checked for it,
# the VM hosts' keys are not required, but checked when present.
@pytest.mark.parametrize(
    ("path", "key"), [(("heartbeat",), "key"), (("xen", "ssh"), "private_key")]
)
def test_the_storage_hosts_pillar_needs_no_vm_host_key(tree, path, key):
    parent = tree
    for part in path:
        parent = parent[part]
    value = parent.pop(key)
    assert xenha_pillarcheck.check(tree, "ServDB")["storage"]["chap"]["secret"]
    for minion in ("ServVirt1", "stranger", None):  # a VM host, or the whole tree
        with pytest.raises(CommandExecutionError, match=f"^xenha:{':'.join(path)}:{key}: missing"):
            xenha_pillarcheck.check(tree, minion)
    parent[key] = value + "\x00"
    with pytest.raises(CommandExecutionError, match="the control character"):
        xenha_pillarcheck.check(tree, "ServDB")
    del tree["storage"]["chap"]["secret"]  # the target's own secret stays required
    with pytest.raises(CommandExecutionError, match="^xenha:storage:chap:secret: missing"):
        xenha_pillarcheck.check(tree, "ServDB")


def test_xm_ssl_key_is_required_but_not_on_the_storage_host(tree):
    tree["xen"]["toolstack"] = "xm"
    tree["xen"]["relocation"].update(ssl=True, ssl_cert="-----BEGIN CERTIFICATE-----\nB\n")
    assert _error(tree).startswith("xenha:xen:relocation:ssl_key: missing (a secret")
    assert xenha_pillarcheck.check(tree, "ServDB")["xen"]["relocation"]["ssl_key"] is None


def test_bmc_without_password_in_the_pillar(tree):
    tree["hosts"]["ServVirt1"]["bmc"] = {"address": "192.168.26.10", "username": "admin"}
    bmc = xenha_pillarcheck.check(tree)["hosts"]["ServVirt1"]["bmc"]
    assert bmc == {"address": "192.168.26.10", "username": "admin", "interface": "lanplus",
                   "cipher_suite": 3, "port": 623}  # fmt: skip


@pytest.mark.parametrize("password", ["bmc-password", None, ""])
def test_bmc_password_in_the_pillar_is_refused_saying_where_it_belongs(tree, password):
    # None: what pillar/xenha/init.sls leaves of a password it keeps from the minions
    tree["hosts"]["ServVirt1"]["bmc"] = {
        "address": "192.168.26.10", "username": "admin", "password": password}  # fmt: skip
    assert _error(tree) == (
        "xenha:hosts:ServVirt1:bmc:password: BMC passwords are not pillar data (every minion"
        " could read them): move it to xenha_bmc:ServVirt1:password in the master"
        " configuration (/etc/salt/master.d/xenha-bmc.conf, docs/pillar.md)"
    )


PILLAR_BMC = {"address": "192.168.26.10", "username": "admin", "port": 6230}


def test_master_bmc_completes_the_pillars_settings_with_the_masters_password():
    master = {"ServVirt1": {"password": "-x"}, "ServVirt2": {"password": "other"}}
    bmc = xenha_pillarcheck.master_bmc(PILLAR_BMC, master, "ServVirt1")
    assert bmc == {**PILLAR_BMC, "password": "-x", "interface": "lanplus", "cipher_suite": 3}
    # the master's password wins over the pillar's placeholder
    bmc = xenha_pillarcheck.master_bmc({**PILLAR_BMC, "password": None}, master, "ServVirt2")
    assert bmc["password"] == "other"  # noqa: S105


HINT = "(BMC passwords are master configuration: xenha_bmc in /etc/salt/master.d/xenha-bmc.conf"


def _master(entry):
    return {"ServVirt1": entry, "ServVirt2": {"password": "other"}}


@pytest.mark.parametrize(
    ("pillar", "master", "message"),
    [
        (PILLAR_BMC, None, f"xenha_bmc:ServVirt1: missing {HINT}"),
        (PILLAR_BMC, {"ServVirt2": {"password": "pw"}}, f"xenha_bmc:ServVirt1: missing {HINT}"),
        (PILLAR_BMC, ["ServVirt1"], "xenha_bmc: must be a mapping, got list"),
        (PILLAR_BMC, _master({}), f"xenha_bmc:ServVirt1:password: missing {HINT}"),
        (PILLAR_BMC, _master({"password": ""}), f"xenha_bmc:ServVirt1:password: missing {HINT}"),
        (PILLAR_BMC, _master("pw"), "xenha_bmc:ServVirt1: must be a mapping, got str"),
        (PILLAR_BMC, _master({"password": "pass\x00word"}),
         "xenha_bmc:ServVirt1:password: the secret contains the control character '\\x00'"),
        (PILLAR_BMC, _master({"password": 1234}),
         "xenha_bmc:ServVirt1:password: must be a non-empty string, got int"),
        (PILLAR_BMC, _master({"password": "pw", "username": "root"}),
         "xenha_bmc:ServVirt1:username: not read here: only password (the pillar's"
         " xenha:hosts:ServVirt1:bmc holds the rest)"),
        ({**PILLAR_BMC, "port": "623; x"}, _master({"password": "pw"}),
         "xenha:hosts:ServVirt1:bmc:port: must be an integer, got '623; x'"),
        (None, _master({"password": "pw"}), "xenha:hosts:ServVirt1:bmc: missing"),
    ],
)  # fmt: skip
def test_master_bmc_refused_naming_the_key(pillar, master, message):
    with pytest.raises(CommandExecutionError) as err:
        xenha_pillarcheck.master_bmc(pillar, master, "ServVirt1")
    assert str(err.value).startswith(message)
    assert "pass\x00word" not in str(err.value)


# Further mistakes the checks catch, each naming its key.
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t["hosts"]["ServVirt1"].update(ip="192.168.25.300"),
            "xenha:hosts:ServVirt1:ip: '192.168.25.300' is not an IP address",
        ),
        (
            lambda t: t["hosts"]["ServVirt1"].pop("memory_mib"),
            "xenha:hosts:ServVirt1:memory_mib: missing",
        ),
        (
            lambda t: t["hosts"]["ServVirt1"].update(ocfs2_node=255),
            "xenha:hosts:ServVirt1:ocfs2_node: 255 is out of range 0..254",
        ),
        (
            lambda t: t["hosts"]["ServVirt1"].update(hostname="servvirt1.example"),
            "xenha:hosts:ServVirt1:hostname: 'servvirt1.example' must be a short host name"
            " (no dots)",
        ),
        (
            lambda t: t["hosts"]["ServVirt2"].update(iqn="iqn.2009-06.br.example:servvirt1"),
            "xenha:hosts:ServVirt2:iqn: duplicate initiator name"
            " 'iqn.2009-06.br.example:servvirt1' (also used by xenha:hosts:ServVirt1:iqn)",
        ),
        (
            lambda t: (
                t["hosts"]["ServDB"].update(role="storage", ip="192.168.25.13")
                or t["hosts"].update(ServDB2={"ip": "192.168.25.14", "role": "storage"})
            ),
            "xenha:hosts: more than one host has role 'storage': ServDB, ServDB2",
        ),
        (
            lambda t: t["storage"].update(lun=0),
            "xenha:storage:lun: 0 is out of range 1..255",
        ),
        (
            lambda t: t["storage"].update(implementation="scst"),
            "xenha:storage:implementation: unknown value 'scst': must be one of tgt, lio, iet",
        ),
        (
            lambda t: t["storage"].update(backing_device="/dev/sda4; reboot"),
            "xenha:storage:backing_device: '/dev/sda4; reboot' must be an absolute path of"
            " letters, digits and _ . : + @ , = / -",
        ),
        (
            lambda t: t["storage"].update(target_iqn="iqn.2009-06.br.example:x$(id)"),
            "xenha:storage:target_iqn: 'iqn.2009-06.br.example:x$(id)' is not an iSCSI name"
            " (iqn.YYYY-MM.reversed.domain[:id])",
        ),
        (
            lambda t: t["storage"]["chap"].update(user="xen ha"),
            "xenha:storage:chap:user: 'xen ha' must be letters, digits and _ . : @ -",
        ),
        (
            lambda t: t["storage"]["chap"].update(secret="twelve chars and a blank"),  # noqa: S106
            "xenha:storage:chap:secret: the secret must be printable ASCII without blanks",
        ),
        (
            lambda t: t["xen"]["ssh"].update(user="Root User"),
            "xenha:xen:ssh:user: 'Root User' must be a user name",
        ),
        (
            lambda t: t["xen"]["ssh"]["host_keys"].update(
                ServVirt2="ssh-ed25519 AAAA\nServVirt3 ssh-ed25519 BBBB"
            ),
            "xenha:xen:ssh:host_keys:ServVirt2: 'ssh-ed25519 AAAA\\nServVirt3 ssh-ed25519 BBBB'"
            " contains the control character '\\n'",
        ),
        (
            lambda t: t["ocfs2"].update(label="cluster home"),
            "xenha:ocfs2:label: invalid label 'cluster home': must be 1-63 letters, digits, '_',"
            " '.' or '-'",
        ),
        (
            lambda t: t["ocfs2"].update(slots=1),
            "xenha:ocfs2:slots: 1 slots for 2 VM hosts",
        ),
        (
            lambda t: t["ocfs2"].update(format_host="ServDB"),
            "xenha:ocfs2:format_host: 'ServDB' is not a VM host in xenha:hosts",
        ),
        (
            lambda t: t["ntp"].update(implementation="openntpd"),
            "xenha:ntp:implementation: unknown value 'openntpd': must be one of chrony, ntpd,"
            " ntpsec",
        ),
        (
            lambda t: t["xen"]["ssh"]["host_keys"].pop("ServVirt2"),
            "xenha:xen:ssh:host_keys:ServVirt2: missing",
        ),
        (
            lambda t: t["heartbeat"].update(dead_time=0.5),
            "xenha:heartbeat:dead_time: 0.5 s must be more than twice interval (0.25 s), or one"
            " lost packet raises a false alarm",
        ),
        (
            lambda t: t.update(failover={"retry_bse": 5}),
            "xenha:failover:retry_bse: unknown setting (known: corroborate_window, ping_timeout,"
            " expiry_margin, retry_base, retry_max, retry_for, start_tries, shutdown_policy,"
            " shutdown_timeout)",
        ),
        (
            lambda t: t.update(failover={"shutdown_policy": "conditional"}),
            "xenha:failover:shutdown_policy: unknown value 'conditional': must be one of"
            " migrate, freeze, failover",
        ),
        (
            lambda t: t.update(failover={"shutdown_timeout": 0}),
            "xenha:failover:shutdown_timeout: must be a positive number, got 0",
        ),
        (
            lambda t: t.update(failover={"retry_base": "five"}),
            "xenha:failover:retry_base: must be a number, got 'five'",
        ),
        (
            lambda t: t.update(failover={"start_tries": 0}),
            "xenha:failover:start_tries: 0 is out of range 1..100",
        ),
        (
            lambda t: t["domus"]["web01"].update(anti_affinity=["mail01"]),
            "xenha:domus:web01:anti_affinity: 'mail01' is not another domU in xenha:domus",
        ),
        (
            lambda t: t["domus"]["web01"].update(preferred_host="ServDB"),
            "xenha:domus:web01:preferred_host: 'ServDB' is not a VM host in xenha:hosts",
        ),
        (
            lambda t: t["domus"]["web01"].update(config="domus/web01.cfg"),
            "xenha:domus:web01:config: 'domus/web01.cfg' must be an absolute path of letters,"
            " digits and _ . : + @ , = / -",
        ),
    ],
)
def test_other_mistakes(tree, edit, message):
    edit(tree)
    assert _error(tree) == message


def test_xm_needs_two_vm_hosts_and_ssl_material(tree):
    tree["xen"]["toolstack"] = "xm"
    tree["xen"]["relocation"]["ssl"] = True
    assert _error(tree).startswith("xenha:xen:relocation:ssl_key: missing (a secret")
    tree["xen"]["relocation"].update(ssl_key="KEY", ssl_cert="CERT")
    assert xenha_pillarcheck.check(tree)["xen"]["relocation"]["ssl_cert"] == "CERT"
    del tree["hosts"]["ServVirt2"]
    tree["domus"]["db01"].pop("preferred_host")
    assert _error(tree) == (
        "xenha:xen:toolstack: xm relocation needs at least two VM hosts to allow"
    )


def test_member(tree):
    cluster = xenha_pillarcheck.check(tree)
    assert xenha_pillarcheck.member(cluster, "ServDB")["role"] == "storage"
    with pytest.raises(CommandExecutionError, match=r"'laptop'\) is not a cluster member"):
        xenha_pillarcheck.member(cluster, "laptop")


def test_not_a_mapping():
    with pytest.raises(CommandExecutionError, match="^xenha: missing$"):
        xenha_pillarcheck.check(None)
    with pytest.raises(CommandExecutionError, match="^xenha:hosts: must be a mapping, got list$"):
        xenha_pillarcheck.check({"hosts": ["ServVirt1"]})


def test_redact_hides_every_secret_and_nothing_else(tree):
    tree["xen"]["relocation"]["ssl_key"] = "ssl-key"
    cluster = xenha_pillarcheck.check(tree)
    shown = xenha_pillarcheck.redact(cluster)
    text = repr(shown)
    for secret in ("ssl-key", "render-test-chap-secret",
                   "render-test-heartbeat-key", "PRIVATE KEY"):  # fmt: skip
        assert secret in repr(cluster)
        assert secret not in text
    assert shown["heartbeat"]["key"] == "<secret>"
    assert shown["xen"]["ssh"]["public_key"] == cluster["xen"]["ssh"]["public_key"]
    assert cluster["heartbeat"]["key"] == "render-test-heartbeat-key"  # the original is kept


def test_a_rotation_keeps_both_heartbeat_keys_and_redact_hides_both(tree):
    tree["heartbeat"]["previous_key"] = "the-key-of-last-year"
    cluster = xenha_pillarcheck.check(tree)
    assert cluster["heartbeat"]["key"] == "render-test-heartbeat-key"
    assert cluster["heartbeat"]["previous_key"] == "the-key-of-last-year"
    shown = xenha_pillarcheck.redact(cluster)
    assert shown["heartbeat"]["previous_key"] == "<secret>"
    assert "the-key-of-last-year" not in repr(shown)
    del tree["heartbeat"]["previous_key"]
    assert xenha_pillarcheck.check(tree)["heartbeat"]["previous_key"] is None


def _paths(node, prefix=()):
    """Every key path of a nested mapping (lists count as leaves)."""
    for key, value in node.items():
        yield (*prefix, key)
        if isinstance(value, dict):
            yield from _paths(value, (*prefix, key))


JUNK = [None, "", "x", 7, -1, 3.5, True, [], ["x"], {}, {"x": 1}]


def test_any_junk_anywhere_is_refused_naming_its_key_or_accepted(example):
    """No value at any key makes the check crash: it is accepted (a default or a free-form
    value) or refused with a message that starts with that key or a mapping holding it."""
    for path in _paths(example):
        for junk in JUNK:
            tree = copy.deepcopy(example)
            parent = tree
            for part in path[:-1]:
                parent = parent[part]
            parent[path[-1]] = junk
            try:
                xenha_pillarcheck.check(tree)
            except CommandExecutionError as err:
                named = ":".join(("xenha", *map(str, path)))
                message = str(err)
                assert message.startswith("xenha"), (path, junk, message)
                # the message starts with the key or one of its ancestors below xenha:
                # (a sibling's name may follow, as in "xenha:heartbeat:dead_time: ...")
                assert any(
                    message.startswith(named.rsplit(":", cut)[0]) for cut in range(len(path))
                ), (path, junk, message)


# Values the check refused too late or not at all: each refused naming its key.
NAN, INF = float("nan"), float("inf")


GONE = "xenha:leases: no longer used: domU leases are sanlock's (xenha:sanlock); remove this key"


def _set(*path, value):
    """An edit that sets tree[path...] = value."""

    def edit(tree):
        parent = tree
        for part in path[:-1]:
            parent = parent.setdefault(part, {})
        parent[path[-1]] = value

    return edit


def _bmc(**extra):
    bmc = {"address": "192.168.26.10", "username": "admin"}
    return _set("hosts", "ServVirt1", "bmc", value={**bmc, **extra})


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        # NaN and infinity: every comparison with NaN is false, so nothing would ever expire
        (_set("failover", "retry_for", value=NAN),
         "xenha:failover:retry_for: must be a finite number, got nan"),
        (_set("failover", "expiry_margin", value=INF),
         "xenha:failover:expiry_margin: must be a finite number, got inf"),
        (_set("failover", "corroborate_window", value=10**400),
         "xenha:failover:corroborate_window: must be a finite number, got 1" + "0" * 56 + "..."),
        (_set("heartbeat", "interval", value=NAN),
         "xenha:heartbeat:interval: must be a finite number, got nan"),
        (_set("heartbeat", "dead_time", value=-INF),
         "xenha:heartbeat:dead_time: must be a finite number, got -inf"),
        (_set("ntp", "max_offset", value=NAN),
         "xenha:ntp:max_offset: must be a finite number, got nan"),
        # booleans where numbers are due (YAML reads `yes` as true)
        (_set("failover", "retry_base", value=True),
         "xenha:failover:retry_base: must be a number, got True"),
        (_set("hosts", "ServVirt1", "memory_mib", value=True),
         "xenha:hosts:ServVirt1:memory_mib: must be an integer, got True"),
        (_set("evacuation", "parallel", value=True),
         "xenha:evacuation:parallel: must be an integer, got True"),
        (_set("evacuation", "parallel", value=0),
         "xenha:evacuation:parallel: 0 is out of range 1..64"),
        (_set("heartbeat", "interval", value=0.01),
         "xenha:heartbeat:interval: must be at least 0.05, got 0.01"),
        # o2net and the heartbeat between VM hosts: IPv4
        (_set("hosts", "ServVirt2", "ip", value="fd00::11"),
         "xenha:hosts:ServVirt2:ip: 'fd00::11' must be an IPv4 address (o2net, OCFS2's network,"
         " speaks IPv4 only; the heartbeat peers share its address family)"),
        (_set("hosts", "ServVirt2", "ip", value="0.0.0.0"),  # noqa: S104
         "xenha:hosts:ServVirt2:ip: '0.0.0.0' is a wildcard, broadcast or multicast address, not"
         " a host's own"),
        (_bmc(address="255.255.255.255"),
         "xenha:hosts:ServVirt1:bmc:address: '255.255.255.255' is a wildcard, broadcast or"
         " multicast address, not a host's own"),
        (_set("hosts", "ServDB", "ip", value="ff02::1"),
         "xenha:hosts:ServDB:ip: 'ff02::1' is a wildcard, broadcast or multicast address, not a"
         " host's own"),
        # ports
        (_bmc(port="623; x"), "xenha:hosts:ServVirt1:bmc:port: must be an integer, got '623; x'"),
        (_bmc(port=623.0), "xenha:hosts:ServVirt1:bmc:port: must be an integer, got 623.0"),
        (_bmc(port=0), "xenha:hosts:ServVirt1:bmc:port: 0 is out of range 1..65535"),
        (_bmc(port=65536), "xenha:hosts:ServVirt1:bmc:port: 65536 is out of range 1..65535"),
        (_set("heartbeat", "port", value="7788"),
         "xenha:heartbeat:port: must be an integer, got '7788'"),
        (_set("xen", "ssh", "port", value=False),
         "xenha:xen:ssh:port: must be an integer, got False"),
        # strings that reach a command line: no control characters, no leading '-'
        (_bmc(username="admin\nroot"),
         "xenha:hosts:ServVirt1:bmc:username: 'admin\\nroot' contains the control character '\\n'"),
        (_bmc(username="-oProxyCommand=x"),
         "xenha:hosts:ServVirt1:bmc:username: '-oProxyCommand=x' must not start with '-' (a"
         " command would read it as an option)"),
        (_bmc(username="seventeen-letters"),
         "xenha:hosts:ServVirt1:bmc:username: 'seventeen-letters' is longer than 16 bytes (IPMI)"),
        (_set("storage", "chap", "user", value="-xenha"),
         "xenha:storage:chap:user: '-xenha' must not start with '-' (a command would read it as"
         " an option)"),
        (_set("storage", "chap", "secret", value="twelve-chars\r"),
         "xenha:storage:chap:secret: the secret contains the control character '\\r'"),
        (_set("ocfs2", "label", value="-L"),
         "xenha:ocfs2:label: '-L' must not start with '-' (a command would read it as an option)"),
        (_set("xen", "ssh", "private_key", value="-----BEGIN\x1b[2J-----\n"),
         "xenha:xen:ssh:private_key: the secret contains the control character '\\x1b'"),
        (_set("domus", "web01", "preferred_host", value="ServVirt1\u2028"),
         "xenha:domus:web01:preferred_host: 'ServVirt1\\u2028' contains the control character"
         " '\\u2028'"),
        # the heartbeat key: no Jinja, no control characters
        (_set("heartbeat", "key", value="{{ salt.cmd.run('id') }}-sixteen"),
         "xenha:heartbeat:key: the key must not contain '{{', '{%' or '{#' (Jinja would evaluate"
         " it)"),
        (_set("heartbeat", "key", value="{% raw %}sixteen-bytes-key"),
         "xenha:heartbeat:key: the key must not contain '{{', '{%' or '{#' (Jinja would evaluate"
         " it)"),
        (_set("heartbeat", "key", value="sixteen-bytes\nkey!"),
         "xenha:heartbeat:key: the secret contains the control character '\\n'"),
        (_set("heartbeat", "key", value="fifteen-bytes!!"),
         "xenha:heartbeat:key: the key is 15 bytes, at least 16 required"),
        # the rotation's second key: checked as the key, and not the key itself
        (_set("heartbeat", "previous_key", value="{{ pillar }}-sixteen-bytes"),
         "xenha:heartbeat:previous_key: the key must not contain '{{', '{%' or '{#' (Jinja would"
         " evaluate it)"),
        (_set("heartbeat", "previous_key", value="fifteen-bytes!!"),
         "xenha:heartbeat:previous_key: the key is 15 bytes, at least 16 required"),
        (_set("heartbeat", "previous_key", value=["a-list-of-keys-is-no-key"]),
         "xenha:heartbeat:previous_key: must be a non-empty string, got list"),
        (_set("heartbeat", "previous_key", value="render-test-heartbeat-key"),
         "xenha:heartbeat:previous_key: is the same as key: unset it"),
        # domU names xl would misread or that Xen reserves
        (_set("domus", "123", value={"config": "/cluster/domus/123.cfg", "memory_mib": 64}),
         "xenha:domus:123: invalid domain name '123': not a domU name, all digits (xl reads it as"
         " a domain id)"),
        (_set("domus", 123, value={"config": "/cluster/domus/123.cfg", "memory_mib": 64}),
         "xenha:domus:123: invalid domain name 123: must be letters, digits, '.', '_', '-' (at"
         " most 64, no leading '.' or '-')"),
        (_set("domus", "Domain-0", value={"config": "/cluster/domus/d0.cfg", "memory_mib": 64}),
         "xenha:domus:Domain-0: invalid domain name 'Domain-0': not a domU name, reserved by Xen"
         " (Domain-0, Xenstore)"),
        (_set("domus", "Xenstore", value={"config": "/cluster/domus/x.cfg", "memory_mib": 64}),
         "xenha:domus:Xenstore: invalid domain name 'Xenstore': not a domU name, reserved by Xen"
         " (Domain-0, Xenstore)"),
        (_set("domus", "web01--incoming", value={"config": "/cluster/w.cfg", "memory_mib": 64}),
         "xenha:domus:web01--incoming: invalid domain name 'web01--incoming': not a domU name,"
         " ends in '--incoming', which xl reserves for a domain's stub or migration copy"),
        (_set("domus", "web01", "anti_affinity", value=["Domain-0"]),
         "xenha:domus:web01:anti_affinity:0: invalid domain name 'Domain-0': not a domU name,"
         " reserved by Xen (Domain-0, Xenstore)"),
        # paths that escape their directory
        (_set("domus", "web01", "config", value="/cluster/domus/.."),
         "xenha:domus:web01:config: '/cluster/domus/..' must be a plain path (no '.', '..', '//'"
         " or trailing '/')"),
        (_set("domus", "web01", "config", value="/cluster/../etc/xen/web01.cfg"),
         "xenha:domus:web01:config: '/cluster/../etc/xen/web01.cfg' must be a plain path (no '.',"
         " '..', '//' or trailing '/')"),
        (_set("domus", "web01", "config", value="/cluster/domus/"),
         "xenha:domus:web01:config: '/cluster/domus/' must be a plain path (no '.', '..', '//' or"
         " trailing '/')"),
        (_set("domus", "web01", "config", value="/etc/xen/web01.cfg"),
         "xenha:domus:web01:config: '/etc/xen/web01.cfg' is not inside /cluster"),
        (_set("domus", "web01", "config", value="/cluster"),
         "xenha:domus:web01:config: '/cluster' is not inside /cluster"),
        (_set("domus", "web01", "config", value="/clusterfoo/web01.cfg"),
         "xenha:domus:web01:config: '/clusterfoo/web01.cfg' is not inside /cluster"),
        (_set("ocfs2", "mount_point", value="/"),
         "xenha:ocfs2:mount_point: '/' is a system directory: the volume needs one of its own"),
        (_set("ocfs2", "mount_point", value="/etc"),
         "xenha:ocfs2:mount_point: '/etc' is a system directory: the volume needs one of its own"),
        (_set("ocfs2", "mount_point", value="cluster"),
         "xenha:ocfs2:mount_point: 'cluster' must be an absolute path of letters, digits and _ . :"
         " + @ , = / -"),
        (_set("ocfs2", "mount_point", value="/cluster/"),
         "xenha:ocfs2:mount_point: '/cluster/' must be a plain path (no '.', '..', '//' or"
         " trailing '/')"),
        (_set("storage", "backing_device", value="/dev/./sda4"),
         "xenha:storage:backing_device: '/dev/./sda4' must be a plain path (no '.', '..', '//' or"
         " trailing '/')"),
        # the file leases' settings, left over: they would look in force, nothing reads them
        (_set("leases", value={"dir": "/cluster/.xenha/leases", "renew_interval": 1.0}), GONE),
        (_set("leases", value=None), GONE),
        # not a mapping where a mapping is due
        (_set("domus", value=["web01"]), "xenha:domus: must be a mapping, got list"),
        (_set("hosts", "ServVirt1", value="192.168.25.10"),
         "xenha:hosts:ServVirt1: must be a mapping, got str"),
        (_set("failover", value=[1]), "xenha:failover: must be a mapping, got list"),
        (_set("heartbeat", value=7788), "xenha:heartbeat: must be a mapping, got int"),
        (_bmc(), None),  # a valid BMC: the next case breaks it
        (_set("hosts", "ServVirt1", "bmc", value="192.168.26.10"),
         "xenha:hosts:ServVirt1:bmc: must be a mapping, got str"),
        (_set("storage", "chap", value=["xenha"]),
         "xenha:storage:chap: must be a mapping, got list"),
        (_set("ocfs2", "timeouts", value=31), "xenha:ocfs2:timeouts: must be a mapping, got int"),
        (_set("xen", "ssh", "host_keys", value=[]),
         "xenha:xen:ssh:host_keys: must be a mapping, got list"),
        (_set("evacuation", value="2"), "xenha:evacuation: must be a mapping, got str"),
        # what crashed the check with TypeError
        (_set("domus", "web01", "anti_affinity", value=[{"db01": 1}]),
         "xenha:domus:web01:anti_affinity:0: invalid domain name {'db01': 1}: must be letters,"
         " digits, '.', '_', '-' (at most 64, no leading '.' or '-')"),
        (_set("domus", "web01", "anti_affinity", value=[["db01"]]),
         "xenha:domus:web01:anti_affinity:0: invalid domain name ['db01']: must be letters,"
         " digits, '.', '_', '-' (at most 64, no leading '.' or '-')"),
        # a domU start's admission policy (xenha_domu.running)
        (_set("domus", "web01", "admission", value="on"),
         "xenha:domus:web01:admission: unknown value 'on': must be one of off, strict"),
        (_set("domus", "web01", "admission", value=True),
         "xenha:domus:web01:admission: unknown value True: must be one of off, strict"),
        (_set("domus", "db01", "admission", value=["strict"]),
         "xenha:domus:db01:admission: unknown value ['strict']: must be one of off, strict"),
        (_set("domus", "web01", "admission", value="strict"), None),
        # failback to the preferred host when it is back (salt-run xenha.failback)
        (_set("domus", "web01", "failback", value="yes"),
         "xenha:domus:web01:failback: must be true or false, got 'yes'"),
        (_set("domus", "db01", "failback", value=1),
         "xenha:domus:db01:failback: must be true or false, got 1"),
        (_set("domus", "web01", "failback", value=True), None),
        (_set("failover", value={1: 2, "x": 3}),
         "xenha:failover:1: unknown setting (known: corroborate_window, ping_timeout,"
         " expiry_margin, retry_base, retry_max, retry_for, start_tries, shutdown_policy,"
         " shutdown_timeout)"),
    ],
)  # fmt: skip
def test_refused_naming_the_key(tree, edit, message):
    edit(tree)
    if message is None:
        xenha_pillarcheck.check(tree)
        return
    assert _error(tree) == message


@pytest.mark.parametrize("value", [["hosts"], "xenha", 7, True])
def test_top_level_that_is_not_a_mapping(value):
    with pytest.raises(CommandExecutionError) as err:
        xenha_pillarcheck.check(value)
    assert str(err.value) == f"xenha: must be a mapping, got {type(value).__name__}"


def test_values_that_stay_valid(tree):
    """The new rules leave room for what real pillars hold."""
    tree["ocfs2"]["mount_point"] = "/srv/cluster"  # a directory below a system one is fine
    for name in ("web01", "db01"):
        tree["domus"][name]["config"] = f"/srv/cluster/domus/{name}.cfg"
    tree["heartbeat"]["key"] = "-starts-with-a-dash-and-has-{-braces}"  # a secret may
    tree["hosts"]["ServVirt1"]["bmc"] = {
        "address": "fd00::10", "username": "sixteen-letters!", "port": 6230,
    }  # fmt: skip
    tree["ntp"]["max_offset"] = 1
    cluster = xenha_pillarcheck.check(tree)
    tree["xen"]["toolstack"] = "xm"  # PEM material starts with '-' and spans lines
    tree["xen"]["relocation"].update(ssl=True, ssl_key="-----BEGIN PRIVATE KEY-----\nA\n",
                                     ssl_cert="-----BEGIN CERTIFICATE-----\nB\n")  # fmt: skip
    assert xenha_pillarcheck.check(tree)["xen"]["relocation"]["ssl_cert"].startswith("-----")
    assert cluster["hosts"]["ServVirt1"]["bmc"]["port"] == 6230
    assert cluster["ntp"]["max_offset"] == 1.0
    assert cluster["evacuation"] == {}


def test_failover_retry_for_zero_leaves_retries_to_the_resume():
    assert xenha_pillarcheck.failover_settings({"retry_for": 0}) == {"retry_for": 0.0}
    with pytest.raises(CommandExecutionError, match="xenha:failover:retry_for: must be at least"):
        xenha_pillarcheck.failover_settings({"retry_for": -1})


def test_the_failover_settings_table_is_what_the_check_and_the_engine_know():
    table = xenha_pillarcheck.FAILOVER_DEFAULTS
    for key, default in table.items():
        assert xenha_failover.DEFAULTS[key] == default, key  # the engine runs with the table's
        if default is not None:  # the check accepts every default as it stands
            assert xenha_pillarcheck.failover_settings({key: default}) == {key: default}, key
    with pytest.raises(CommandExecutionError, match="xenha:failover:ping_timout: unknown"):
        xenha_pillarcheck.failover_settings({"ping_timout": 1.0})  # a typo is named
    with pytest.raises(CommandExecutionError, match="xenha:failover:ping_timeout: must be a fin"):
        xenha_pillarcheck.failover_settings({"ping_timeout": float("nan")})


def test_the_shipped_master_bmc_example_completes_the_pillars_bmc():
    example = yaml.safe_load((REPO / "etc/master.d/xenha-bmc.conf.example").read_text())
    assert set(example) == {"xenha_bmc"}  # a master option of its own, nothing else
    for host in ("ServVirt1", "ServVirt2"):
        bmc = xenha_pillarcheck.master_bmc(PILLAR_BMC, example["xenha_bmc"], host)
        assert bmc["password"] == "change-me"  # noqa: S105 - the example's placeholder


def test_shutdown_policy_defaults_to_migrate_and_takes_proxmox_names(tree):
    assert xenha_pillarcheck.shutdown_settings(None) == {
        "shutdown_policy": "migrate",
        "shutdown_timeout": 600.0,
    }
    tree["failover"] = {"shutdown_policy": "freeze", "shutdown_timeout": 90}
    checked = xenha_pillarcheck.check(tree)["failover"]
    assert checked == {"shutdown_policy": "freeze", "shutdown_timeout": 90.0}
    assert xenha_pillarcheck.shutdown_settings(checked)["shutdown_policy"] == "freeze"


def test_domu_admission_defaults_to_off_and_keeps_strict(tree):
    tree["domus"]["db01"]["admission"] = "strict"
    domus = xenha_pillarcheck.check(tree)["domus"]
    assert (domus["web01"]["admission"], domus["db01"]["admission"]) == ("off", "strict")


def test_failback_defaults_to_false_and_true_needs_a_preferred_host(tree):
    tree["domus"]["web01"]["failback"] = True
    domus = xenha_pillarcheck.check(tree)["domus"]
    assert (domus["web01"]["failback"], domus["db01"]["failback"]) == (True, False)
    tree["domus"]["web01"].pop("preferred_host")
    assert _error(tree) == (
        "xenha:domus:web01:failback: true needs preferred_host (the host the domU returns to)"
    )
    tree["domus"]["web01"]["failback"] = False  # false with no preferred host is fine
    assert xenha_pillarcheck.check(tree)["domus"]["web01"]["failback"] is False


def test_memory_reserve_default_is_the_one_the_planners_read(tree):
    tree["hosts"]["ServVirt1"].pop("memory_reserve_mib")
    tree["hosts"]["ServVirt2"]["memory_reserve_mib"] = None
    hosts = xenha_pillarcheck.check(tree)["hosts"]
    for name in ("ServVirt1", "ServVirt2"):
        raw = tree["hosts"][name].get("memory_reserve_mib")
        planned = xenha_pillarcheck.memory_reserve(raw, f"xenha:hosts:{name}:memory_reserve_mib")
        assert hosts[name]["memory_reserve_mib"] == planned == 256
    assert xenha_pillarcheck.memory_reserve(0, "x") == 0  # an explicit 0 stays 0
    with pytest.raises(CommandExecutionError, match=r"^xenha:hosts:A:memory_reserve_mib: must be"):
        xenha_pillarcheck.memory_reserve("256", "xenha:hosts:A:memory_reserve_mib")
