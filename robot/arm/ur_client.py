"""The ur_rtde client process: the only process that loads ur_rtde and talks to the UR controller.

ur_rtde 1.6.5 can crash its process (SIGSEGV) after a dropped link, and its constructors block holding
the GIL against a peer that accepts TCP and stays silent (../shared/DEPENDENCIES.md). So the arm
controller never loads it: its backend (:mod:`robot.arm.ur_backend`) starts this process with
``python -m robot.arm.ur_client`` in a session of its own (a terminal's Ctrl-C reaches the controller,
which decelerates the arm through this process and then ends it) and talks to it through
shared memory: a :class:`~robot.shm.command_queue.CommandQueue` of servo targets and requests, and a
:class:`~robot.shm.ring_buffer.RingBuffer` of arm states. Progress, replies and errors go back as
JSON lines on a pipe. A crash or hang here is a reported fault of the controller, never its end.

Connect (:class:`URLink`): the controller version is read from the dashboard server (port 29999) and
a rate the arm cannot do is refused (CB3 / PolyScope 3.x: 125 Hz; e-Series 5.x: 500 Hz). Then the
receive and control interfaces are opened at ``rate_hz`` (RTDE port 30004; the control interface
uploads its script through port 30003). Each step is announced on the pipe before it starts, so the
backend bounds it (``ur.connect_timeout_s`` + 1 s) from outside and kills a client stuck in it. The TCP
offset and (optionally) the payload are set, and the process asks for SCHED_FIFO ``ur.rt_priority``.

Loop (every eighth of the controller period): drain the queue (servo targets; stop and reconnect
requests are answered on the pipe, after a fresh state is published), read the newest RTDE package
(a getter call: ur_rtde receives in its own thread) and publish it with the last target sent, then,
once per new RTDE package, send ``servoL(pose, 0, 0, period, lookahead, gain)`` toward the newest
target, bounded by :class:`robot.arm.servo_ramp.ServoRamp` relative to the last one sent: so the
arm never gets two targets in one of its periods nor a step beyond the speed limit, whatever was
queued while this process or the controller stalled. No new package (a paused controller): no new
target, the arm holds the last one. ``capture_time = receive_time - ur.state_latency_s``
(calibrated).

Faults: ``PROTECTIVE_STOP`` / ``EMERGENCY_STOP`` from the safety status bits; ``DISCONNECTED`` when
either interface lost its link, the RTDE timestamp has not advanced for ``ur.controller_timeout_s``
while this process ran (``CONTROLLER_SILENT``: a controller that stopped answering; ur_rtde itself
notices only after 2.5 s; a gap of this process's own of half that restarts the clock, and so do
bytes from the controller waiting unread in this process's RTDE sockets, :func:`unread_rtde_bytes`:
its receive thread is behind, not the controller, up to ``ur.state_timeout_s``), this
process's own loop came 0.8 x ``ur.state_timeout_s`` late (``CLIENT_STALLED``: the backend may
already have declared the link lost, so nothing queued is sent), or the control script
stopped for another reason than a safety stop (for ``_SCRIPT_STOP_GRACE_S``: the program pauses at a
protective stop and the safety bits can arrive a package later on the other RTDE connection).
A lost link ends this process at once (the state that says so is published first): ur_rtde's
interfaces are never called again, which is where they crash; the backend starts a fresh client on
``reconnect()``. After a cleared protective stop or e-stop with the link intact, a reconnect request
uploads the control script again, waits until it runs (``reuploadScript()`` returns before) and
sends the TCP offset and payload again (a new program starts with the installation's TCP).

Scheduling: this process leads a session of its own, and the kernel shares the CPU between
sessions first (autogroups): it gives its session group the arm controller's ``nice``
(:func:`session_group_nice`), else it weighs as one nice-0 process against each other session.

Exit (a close request, or the controller process gone): ``servoStop`` (decelerating), then
``stopScript`` and disconnect, each bounded (``_EXIT_CALL_TIMEOUT_S``) and skipped when the link is
lost. After a lost link the control script may still run on the controller (it holds the arm at its
last servo target); the next connect replaces it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import pickle
import re
import signal
import socket
import struct
import sys
import termios
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from robot.arm.backend import ArmConnectionError, ArmReading, StatusFlag, stale_reading
from robot.arm.config import ArmConfig
from robot.arm.servo_ramp import ServoRamp
from robot.geometry.pose_math import rotation_angle
from robot.timing import now, precise_wait

log = logging.getLogger("robot.arm")

FloatArray = NDArray[np.float64]

RTDE_PORT = 30004
DASHBOARD_PORT = 29999
SCRIPT_PORT = 30003
CB3_MAX_RATE_HZ = 125.0
ESERIES_MAX_RATE_HZ = 500.0
_SCRIPT_STOP_GRACE_S = 0.05  # script not running, no safety bit yet: wait this long before DISCONNECTED
_EXIT_CALL_TIMEOUT_S = 2.0  # servoStop / stopScript / disconnect at exit or before a reconnect
_SCRIPT_START_TIMEOUT_S = 5.0  # reuploadScript() -> isProgramRunning()
_OWN_GAP_FRACTION = 0.5  # a loop this late (x ur.controller_timeout_s): the silence clock restarts


def _checklist(host: str) -> str:
    return (
        f"Check: the arm is powered on and booted; config 'host' ({host}) is the controller's IP "
        f"(pendant: Settings > System > Network); this PC is on the same subnet (ping {host}); "
        "on an e-Series, Remote Control is enabled; no other program holds the RTDE registers."
    )


def _bounded(fn: Callable[[], Any], timeout_s: float, what: str, description: str) -> bool:
    """Run a ur_rtde call that may block on a dead link in a daemon thread, for at most ``timeout_s``.

    ur_rtde releases the GIL in its calls, so an abandoned call does not stall this process; it
    ends when its socket is closed (or with the process). Returns True if it finished without
    raising; failures and timeouts are logged.
    """
    box: dict[str, BaseException] = {}

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            box["error"] = exc

    th = threading.Thread(target=run, name=f"ur-{what}", daemon=True)
    th.start()
    th.join(timeout_s)
    if th.is_alive():
        log.error("%s: %s did not return within %.1f s; abandoned", description, what, timeout_s)
        return False
    if "error" in box:
        log.error("%s: %s failed: %s", description, what, box["error"])
        return False
    return True


def parse_polyscope_version(text: str) -> tuple[int, int]:
    """``"URSoftware 5.11.6.108 (Jul 13 2022)"`` -> (5, 11). Raises ValueError if there is none."""
    m = re.search(r"(\d+)\.(\d+)\.\d+", text)
    if not m:
        raise ValueError(f"no version number in the dashboard reply {text!r}")
    return int(m.group(1)), int(m.group(2))


def max_rate_hz(major: int) -> float:
    return CB3_MAX_RATE_HZ if major <= 3 else ESERIES_MAX_RATE_HZ


def unread_rtde_bytes(host: str) -> int | None:
    """Bytes the controller at ``host`` sent over this process's RTDE connections (port 30004) that
    ur_rtde has not read yet: the kernel's receive queues of this process's sockets connected there
    (FIONREAD on a duplicate of each). Non-zero: the controller is answering and this process is
    behind (its receive thread starved), whatever the last package's age. None: unknown (no such
    connection, no /proc)."""
    try:
        address = socket.gethostbyname(host)
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return None
    total, found = 0, False
    for name in fds:
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:["):
                continue
            with socket.socket(fileno=os.dup(int(name))) as sock:  # the duplicate closes, not ur_rtde's
                if sock.family != socket.AF_INET or sock.getpeername() != (address, RTDE_PORT):
                    continue
                total += struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]
                found = True
        except (OSError, ValueError):
            continue
    return total if found else None


class URLink:
    """The two ur_rtde interfaces of one connection (runs in the client process only).

    ``on_step(what, port)`` is called before each connect step (the backend bounds the steps)."""

    def __init__(self, config: ArmConfig, on_step: Callable[[str, int], None] = lambda what, port: None):
        self.config = config
        self.host = config.host
        self.description = f"UR at {config.host}"
        self.tcp_offset_pose = np.asarray(config.ur.tcp_offset_pose, dtype=np.float64)
        self.version: tuple[int, int] | None = None
        self._c: Any = None
        self._r: Any = None
        self._last: ArmReading | None = None
        self._last_robot_time = -1.0
        self._last_change = 0.0  # host s of the last new package, restarted after a gap of our own
        self._last_new = 0.0  # host s of the last new package
        self._last_poll = 0.0
        self._on_step = on_step
        self.lost_reason: str | None = None  # latched: an interface dropped its link or the state went stale
        self._script_stopped_since: float | None = None
        self._closed = False

    # ------------------------------------------------------------------ connection
    def _step(self, what: str, port: int, fn: Callable[[], Any]) -> Any:
        """One connect step: announced first (the backend bounds it from outside: a ur_rtde
        constructor can block holding the GIL), failures turned into a message for the operator."""
        self._on_step(what, port)
        try:
            return fn()
        except ArmConnectionError:
            raise
        except Exception as exc:
            raise ArmConnectionError(
                f"UR at {self.host}:{port}: {what} failed: {exc}. {_checklist(self.host)}"
            ) from exc

    def _detect_version(self) -> tuple[int, int]:
        import dashboard_client

        timeout_s = self.config.ur.connect_timeout_s

        def query() -> str:
            # ur_rtde says "Timeout connecting" for a refused connection too: ask the socket first.
            try:
                socket.create_connection((self.host, DASHBOARD_PORT), timeout=timeout_s).close()
            except ConnectionRefusedError:
                raise ArmConnectionError(
                    f"UR at {self.host}:{DASHBOARD_PORT}: connection refused (nothing listens on the "
                    f"dashboard port). {_checklist(self.host)}"
                ) from None
            except OSError as exc:
                raise ArmConnectionError(
                    f"UR at {self.host}:{DASHBOARD_PORT}: cannot connect ({exc}). {_checklist(self.host)}"
                ) from None
            dash = dashboard_client.DashboardClient(self.host)
            wait_s = min(timeout_s, 5.0)
            try:
                dash.connect(int(wait_s * 1000))
                return dash.polyscopeVersion()
            except RuntimeError:
                raise ArmConnectionError(
                    f"UR at {self.host}:{DASHBOARD_PORT}: the dashboard server accepted the connection but "
                    f"did not answer within {wait_s:.0f} s (something accepts TCP there but does not speak "
                    f"the UR protocol?). {_checklist(self.host)}"
                ) from None
            finally:
                dash.disconnect()

        text = self._step("dashboard PolyscopeVersion", DASHBOARD_PORT, query)
        try:
            return parse_polyscope_version(text)
        except ValueError as exc:
            raise ArmConnectionError(f"UR at {self.host}:{DASHBOARD_PORT}: {exc}") from None

    def _set_rt_priority(self) -> None:
        prio = self.config.ur.rt_priority
        if prio <= 0:
            return
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(prio))
            log.info("%s: controller process runs SCHED_FIFO priority %d", self.description, prio)
        except (PermissionError, OSError) as exc:
            log.warning(
                "%s: real-time priority %d not allowed (%s); running without. Grant it with "
                "'ulimit -r %d' / rtprio in /etc/security/limits.conf or CAP_SYS_NICE",
                self.description,
                prio,
                exc,
                prio,
            )

    def connect(self, t: float) -> None:
        import rtde_control
        import rtde_receive

        ur = self.config.ur
        rate = self.config.rate_hz
        self.version = self._detect_version()
        major, minor = self.version
        limit = max_rate_hz(major)
        if rate > limit:
            kind = "CB3" if major <= 3 else "e-Series"
            raise ArmConnectionError(
                f"UR at {self.host} runs PolyScope {major}.{minor} ({kind}): its RTDE interface runs at "
                f"{limit:.0f} Hz, but rate_hz is {rate:g}. Set rate_hz: {limit:.0f} "
                f"(configs/arm/{'ur5_cb3' if major <= 3 else 'ur5e'}.yaml)"
            )
        self._set_rt_priority()
        prio = ur.rt_priority
        self._r = self._step(
            "RTDE receive interface",
            RTDE_PORT,
            lambda: rtde_receive.RTDEReceiveInterface(self.host, rate, [], False, False, prio),
        )
        flags = rtde_control.RTDEControlInterface.FLAG_UPLOAD_SCRIPT if ur.upload_script else 0
        self._c = self._step(
            "RTDE control interface (uploads and starts the control script)",
            RTDE_PORT,
            lambda: rtde_control.RTDEControlInterface(self.host, rate, flags, 50002, prio),
        )
        self._step("TCP offset and payload", RTDE_PORT, self._send_tool_settings)
        self._step("first RTDE state packages", RTDE_PORT, self._wait_fresh_state)
        self._last_change = self._last_new = self._last_poll = now()
        self.lost_reason = None
        self._script_stopped_since = None
        log.info("%s: connected (PolyScope %d.%d, %g Hz)", self.description, major, minor, rate)

    def _send_tool_settings(self) -> None:
        """setTcp (and setPayload if configured): a new control program starts without them."""
        ur = self.config.ur
        if not self._c.setTcp(list(map(float, ur.tcp_offset_pose))):
            raise ArmConnectionError(f"{self.description}: setTcp failed (is the control script running?)")
        if ur.payload_kg is not None:
            cog = list(map(float, ur.payload_cog_m)) if ur.payload_cog_m is not None else []
            if not self._c.setPayload(float(ur.payload_kg), cog):
                raise ArmConnectionError(f"{self.description}: setPayload failed")

    def _wait_fresh_state(self, timeout_s: float = 2.0) -> None:
        """Wait until RTDE packages from after setTcp arrive: an older actual_TCP_pose lacks the new
        TCP offset, and holding it would make the arm move by the offset."""
        t_set = float(self._r.getTimestamp())
        deadline = now() + timeout_s
        while now() < deadline:
            if float(self._r.getTimestamp()) >= t_set + 2.5 * self.config.period_s:
                return
            time.sleep(self.config.period_s / 2)
        raise ArmConnectionError(
            f"{self.description}: no RTDE state packages for {timeout_s:.0f} s after connecting. {_checklist(self.host)}"
        )

    # ------------------------------------------------------------------ per tick
    def read_state(self, t: float) -> ArmReading:
        receive_time = now()
        if self.lost_reason is not None or self._r is None or self._c is None:
            # Latched: the interfaces are never touched again (the client process ends).
            reading = stale_reading(self._last, receive_time)
            reading.flags = StatusFlag.DISCONNECTED
            return reading
        flags = StatusFlag(0)
        program_running = True
        lost: str | None = None
        try:
            if not self._r.isConnected():
                lost = "the RTDE receive link closed"
            elif not self._c.isConnected():
                lost = "the RTDE control link closed"
            program_running = bool(self._c.isProgramRunning())
            for _ in range(3):  # the getters read ur_rtde's newest package one by one: keep them of one
                robot_time = float(self._r.getTimestamp())
                reading = ArmReading(
                    tcp_pose=np.asarray(self._r.getActualTCPPose(), dtype=np.float64),
                    tcp_speed=np.asarray(self._r.getActualTCPSpeed(), dtype=np.float64),
                    q=np.asarray(self._r.getActualQ(), dtype=np.float64),
                    qd=np.asarray(self._r.getActualQd(), dtype=np.float64),
                    robot_time=robot_time,
                    capture_time=receive_time - self.config.ur.state_latency_s,
                    receive_time=receive_time,
                )
                if float(self._r.getTimestamp()) == robot_time:
                    break
            if self._r.isProtectiveStopped():
                flags |= StatusFlag.PROTECTIVE_STOP
            if self._r.isEmergencyStopped():
                flags |= StatusFlag.EMERGENCY_STOP
        except Exception as exc:  # ur_rtde raises RuntimeError on a dead socket
            lost = f"reading the state failed: {exc}"
            reading = stale_reading(self._last, receive_time)
        if reading.tcp_pose.shape != (6,):  # no package received yet
            lost = lost or "no RTDE state package received"
            reading = stale_reading(self._last, receive_time)
        # Silence counts only while this process ran: after a gap of its own (paused, starved) the
        # packages that arrived meanwhile may not be read yet, so the clock restarts.
        if receive_time - self._last_poll > _OWN_GAP_FRACTION * self.config.ur.controller_timeout_s:
            self._last_change = max(self._last_change, receive_time)
        self._last_poll = receive_time
        ur = self.config.ur
        if reading.robot_time != self._last_robot_time:
            self._last_robot_time = reading.robot_time
            self._last_change = self._last_new = receive_time
        elif receive_time - self._last_change > ur.controller_timeout_s:
            # Packages waiting unread: the controller answers and this process's receive thread is
            # behind; the clock restarts, up to ur.state_timeout_s since the last new package.
            waiting = unread_rtde_bytes(self.host)
            silent_s = receive_time - self._last_change
            if waiting and receive_time - self._last_new < ur.state_timeout_s:
                log.warning(
                    "%s: no new RTDE package read for %.0f ms, but %d bytes from the controller wait "
                    "unread: this process is behind, not the controller",
                    self.description,
                    silent_s * 1000,
                    waiting,
                )
                self._last_change = receive_time
            else:
                flags |= StatusFlag.CONTROLLER_SILENT
                lost = lost or (
                    f"the UR controller at {self.host} stopped answering: no new RTDE state package for "
                    f"{silent_s * 1000:.0f} ms ({silent_s / self.config.period_s:.0f} periods; "
                    f"ur.controller_timeout_s {ur.controller_timeout_s:g} s)"
                    + (f"; {waiting} bytes of it wait unread" if waiting else "")
                )
        # The script pauses/stops at a safety stop: that is the safety fault, not a lost connection.
        if program_running or flags & (StatusFlag.PROTECTIVE_STOP | StatusFlag.EMERGENCY_STOP):
            self._script_stopped_since = None
        else:
            if self._script_stopped_since is None:
                self._script_stopped_since = receive_time
            if receive_time - self._script_stopped_since >= _SCRIPT_STOP_GRACE_S:
                flags |= StatusFlag.DISCONNECTED
        if lost is not None:
            flags |= StatusFlag.DISCONNECTED
            log.error("%s: link lost (%s)", self.description, lost)
            self.lost_reason = lost
        reading.flags = flags
        if not flags & StatusFlag.DISCONNECTED:
            self._last = reading
        return reading

    def servo(self, pose: FloatArray, t: float) -> bool:
        ur = self.config.ur
        try:
            self._c.servoL(
                [float(v) for v in pose],
                0.0,
                0.0,
                self.config.period_s,
                ur.servo_lookahead_time_s,
                ur.servo_gain,
            )
        except Exception as exc:  # shows up as DISCONNECTED on the next read
            log.error("%s: servoL failed: %s", self.description, exc)
        return True

    def stop(self, t: float) -> None:
        """servoStop (decelerating), bounded; skipped when the link is dead (nothing can be sent)."""
        c = self._c
        if c is None or self.lost_reason is not None:
            log.warning(
                "%s: link lost, no servoStop sent (the arm holds its last servo target)", self.description
            )
            return
        accel = self.config.ur.stop_accel_m_s2
        _bounded(
            lambda: c.isConnected() and c.servoStop(accel),
            _EXIT_CALL_TIMEOUT_S,
            "servoStop",
            self.description,
        )

    def reconnect(self, t: float) -> None:
        """After a fault, with the link intact: re-upload a stopped script.

        Raises ArmConnectionError (saying what to do) while the arm is still safety-stopped.
        (A lost link is never reconnected here: a fresh client process connects anew.)"""
        if self.lost_reason is not None or self._r is None or self._c is None:
            raise ArmConnectionError(f"{self.description}: the link is lost ({self.lost_reason})")
        # Judge the safety state by packages sent after this request: the one in hand may predate
        # the operator's release of the stop.
        self._wait_fresh_state()
        if self._r.isEmergencyStopped():
            raise ArmConnectionError(
                f"{self.description}: the e-stop is still active; release it and unlock the arm"
            )
        if self._r.isProtectiveStopped():
            raise ArmConnectionError(
                f"{self.description}: still protective-stopped; unlock it on the pendant (or dashboard) first"
            )
        if not self._c.isProgramRunning():
            self._step("script re-upload", SCRIPT_PORT, self._c.reuploadScript)
            # reuploadScript() returns before the program runs.
            deadline = now() + _SCRIPT_START_TIMEOUT_S
            while not self._c.isProgramRunning():
                if now() > deadline:
                    raise ArmConnectionError(
                        f"{self.description}: the control script did not start within "
                        f"{_SCRIPT_START_TIMEOUT_S:.0f} s after re-upload (is the arm powered on, brakes "
                        "released, in remote control?)"
                    )
                time.sleep(0.01)
            self._send_tool_settings()
            self._wait_fresh_state()
        self._last_change = self._last_new = self._last_poll = now()
        self._script_stopped_since = None

    def _drop_interfaces(self, stop_script: bool) -> None:
        """Disconnect both interfaces (bounded; ``stop_script`` first stops the control script if
        the link still answers) and forget them."""
        c, r = self._c, self._r
        self._c = self._r = None
        if c is not None and stop_script and self.lost_reason is None:
            _bounded(
                lambda: c.isConnected() and c.isProgramRunning() and c.stopScript(),
                _EXIT_CALL_TIMEOUT_S,
                "stopScript",
                self.description,
            )
        if c is not None:
            _bounded(c.disconnect, _EXIT_CALL_TIMEOUT_S, "disconnect control", self.description)
        if r is not None:
            _bounded(r.disconnect, _EXIT_CALL_TIMEOUT_S, "disconnect receive", self.description)

    def close(self) -> None:
        """stopScript (unless the controller stopped answering), then disconnect; bounded. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._drop_interfaces(stop_script=True)


