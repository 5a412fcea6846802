"""state.apply for real, inside three lab hosts (ServVirt1, ServVirt2, ServDB) with their own /etc
and salt-minions against a real salt-master, checked with the real tools: chrony serves time,
tgtd serves the LUN to libiscsi's initiator (and refuses a wrong CHAP secret), o2cb reads
cluster.conf back, the OCFS2 device is formatted once, peers resolve through /etc/hosts, the xen
formula's migration key lets one VM host's root ssh into the other only through the forced
command, the sanlock formula initialises the lease area once and joins both VM hosts' daemons
to the lockspace, and a second apply changes nothing."""

import re
from pathlib import Path

import pytest
import xenha_sanlockcfg

from lab.cluster import state_changes
from lab.hosts import wait_for
from tests.hosts.conftest import make_lab

pytestmark = pytest.mark.root

OCFS2_QUERY = ["tunefs.ocfs2", "-Q", "%V %U\n"]
VMHOSTS = ["ServVirt1", "ServVirt2"]


@pytest.fixture(scope="module")
def applied():
    lab = make_lab("xhp")
    try:
        lab.up()
        first = lab.converge()
        device = lab.cluster["ocfs2"]["device"]
        format_host = lab.hosts[lab.cluster["ocfs2"]["format_host"]]
        volume = format_host.run([*OCFS2_QUERY, device]).stdout.split()
        second = lab.converge()
        yield {"lab": lab, "first": first, "second": second, "volume": volume}
    finally:
        lab.down()


@pytest.fixture
def lab(applied):
    return applied["lab"]


def test_first_apply_succeeds_everywhere_and_changes_things(applied, lab):
    changed = state_changes(applied["first"])  # raises, naming the states that failed
    assert sorted(changed) == sorted(lab.hosts)
    for mid, ids in changed.items():
        assert any("hosts-config-host-present" in i for i in ids), (mid, ids)
        assert any("ntp-config-file-managed-config" in i for i in ids), (mid, ids)
    assert any("iscsi-tgt-cmd-run-tgt-admin-update" in i for i in changed["ServDB"])
    for mid in VMHOSTS:
        for sid in (
            "iscsi-initiator-file-managed-initiatorname",
            "xen-autostart-file-keyvalue-xendomains",
            "xen-migration-file-managed-private-key",
            "xen-migration-ssh_auth-present-migrate-key",
        ):
            assert any(sid in i for i in changed[mid]), (mid, sid)


def test_sanlock_initialises_once_and_joins_every_vm_host(applied, lab):
    changed = state_changes(applied["first"])
    assert "sanlock-lockspace-xenha_sanlock-lockspace_present" in " ".join(changed["ServVirt1"])
    for mid in VMHOSTS:
        assert any("sanlock-lockspace-xenha_sanlock-joined" in i for i in changed[mid]), mid
        gets = lab.host(mid).run(["sanlock", "client", "gets", "-h", "1"]).stdout
        spaces = xenha_sanlockcfg.parse_gets(gets)
        assert spaces["xenha"]["host_id"] == lab.cluster["hosts"][mid]["host_id"]
        assert spaces["xenha"]["path"] == str(lab.sanlock.lease_path)
        conf = (lab.host(mid).etc / "sanlock" / "sanlock.conf").read_text()
        assert f"our_host_name = {mid}" in conf.splitlines()


def test_second_apply_reports_zero_changes(applied, lab):
    changed = state_changes(applied["second"])
    assert sorted(changed) == sorted(lab.hosts)
    assert changed == {mid: [] for mid in lab.hosts}


def test_chrony_on_the_storage_host_serves_the_vm_hosts(lab):
    server = lab.hosts["ServDB"]
    for mid, host in lab.hosts.items():
        if host.role != "vmhost":
            continue

        def selected(host=host):
            out = host.run(["chronyc", "-n", "sources"]).stdout
            return re.search(rf"^\^\* {re.escape(server.ip)}\s", out, re.MULTILINE)

        wait_for(selected, 120, f"{mid} to select {server.ip} in chronyc sources", interval=1)
    clients = server.run(["chronyc", "-n", "clients"]).stdout
    for host in lab.hosts.values():
        if host.role == "vmhost":
            assert host.ip in clients


