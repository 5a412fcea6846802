"""The lab toolstack's pure parts: xl config parsing, QEMU command lines, xl's output formats
(read back with xenha's own parsers), the guest image helpers and the BMC templates."""

import gzip
import json
import os
import socket
import subprocess
import threading

import pytest
import xenha_xenparse as xp
from labxl import cli, migrate
from labxl.config import ConfigError, domain_settings, iscsi_url, parse_cfg, qemu_argv
from labxl.qmp import QMP, QMPError

from lab import bmc, guest, vm
from lab.hosts import wait_for

KERNEL = 'kernel = "/k"\nramdisk = "/r"\n'


def test_parse_cfg_values_lists_and_comments():
    cfg = parse_cfg(
        "# a domU\n"
        'name = "web01"   # trailing comment\n'
        "memory = 128\n"
        "extra = 'labip=10.0.0.5/24 # not a comment'\n"
        "vif = [ 'mac=52:54:00:00:00:05, bridge=br0',\n"
        "        'mac=52:54:00:00:00:06' ]\n"
    )
    assert cfg == {
        "name": "web01",
        "memory": 128,
        "extra": "labip=10.0.0.5/24 # not a comment",
        "vif": ["mac=52:54:00:00:00:05, bridge=br0", "mac=52:54:00:00:00:06"],
    }


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('name "web01"\n', "web01.cfg:1: expected key = value"),
        ("memory = 1\nvif = [ 'mac=x',\n", "web01.cfg:2: unterminated list"),
        ("memory = twelve\n", "web01.cfg:1: bad value for memory"),
    ],
)
def test_parse_cfg_errors_name_file_and_line(text, problem):
    with pytest.raises(ConfigError, match=problem):
        parse_cfg(text, "web01.cfg")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("memory = 128\n" + KERNEL, "Domain name must be specified"),
        ('name = "a b"\n' + KERNEL, "invalid domain name 'a b'"),
        ('name = "web01--incoming"\n' + KERNEL, "invalid domain name"),
        ('name = "w"\nmemory = 0\n' + KERNEL, "memory must be a positive integer, got 0"),
        ('name = "w"\nvcpus = "2"\n' + KERNEL, "vcpus must be a positive integer"),
        ('name = "w"\nkernel = "/k"\n', 'ramdisk = "/path" is required'),
        ('name = "w"\nvif = ["bridge=br0"]\n' + KERNEL, "needs mac="),
        ('name = "w"\nvif = "mac=52:54:00:00:00:01"\n' + KERNEL, "vif must be a list"),
        ('name = "w"\ndisk = ["format=raw, target=rel.img"]\n' + KERNEL, "must be iscsi://"),
        ('name = "w"\ndisk = ["format=qcow2, target=/d.img"]\n' + KERNEL, "only format=raw"),
        ('name = "w"\ndisk = ["vdev=xvda"]\n' + KERNEL, "needs target="),
        ('name = "w"\ndisk = ["xvda"]\n' + KERNEL, "expected key=value items"),
    ],
)
def test_domain_settings_errors_say_what_is_wrong(text, problem):
    with pytest.raises(ConfigError, match=problem):
        domain_settings(parse_cfg(text, "w.cfg"), "w.cfg")


def test_iscsi_url_with_chap_default_port_and_errors():
    # a hex secret must survive: "%ab" is also a percent-escape
    assert iscsi_url("iscsi://xenha%ab12cd@10.0.0.12/iqn.2025-01.lab:web01/1") == {
        "portal": "10.0.0.12:3260",
        "iqn": "iqn.2025-01.lab:web01",
        "lun": 1,
        "user": "xenha",
        "secret": "ab12cd",
    }
    assert iscsi_url("iscsi://10.0.0.12:3261/iqn.x:y/2")["portal"] == "10.0.0.12:3261"
    assert iscsi_url("iscsi://10.0.0.12:3261/iqn.x:y/2")["user"] is None
    for bad in ("iscsi://10.0.0.12/iqn.x:y", "iscsi:///iqn.x:y/1", "iscsi://h/iqn.x:y/one"):
        with pytest.raises(ConfigError, match="bad iSCSI URL"):
            iscsi_url(bad)


