"""The in-process agent: a Unix socket through which ``prof attach`` switches a server's own
probes (stage spans, framework profiling) on for a window and learns what they wrote.

One line installs it in a server::

    import probes.agent; probes.agent.install(hooks)

(the sample server does this itself; ``PROF_AGENT=0`` turns it off there). Without hooks the
agent still answers ``hello`` with the process's threads (pthread ident -> OS thread id and
name), which py-spy's samples are matched against.

Security: the socket lives in a directory only this user can enter (``$XDG_RUNTIME_DIR/prof``
or ``/tmp/prof-<uid>``, mode 0700, checked to be ours), is created with mode 0600, and each
peer's credentials (SO_PEERCRED) must be this user's or root's. There is no TCP listener. The
protocol is one JSON object per line each way; nothing is ever unpickled.

Requests: ``{"cmd": "hello"}``; ``{"cmd": "start", "out_dir": ABS_DIR, "probes": [...]}``;
``{"cmd": "stop"}``. Answers carry ``"ok": true`` or ``"ok": false, "error": "..."``.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import stat
import struct
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Protocol

import psutil

MAX_LINE = 1 << 16
SOCKET_NAME = "agent-{pid}.sock"


class AgentError(RuntimeError):
    pass


class Hooks(Protocol):
    """What a server lets the agent switch. ``start`` returns the probes it turned on;
    ``stop`` ends the window and returns the files written (absolute paths)."""

    capabilities: tuple[str, ...]

    def start(self, out_dir: Path, probes: set[str]) -> list[str]: ...

    def stop(self) -> list[str]: ...


def runtime_dir(create: bool = True) -> Path:
    """The per-user directory holding agent sockets (0700, owned by us), created if asked."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and Path(base).is_dir() and os.access(base, os.W_OK):
        directory = Path(base) / "prof"
    else:
        directory = Path(tempfile.gettempdir()) / f"prof-{os.getuid()}"
    if create:
        try:
            directory.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise AgentError(f"cannot create the agent directory {directory}: {exc.strerror}") from None
    if directory.exists():
        info = directory.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise AgentError(f"{directory} is not a private directory of this user (mode "
                             f"{stat.filemode(info.st_mode)}, uid {info.st_uid}): refusing to use it")
    return directory


def socket_path(pid: int, create: bool = False) -> Path:
    return runtime_dir(create) / SOCKET_NAME.format(pid=pid)


def thread_table() -> list[dict]:
    """This process's Python threads: pthread ident, OS thread id, name."""
    return [{"ident": t.ident, "native_id": t.native_id, "name": t.name} for t in threading.enumerate()]