# ---------------------------------------------------------------------- the process
# Shared-memory records between the backend (controller process) and this client.
CMD_SERVO, CMD_STOP, CMD_RECONNECT, CMD_CLOSE = 1, 2, 3, 4
COMMAND_LAYOUT = {"kind": ((), "int64"), "request_id": ((), "int64"), "pose": ((6,), "float64")}
STATE_LAYOUT = {
    "tcp_pose": ((6,), "float64"),
    "tcp_speed": ((6,), "float64"),
    "q": ((6,), "float64"),
    "qd": ((6,), "float64"),
    "robot_time": ((), "float64"),
    "capture_time": ((), "float64"),
    "receive_time": ((), "float64"),
    "flags": ((), "int64"),
    "sent_pose": ((6,), "float64"),  # the last servoL target sent (the ramp's), NaN before any
}


_LINKS: list[URLink] = []


def _publish(ring: Any, reading: ArmReading, sent_pose: Any = None) -> None:
    ring.put(
        {
            "tcp_pose": reading.tcp_pose,
            "tcp_speed": reading.tcp_speed,
            "q": reading.q,
            "qd": reading.qd,
            "robot_time": reading.robot_time,
            "capture_time": reading.capture_time,
            "receive_time": reading.receive_time,
            "flags": int(reading.flags),
            "sent_pose": np.full(6, np.nan) if sent_pose is None else sent_pose,
        }
    )


