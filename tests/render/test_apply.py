"""
The VM host formulas applied for real on this machine, every path redirected into a temp dir
through the formulas' `lookup` knobs (the same ones the lab uses): a second apply changes
nothing, the shared device is formatted once, and a foreign filesystem is refused. What this
kernel cannot do (iSCSI login, OCFS2 mount) is checked with test=True: the exact commands.
"""

import os
import subprocess

import pytest

from tests.support.saltconf import REPO

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="writes root-owned files (CI is root)")

SLS = "xenha,ntp,hosts,iscsi.initiator,ocfs2,xen"
SECRET = r"render-test\1&chap"  # noqa: S105 - what re.sub would expand, written as it is


def knobs(tmp):
    """Pillar: lookups pointing every formula at tmp, services and mounts left alone."""
    return {
        "hosts.file": str(tmp / "hosts"),
        "ntp": {"lookup": {
            "service_manager": "none",
            "implementations": {"chrony": {"config": str(tmp / "chrony.conf")}},
        }},
        "hosts": {"lookup": {"set_hostname": False}},
        "iscsi": {"lookup": {
            "service_manager": "none",
            "initiator": {"login": False, "initiatorname_file": str(tmp / "initiatorname.iscsi"),
                          "iscsid_conf": str(tmp / "iscsid.conf")},
        }},
        "xenha": {"lookup": {"service_manager": "none"}},
        "ocfs2": {"lookup": {
            "service_manager": "none", "device_sls": None, "mount": False,
            "cluster_conf": str(tmp / "ocfs2/cluster.conf"), "o2cb_config": str(tmp / "o2cb"),
        }},
        "xen": {"lookup": {
            "service_manager": "none",
            "toolstacks": {"xl": {"pkgs": []}},
            "xendomains_config": str(tmp / "xendomains"),
            "xendomains_auto_dir": str(tmp / "auto"),
            "ssh": {
                name: str(tmp / name)
                for name in ("authorized_keys", "client_config", "known_hosts", "receiver")
            },
        }},
    }  # fmt: skip


def cluster(tmp):
    # the domU configs live inside the mount point (the pillar check insists)
    mount = tmp / "cluster"
    return {
        "ocfs2": {"device": str(tmp / "home.img"), "mount_point": str(mount)},
        "xen": {"ssh": {"identity_file": str(tmp / "ssh/xenha_migrate")}},
        "storage": {"chap": {"secret": SECRET}},
        "domus": {name: {"config": str(mount / f"domus/{name}.cfg")} for name in ("web01", "db01")},
    }


def apply(salt_call, tmp, *args, xenha=None, pillar=None, sls=SLS):
    code, out = salt_call(
        "ServVirt1", "Debian", "state.apply", sls, *args,
        xenha=xenha or cluster(tmp), pillar={**knobs(tmp), **(pillar or {})},
    )  # fmt: skip
    assert isinstance(out, dict), out
    return code, out


def by_id(result):
    return {key.split("_|-")[1]: value for key, value in result.items()}


@pytest.fixture
def tmp(tmp_path):
    (tmp_path / "hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tServVirt1\n")
    (tmp_path / "iscsid.conf").write_text("node.startup = manual\n")  # as open-iscsi ships it
    subprocess.run(["truncate", "-s", "256M", str(tmp_path / "home.img")], check=True)
    return tmp_path


