"""The fake UR controller's dashboard port (29999): one text command a line, one reply a line.

``DashboardPort`` is the part of ``robot.fake_ur.server.FakeURServer`` that answers the dashboard
server's commands: banner, ``PolyscopeVersion``, ``get serial number``, ``is in remote control``,
``stop`` -> ``Stopped``, ``play``, ``pause``, ``power on/off``, ``brake release``, ``unlock protective
stop``, popups, ``robotmode``, ``safetystatus``, ``programState``, ``quit``; anything else gets
``could not understand``.

Timing contract: a command acts on the controller at once, under its lock, on the connection's reader
thread (``stop`` halts the arm and ends the program before the reply is sent); the reply follows
without waiting for a tick. While the controller is frozen a command still acts but gets no reply.
"""

from __future__ import annotations

import time

from robot.fake_ur.connection import Conn
from robot.fake_ur.modes import (
    ROBOT_MODE_IDLE,
    ROBOT_MODE_POWER_OFF,
    ROBOT_MODE_RUNNING,
    RUNTIME_PAUSED,
    RUNTIME_PLAYING,
    RUNTIME_STOPPED,
    SAFETY_MODE_PROTECTIVE_STOP,
)


class DashboardPort:
    """The dashboard port of ``FakeURServer`` (a mixin on the server's state: ``_lock``, the modes,
    the program's state, ``dashboard_log``)."""

    def _serve_dashboard(self, conn: Conn) -> None:
        conn.send(b"Connected: Universal Robots Dashboard Server\n")
        buffer = b""
        for data in self._recv_chunks(conn):
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                command = line.decode("utf-8", errors="replace").strip()
                if not command:
                    continue
                reply = self._dashboard_reply(command)
                if self._frozen:
                    continue
                conn.send((reply + "\n").encode())
                if command == "quit":
                    return

    def _dashboard_reply(self, command: str) -> str:
        major, minor, bugfix, build = self.version
        lower = command.lower()
        with self._lock:
            self.dashboard_log.append(command)
            if lower == "polyscopeversion":
                return f"URSoftware {major}.{minor}.{bugfix}.{build} (Jan 01 2024)"
            if lower == "get serial number":
                return self.options.serial_number
            if lower == "is in remote control":
                return "true"
            if lower == "stop":
                self._pending_program = None
                self._stop_program_locked(RUNTIME_STOPPED)
                return "Stopped"
            if lower == "pause":
                if self.runtime_state == RUNTIME_PLAYING:
                    self.runtime_state = RUNTIME_PAUSED
                    self.arm.stop(10.0, time.monotonic())
                    return "Pausing program"
                return "Failed to execute: Pause"
            if lower == "play":
                if self.script is not None and self.runtime_state == RUNTIME_PAUSED and self._safety_normal():
                    self.runtime_state = RUNTIME_PLAYING
                    return "Starting program"
                return "Failed to execute: Play"
            if lower == "power on":
                if self.robot_mode < ROBOT_MODE_IDLE:
                    self.robot_mode = ROBOT_MODE_IDLE
                return "Powering on"
            if lower == "power off":
                self._stop_program_locked(RUNTIME_STOPPED)
                self.robot_mode = ROBOT_MODE_POWER_OFF
                return "Powering off"
            if lower == "brake release":
                if self.robot_mode == ROBOT_MODE_IDLE:
                    self.robot_mode = ROBOT_MODE_RUNNING
                return "Brake releasing"
            if lower == "unlock protective stop":
                if self.safety_mode == SAFETY_MODE_PROTECTIVE_STOP:
                    self._set_safety_normal_locked()
                return "Protective stop releasing"
            if lower == "close safety popup":
                return "closing safety popup"
            if lower == "close popup":
                return "closing popup"
            if lower.startswith("popup"):
                return "showing popup"
            if lower == "robotmode":
                names = {3: "POWER_OFF", 5: "IDLE", 7: "RUNNING"}
                return f"Robotmode: {names.get(self.robot_mode, str(self.robot_mode))}"
            if lower in ("safetymode", "safetystatus"):
                names = {1: "NORMAL", 3: "PROTECTIVE_STOP", 7: "ROBOT_EMERGENCY_STOP"}
                label = "Safetymode" if lower == "safetymode" else "Safetystatus"
                return f"{label}: {names.get(self.safety_mode, str(self.safety_mode))}"
            if lower == "get robot model":
                return "UR5"
            if lower.startswith("addtolog"):
                return "Added log message"
            if lower == "isprogramsaved":
                return "true rtde_control"
            if lower == "get loaded program":
                return "No program loaded"
            if lower == "restart safety":
                return "Restarting safety"
            if lower == "shutdown":
                return "Shutting down"
            if lower == "running":
                return f"Program running: {str(self.runtime_state == RUNTIME_PLAYING).lower()}"
            if lower == "programstate":
                names = {RUNTIME_STOPPED: "STOPPED", RUNTIME_PLAYING: "PLAYING", RUNTIME_PAUSED: "PAUSED"}
                return f"{names.get(self.runtime_state, 'STOPPED')} rtde_control"
            if lower == "quit":
                return "Disconnected"
        return f"could not understand: '{command}'"