def iscsi_url(lab, secret, lun=None):
    storage = lab.cluster["storage"]
    ip = lab.hosts["ServDB"].ip
    url = f"iscsi://{storage['chap']['user']}%{secret}@{ip}:{storage['port']}"
    return f"{url}/{storage['target_iqn']}/{lun}" if lun is not None else url


def test_a_vm_host_sees_the_lun_through_a_real_initiator(lab):
    v1 = lab.hosts["ServVirt1"]
    iqn = lab.cluster["hosts"]["ServVirt1"]["iqn"]
    secret = lab.pillar()["storage"]["chap"]["secret"]
    lun = lab.cluster["storage"]["lun"]
    listing = v1.run(["iscsi-ls", "-s", "-i", iqn, iscsi_url(lab, secret)]).stdout
    assert lab.cluster["storage"]["target_iqn"] in listing
    assert re.search(rf"^Lun:{lun}\s+Type:DIRECT_ACCESS", listing, re.MULTILINE)
    inquiry = v1.run(["iscsi-inq", "-i", iqn, iscsi_url(lab, secret, lun)]).stdout
    assert "VIRTUAL-DISK" in inquiry
    capacity = v1.run(["iscsi-readcapacity16", "-i", iqn, iscsi_url(lab, secret, lun)]).stdout
    backing = lab.cluster["storage"]["backing_device"]
    size = lab.hosts["ServDB"].run(["stat", "-c", "%s", backing]).stdout.strip()
    assert f"Total size:{size}" in capacity


def test_a_wrong_chap_secret_is_refused(lab):
    v2 = lab.hosts["ServVirt2"]
    iqn = lab.cluster["hosts"]["ServVirt2"]["iqn"]
    url = iscsi_url(lab, "not-the-secret-1", lab.cluster["storage"]["lun"])
    refused = v2.run(["iscsi-inq", "-i", iqn, url], check=False)
    assert refused.returncode != 0
    assert "Authentication failure" in refused.stdout + refused.stderr


def test_an_initiator_outside_the_cluster_is_refused(lab):
    # the right secret, but neither a member's address nor a member's initiator name
    secret = lab.pillar()["storage"]["chap"]["secret"]
    url = iscsi_url(lab, secret, lab.cluster["storage"]["lun"])
    outsider = "iqn.2009-06.br.example:outsider"
    refused = lab.cli.run(["iscsi-inq", "-i", outsider, url], check=False)
    assert refused.returncode != 0
    # the same from a member's address is let in: the refusal above is the ACL's
    member = lab.hosts["ServVirt1"].run(["iscsi-inq", "-i", outsider, url], check=False)
    assert member.returncode == 0, member.stdout


def test_o2cb_reads_the_same_cluster_conf_back_on_every_vm_host(lab):
    ocfs2 = lab.cluster["ocfs2"]
    vmhosts = {mid: h for mid, h in lab.cluster["hosts"].items() if h["role"] == "vmhost"}
    expected = {f"cluster: {len(vmhosts)} local {ocfs2['cluster']}"} | {
        f"node: {h['ocfs2_node']} {h['hostname']} {h['ip']}:{ocfs2['port']} {ocfs2['cluster']}"
        for h in vmhosts.values()
    }
    for mid in vmhosts:
        out = (
            lab.hosts[mid]
            .run(
                ["o2cb", "--config-file=/etc/ocfs2/cluster.conf", "list-cluster", ocfs2["cluster"]]
                + ["--oneline"]
            )
            .stdout
        )
        assert set(out.strip().splitlines()) == expected, mid


def test_the_device_is_formatted_once(applied, lab):
    ocfs2 = lab.cluster["ocfs2"]
    label, uuid = applied["volume"]
    assert label == ocfs2["label"]
    host = lab.hosts[ocfs2["format_host"]]
    assert host.run([*OCFS2_QUERY, ocfs2["device"]]).stdout.split() == [label, uuid]
    first = applied["first"][host.name]
    (formatted,) = [s for sid, s in first.items() if "ocfs2-format-xenha_o2cb-formatted" in sid]
    # the state reports the UUID dashed, tunefs.ocfs2 without dashes
    assert formatted["changes"]["formatted"]["uuid"].replace("-", "").upper() == uuid.upper()
    slots = host.run(["debugfs.ocfs2", "-R", "stats", ocfs2["device"]]).stdout
    assert re.search(rf"Max Node Slots: {ocfs2['slots']}\b", slots)


