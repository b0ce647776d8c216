"""Real UR arm backend through ur_rtde (``RTDEControlInterface`` + ``RTDEReceiveInterface``).

Connect: the controller version is read from the dashboard server (port 29999) and a rate the arm
cannot do is refused (CB3 / PolyScope 3.x: 125 Hz; e-Series 5.x: 500 Hz). Then the receive and
control interfaces are opened at ``rate_hz`` (RTDE port 30004; the control interface uploads its
script through port 30003), each attempt bounded by ``ur.connect_timeout_s`` because a peer that
accepts TCP but never answers would otherwise hang the constructor. The TCP offset and (optionally)
the payload are set, and the controller process asks for SCHED_FIFO ``ur.rt_priority`` if set.

Per tick: ``read_state`` reads the newest RTDE package (a getter call: no network round trip, ur_rtde
receives in its own thread), ``servo`` sends ``servoL(pose, 0, 0, period, lookahead, gain)``
(non-blocking). ``capture_time = receive_time - ur.state_latency_s`` (calibrated).

Faults: ``PROTECTIVE_STOP`` / ``EMERGENCY_STOP`` from the safety status bits; ``DISCONNECTED`` when
either interface lost its link, the RTDE timestamp has not advanced for ``ur.state_timeout_s`` (a
controller that stopped answering: ur_rtde itself notices only after 2.5 s), or the control script
stopped for another reason than a safety stop (for ``_SCRIPT_STOP_GRACE_S``: the program pauses at a
protective stop and the safety bits can arrive a package later on the other RTDE connection).

A lost link is fatal for the ur_rtde interfaces and latched until ``reconnect()``: both are
disconnected at once in a background thread and never called again. (After a dropped link,
RTDEControlInterface's receive thread reconnects on its own, may do so over and over, and can crash
the process with SIGSEGV, a known ur_rtde 1.6.x defect; disconnecting it ends that loop. The receive
interface never comes back by itself.) ``reconnect()`` then builds new interfaces exactly as at
connect. After a cleared protective stop or e-stop with the link intact, it uploads the control
script again, waits until it runs (``reuploadScript()`` returns before) and sends the TCP offset and
payload again (a new program starts with the installation's TCP).

Exit: ``servoStop`` (decelerating) then ``stopScript`` and disconnect, each bounded in time
(``_EXIT_CALL_TIMEOUT_S``) and skipped when the link is lost: a ur_rtde call that waits for the
controller's answer on a silent link would otherwise block the controller's exit for minutes. After
a lost link the control script may still run on the controller (it holds the arm at its last servo
target); the next connect replaces it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from robot.arm.backend import ArmConnectionError, ArmReading, StatusFlag
from robot.arm.config import ArmConfig
from robot.timing import Tick, now

log = logging.getLogger("robot.arm")

FloatArray = NDArray[np.float64]
T = TypeVar("T")

RTDE_PORT = 30004
DASHBOARD_PORT = 29999
CB3_MAX_RATE_HZ = 125.0
ESERIES_MAX_RATE_HZ = 500.0
_SCRIPT_STOP_GRACE_S = 0.05  # script not running, no safety bit yet: wait this long before DISCONNECTED
_EXIT_CALL_TIMEOUT_S = 2.0  # servoStop / stopScript / disconnect at exit or before a reconnect
_SCRIPT_START_TIMEOUT_S = 5.0  # reuploadScript() -> isProgramRunning()


def _checklist(host: str) -> str:
    return (
        f"Check: the arm is powered on and booted; config 'host' ({host}) is the controller's IP "
        f"(pendant: Settings > System > Network); this PC is on the same subnet (ping {host}); "
        "on an e-Series, Remote Control is enabled; no other program holds the RTDE registers."
    )


def _with_timeout(fn: Callable[[], T], timeout_s: float, what: str, host: str, port: int) -> T:
    """Run a blocking ur_rtde call in a daemon thread; ArmConnectionError if it fails or hangs."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # reported below, in the caller's thread
            box["error"] = exc

    th = threading.Thread(target=run, name=f"ur-connect-{what}", daemon=True)
    th.start()
    th.join(timeout_s)
    if th.is_alive():
        raise ArmConnectionError(
            f"UR at {host}:{port}: {what} got no answer within {timeout_s:.0f} s (something accepts TCP "
            f"there but does not speak the UR protocol?). {_checklist(host)}"
        )
    if "error" in box:
        raise ArmConnectionError(
            f"UR at {host}:{port}: {what} failed: {box['error']}. {_checklist(host)}"
        ) from box["error"]
    return box["value"]


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


