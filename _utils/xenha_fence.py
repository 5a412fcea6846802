"""
Fencing through a host's BMC with standard IPMI (``ipmitool``): power the host off, then poll
until the BMC reports the chassis off. Used by the failover runner on the master.

The password travels in the ``IPMI_PASSWORD`` environment variable (``ipmitool -E``), never on
the command line where ``ps`` would show it. Every call is bounded in time; failures carry
ipmitool's own stderr.

BMC settings are the pillar's ``xenha:hosts:<id>:bmc``: ``address`` (an IP address),
``username``, optional ``interface`` (lanplus), ``cipher_suite`` (3: without ``-C`` ipmitool
1.8.19 stalls ~10 s probing cipher suites), ``port`` (623); and the ``password``, which no
minion's pillar holds: the master configuration's ``xenha_bmc:<id>:password`` (``credentials``
puts the two together).
"""

import os
import shutil
import subprocess
import time

import xenha_pillarcheck
from salt.exceptions import CommandExecutionError

CALL_TIMEOUT = 10.0  # one ipmitool call (it retries internally: -R 2 -N 2)
CONFIRM_TIMEOUT = 20.0  # power off until the BMC reports it off
POLL = 0.2  # s between power status reads: the fence is on the failover's critical path


class FenceError(CommandExecutionError):
    """Fencing failed or could not be confirmed; the message says which step and why."""


def available():
    """True when ipmitool is on PATH."""
    return shutil.which("ipmitool") is not None


class Unusable(dict):
    """A host's BMC that is configured but cannot be used (``reason`` says why): fencing
    refuses it with that reason. Not empty, so it counts as a configured BMC."""

    def __init__(self, host, reason):
        super().__init__(host=host)
        self.reason = reason


def credentials(settings, master, host):
    """
    The BMC settings to fence ``host`` with: the pillar's ``settings`` completed with the
    password in ``master``, the master configuration's ``xenha_bmc`` (``{host: {password}}``),
    checked by the pillar check (``master_bmc``). When it is missing or bad the result is Unusable:
    fencing ``host`` fails with the error naming the key (then the failover falls back on the
    lease), while every other host's failover goes on.
    """
    try:
        return xenha_pillarcheck.master_bmc(settings, master, host)
    except CommandExecutionError as err:
        return Unusable(host, str(err))


def bmc_argv(bmc):
    """
    The ipmitool argv prefix for a BMC, without the password. The settings are checked by the
    pillar check's own ``bmc`` (the same rules as ``xenha:hosts:<id>:bmc``).
    """
    if isinstance(bmc, Unusable):
        raise FenceError(bmc.reason)
    try:
        bmc = xenha_pillarcheck.bmc(bmc, "bmc")
    except CommandExecutionError as err:
        raise FenceError(str(err)) from None
    argv = ["ipmitool", "-I", bmc["interface"], "-H", bmc["address"], "-U", bmc["username"]]
    argv += ["-E", "-R", "2", "-N", "2"]
    if bmc["interface"] == "lanplus":
        argv += ["-C", str(bmc["cipher_suite"])]
    return [*argv, "-p", str(bmc["port"])]


def parse_power(stdout):
    """'on' or 'off' from ``chassis power status`` output; FenceError on anything else."""
    for line in stdout.splitlines():
        if line.strip().startswith("Chassis Power is "):
            state = line.strip()[len("Chassis Power is ") :].strip()
            if state in ("on", "off"):
                return state
    raise FenceError(f"unexpected ipmitool power status output: {stdout.strip()!r}")


def _run(bmc, verb, timeout):
    argv = [*bmc_argv(bmc), "chassis", "power", verb]
    env = dict(os.environ, IPMI_PASSWORD=bmc["password"])
    shown = " ".join(argv)
    try:
        proc = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as err:
        raise FenceError(f"{shown}: no answer within {timeout} s") from err
    except OSError as err:
        raise FenceError(f"{shown}: cannot run ipmitool: {err}") from err
    if proc.returncode != 0:
        raise FenceError(f"{shown} failed (rc {proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def power_status(bmc, timeout=CALL_TIMEOUT):
    """'on' or 'off' as the BMC reports it."""
    return parse_power(_run(bmc, "status", timeout))


def power_off(bmc, call_timeout=CALL_TIMEOUT, confirm_timeout=CONFIRM_TIMEOUT, poll=POLL):
    """
    Power the host off through its BMC and wait until the BMC reports ``Chassis Power is off``.
    Returns ``{"fenced": True, "seconds", "command_seconds", "polls"}``; raises FenceError with
    ipmitool's stderr when the BMC cannot be reached or never confirms.
    """
    start = time.monotonic()
    _run(bmc, "off", call_timeout)
    issued = time.monotonic()
    polls, last_error = 0, None
    while True:
        polls += 1
        try:
            if power_status(bmc, call_timeout) == "off":
                break
        except FenceError as err:
            last_error = err
        if time.monotonic() - issued + poll > confirm_timeout:
            why = f"last error: {last_error}" if last_error else "the BMC still reports power on"
            raise FenceError(f"power off not confirmed within {confirm_timeout} s ({why})")
        time.sleep(poll)
    end = time.monotonic()
    return {
        "fenced": True,
        "seconds": round(end - start, 3),
        "command_seconds": round(issued - start, 3),
        "polls": polls,
    }