def _settings(disk="iscsi://u%s3cret@10.0.0.12:3261/iqn.x:web01/1"):
    cfg = parse_cfg(
        'name = "web01"\nmemory = 96\nvcpus = 2\n' + KERNEL + 'extra = "labip=10.0.0.5/24"\n'
        "vif = ['mac=52:54:00:00:00:05, bridge=br0']\n"
        f"disk = ['format=raw, vdev=xvda, access=rw, target={disk}']\n"
    )
    return domain_settings(cfg)


HOST = {"qemu": "qemu-system-x86_64", "initiator": "iqn.2009-06.br.example:servvirt1"}
FILES = {"qmp": "/s/d7.qmp", "pidfile": "/s/d7.pid", "console": "/s/d7.console"}
FILES |= {"chap": "/s/d7.chap", "vif_script": "/lab/vif-bridge"}


def test_qemu_argv_for_a_new_and_an_incoming_domain():
    dom = {"name": "web01", "uuid": "u-1", "domid": 7, "settings": _settings()}
    argv = qemu_argv(HOST, dom, FILES)
    line = " ".join(argv)
    assert argv[argv.index("-m") + 1] == "96" and argv[argv.index("-smp") + 1] == "2"
    # guest= alone in its -name (lab/failover.py reads it); named threads in a second -name,
    # which QEMU merges (the migration lowers its stream thread's priority by name)
    assert argv[argv.index("-name") + 1] == "guest=web01"
    assert "-name debug-threads=on" in line
    assert argv[argv.index("-append") + 1] == "console=ttyS0 quiet labip=10.0.0.5/24"
    assert "tap,id=net0,ifname=vif7.0,script=/lab/vif-bridge,downscript=no" in argv
    assert "virtio-net-pci,netdev=net0,mac=52:54:00:00:00:05" in argv
    # CHAP secret through a secret object (a file), never on the command line
    assert "secret,id=chap0,format=raw,file=/s/d7.chap.0" in argv
    assert "s3cret" not in line
    drive = argv[argv.index("-drive") + 1].split(",")
    assert {"file.driver=iscsi", "file.portal=10.0.0.12:3261", "file.target=iqn.x:web01"} < set(
        drive
    )
    assert {"file.lun=1", "file.user=u", "file.password-secret=chap0"} < set(drive)
    assert f"file.initiator-name={HOST['initiator']}" in drive
    assert "-incoming" not in argv and "-S" not in argv
    incoming = qemu_argv(HOST, dom, FILES, incoming=True)
    assert incoming[-3:] == ["-incoming", "defer", "-S"]


def test_qemu_argv_plain_file_disk():
    dom = {"name": "w", "uuid": "u", "domid": 1, "settings": _settings(disk="/d/w.img")}
    argv = qemu_argv(HOST, dom, FILES)
    assert "if=virtio,format=raw,cache=none,file=/d/w.img" in argv
    assert not any(a.startswith("secret,") for a in argv)


def test_xl_list_format_parses_with_xenhas_parser():
    long_name = "a-domain-name-that-is-longer-than-forty-columns"
    rows = [
        ("Domain-0", 0, 256, 2, "r-----", 12.34),
        ("web01", 3, 128, 1, "-b----", 1.0),
        (long_name, 4, 64, 1, "--p---", 0.0),
        ("db01--incoming", 5, 128, 1, "--p---", 0.0),
    ]
    text = cli.XL_LIST_HEADER + "\n" + cli.format_list(rows)
    row = "web01                                        3   128     1     -b----       1.0"
    assert text.splitlines()[2] == row
    parsed = xp.split_dom0(xp.parse_xl_list(text))
    assert parsed["dom0"]["memory_mib"] == 256 and parsed["dom0"]["vcpus"] == 2
    assert parsed["domus"]["web01"]["flags"] == ["blocked"]
    assert parsed["domus"][long_name]["flags"] == ["paused"]
    assert parsed["domus"]["db01--incoming"]["transient"] == "incoming"
    assert parsed["domus"]["db01--incoming"]["base_name"] == "db01"