def test_apply_twice_formats_once_changes_nothing_the_second_time_and_cleans(salt_call, tmp):
    code, first = apply(salt_call, tmp)
    assert code == 0, {k: v["comment"] for k, v in first.items() if not v["result"]}
    changed = {sid for sid, ret in by_id(first).items() if ret["changes"]}
    assert {
        "ntp-config-file-managed-config",
        "hosts-config-host-present-ServVirt1",
        "iscsi-initiator-file-managed-initiatorname",
        "ocfs2-config-xenha_o2cb-cluster_present",
        "ocfs2-format-xenha_o2cb-formatted",
        "xen-autostart-file-keyvalue-xendomains",
        "xen-migration-ssh_auth-present-migrate-key",
    } <= changed

    code, second = apply(salt_call, tmp)
    assert code == 0
    assert {sid: ret["changes"] for sid, ret in by_id(second).items() if ret["changes"]} == {}

    # what the first run left behind
    assert "peer 192.168.25.11 iburst" in (tmp / "chrony.conf").read_text()
    hosts = (tmp / "hosts").read_text().splitlines()
    assert "127.0.1.1\tServVirt1" not in hosts  # the loopback alias is gone
    assert any(line.split()[:2] == ["192.168.25.11", "ServVirt2"] for line in hosts)
    nodes = subprocess.run(
        ["o2cb", f"--config-file={tmp / 'ocfs2/cluster.conf'}", "list-nodes", "ocfs2",
         "--oneline"],
        capture_output=True, text=True, check=True,
    ).stdout.split("\n")  # fmt: skip
    assert nodes[:2] == [
        "node: 0 ServVirt1 192.168.25.10:7777 ocfs2",
        "node: 1 ServVirt2 192.168.25.11:7777 ocfs2",
    ]
    query = subprocess.run(
        ["tunefs.ocfs2", "-Q", "%V %N\n", str(tmp / "home.img")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert query.stdout == "cluster_home 2\n"
    keys = (tmp / "authorized_keys").read_text()
    assert 'from="192.168.25.11",restrict,command="' in keys
    assert (tmp / "ssh/xenha_migrate").stat().st_mode & 0o777 == 0o600
    assert (tmp / "ssh").stat().st_mode & 0o777 == 0o700
    assert f"IdentityFile {tmp / 'ssh/xenha_migrate'}" in (tmp / "client_config").read_text()
    assert (tmp / "xendomains").read_text().splitlines() == [
        "XENDOMAINS_RESTORE=false",
        'XENDOMAINS_SAVE=""',
    ]
    assert (
        "InitiatorName=iqn.2009-06.br.example:servvirt1\n"
        in (tmp / "initiatorname.iscsi").read_text()
    )
    assert (tmp / "iscsid.conf").stat().st_mode & 0o777 == 0o600  # it holds the CHAP secret
    assert set((tmp / "iscsid.conf").read_text().splitlines()) == {
        "node.startup = automatic",
        "node.session.auth.authmethod = CHAP",
        "node.session.auth.username = xenha",
        f"node.session.auth.password = {SECRET}",
    }

    # and the clean SLS undo it, leaving the volume's data alone
    code, clean = apply(salt_call, tmp, sls="xen.clean,ocfs2.clean,hosts.clean,ntp.clean")
    assert code == 0, {k: v["comment"] for k, v in clean.items() if not v["result"]}
    for gone in ("chrony.conf", "o2cb", "ssh/xenha_migrate", "receiver", "known_hosts"):
        assert not (tmp / gone).exists(), gone
    assert "xenha-migrate" not in (tmp / "authorized_keys").read_text()
    assert [line for line in (tmp / "hosts").read_text().splitlines() if "ServVirt" in line] == []
    assert subprocess.run(
        ["tunefs.ocfs2", "-Q", "%V\n", str(tmp / "home.img")],
        capture_output=True, text=True, check=True,
    ).stdout == "cluster_home\n"  # fmt: skip


def receive(receiver, command, tmp):
    """Run the forced command as sshd would, with a stand-in xl that prints its arguments."""
    (tmp / "bin").mkdir(exist_ok=True)
    (tmp / "bin/xl").write_text('#!/bin/sh\necho "xl $*"\n')
    (tmp / "bin/xl").chmod(0o755)
    env = {"PATH": f"{tmp / 'bin'}:/usr/bin:/bin", "SSH_ORIGINAL_COMMAND": command}
    return subprocess.run([str(receiver)], env=env, capture_output=True, text=True, check=False)


def test_the_migration_key_only_runs_xl_migrate_receive(tmp_path):
    """The rendered forced command (salt/xen/files/migrate-receive.jinja has no Jinja in it)."""
    receiver = tmp_path / "receiver"
    receiver.write_text((REPO / "salt/xen/files/migrate-receive.jinja").read_text())
    receiver.chmod(0o755)
    for allowed in ("xl migrate-receive", "xl -t -vv migrate-receive -e -d -p -D"):
        proc = receive(receiver, allowed, tmp_path)
        assert (proc.returncode, proc.stdout) == (0, allowed + "\n")
    for refused in (
        "xl destroy web01",
        "sh -c id",
        "xl migrate-receive; id",
        "xl migrate-receive -C /etc/shadow",
        "xl migrate-receive *",
        "",
    ):
        proc = receive(receiver, refused, tmp_path)
        assert proc.returncode == 1, refused
        assert (proc.stdout, proc.stderr.startswith("xenha: refused: ")) == ("", True)


def test_a_foreign_filesystem_is_refused(salt_call, tmp):
    subprocess.run(["mkfs.ext4", "-q", "-F", str(tmp / "home.img")], check=True)
    code, out = apply(salt_call, tmp)
    assert code != 0
    fmt = by_id(out)["ocfs2-format-xenha_o2cb-formatted"]
    assert fmt["result"] is False
    assert "holds ext4, not OCFS2: refusing to format" in fmt["comment"]
    assert fmt["changes"] == {}


def test_what_this_kernel_cannot_run_is_shown_at_test_level(salt_call, tmp):
    """iSCSI discovery/login and the OCFS2 mount: test=True shows exactly what would run."""
    pillar = knobs(tmp)
    pillar["ocfs2"]["lookup"].update(mount=True, fstab=str(tmp / "fstab"))
    pillar["iscsi"] = {"lookup": {
        "service_manager": "none",
        "initiator": {"initiatorname_file": str(tmp / "initiatorname.iscsi"),
                      "iscsid_conf": str(tmp / "iscsid.conf")},
    }}  # fmt: skip
    (tmp / "fstab").write_text("")
    code, out = salt_call(
        "ServVirt1", "Debian", "state.apply", "iscsi.initiator,ocfs2", "test=True",
        xenha=cluster(tmp), pillar=pillar,
    )  # fmt: skip
    assert isinstance(out, dict), out
    comments = {sid: ret["comment"] for sid, ret in by_id(out).items()}
    node = "iscsiadm -m node -T iqn.2009-06.br.example:storage.cluster -p 192.168.25.12:3260"
    for sid, command in [
        ("discovery", "iscsiadm -m discovery -t sendtargets -p 192.168.25.12:3260"),
        ("node-update", "iscsiadm -m discovery -t sendtargets -p 192.168.25.12:3260 -o update"),
        ("login", f"{node} --login"),
    ]:
        assert comments[f"iscsi-initiator-cmd-run-{sid}"] == (
            f'Command "{command}" would have been executed'
        )
    mounted = comments["ocfs2-mount-mount-mounted"]
    assert mounted == f"{tmp / 'cluster'} would be created and mounted"
    changes = {sid: ret["changes"] for sid, ret in by_id(out).items()}
    assert changes["iscsi-initiator-file-managed-initiatorname"] == {
        "newfile": str(tmp / "initiatorname.iscsi")
    }
    # node.startup rewritten, the three CHAP settings appended: changes, but no diff to show
    settings = [ret for sid, ret in by_id(out).items() if sid.startswith("iscsi-initiator-file-re")]
    assert [(ret["result"], ret["changes"]) for ret in settings] == [(None, {"diff": True})] * 4
    assert comments["ocfs2-format-xenha_o2cb-formatted"].startswith(
        f"Would format {tmp / 'home.img'} as OCFS2 with mkfs.ocfs2 (label cluster_home, 2 slots"
    )
    assert comments["ocfs2-config-xenha_o2cb-cluster_present"].startswith(
        "Would run: o2cb add-cluster ocfs2; o2cb add-node ocfs2 ServVirt1 --ip 192.168.25.10"
    )
    # nothing was written
    assert sorted(p.name for p in tmp.iterdir()) == ["fstab", "home.img", "hosts", "iscsid.conf"]
    assert (tmp / "fstab").read_text() == ""
    assert (tmp / "iscsid.conf").read_text() == "node.startup = manual\n"