def serve(config: ArmConfig, commands: Any, states: Any, parent_pid: int, say: Callable[..., None]) -> int:
    """The client's life: connect, then serve the queue and publish states until told to close,
    the parent is gone, or the link is lost. Returns the exit code."""
    link = URLink(config, on_step=lambda what, port: say(step=what, port=port))
    # Never destroyed: the process ends with os._exit. Freeing ur_rtde's interfaces on the way out
    # of this function blocks (a futex wait, seen with a paused controller) or crashes on a dead link.
    _LINKS.append(link)
    try:
        link.connect(now())
    except Exception as exc:
        say(error=str(exc))
        return 3
    say(ready=list(link.version or ()))
    period_s = config.period_s
    poll_s = period_s / 8  # the controller's target waits at most this long here
    # The backend declares the link lost after ur.state_timeout_s without a state from here; a loop
    # that comes this late sends nothing more (the backend may already have declared it).
    own_stall_s = 0.8 * config.ur.state_timeout_s
    ramp = ServoRamp(config.limits, period_s)
    reading = link.read_state(now())
    _publish(states, reading)
    ramp.reset(reading.tcp_pose)
    desired: FloatArray | None = None  # the newest target from the controller, not yet sent
    traj_step = (0.0, 0.0)  # how far the controller's last two targets are apart (m, rad)
    last_target: FloatArray | None = None
    robot_time_sent = -math.inf  # the RTDE package after which the last target was sent
    last_loop = now()
    next_t = now()

    def settle(request_id: int, error: str | None = None) -> FloatArray:
        """After a request: publish a fresh state before the reply (the backend reads it next)."""
        r = link.read_state(now())
        _publish(states, r, r.tcp_pose)  # the ramp restarts from the measured pose
        say(reply=request_id, **({"error": error} if error is not None else {}))
        return r.tcp_pose

    while True:
        t_loop = now()
        if t_loop - last_loop > own_stall_s:
            link.lost_reason = (
                f"the ur_rtde client process was stalled for {t_loop - last_loop:.2f} s "
                f"(ur.state_timeout_s {config.ur.state_timeout_s:g} s); its queued targets are dropped"
            )
            reading = stale_reading(reading, t_loop)
            reading.flags = StatusFlag.DISCONNECTED | StatusFlag.CLIENT_STALLED
            _publish(states, reading)
            say(lost=link.lost_reason)
            return 0
        last_loop = t_loop
        if os.getppid() != parent_pid:  # the controller is gone: bring the arm to rest, leave
            link.stop(now())
            link.close()
            return 0
        cmds = commands.get_all()
        for kind, request_id, target in zip(cmds["kind"], cmds["request_id"], cmds["pose"], strict=True):
            if kind == CMD_SERVO:
                if last_target is not None:
                    traj_step = (
                        float(np.linalg.norm(target[:3] - last_target[:3])),
                        rotation_angle(last_target[3:], target[3:]),
                    )
                last_target = desired = target.copy()
            elif kind in (CMD_STOP, CMD_RECONNECT):
                desired = last_target = None
                traj_step = (0.0, 0.0)
                error = None
                if kind == CMD_STOP:
                    link.stop(now())
                else:
                    try:
                        link.reconnect(now())
                    except Exception as exc:
                        error = str(exc)
                ramp.reset(settle(int(request_id), error))
                last_loop = now()
            elif kind == CMD_CLOSE:
                link.close()
                say(reply=int(request_id))
                return 0
        reading = link.read_state(now())
        _publish(states, reading, ramp.sent)
        if link.lost_reason is not None:
            # Never touch ur_rtde again (that is where it crashes); the OS closes its sockets.
            say(lost=link.lost_reason)
            return 0
        if desired is not None and not config.ur.servo_ramp:
            link.servo(desired, now())  # the stall benchmark's baseline: as it comes
            desired = None
        elif desired is not None and reading.robot_time > robot_time_sent:
            # One target per RTDE package: the arm reads the newest target once per period.
            elapsed_s = reading.robot_time - robot_time_sent
            speed = (traj_step[0] / period_s, traj_step[1] / period_s)
            link.servo(ramp.next(desired, speed, elapsed_s, reading.tcp_speed), now())
            robot_time_sent = reading.robot_time
            desired = None
        next_t = max(next_t + poll_s, now())
        precise_wait(next_t, spin_s=0.0)  # sleep only: a spinning client would starve the controller


