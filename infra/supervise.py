"""Keep one process running: restart it when it dies abnormally, give up on a crash loop.

    python -m infra.supervise [--max-restarts N --window-s S --backoff-s B --max-backoff-s M] -- <argv...>

A stream worker or the DPO job that crashes (a non-zero exit, a signal such as the OOM killer's
SIGKILL) is restarted after an exponential back-off; a clean exit or a requested stop
(SIGTERM/SIGINT, forwarded to the child) ends the supervisor with the child's status. More than
`max_restarts` crashes within `window_s` is a crash loop: restarting again would only hide it,
so the supervisor gives up with one clear line and a non-zero status. The child finds the
supervisor's pid in ONEVISION_SUPERVISOR_PID (launchers know that pid, not the child's).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from infra.process import _die_with_parent

SUPERVISOR_ENV = "ONEVISION_SUPERVISOR_PID"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SuperviseConfig:
    max_restarts: int = 5  # crashes tolerated within `window_s` ...
    window_s: float = 300.0  # ... before the supervisor gives up
    backoff_s: float = 1.0  # wait before the first restart, doubled for each crash in the window ...
    max_backoff_s: float = 30.0  # ... up to this


class Supervisor:
    """Runs `argv` until it exits cleanly, is stopped, or crash-loops (`after_exit` decides)."""

    def __init__(self, argv: list[str], config: SuperviseConfig = SuperviseConfig(), name: str | None = None):
        if not argv:
            raise ValueError("nothing to supervise: give the command after --")
        self.argv, self.config = argv, config
        self.name = name or _name(argv)
        self.crashes: deque[float] = deque()  # monotonic times of recent crashes
        self.stopping = threading.Event()
        self.child: subprocess.Popen | None = None
        self.gave_up = ""

    def after_exit(self, returncode: int, now: float) -> float | None:
        """Seconds to wait before restarting a child that exited with `returncode`, or None
        when the supervisor is done (clean exit, requested stop, or a crash loop: `gave_up`)."""
        if returncode == 0 or self.stopping.is_set():
            return None
        c = self.config
        self.crashes.append(now)
        while self.crashes and now - self.crashes[0] > c.window_s:
            self.crashes.popleft()
        if len(self.crashes) > c.max_restarts:
            self.gave_up = f"{self.name} crashed {len(self.crashes)} times in {c.window_s:g} s; giving up"
            return None
        return min(c.backoff_s * 2 ** (len(self.crashes) - 1), c.max_backoff_s)

    def forward(self, sig: int, _frame=None) -> None:
        """A requested stop: pass it to the child and restart nothing afterwards."""
        self.stopping.set()
        child = self.child
        if child is not None and child.poll() is None:
            child.send_signal(sig)

    def run(self) -> int:
        """Supervise until done; the child's last status (non-zero after giving up)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.forward)
        env = {**os.environ, SUPERVISOR_ENV: str(os.getpid())}
        while True:
            self.child = subprocess.Popen(self.argv, env=env, preexec_fn=_die_with_parent)
            if self.stopping.is_set():  # a stop that arrived while the child was being started
                self.child.send_signal(signal.SIGTERM)
            code = self.child.wait()
            wait = self.after_exit(code, time.monotonic())
            if wait is None:
                if self.gave_up:
                    log.error(self.gave_up)
                    return _status(code) or 1
                return _status(code)
            log.warning("%s exited with status %d; restarting in %.1f s", self.name, code, wait)
            if self.stopping.wait(wait):
                return 0


def _status(returncode: int) -> int:
    """A child's return code as a shell reports it (128 + the signal that killed it)."""
    return returncode if returncode >= 0 else 128 - returncode


def _name(argv: list[str]) -> str:
    """The module a `python -m <module>` command runs, or the program's name."""
    if "-m" in argv[:-1]:
        return argv[argv.index("-m") + 1]
    return Path(argv[0]).name


def supervise_argv(argv: list[str], config: SuperviseConfig = SuperviseConfig()) -> list[str]:
    """`argv` run under a supervisor (how launchers start their long-running processes)."""
    return [sys.executable, "-m", "infra.supervise", "--max-restarts", str(config.max_restarts),
            "--window-s", str(config.window_s), "--backoff-s", str(config.backoff_s),
            "--max-backoff-s", str(config.max_backoff_s), "--", *argv]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.supervise", description=__doc__.split("\n\n")[0])
    d = SuperviseConfig()
    parser.add_argument("--max-restarts", type=int, default=d.max_restarts)
    parser.add_argument("--window-s", type=float, default=d.window_s)
    parser.add_argument("--backoff-s", type=float, default=d.backoff_s)
    parser.add_argument("--max-backoff-s", type=float, default=d.max_backoff_s)
    parser.add_argument("--name", default=None, help="how messages name the child (default: its module)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the child's command line")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    logging.basicConfig(level="INFO", format="%(asctime)s supervise %(levelname)s %(message)s")
    config = SuperviseConfig(args.max_restarts, args.window_s, args.backoff_s, args.max_backoff_s)
    return Supervisor(command, config, args.name).run()


if __name__ == "__main__":
    sys.exit(main())