def test_xl_info_format_parses_with_xenhas_parser():
    conf = {"host": "ServVirt1", "nr_cpus": 2, "memory_mib": 2048, "dom0_mib": 256}
    text = cli.format_info(cli.info_fields(conf, free_memory=1664))
    assert "host                   : ServVirt1\n" in text
    assert "virt_caps              : hvm\n" in text
    info = xp.summarize_info(xp.parse_info(text))
    assert info["host"] == "ServVirt1"
    assert (info["total_memory_mib"], info["free_memory_mib"], info["nr_cpus"]) == (2048, 1664, 2)
    assert info["xen_version"] == "4.17.0-lab"
    assert text.splitlines()[-1] == "xend_config_format     : 4"


def test_xl_list_long_json_parses():
    rec = {"domid": 3, "name": "web01", "uuid": "u-3", "settings": _settings()}
    details = xp.parse_xl_list_json(cli.json.dumps(cli.long_entries([rec])))
    assert details["web01"]["max_memkb"] == 96 * 1024 and details["web01"]["uuid"] == "u-3"
    assert "s3cret" not in cli.json.dumps(cli.long_entries([rec]))


def test_receiver_argv_follows_xls_minus_s():
    assert migrate.receiver_argv("ssh -p 22 -o BatchMode=yes", "ServVirt2") == [
        "ssh", "-p", "22", "-o", "BatchMode=yes", "ServVirt2", "xl", "migrate-receive",
    ]  # fmt: skip
    assert migrate.receiver_argv("ssh", "h", paused=True)[-1] == "-p"
    # an empty -s makes the host argument the whole receiver command, as in xl
    assert migrate.receiver_argv("", "ip netns exec b xl migrate-receive") == [
        "ip", "netns", "exec", "b", "xl", "migrate-receive",
    ]  # fmt: skip


