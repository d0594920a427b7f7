"""The supervisor: exponential back-off between restarts, giving up on a crash loop with one
clear line, no restart after a clean exit, a forwarded SIGTERM, and its pid for the child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from infra.process import pid_alive
from infra.supervise import SUPERVISOR_ENV, SuperviseConfig, Supervisor, supervise_argv

FAIL = [sys.executable, "-c", "import sys; sys.exit(1)"]


def test_backoff_doubles_up_to_its_cap_and_a_crash_loop_gives_up():
    s = Supervisor(FAIL, SuperviseConfig(max_restarts=3, window_s=60, backoff_s=0.5, max_backoff_s=1.5))
    assert [s.after_exit(1, t) for t in (0, 1, 2)] == [0.5, 1.0, 1.5]
    assert s.after_exit(-9, 3) is None  # a 4th crash within 60 s: killed by a signal counts too
    assert s.gave_up == "python crashed 4 times in 60 s; giving up"
    assert Supervisor([sys.executable, "-m", "streaming.run_worker", "--config", "{}"]).name == "streaming.run_worker"


def test_old_crashes_are_forgotten_and_a_clean_exit_or_a_stop_restarts_nothing():
    s = Supervisor(FAIL, SuperviseConfig(max_restarts=1, window_s=10, backoff_s=1, max_backoff_s=8), name="w")
    assert s.after_exit(1, 0) == 1
    assert s.after_exit(1, 100) == 1  # the first crash left the window: no loop, no longer back-off
    assert s.after_exit(0, 101) is None and not s.gave_up
    s.stopping.set()
    assert s.after_exit(143, 102) is None and not s.gave_up


def test_the_command_gives_up_with_one_line_after_restarting(tmp_path):
    runs = tmp_path / "runs"
    child = [sys.executable, "-c", f"import os; open({str(runs)!r}, 'a').write(os.environ['{SUPERVISOR_ENV}'] + ' ')"
                                   "; raise SystemExit(3)"]
    done = subprocess.run(supervise_argv(child, SuperviseConfig(max_restarts=2, window_s=60, backoff_s=0.05,
                                                                max_backoff_s=0.1)),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert done.stderr.strip().splitlines()[-1].endswith("ERROR python crashed 3 times in 60 s; giving up")
    pids = runs.read_text().split()
    assert len(pids) == 3 and set(pids) == {pids[0]} and int(pids[0]) != os.getpid()  # the supervisor's pid


def test_sigterm_is_forwarded_and_nothing_restarts(tmp_path):
    pid_file = tmp_path / "child.pid"
    child = [sys.executable, "-c", f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
                                   "time.sleep(60)"]
    sup = subprocess.Popen(supervise_argv(child), stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while not (pid_file.exists() and pid_file.read_text()):
        assert time.time() < deadline and sup.poll() is None
        time.sleep(0.05)
    child_pid = int(pid_file.read_text())
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(20) == 128 + signal.SIGTERM  # the child's status: killed by the forwarded TERM
    assert not pid_alive(child_pid) and "restarting" not in sup.stderr.read()
