"""
IPMI fencing against a real OpenIPMI ``ipmi_sim`` BMC (configured from the lab's templates) in
a throw-away network namespace (10.98.x addresses exist only inside it); ipmitool reaches it
through a PATH wrapper that runs the real ipmitool inside the namespace. Plus the pure parts and
an unreachable BMC.
"""

import os
import shutil
import socket
import subprocess
import time
import uuid

import pytest
import xenha_fence as xf
from salt.exceptions import CommandExecutionError

from lab import bmc as lab_bmc

BMC_IP = "10.98.0.31"
PASSWORD = "fencepass"  # noqa: S105 - a throw-away test BMC

# ipmi_sim's chassis_control protocol: "get power" prints power:N; "set power N" stores it.
CONTROL = """\
#!/bin/sh
state={state}
case "$1 $2" in
  "get power") echo "power:$(cat $state)" ;;
  "set power") echo "$3" > $state; echo "$(date +%s.%N) power $3" >> {state}.log ;;
esac
"""

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ipmi_sim") or not shutil.which("ipmitool"),
    reason="needs root, ipmi_sim and ipmitool",
)


def bmc(**extra):
    return {"address": BMC_IP, "username": "admin", "password": PASSWORD, **extra}


@pytest.fixture
def sim(tmp_path, monkeypatch):
    """A BMC in its own netns; yields the power state file. Everything is removed afterwards."""
    ns = f"xhfence{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    proc = None
    try:
        nsx = ["ip", "netns", "exec", ns]
        subprocess.run([*nsx, "ip", "link", "set", "lo", "up"], check=True)
        subprocess.run([*nsx, "ip", "addr", "add", f"{BMC_IP}/32", "dev", "lo"], check=True)
        state = tmp_path / "power"
        state.write_text("1\n")
        control = tmp_path / "chassis-control.sh"
        control.write_text(CONTROL.format(state=state))
        control.chmod(0o755)
        # the lab's BMC templates (lab/bmc/), with a chassis that only records its power state
        (tmp_path / "lan.conf").write_text(
            lab_bmc.render(
                "lan.conf",
                host="fence-test",
                address=BMC_IP,
                guid=uuid.uuid4().hex,
                chassis_control=control,
                username="admin",
                password=PASSWORD,
            )
        )
        (tmp_path / "bmc.emu").write_text(lab_bmc.render("bmc.emu", host="fence-test"))
        (tmp_path / "simstate").mkdir()
        proc = subprocess.Popen(
            [*nsx, "ipmi_sim", "-c", str(tmp_path / "lan.conf"), "-f", str(tmp_path / "bmc.emu")]
            + ["-s", str(tmp_path / "simstate"), "-n"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wrapper_dir = tmp_path / "bin"
        wrapper_dir.mkdir()
        wrapper = wrapper_dir / "ipmitool"
        wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {ns} {shutil.which("ipmitool")} "$@"\n')
        wrapper.chmod(0o755)
        monkeypatch.setenv("PATH", f"{wrapper_dir}:{os.environ['PATH']}")
        _wait_for_bmc()
        yield state
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        subprocess.run(["ip", "netns", "delete", ns], check=False)


def _wait_for_bmc():
    deadline = time.monotonic() + 20
    while True:
        try:
            if xf.power_status(bmc(), timeout=5) in ("on", "off"):
                return
        except CommandExecutionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@needs_root
def test_power_off_is_confirmed_by_the_bmc(sim):
    assert xf.power_status(bmc()) == "on"
    # as the runner fences: the pillar's settings and the master configuration's password
    pillar = {"address": BMC_IP, "username": "admin", "cipher_suite": 3}
    result = xf.power_off(
        xf.credentials(pillar, {"fence-test": {"password": PASSWORD}}, "fence-test")
    )
    assert result["fenced"] is True
    assert result["polls"] >= 1 and result["seconds"] >= result["command_seconds"] > 0
    assert sim.read_text().strip() == "0"  # the chassis control hook really ran
    assert xf.power_status(bmc()) == "off"


@needs_root
def test_password_never_on_the_command_line(sim, tmp_path, monkeypatch):
    # record the argv and the environment ipmitool is started with
    log = tmp_path / "argv.log"
    spy = tmp_path / "spy"
    spy.mkdir()
    real = shutil.which("ipmitool")
    (spy / "ipmitool").write_text(
        f'#!/bin/sh\necho "$* ENV=$IPMI_PASSWORD" >> {log}\nexec {real} "$@"\n'
    )
    (spy / "ipmitool").chmod(0o755)
    monkeypatch.setenv("PATH", f"{spy}:{os.environ['PATH']}")
    xf.power_off(bmc())
    lines = log.read_text().splitlines()
    assert lines and all(line.endswith(f"ENV={PASSWORD}") for line in lines)
    assert all(PASSWORD not in line[: -len(f"ENV={PASSWORD}")] for line in lines)
    assert all(" -E " in line and " -C 3 " in line for line in lines)


@needs_root
def test_wrong_password_fails_with_ipmitools_message(sim):
    with pytest.raises(xf.FenceError, match="Unable to establish IPMI v2 / RMCP"):
        xf.power_off(bmc(password="wrong-password"))  # noqa: S106
    assert sim.read_text().strip() == "1"  # nothing was powered off


@needs_root
def test_bmc_that_never_confirms_is_a_failure(sim, tmp_path):
    # a broken chassis: accepts "power off" but keeps reporting on
    (tmp_path / "chassis-control.sh").write_text(
        '#!/bin/sh\n[ "$1 $2" = "get power" ] && echo power:1\nexit 0\n'
    )
    with pytest.raises(xf.FenceError, match="not confirmed within 1.5 s"):
        xf.power_off(bmc(), confirm_timeout=1.5, poll=0.3)


def test_unreachable_bmc_fails_within_the_timeout(tmp_path, monkeypatch):
    if not shutil.which("ipmitool"):
        pytest.skip("ipmitool not installed")
    # a closed local UDP port: nothing answers there
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    start = time.monotonic()
    with pytest.raises(xf.FenceError) as err:
        xf.power_off(bmc(address="127.0.0.1", port=port), call_timeout=3)
    assert "chassis power off" in str(err.value)
    assert "IPMI" in str(err.value) or "no answer within 3" in str(err.value)
    assert time.monotonic() - start < 30  # bounded, not a hang (generous: never a wall limit)


def test_argv_and_validation():
    argv = xf.bmc_argv(bmc(cipher_suite=1, port=6230))
    assert argv == [
        "ipmitool", "-I", "lanplus", "-H", BMC_IP, "-U", "admin", "-E",
        "-R", "2", "-N", "2", "-C", "1", "-p", "6230",
    ]  # fmt: skip
    assert PASSWORD not in argv
    assert "-C" not in xf.bmc_argv(bmc(interface="lan"))
    assert xf.bmc_argv(bmc())[-2:] == ["-p", "623"]
    # the same checks and messages as the pillar's xenha:hosts:<id>:bmc (xenha_pillarcheck.bmc)
    for bad, why in [
        ({"address": "-oProxyCommand=x"}, "bmc:address: '-oProxyCommand=x' is not an IP address"),
        ({"address": "bmc.example"}, "is not an IP address"),  # fencing must not need DNS
        ({"username": "-oProxyCommand=x"}, "bmc:username: .* must not start with '-'"),
        ({"username": "admin\nx"}, "bmc:username: .* control character '\\\\n'"),
        ({"password": ""}, "bmc:password: missing"),
        ({"interface": "serial"}, "bmc:interface: unknown value 'serial'"),
        ({"cipher_suite": "3"}, "bmc:cipher_suite: must be an integer"),
        ({"port": 70000}, "bmc:port: 70000 is out of range 1..65535"),
        ({"port": "623; x"}, "bmc:port: must be an integer, got '623; x'"),
    ]:
        with pytest.raises(xf.FenceError, match=why):
            xf.bmc_argv(bmc(**bad))
    with pytest.raises(xf.FenceError, match="^bmc: missing$"):
        xf.bmc_argv(None)
    with pytest.raises(xf.FenceError, match="^bmc: must be a mapping, got str$"):
        xf.bmc_argv("10.0.0.1")


def test_parse_power():
    assert xf.parse_power("Chassis Power is on\n") == "on"
    assert xf.parse_power("Chassis Power is off\n") == "off"
    with pytest.raises(xf.FenceError, match="unexpected ipmitool power status output"):
        xf.parse_power("Chassis Power Control: Down/Off\n")


def test_credentials_without_the_masters_password_fail_at_fence_time(monkeypatch):
    def no_ipmitool(*args, **kwargs):
        raise AssertionError("ipmitool must not run")

    monkeypatch.setattr(subprocess, "run", no_ipmitool)
    pillar = {"address": BMC_IP, "username": "admin", "password": None}
    for entry, message in [
        (None, "xenha_bmc:ServVirt1: missing (BMC passwords are master configuration"),
        (
            {"ServVirt1": {"password": "a\nb"}},
            "xenha_bmc:ServVirt1:password: the secret contains the control",
        ),
    ]:
        bmc_settings = xf.credentials(pillar, entry, "ServVirt1")
        assert bmc_settings  # a configured BMC: the failover engine tries it, and fails
        with pytest.raises(xf.FenceError) as err:
            xf.power_off(bmc_settings)
        assert str(err.value).startswith(message)
    ok = xf.credentials(pillar, {"ServVirt1": {"password": PASSWORD}}, "ServVirt1")
    assert ok["password"] == PASSWORD and xf.bmc_argv(ok)[:3] == ["ipmitool", "-I", "lanplus"]


def test_the_runner_fences_with_the_masters_passwords(monkeypatch):
    """The failover runner's members: each VM host's pillar bmc plus its master password; a
    host without one still has a BMC, whose fence fails naming the key (the lease is next)."""
    from _runners import xenha as runner  # noqa: PLC0415 - the runner's Salt imports, here only

    master = {"xenha_bmc": {"ServVirt1": {"password": PASSWORD}}}
    monkeypatch.setattr(runner, "__opts__", master, raising=False)
    pillar = {"address": BMC_IP, "username": "admin"}
    cluster = {
        "hosts": {
            "ServVirt1": {"role": "vmhost", "bmc": dict(pillar)},
            "ServVirt2": {"role": "vmhost", "bmc": {**pillar, "address": "10.98.0.32"}},
            "ServVirt3": {"role": "vmhost"},
            "ServDB": {"role": "storage"},
        }
    }
    members = runner._SaltFailoverIO(cluster).members()
    vmhosts = members["vmhosts"]
    assert sorted(vmhosts) == ["ServVirt1", "ServVirt2", "ServVirt3"]
    assert vmhosts["ServVirt1"]["bmc"]["password"] == PASSWORD
    assert "bmc" not in vmhosts["ServVirt3"]
    assert "password" not in cluster["hosts"]["ServVirt1"]["bmc"]  # the pillar view is kept
    with pytest.raises(xf.FenceError, match=r"^xenha_bmc:ServVirt2: missing \(BMC passwords"):
        runner._SaltFailoverIO(cluster).fence_ipmi("ServVirt2", vmhosts["ServVirt2"]["bmc"])
