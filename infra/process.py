"""A long-running local server process: start detached, health-check, stop, report.

Each service keeps a pid file, a data dir and a log under `<state_dir>/<name>/`, so that
`onevision infra status` and `down` work from any later shell. The process runs in its own
session (process group), and stopping it signals the whole group: nothing is left behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, TypeVar

T = TypeVar("T")


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM us when the starting process dies."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ServiceError(RuntimeError):
    """A service could not be started or checked; the message says why (with its log's tail)."""


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (for tests and ad-hoc runs)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


@dataclass
class ManagedProcess:
    """One embedded server: how to run it and how to tell that it is ready."""

    name: str
    argv: list[str]
    state_dir: Path
    host: str
    port: int | None  # None: a worker that listens on nothing
    healthy: Callable[[], bool]
    env: dict[str, str] | None = None  # added to the environment of the started process
    _child: subprocess.Popen | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def home(self) -> Path:
        return self.state_dir / self.name

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_path(self) -> Path:
        return self.home / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        return self.home / f"{self.name}.pid"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def _log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def start(self, timeout: float = 30.0, tie_to_parent: bool = False) -> int:
        """Start (or adopt a running instance) and return its pid once it is healthy.

        `tie_to_parent` makes the service die with the process that started it, even when that
        process is killed or aborts (test sessions); `onevision infra up` leaves it off, since
        its services must outlive the command."""
        pid = self.pid()
        if pid is not None:
            if self._wait_healthy(pid, timeout):
                return pid
            raise ServiceError(f"{self.name} (pid {pid}) runs but is not healthy; see {self.log_path}")
        if self.port is not None and port_open(self.host, self.port):
            raise ServiceError(f"{self.name}: port {self.host}:{self.port} is already taken by another process; "
                               f"choose another port in the settings")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            env = {**os.environ, **self.env} if self.env else None
            proc = subprocess.Popen(self.argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=self.data_dir, start_new_session=True,
                                    preexec_fn=_die_with_parent if tie_to_parent else None)
        self.pid_path.write_text(f"{proc.pid}\n")
        self._child = proc
        if not self._wait_healthy(proc.pid, timeout, proc):
            self.stop()
            raise ServiceError(f"{self.name} did not become healthy within {timeout:.0f}s; log tail:\n"
                               f"{self._log_tail()}")
        return proc.pid

    def _wait_healthy(self, pid: int, timeout: float, proc: subprocess.Popen | None = None) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (proc is not None and proc.poll() is not None) or not pid_alive(pid):
                return False
            if self.answers():
                return True
            time.sleep(0.2)
        return False

    def answers(self) -> bool:
        """Something listens on the port (when it has one) and passes the health probe."""
        return (self.port is None or port_open(self.host, self.port)) and self.is_healthy()

    def is_healthy(self) -> bool:
        try:
            return bool(self.healthy())
        except Exception:  # a health probe that fails in any way means "not yet"
            return False

    def exit_code(self) -> int | None:
        """The exit status of the process this object started, once it has ended; None while it
        runs, and for an adopted process (not our child: its status is not ours to read)."""
        return self._child.poll() if self._child is not None else None

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the process group (TERM, then KILL); True when something was running."""
        pid = self.pid()
        self.pid_path.unlink(missing_ok=True)
        if pid is None:
            return False
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                return True
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:  # reap it if it is our child
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
                if not pid_alive(pid):
                    return True
                time.sleep(0.1)
        return True

    def status(self) -> dict:
        pid = self.pid()
        return {"name": self.name, "address": f"{self.host}:{self.port}" if self.port else "-", "pid": pid,
                "running": pid is not None,
                "healthy": pid is not None and self.is_healthy(), "log": str(self.log_path)}


# ---- a process's config on its command line ----------------------------------------------------
def module_argv(module: str, config: Any) -> list[str]:
    """`python -m <module> --config '<json>'` for a dataclass config: how a layer starts a process
    of its own (read back by `config_from_argv`), so that no launcher depends on the CLI."""
    return [sys.executable, "-m", module, "--config", json.dumps(dataclasses.asdict(config), default=str)]


def config_from_argv(cls: type[T], argv: list[str] | None = None) -> T:
    """The `cls` instance a `module_argv` command line carries."""
    parser = argparse.ArgumentParser(description=f"run with a {cls.__name__} given as JSON")
    parser.add_argument("--config", required=True, help=f"the {cls.__name__} as JSON (its fields; defaults fill in)")
    return config_from_dict(cls, json.loads(parser.parse_args(argv).config))


def config_from_dict(cls: type[T], data: dict) -> T:
    """A dataclass from `dataclasses.asdict`'s JSON form: nested dataclasses, tuples and paths are
    rebuilt from the field types; missing fields keep their defaults; unknown ones are an error."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    if unknown := sorted(set(data) - names):
        raise ValueError(f"{cls.__name__} has no field(s) {unknown}; it has {sorted(names)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _typed(hints[k], v) for k, v in data.items()})


def _typed(hint: Any, value: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return value if value is None or len(options) != 1 else _typed(options[0], value)
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return config_from_dict(hint, value)
    if typing.get_origin(hint) is tuple and isinstance(value, list):
        return tuple(value)
    if isinstance(hint, type) and issubclass(hint, PurePath) and isinstance(value, str):
        return hint(value)
    return value
