"""A minimal QMP (QEMU Machine Protocol) client over a unix socket."""

import json
import socket


class QMPError(RuntimeError):
    """QEMU refused a command, or its monitor could not be reached."""


class QMP:
    """One QMP session: ``with QMP(path) as q: q.cmd("query-status")``."""

    def __init__(self, path, timeout=10.0):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(self.path)
        except OSError as err:
            self.sock.close()
            raise QMPError(f"cannot reach QEMU monitor {self.path}: {err}") from err
        self.reader = self.sock.makefile("r", encoding="utf-8")
        self._read()  # greeting
        self.cmd("qmp_capabilities")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.reader.close()
        self.sock.close()

    def _read(self):
        try:
            line = self.reader.readline()
        except OSError as err:
            raise QMPError(f"QEMU monitor {self.path}: {err}") from err
        if not line:
            raise QMPError(f"QEMU monitor {self.path} closed the connection")
        return json.loads(line)

    def cmd(self, execute, **arguments):
        """Run one command and return its ``return`` value (events are skipped)."""
        msg = {"execute": execute}
        if arguments:
            msg["arguments"] = arguments
        try:
            self.sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as err:
            raise QMPError(f"QEMU monitor {self.path}: {err}") from err
        while True:
            reply = self._read()
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise QMPError(f"QEMU {execute}: {reply['error'].get('desc', reply['error'])}")