class Agent:
    def __init__(self, hooks: Hooks | None = None) -> None:
        self.hooks = hooks
        self.path = socket_path(os.getpid(), create=True)
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._window: str | None = None  # out_dir of the open window
        self._lock = threading.Lock()

    def start(self) -> Agent:
        self.path.unlink(missing_ok=True)  # a socket left by an earlier process with our pid
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # born 0600: no window where others may connect
        try:
            server.bind(str(self.path))
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        server.listen(4)
        self._server = server
        self._thread = threading.Thread(target=self._serve, name="prof-agent", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            try:
                server.close()
            finally:
                self.path.unlink(missing_ok=True)

    def _serve(self) -> None:
        while self._server is not None:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return  # closed
            with conn:
                try:
                    self._session(conn)
                except (OSError, ValueError):
                    continue  # a peer that went away or spoke garbage costs nothing else

    def _session(self, conn: socket.socket) -> None:
        uid = _peer_uid(conn)
        if uid not in (os.getuid(), 0):
            _send(conn, {"ok": False, "error": f"peer uid {uid} may not control this process"})
            return
        reader = conn.makefile("rb")
        while True:
            line = reader.readline(MAX_LINE + 1)
            if not line:
                return
            if len(line) > MAX_LINE:
                _send(conn, {"ok": False, "error": "request too long"})
                return
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("not an object")
            except ValueError:
                _send(conn, {"ok": False, "error": "requests are one JSON object per line"})
                continue
            _send(conn, self.handle(request))

    def handle(self, request: dict) -> dict:
        command = request.get("cmd")
        try:
            if command == "hello":
                return {"ok": True, "pid": os.getpid(), "python": sys.version.split()[0], "argv": sys.argv,
                        "capabilities": list(self.hooks.capabilities) if self.hooks else [],
                        "threads": thread_table(), "window": self._window}
            if command == "start":
                return self._start(request)
            if command == "stop":
                return self._stop()
        except Exception as exc:  # a hook's failure is the peer's answer, never this thread's end
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return {"ok": False, "error": f"unknown command {command!r}: hello, start or stop"}

    def _start(self, request: dict) -> dict:
        out_dir = request.get("out_dir")
        probes = request.get("probes") or []
        if not isinstance(out_dir, str) or not os.path.isabs(out_dir):
            return {"ok": False, "error": "out_dir must be an absolute path"}
        if not isinstance(probes, list) or not all(isinstance(p, str) for p in probes):
            return {"ok": False, "error": "probes must be a list of names"}
        directory = Path(out_dir)
        if not directory.is_dir() or directory.stat().st_uid not in (os.getuid(), 0):
            return {"ok": False, "error": f"{out_dir} is not a directory of this user"}
        with self._lock:
            if self._window is not None:
                return {"ok": False, "error": f"a window is open already (into {self._window})"}
            if self.hooks is None:
                return {"ok": True, "started": []}
            started = self.hooks.start(directory, set(probes))
            self._window = out_dir
        return {"ok": True, "started": started}

    def _stop(self) -> dict:
        with self._lock:
            if self._window is None:
                return {"ok": True, "files": []}
            self._window = None
            files = self.hooks.stop() if self.hooks else []
        return {"ok": True, "files": files}


_installed: Agent | None = None


def install(hooks: Hooks | None = None) -> Agent:
    """Open this process's agent socket (once; later calls return the same agent)."""
    global _installed
    if _installed is None:
        _installed = Agent(hooks).start()
        atexit.register(_installed.close)
    return _installed


def uninstall() -> None:
    global _installed
    if _installed is not None:
        _installed.close()
        _installed = None


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


def _send(conn: socket.socket, message: dict) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


# -- the client side (used by prof attach) -----------------------------------------------


class AgentClient:
    """A connection to the agent of ``pid``; each call is one request and its answer."""

    def __init__(self, pid: int, timeout_s: float = 30.0) -> None:
        self.pid = pid
        path = socket_path(pid)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout_s)
        try:
            self.sock.connect(str(path))
        except OSError as exc:
            self.sock.close()
            raise AgentError(f"no agent answers for pid {pid} at {path} ({exc.strerror or exc})") from None
        self._reader = self.sock.makefile("rb")

    def request(self, cmd: str, **fields: Any) -> dict:
        try:
            self.sock.sendall(json.dumps({"cmd": cmd, **fields}).encode() + b"\n")
            line = self._reader.readline(MAX_LINE * 16)
        except OSError as exc:
            raise AgentError(f"agent of pid {self.pid} stopped answering ({exc})") from None
        if not line:
            raise AgentError(f"agent of pid {self.pid} closed the connection")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise AgentError(f"agent of pid {self.pid}: {answer.get('error', 'refused')}")
        return answer

    def close(self) -> None:
        self._reader.close()
        self.sock.close()


def find_agent(pid: int) -> AgentClient | None:
    """A client for ``pid``'s agent, or None if it runs none (a stale socket is removed when
    its process is gone)."""
    try:
        path = socket_path(pid)
    except AgentError:
        return None
    if not path.exists():
        return None
    try:
        return AgentClient(pid, timeout_s=30.0)
    except AgentError:
        if not psutil.pid_exists(pid):
            path.unlink(missing_ok=True)
        return None