def _fake_qemu(path, script):
    """A QMP server on unix socket ``path`` for one client: greets, then for each command
    received sends the lines ``script`` maps its name to (events first, then the reply)."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)

    def serve():
        conn, _ = srv.accept()
        with conn, conn.makefile("r") as reader:
            conn.sendall(b'{"QMP": {"version": {}, "capabilities": []}}\n')
            for line in reader:
                for out in script.get(json.loads(line)["execute"], [{"return": {}}]):
                    conn.sendall(json.dumps(out).encode() + b"\n")
        srv.close()

    threading.Thread(target=serve, daemon=True).start()


def test_qmp_keeps_events_that_come_before_a_reply_and_waits_for_more(tmp_path):
    event = {"event": "MIGRATION", "data": {"status": "completed"}}
    _fake_qemu(
        tmp_path / "q",
        {
            "query-migrate": [event, {"return": {"status": "completed", "downtime": 12}}],
            "cont": [{"error": {"class": "GenericError", "desc": "not paused"}}],
        },
    )
    with QMP(tmp_path / "q", timeout=5) as q:
        assert q.cmd("query-migrate") == {"status": "completed", "downtime": 12}
        assert q.event("MIGRATION", 0) == event  # kept while the reply was awaited
        assert q.event("MIGRATION", 0.05) is None  # a wait that times out ...
        assert q.cmd("query-status") == {}  # ... leaves the session usable
        with pytest.raises(QMPError, match="cont: not paused"):
            q.cmd("cont")


def test_channel_tells_silence_from_a_gone_peer():
    rfd, wfd = os.pipe()
    chan = migrate.Channel(rfd, -1)
    assert chan.line(timeout=0.01) is None and not chan.eof
    os.write(wfd, b'{"ready": true}\n')
    assert chan.recv(timeout=1) == {"ready": True}
    os.close(wfd)
    assert chan.line(timeout=1) is None and chan.eof
    os.close(rfd)


def test_renice_sets_the_threads_it_names():
    child = subprocess.Popen(["sleep", "30"])
    try:
        # until the child has exec'd, its one thread still carries the forking process's name
        wait_for(lambda: migrate.threads(child.pid) == {child.pid: "sleep"}, 10, "sleep's exec")
        assert migrate.renice(child.pid, 7, only="live_migration") == 0  # no such thread
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == 0
        assert migrate.renice(child.pid, 7) == 1
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == 7
    finally:
        child.kill()
        child.wait()


def test_lab_domu_config_round_trips(tmp_path):
    image = guest.GuestImage(tmp_path / "vmlinux", tmp_path / "initrd.gz", "6.1.0-test")
    url = "iscsi://xenha%00ff@10.99.0.12:3261/iqn.2025-01.lab.xenha:domu.web01/1"
    text = vm.render_cfg("web01", "10.99.0.100", 24, image, url, memory=96)
    settings = domain_settings(parse_cfg(text, "web01.cfg"), "web01.cfg")
    assert settings["vifs"] == [{"mac": "52:54:00:63:00:64", "bridge": "br0"}]
    assert settings["disks"][0]["secret"] == "00ff"  # noqa: S105 -- a test value
    assert settings["extra"] == "labip=10.99.0.100/24 labhost=web01"
    # the product's own config reader sees the same name and sizes
    assert xp.parse_cfg(text) == {"name": "web01", "memory_mib": 96, "vcpus": 1}


def test_module_order_puts_dependencies_first():
    dep = (
        "kernel/a/virtio_ring.ko:\n"
        "kernel/a/virtio.ko: kernel/a/virtio_ring.ko\n"
        "kernel/b/virtio_net.ko: kernel/c/net_failover.ko kernel/a/virtio.ko "
        "kernel/a/virtio_ring.ko\n"
        "kernel/c/net_failover.ko: kernel/c/failover.ko\n"
        "kernel/c/failover.ko:\n"
        "kernel/d/virtio-blk.ko.xz: kernel/a/virtio.ko kernel/a/virtio_ring.ko\n"
    )
    order = guest.module_order(dep, ["virtio_net", "virtio_blk"])
    assert order.index("kernel/a/virtio_ring.ko") < order.index("kernel/a/virtio.ko")
    assert order.index("kernel/c/failover.ko") < order.index("kernel/c/net_failover.ko")
    assert order.index("kernel/c/net_failover.ko") < order.index("kernel/b/virtio_net.ko")
    assert order[-1] == "kernel/d/virtio-blk.ko.xz" and len(order) == len(set(order)) == 6
    with pytest.raises(guest.GuestBuildError, match="'evdev' not found"):
        guest.module_order(dep, ["evdev"])


def test_cpio_archive_reads_back_with_cpio(tmp_path):
    arc = guest.Cpio()
    arc.dir("bin")
    arc.file("bin/hello", b"#!/bin/sh\necho hi\n", 0o755)
    arc.file("etc-odd", b"x" * 3)
    archive = tmp_path / "a.cpio"
    archive.write_bytes(gzip.decompress(arc.gz()))
    listing = subprocess.run(
        ["cpio", "-itv", "-F", str(archive)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert [line.split()[-1] for line in listing] == ["bin", "bin/hello", "etc-odd"]
    assert listing[1].startswith("-rwxr-xr-x") and listing[0].startswith("d")


def test_extract_vmlinux_needs_an_xz_payload():
    payload = guest.lzma.compress(b"\x7fELF kernel", format=guest.lzma.FORMAT_XZ)
    assert guest.extract_vmlinux(b"MZ setup code" + payload) == b"\x7fELF kernel"
    with pytest.raises(guest.GuestBuildError, match="no xz payload"):
        guest.extract_vmlinux(b"MZ gzip kernel")


def test_mac_for_is_fixed_per_ip():
    assert vm.mac_for("10.99.0.100") == "52:54:00:63:00:64"
    assert vm.mac_for("10.99.1.5") != vm.mac_for("10.99.0.5")


def test_bmc_templates_render_every_placeholder():
    text = bmc.render(
        "lan.conf",
        host="ServVirt1",
        address="10.99.0.31",
        guid="0" * 32,
        chassis_control="/run/x/chassis-control",
        username="admin",
        password="pw",  # noqa: S106 -- a test value
    )
    assert "addr 10.99.0.31 623" in text and '"admin"  "pw" admin' in text
    assert "$" not in text
    with pytest.raises(KeyError):
        bmc.render("lan.conf", host="ServVirt1")
    spec = {"address": "10.99.0.31", "username": "a", "password": "secret-p"}
    argv = bmc.ipmitool_argv(spec, "mc")
    assert argv[:5] == ["ipmitool", "-I", "lanplus", "-C", "3"]
    assert "-E" in argv and not any("secret-p" in arg for arg in argv)  # never on the argv
    assert bmc.ipmitool_env(spec) == {"IPMI_PASSWORD": "secret-p"}