def session_group_nice(nice: int | None) -> bool:
    """Give this process's session group the arm controller's niceness; True if applied.

    The kernel shares the CPU between sessions first (``sched_autogroup_enabled``, on by default in
    desktop distributions): a niceness counts only against processes of the same session, and each
    session's group weighs as one process of its group niceness. This client leads a session of its
    own (the backend starts it so) and is its group's only member: without this it weighs as a
    nice-0 process against everything else on the PC. Not applied when this process does not lead
    its session (that group is someone else's) or where not permitted."""
    if nice is None or os.getsid(0) != os.getpid():
        return False
    try:
        fd = os.open("/proc/self/autogroup", os.O_WRONLY)
        try:
            os.write(fd, str(nice).encode())
        finally:
            os.close(fd)
    except OSError:
        return False
    return True


def main() -> None:
    # Started in a session of its own: a terminal's SIGINT reaches the controller, which ends us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config_json, commands, states, parent_pid, msg_fd = pickle.load(sys.stdin.buffer)
    out = os.fdopen(msg_fd, "w", buffering=1)
    lock = threading.Lock()

    def say(**msg: Any) -> None:
        with lock:
            out.write(json.dumps(msg) + "\n")

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    config = ArmConfig.model_validate_json(config_json)
    session_group_nice(config.nice)
    code = serve(config, commands, states, parent_pid, say)
    out.flush()
    # os._exit: ur_rtde's destructors are where a dropped link crashes; nothing is left to flush.
    os._exit(code)


if __name__ == "__main__":
    main()
