"""A minimal QMP (QEMU Machine Protocol) client over a unix socket."""

import json
import select
import socket
import time


class QMPError(RuntimeError):
    """QEMU refused a command, or its monitor could not be reached."""


class QMP:
    """One QMP session: ``with QMP(path) as q: q.cmd("query-status")``.

    Events that arrive while a command waits for its reply are kept (``events``) for
    :meth:`event`; the socket is read through our own buffer so a wait may time out and the
    session still be used."""

    def __init__(self, path, timeout=10.0):
        self.path = str(path)
        self.timeout = timeout
        self.buf = b""
        self.events = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(self.path)
        except OSError as err:
            self.sock.close()
            raise QMPError(f"cannot reach QEMU monitor {self.path}: {err}") from err
        self._read(timeout)  # greeting
        self.cmd("qmp_capabilities")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sock.close()

    def fileno(self):
        return self.sock.fileno()

    def _read(self, timeout):
        """The next message, or None after ``timeout`` seconds without one."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = max(deadline - time.monotonic(), 0)  # 0: what has arrived, no waiting
            if not select.select([self.sock], [], [], left)[0]:
                return None
            try:
                chunk = self.sock.recv(65536)
            except OSError as err:
                raise QMPError(f"QEMU monitor {self.path}: {err}") from err
            if not chunk:
                raise QMPError(f"QEMU monitor {self.path} closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, execute, **arguments):
        """Run one command and return its ``return`` value (events are kept in ``events``)."""
        msg = {"execute": execute}
        if arguments:
            msg["arguments"] = arguments
        try:
            self.sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as err:
            raise QMPError(f"QEMU monitor {self.path}: {err}") from err
        while True:
            reply = self._read(self.timeout)
            if reply is None:
                raise QMPError(f"QEMU {execute}: no reply from {self.path} in {self.timeout} s")
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise QMPError(f"QEMU {execute}: {reply['error'].get('desc', reply['error'])}")
            if "event" in reply:
                self.events.append(reply)

    def pending(self):
        """Whether a message has arrived that no call has looked at yet (select would not tell:
        it may sit in our buffer)."""
        return bool(self.events) or b"\n" in self.buf

    def event(self, name, timeout):
        """The next event called ``name`` (kept or arriving within ``timeout`` s), or None."""
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev.get("event") == name:
                    return self.events.pop(i)
            msg = self._read(max(deadline - time.monotonic(), 0))
            if msg is None:
                return None
            if "event" in msg:
                self.events.append(msg)
