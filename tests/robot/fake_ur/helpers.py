"""Run ur_client.py scenarios in a child process with a hard timeout (see ur_client.py for why)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import ur_analytic_ik
from scipy.spatial.transform import Rotation

CLIENT = Path(__file__).with_name("ur_client.py")


class ClientRun:
    """A scenario running in a child; ``wait_ready()`` then ``result()``; always killed on exit."""

    def __init__(self, scenario: str, host: str, args: dict | None = None, timeout_s: float = 30.0):
        self.timeout_s = timeout_s
        # stderr to a file: a chatty client (reconnect errors) must never block on a full pipe.
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, str(CLIENT), scenario, host, json.dumps(args or {})],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._lines: list[str] = []
        self._ready = threading.Event()
        self._marks: dict[str, threading.Event] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line.rstrip("\n"))
            word = line.split(" ", 1)[0].strip()
            self._marks.setdefault(word, threading.Event()).set()

    def wait_line(self, word: str, timeout_s: float = 15.0) -> str:
        """Wait for a stdout line starting with ``word``; returns the rest of that line."""
        event = self._marks.setdefault(word, threading.Event())
        if not event.wait(timeout_s):
            self.kill()
            raise AssertionError(f"ur_rtde client printed no {word} within {timeout_s} s: {self._tail()}")
        line = next(x for x in self._lines if x.split(" ", 1)[0] == word)
        return line[len(word) :].strip()

    def wait_ready(self, timeout_s: float = 15.0) -> None:
        self.wait_line("READY", timeout_s)

    def send_line(self, text: str = "") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, Any]:
        try:
            self.proc.wait(self.timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"ur_rtde client hung (> {self.timeout_s} s): {self._tail()}") from None
        self._reader.join(2.0)
        if self.proc.returncode != 0 or not self._lines:
            raise AssertionError(f"ur_rtde client failed (exit {self.proc.returncode}): {self._tail()}")
        return json.loads(self._lines[-1])

    def _tail(self) -> str:
        self._stderr.seek(0)
        err = self._stderr.read()[-3000:]
        return f"stdout={self._lines[-5:]} stderr={err!r}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5.0)

    def __enter__(self) -> ClientRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
        for f in (self.proc.stdin, self.proc.stdout, self._stderr):
            if f is not None:
                f.close()


def run_client(scenario: str, host: str, args: dict | None = None, timeout_s: float = 30.0) -> dict[str, Any]:
    with ClientRun(scenario, host, args, timeout_s) as run:
        return run.result()


def fk_pose(q: Any, tcp_offset: Any = None) -> np.ndarray:
    """Independent UR5 FK for assertions: ur_analytic_ik + scipy, base frame, rotation vector."""
    qq = [float(v) for v in q]
    T = ur_analytic_ik.ur5.forward_kinematics(*qq)
    if tcp_offset is not None:
        Tt = np.eye(4)
        Tt[:3, :3] = Rotation.from_rotvec(tcp_offset[3:]).as_matrix()
        Tt[:3, 3] = tcp_offset[:3]
        T = T @ Tt
    return np.concatenate([T[:3, 3], Rotation.from_matrix(T[:3, :3]).as_rotvec()])


def pose_distance(a: Any, b: Any) -> tuple[float, float]:
    """(position error m, rotation error rad) between two UR poses; rotvec sign flips don't count."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    rot = Rotation.from_rotvec(a[3:]) * Rotation.from_rotvec(b[3:]).inv()
    return float(np.linalg.norm(a[:3] - b[:3])), float(rot.magnitude())


def servo_through_script(
    arm,
    targets,
    period_s: float,
    lookahead_time_s: float,
    gain: float,
    servo_joints: bool = False,
):
    """Stream ``targets`` (one TCP pose per controller tick, (N, 6)) to ``arm`` through the fake
    controller's control script exactly as ur_rtde's servoL/servoJ write them into the input
    registers (pose or joints, then speed, acceleration, time, lookahead, gain). Per tick at
    ``t = i * period_s``: the arm steps to ``t`` and its state is read (as the controller does before
    it takes the new command), then the script runs. Returns the tick times and measured TCP poses."""
    from robot.fake_ur.arm_model import ur5_ik_closest
    from robot.fake_ur.script import CMD_SERVOJ, CMD_SERVOL, ControlScript, Registers

    regs = Registers()
    script = ControlScript(regs, arm, 0, 0.0)
    regs.input_int[0] = CMD_SERVOJ if servo_joints else CMD_SERVOL
    ts, measured = [], []
    q = arm.actual_q
    for i, pose in enumerate(np.asarray(targets, dtype=np.float64)):
        t = (i + 1) * period_s
        arm.step(t)
        ts.append(t)
        measured.append(arm.actual_tcp_pose)
        if servo_joints:
            q = ur5_ik_closest(pose, q, np.zeros(6))
            regs.input_double[:6] = q
        else:
            regs.input_double[:6] = pose
        regs.input_double[6:11] = (0.0, 0.0, period_s, lookahead_time_s, gain)
        script.tick(t)
    return np.asarray(ts), np.asarray(measured)
