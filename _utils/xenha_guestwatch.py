"""
The guest watcher's rules on a VM host (pure, but for the application check's socket): from
one toolstack listing per round and the application checks' results, which monitored domUs
just failed. Used by the ``xenha_guest`` execution module, whose thread runs the rounds for
the ``xenha_guests`` beacon. See docs/guest-monitoring.md.

Findings, one event per transition (a domU that stays failed is reported once):

- ``crashed``: the toolstack lists the domU crashed (keep it listed: ``on_crash = "preserve"``);
- ``dying``: listed dying in two rounds in a row (a destroy that does not finish);
- ``gone``: listed running in the last round, not at all now, with no migration copy seen
  and no stop through xenha (``xenha_xen.shutdown``/``destroy``/``migrate`` leave a stop note);
- ``check``: its application check failed ``failures`` times in a row, counted only from
  ``grace`` seconds after the domU was first seen running here.
"""

import contextlib
import os
import socket
import time
import urllib.error
import urllib.request

STOP_DIR = "/run/xenha/guests"  # <domU>.stopped: xenha stopped it on purpose (not a failure)
NOTE_FOR = 600.0  # s a stop note counts (a note older than that is stale)


def note_stop(name, directory=None):
    """
    Leave a note that xenha stops domU ``name`` on purpose here; never raises. Only where a
    watcher runs (it makes the directory): elsewhere nobody would read it.
    """
    directory = STOP_DIR if directory is None else directory
    path = os.path.join(directory, f"{name}.stopped")
    with contextlib.suppress(OSError), open(path, "w", encoding="utf-8") as fh:
        fh.write(f"{time.time()}\n")


def take_stop_note(name, directory=None, now=None):
    """True (and the note removed) if xenha stopped ``name`` on purpose lately."""
    path = os.path.join(STOP_DIR if directory is None else directory, f"{name}.stopped")
    try:
        age = (time.time() if now is None else now) - os.stat(path).st_mtime
        os.unlink(path)
    except OSError:
        return False
    return age < NOTE_FOR


def probe(check):
    """Run a checked application check once: ``(ok, detail)``; never raises."""
    timeout = check["timeout"]
    started = time.monotonic()
    try:
        if "tcp" in check:
            host, port = check["tcp"]
            with socket.create_connection((host, port), timeout=timeout):
                pass
            detail = f"tcp {host}:{port} connected"
        else:
            # the pillar check allows http:// and https:// URLs only
            with urllib.request.urlopen(check["http"], timeout=timeout) as response:  # noqa: S310
                response.read(1024)
                detail = f"{check['http']}: HTTP {response.status}"
    except urllib.error.HTTPError as err:
        return False, f"{check['http']}: HTTP {err.code} {err.reason}"
    except (OSError, ValueError) as err:
        target = "tcp {}:{}".format(*check["tcp"]) if "tcp" in check else check["http"]
        return False, f"{target}: {type(err).__name__}: {err}"
    return True, f"{detail} in {time.monotonic() - started:.2f} s"


class Watcher:
    """What this host knows of its monitored domUs between rounds."""

    def __init__(self):
        self.domus = {}  # name -> {"since", "failures", "failed", "dying", "moving"}

    def due(self, now, monitors):
        """The domUs whose application check runs this round: {name: check}."""
        return {
            name: monitor["check"]
            for name, monitor in monitors.items()
            if monitor.get("check")
            and name in self.domus
            and self.domus[name]["failed"] in (False, "check")  # not a crashed or dying one
            and now - self.domus[name]["since"] >= monitor["grace"]
        }

    def round(self, now, listing, monitors, checks, stopped=take_stop_note):
        """
        One round: ``listing`` (``{name: row}`` of ``xenha_xen.list_domains``, None when the
        toolstack did not answer: that is the heartbeat's ``toolstack_failed``), ``monitors``
        ({name: checked monitor}), ``checks`` ({name: (ok, detail)} of this round's checks).
        ``stopped(name)``: whether xenha stopped it on purpose. Returns the findings.
        """
        if listing is None:
            return []
        events = []
        for name in sorted(set(self.domus) - set(monitors)):
            del self.domus[name]  # no longer monitored
        for name, monitor in sorted(monitors.items()):
            row = listing.get(name)
            if row is None:
                event = self._absent(name, listing, stopped)
            elif row.get("transient"):
                event = None  # the far end of a migration into this host
            else:
                event = self._present(now, name, row, stopped)
                event = event or self._checked(name, monitor, checks.get(name))
            if event:
                events.append({"tag": "failed", "domu": name, **event})
        return events

    def _absent(self, name, listing, stopped):
        known = self.domus.get(name)
        copies = [r for r in listing.values() if r.get("transient") and r["base_name"] == name]
        if copies and known:
            known["moving"] = True
            return None
        self.domus.pop(name, None)
        if known and not known["failed"] and not known["moving"] and not stopped(name):
            return {"reason": "gone", "detail": "no longer listed by the toolstack"}
        return None

    def _present(self, now, name, row, stopped):
        known = self.domus.get(name)
        if known is None or known["domid"] != row.get("domid"):
            # a new instance (started, restarted, arrived): its grace starts now, and a stop
            # note left by the restart that made it is spent
            stopped(name)
            known = self.domus[name] = {
                "domid": row.get("domid"), "since": now, "failures": 0, "failed": False,
                "dying": 0, "moving": False, "fresh": True,
            }  # fmt: skip
        known["moving"] = False
        flags = row.get("flags") or ()
        known["dying"] = known["dying"] + 1 if "dying" in flags else 0
        reason = "crashed" if "crashed" in flags else "dying" if known["dying"] >= 2 else None
        return self._failed(known, reason, f"state {row.get('state')}") if reason else None

    def _checked(self, name, monitor, result):
        known = self.domus[name]
        # a check of the instance before does not count for a new one
        fresh, known["fresh"] = known["fresh"], False
        if result is None or fresh or known["failed"] in ("crashed", "dying"):
            return None
        ok, detail = result
        if ok:
            known["failures"] = 0
            if known["failed"] == "check":
                known["failed"] = False
            return None
        known["failures"] += 1
        if known["failures"] >= monitor["check"]["failures"]:
            return self._failed(known, "check", f"{known['failures']} in a row: {detail}")
        return None

    @staticmethod
    def _failed(known, reason, detail):
        if known["failed"]:
            return None
        known["failed"] = reason
        return {"reason": reason, "detail": detail}