class _RtdePacer:
    """Same interface as robot.timing.RateLoop (``wait() -> Tick``), paced by ur_rtde.

    ``waitPeriod(t_start)`` sleeps + spins until one period after the previous ``initPeriod()``
    (ur_rtde's steady clock). Ticks are stamped on the host monotonic clock; a tick that starts
    more than half a period after the previous one's nominal end is reported as an overrun.
    """

    def __init__(self, rtde_c: Any, rate_hz: float):
        self._c = rtde_c
        self.period_s = 1.0 / rate_hz
        self._t_start: Any = None
        self._deadline: float | None = None
        self._index = 0
        self.overruns = 0
        self.ticks = 0

    def wait(self) -> Tick:
        if self._t_start is not None:
            self._c.waitPeriod(self._t_start)
        self._t_start = self._c.initPeriod()
        t = now()
        deadline = t if self._deadline is None else self._deadline
        overrun = t - deadline > 0.5 * self.period_s
        skipped = max(0, int((t - deadline) / self.period_s)) if overrun else 0
        if overrun:
            self.overruns += 1
        self._index += 1 + skipped
        self.ticks += 1
        self._deadline = max(deadline + (1 + skipped) * self.period_s, t)
        return Tick(self._index, deadline, t, overrun, skipped)


class URArmBackend:
    """Implements :class:`robot.arm.backend.ArmBackend` with ur_rtde (see the module docstring)."""

    def __init__(self, config: ArmConfig):
        self.config = config
        self.host = config.host
        self.description = f"UR at {config.host}"
        self.tcp_offset_pose = np.asarray(config.ur.tcp_offset_pose, dtype=np.float64)
        self.version: tuple[int, int] | None = None
        self._c: Any = None
        self._r: Any = None
        self._last: ArmReading | None = None
        self._last_robot_time = -1.0
        self._last_change = 0.0
        self._link_lost = False  # latched: an interface dropped its link or the state went stale
        self._retiring: threading.Thread | None = None
        self._retired: list[Any] = []
        self._script_stopped_since: float | None = None
        self._closed = False

    # ------------------------------------------------------------------ connection
    def _detect_version(self) -> tuple[int, int]:
        import dashboard_client

        timeout_s = self.config.ur.connect_timeout_s

        def query() -> str:
            dash = dashboard_client.DashboardClient(self.host)
            dash.connect(int(min(timeout_s, 5.0) * 1000))
            try:
                return dash.polyscopeVersion()
            finally:
                dash.disconnect()

        text = _with_timeout(query, timeout_s, "dashboard PolyscopeVersion", self.host, DASHBOARD_PORT)
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
        self._r = _with_timeout(
            lambda: rtde_receive.RTDEReceiveInterface(self.host, rate, [], False, False, prio),
            ur.connect_timeout_s,
            "RTDE receive interface",
            self.host,
            RTDE_PORT,
        )
        flags = rtde_control.RTDEControlInterface.FLAG_UPLOAD_SCRIPT if ur.upload_script else 0
        self._c = _with_timeout(
            lambda: rtde_control.RTDEControlInterface(self.host, rate, flags, 50002, prio),
            ur.connect_timeout_s + 10.0,  # includes the script upload and start
            "RTDE control interface (script upload)",
            self.host,
            RTDE_PORT,
        )
        self._send_tool_settings()
        self._wait_fresh_state()
        self._last_change = now()
        self._link_lost = False
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

    def make_pacer(self) -> _RtdePacer | None:
        """``ur.use_rtde_pacing``: a loop pacer on ur_rtde's initPeriod()/waitPeriod()."""
        if not self.config.ur.use_rtde_pacing:
            return None
        return _RtdePacer(self._c, self.config.rate_hz)

    # ------------------------------------------------------------------ per tick
    def read_state(self, t: float) -> ArmReading:
        receive_time = now()
        if self._link_lost or self._r is None or self._c is None:
            # Latched until reconnect(): the old interfaces are retired and never touched again.
            reading = self._stale_copy(receive_time)
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
            if self._r.isProtectiveStopped():
                flags |= StatusFlag.PROTECTIVE_STOP
            if self._r.isEmergencyStopped():
                flags |= StatusFlag.EMERGENCY_STOP
        except Exception as exc:  # ur_rtde raises RuntimeError on a dead socket
            lost = f"reading the state failed: {exc}"
            reading = self._stale_copy(receive_time)
        if reading.tcp_pose.shape != (6,):  # no package received yet
            lost = lost or "no RTDE state package received"
            reading = self._stale_copy(receive_time)
        if reading.robot_time != self._last_robot_time:
            self._last_robot_time = reading.robot_time
            self._last_change = receive_time
        elif receive_time - self._last_change > self.config.ur.state_timeout_s:
            lost = lost or (
                f"no new RTDE state package for {receive_time - self._last_change:.1f} s "
                "(the controller stopped answering)"
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
            self._retire_interfaces(lost)
        reading.flags = flags
        if not flags & StatusFlag.DISCONNECTED:
            self._last = reading
        return reading

    def _retire_interfaces(self, reason: str) -> None:
        """The link is lost: disconnect both interfaces at once, in a daemon thread (the tick goes
        on), and never use them again. This also ends RTDEControlInterface's own reconnect loop,
        which after a dropped link may reconnect over and over and crash the process (SIGSEGV)."""
        log.error(
            "%s: link lost (%s); the RTDE interfaces are closed, reconnect() builds new ones",
            self.description,
            reason,
        )
        self._link_lost = True
        c, r = self._c, self._r
        self._c = self._r = None
        self._retired.extend(x for x in (c, r) if x is not None)  # destroyed at exit, not mid-run

        def disconnect_both() -> None:
            for what, x in (("control", c), ("receive", r)):
                if x is None:
                    continue
                try:
                    x.disconnect()
                except Exception as exc:
                    log.error(
                        "%s: disconnecting the old %s interface failed: %s", self.description, what, exc
                    )

        self._retiring = threading.Thread(target=disconnect_both, name="ur-retire", daemon=True)
        self._retiring.start()

    def _wait_retired(self, timeout_s: float = _EXIT_CALL_TIMEOUT_S) -> None:
        th = self._retiring
        if th is not None:
            th.join(timeout_s)
            if th.is_alive():
                log.error(
                    "%s: the old RTDE interfaces did not close within %.1f s", self.description, timeout_s
                )
            self._retiring = None

    def _stale_copy(self, receive_time: float) -> ArmReading:
        if self._last is None:
            z = np.zeros(6)
            return ArmReading(z, z, z, z, -1.0, receive_time, receive_time)
        last = self._last
        return ArmReading(
            last.tcp_pose, np.zeros(6), last.q, np.zeros(6), last.robot_time, last.capture_time, receive_time
        )

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
        if c is None or self._link_lost:
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
        """After a fault: new interfaces if the link was lost, else re-upload a stopped script.

        Raises ArmConnectionError (saying what to do) while the arm is still safety-stopped or
        cannot be reached."""
        ur = self.config.ur
        if self._r is None or self._c is None or self._link_lost:
            log.warning("%s: building new RTDE interfaces", self.description)
            self._wait_retired()
            self._drop_interfaces(stop_script=False)  # a connect that failed half-way
            self.connect(t)
        if self._r.isEmergencyStopped():
            raise ArmConnectionError(
                f"{self.description}: the e-stop is still active; release it and unlock the arm"
            )
        if self._r.isProtectiveStopped():
            raise ArmConnectionError(
                f"{self.description}: still protective-stopped; unlock it on the pendant (or dashboard) first"
            )
        if not self._c.isProgramRunning():
            _with_timeout(
                self._c.reuploadScript, ur.connect_timeout_s + 10.0, "script re-upload", self.host, RTDE_PORT
            )
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
        self._last_change = now()
        self._script_stopped_since = None

    def _drop_interfaces(self, stop_script: bool) -> None:
        """Disconnect both interfaces (bounded; ``stop_script`` first stops the control script if
        the link still answers) and forget them."""
        c, r = self._c, self._r
        self._c = self._r = None
        if c is not None and stop_script and not self._link_lost:
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

    def reset_world(self, seed: int) -> None:
        pass

    def inject_fault(self, flags: int) -> None:
        raise RuntimeError(f"{self.description}: fault injection is only for the simulated arm")

    def after_tick(self, t: float) -> None:
        pass

    def world_success(self) -> bool:
        return False

    def close(self) -> None:
        """stopScript (unless the controller stopped answering), then disconnect; bounded. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._drop_interfaces(stop_script=True)
        self._wait_retired()
