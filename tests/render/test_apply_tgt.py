"""
iscsi.target applied for real against a throw-away tgtd (its own control port, a portal on
127.0.0.1), with ServVirt1's address set to 127.0.0.1 so this machine can play that VM host:
the rendered ACLs and CHAP let exactly the right initiator in (checked with libiscsi's
iscsi-ls), a second apply changes nothing, and a pillar change reaches tgtd live.
"""

import contextlib
import os
import shutil
import socket
import subprocess
import time

import pytest

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("tgtd") or not shutil.which("iscsi-ls"),
    reason="needs root, tgtd and libiscsi-bin",
)

IQN = "iqn.2009-06.br.example:storage.cluster"
SERVVIRT1 = "iqn.2009-06.br.example:servvirt1"


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _free_control_port():
    for port in range(150, 250):
        if not os.path.exists(f"/var/run/tgtd/socket.{port}"):
            return port
    pytest.skip("no free tgtd control port")
    return None


@pytest.fixture
def tgtd(tmp_path):
    """A tgtd of our own; stopped the way tgtd allows (targets offline and deleted first)."""
    control, port = _free_control_port(), _free_port()
    proc = subprocess.Popen(
        ["tgtd", "-f", "-C", str(control), "--iscsi", f"portal=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    tgtadm = ["tgtadm", "-C", str(control), "--lld", "iscsi"]
    for _ in range(100):
        if subprocess.run([*tgtadm, "--mode", "sys", "--op", "show"],
                          capture_output=True, check=False).returncode == 0:  # fmt: skip
            break
        time.sleep(0.1)
    try:
        yield {"control": control, "port": port, "tgtadm": tgtadm}
    finally:
        show = subprocess.run([*tgtadm, "--mode", "target", "--op", "show"],
                              capture_output=True, text=True, check=False).stdout  # fmt: skip
        for line in show.splitlines():
            if line.startswith("Target "):
                tid = line.split()[1].rstrip(":")
                subprocess.run([*tgtadm, "--mode", "target", "--op", "delete", "--force",
                                "--tid", tid], capture_output=True, check=False)  # fmt: skip
        subprocess.run([*tgtadm, "--mode", "system", "--op", "delete"],
                       capture_output=True, check=False)  # fmt: skip
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for leftover in (f"socket.{control}", f"socket.{control}.lock"):  # tgtd leaves them
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"/var/run/tgtd/{leftover}")


def _apply(salt_call, tmp, tgtd, servvirt1_ip="127.0.0.1", chap_user="xenha"):
    code, out = salt_call(
        "ServDB", "Debian", "state.apply", "iscsi.target",
        xenha={
            "hosts": {"ServVirt1": {"ip": servvirt1_ip}},
            "storage": {"backing_device": str(tmp / "lun1.img"), "chap": {"user": chap_user}},
        },
        pillar={"iscsi": {"lookup": {"service_manager": "none", "target": {"tgt": {
            "config": str(tmp / "targets.conf"), "config_dir": str(tmp / "conf.d"),
            "control_port": tgtd["control"]}}}}},
    )  # fmt: skip
    assert code == 0 and isinstance(out, dict), out
    return {key.split("_|-")[1]: ret for key, ret in out.items()}


def _login(tgtd, user="xenha", secret="render-test-chap-secret"):  # noqa: S107
    url = f"iscsi://{user}%{secret}@127.0.0.1:{tgtd['port']}/{IQN}/1"
    return subprocess.run(["iscsi-readcapacity16", "-i", SERVVIRT1, url],
                          capture_output=True, text=True, check=False)  # fmt: skip


def _updated(result):
    return result["iscsi-tgt-cmd-run-tgt-admin-update"]["changes"]["retcode"] == 0


def test_target_applied_live_with_acl_and_chap(salt_call, tmp_path, tgtd):
    subprocess.run(["truncate", "-s", "64M", str(tmp_path / "lun1.img")], check=True)
    assert _updated(_apply(salt_call, tmp_path, tgtd))
    show = subprocess.run([*tgtd["tgtadm"], "--mode", "target", "--op", "show"],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert f"Target 1: {IQN}" in show
    assert f"Backing store path: {tmp_path / 'lun1.img'}" in show

    # from a VM host's address with the CHAP secret: LUN 1; with a wrong secret: nothing
    ok = _login(tgtd)
    assert ok.returncode == 0, ok.stderr
    assert "Total size:67108864" in ok.stdout
    assert _login(tgtd, secret="wrong-secret-123").returncode != 0  # noqa: S106

    second = _apply(salt_call, tmp_path, tgtd)
    assert {sid: ret["changes"] for sid, ret in second.items() if ret["changes"]} == {}

    # pillar changes reach tgtd live, through tgt-admin --update of this target only
    assert _updated(_apply(salt_call, tmp_path, tgtd, chap_user="xenha2"))
    assert _login(tgtd, user="xenha2").returncode == 0
    assert _login(tgtd).returncode != 0
    # once 127.0.0.1 is no VM host's address any more, even the right secret is refused
    assert _updated(_apply(salt_call, tmp_path, tgtd, servvirt1_ip="192.168.25.10"))
    assert _login(tgtd, user="xenha2").returncode != 0