def test_peers_resolve_through_etc_hosts(lab):
    for mid, host in lab.hosts.items():
        assert host.run(["hostname"]).stdout.strip() == lab.cluster["hosts"][mid]["hostname"]
        for peer in lab.cluster["hosts"].values():
            got = host.run(["getent", "hosts", peer["hostname"]]).stdout.split()
            assert got[:2] == [peer["ip"], peer["hostname"]], (mid, got)
    hosts_file = (lab.hosts["ServVirt1"].etc / "hosts").read_text()
    assert re.search(r"^10\.99\.0\.11\s+ServVirt2\b", hosts_file, re.MULTILINE)


def test_the_xen_and_initiator_formulas_write_into_the_hosts_own_etc(lab):
    pillar = lab.pillar()
    for mid, peer in zip(VMHOSTS, reversed(VMHOSTS), strict=True):
        etc = lab.hosts[mid].etc
        key = etc / "xenha/ssh/xenha_migrate"
        assert key.read_text() == pillar["xen"]["ssh"]["private_key"]
        assert key.stat().st_mode & 0o777 == 0o600
        assert (etc / "xenha/migrate-receive").stat().st_mode & 0o777 == 0o755
        (authorized,) = (etc / "xenha/ssh/authorized_keys").read_text().splitlines()
        peer_ip = lab.cluster["hosts"][peer]["ip"]
        assert authorized.startswith(
            f'from="{peer_ip}",restrict,command="/etc/xenha/migrate-receive" ssh-ed25519 '
        )
        client = (etc / "ssh/ssh_config.d/xenha.conf").read_text()
        assert f"Host {peer} {peer_ip}\n" in client
        assert "IdentityFile /etc/xenha/ssh/xenha_migrate\n" in client
        known = (etc / "ssh/xenha_known_hosts").read_text()
        assert pillar["xen"]["ssh"]["host_keys"][peer] in known
        assert "XENDOMAINS_RESTORE=false" in (etc / "default/xendomains").read_text()
        iqn = lab.cluster["hosts"][mid]["iqn"]
        assert f"InitiatorName={iqn}\n" in (etc / "iscsi/initiatorname.iscsi").read_text()
    # nothing landed in the machine's /root, which the lab hosts share
    assert not (Path("/root/.ssh/xenha_migrate")).exists()
    machine_keys = Path("/root/.ssh/authorized_keys")
    assert not machine_keys.exists() or "xenha-migrate" not in machine_keys.read_text()


def test_the_migration_key_only_reaches_the_forced_command(lab):
    v1 = lab.hosts["ServVirt1"]
    # sshd of ServVirt2 reads the formula's authorized_keys; ssh trusts the pinned host key
    refused = v1.run(["ssh", "-o", "BatchMode=yes", "ServVirt2", "xl", "destroy", "web01"],
                     check=False)  # fmt: skip
    assert refused.returncode == 1
    assert "xenha: refused: xl destroy web01 (unexpected destroy)" in refused.stderr
    # xl migrate-receive gets through the forced command (no xl in this lab: the shell says so)
    passed = v1.run(["ssh", "-o", "BatchMode=yes", "ServVirt2", "xl", "migrate-receive"],
                    check=False)  # fmt: skip
    assert passed.returncode == 127 and "xl: not found" in passed.stderr, passed.stderr
    # the key itself is refused from an address that is not a VM host's (from="...")
    storage = lab.hosts["ServDB"]
    stolen = storage.root / "tmp" / "stolen_key"
    stolen.write_text(lab.pillar()["xen"]["ssh"]["private_key"])
    stolen.chmod(0o600)
    outsider = storage.run(
        ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-i", "/tmp/stolen_key",
         "root@ServVirt2", "xl", "migrate-receive"],
        check=False,
    )  # fmt: skip
    stolen.unlink()
    assert outsider.returncode == 255
    assert "Permission denied" in outsider.stderr
