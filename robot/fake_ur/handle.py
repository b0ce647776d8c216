"""``FakeURController``: the fixture-friendly handle on a fake UR controller, in-process or in a child.

Usage in a test::

    with FakeURController(version="5.11") as fake:       # e-Series, 500 Hz
        rtde_r = rtde_receive.RTDEReceiveInterface(fake.host)
        fake.inject_protective_stop()
        fake.clear_faults()
        fake.drop_connections()
        fake.freeze()                                    # stops answering, sockets stay open
        fake.state()["actual_tcp_pose"]

``process=False`` (default) runs the server on threads of the calling process; ``process=True`` runs
it in a child ``DeviceProcess`` and forwards every method over a pipe (each call blocks until the
child answered, at most ``rpc_timeout_s``). Either way ``host`` is a loopback address of its own
(127.x.y.z picked at random unless given) so several fakes and leftover sockets never collide: the
ur_rtde client always uses the standard ports 30004/29999/30003 on the host it is given.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

from robot.fake_ur.arm_model import ArmModel
from robot.fake_ur.server import FakeURServer, ServerOptions, controller_rate_hz, parse_version
from robot.process import DeviceProcess, DeviceProcessError

# Methods of FakeURServer a handle may call (thread mode: directly; process mode: over the pipe).
_REMOTE_METHODS = frozenset(
    {
        "inject_protective_stop",
        "inject_emergency_stop",
        "clear_faults",
        "drop_connections",
        "accept_connections",
        "freeze",
        "unfreeze",
        "set_joint_positions",
        "state",
        "servo_log",
        "arm_log",
        "gripper_set_object",
        "gripper_inject_fault",
        "gripper_state",
    }
)


def make_arm(kind: str, options: ServerOptions) -> ArmModel | None:
    """Build the arm model named ``kind``: "kinematic" (built-in) or "sim" (robot/sim's UR5)."""
    if kind == "kinematic":
        return None  # the server's default KinematicArm
    if kind == "sim":
        from robot.fake_ur.sim_adapter import make_sim_arm

        return make_sim_arm(options)
    raise ValueError(f"fake UR: unknown arm model {kind!r}; use 'kinematic' or 'sim'")


def _prioritize(options: ServerOptions) -> list[str]:
    """Give this (the fake's own) process the CPU first, as a real controller ticks on real-time
    hardware of its own; returns what was applied. Call before the server's threads start: they
    inherit it.

    Measured (tmp probe, sim arm at 500 Hz, the arm controller streaming, load average 15-22 from
    three busy loops beside other sessions' test suites): with niceness alone the fake's ticks
    stalled up to 1.0 s (60 gaps over 20 ms in 20 s) while each stalled tick thread sat runnable in
    the run queue (its schedstat wait = the gap) and its own work was 0.15 ms (p99 5 ms; garbage
    collections at most 31 ms): the OS did not run it. The kernel groups processes by session
    (``sched_autogroup_enabled``): a niceness counts only inside the session's group, and the whole
    test session (pytest workers, busy loops, the fake) gets one share beside every other session.
    So: SCHED_RR ``options.rt_priority`` (ticks: max gap 17 ms, p99 2.1 ms at load 20), else a
    session of its own whose group has ``options.nice`` (max 22 ms, p99 4.1 ms), and ``nice`` for
    the process itself. Each step is skipped where not permitted. (Not SCHED_RESET_ON_FORK: it
    resets new threads too, the server's own: its ticks then stalled up to 89 ms at load 16.)"""
    applied: list[str] = []
    if options.nice is not None:
        try:
            os.setsid()  # a spawned child never leads its process group: permitted
        except OSError:
            pass  # still in the caller's session: its group's niceness is not ours to change
        else:
            applied.append("own session")
            with contextlib.suppress(OSError):
                fd = os.open("/proc/self/autogroup", os.O_WRONLY)
                try:
                    os.write(fd, str(options.nice).encode())
                finally:
                    os.close(fd)
                applied.append(f"session group nice {options.nice}")
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, options.nice)
            applied.append(f"nice {options.nice}")
    if options.rt_priority:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(options.rt_priority))
            applied.append(f"SCHED_RR {options.rt_priority}")
    return applied


class _FakeURProcess(DeviceProcess):
    """Child process hosting a FakeURServer; answers ``(method, args, kwargs)`` requests on a pipe."""

    def __init__(self, options: ServerOptions, arm_kind: str, rpc_child: Any):
        super().__init__(f"fake UR controller {options.version}", ready_timeout_s=20.0, stop_timeout_s=5.0)
        self.options = options
        self.arm_kind = arm_kind
        self._rpc = rpc_child
        self._server: FakeURServer | None = None

    def setup(self) -> None:
        _prioritize(self.options)
        self._server = FakeURServer(self.options, make_arm(self.arm_kind, self.options)).start()
        self._rpc.send(("host", self._server.host))

    def run_loop(self) -> None:
        assert self._server is not None
        while not self.should_stop():
            if not self._rpc.poll(0.05):
                continue
            try:
                name, args, kwargs = self._rpc.recv()
            except (EOFError, OSError):
                return  # parent gone
            if name not in _REMOTE_METHODS:
                self._rpc.send(("err", f"fake UR: no remote method {name!r}"))
                continue
            try:
                result = getattr(self._server, name)(*args, **kwargs)
            except Exception as exc:
                self._rpc.send(("err", f"fake UR {name} failed: {exc!r}"))
            else:
                self._rpc.send(("ok", result))

    def teardown(self) -> None:
        if self._server is not None:
            self._server.stop()


class FakeURController:
    """A fake UR controller the real ur_rtde client connects to (see the module docstring).

    Args:
        version: controller version reported to the client, "3.15" (CB3, 125 Hz) or "5.11"
            (e-Series, 500 Hz); any "major.minor[.bugfix[.build]]".
        host: loopback address to listen on; None picks a free 127.x.y.z.
        process: run the server in a child process instead of threads of this process.
        arm: an ``ArmModel`` instance (thread mode only); default the built-in ``KinematicArm``.
        arm_kind: "kinematic" or "sim" (robot/sim's UR5 through ``sim_adapter``); used when ``arm``
            is None, and the only choice in process mode.
        rpc_timeout_s: process mode: how long a method call waits for the child's answer.
        **options: further ``ServerOptions`` fields (``serial_number``, ``script_start_delay_s``,
            ``initial_q``, ``port_offset``, ``check_registers_in_use``, ``arm_params``).
    """

    def __init__(
        self,
        version: str = "5.11",
        host: str | None = None,
        *,
        process: bool = False,
        arm: ArmModel | None = None,
        arm_kind: str = "kinematic",
        rpc_timeout_s: float = 10.0,
        **options: Any,
    ):
        self.options = ServerOptions(version=version, host=host, **options)
        self.version = version
        self.rate_hz = controller_rate_hz(parse_version(version)[0])
        self.process = process
        if process and arm is not None:
            raise ValueError("fake UR: pass arm_kind, not an arm instance, with process=True")
        self._arm = arm
        self._arm_kind = arm_kind
        self._rpc_timeout_s = rpc_timeout_s
        self._server: FakeURServer | None = None
        self._proc: _FakeURProcess | None = None
        self._rpc: Any = None
        self.host: str | None = host

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeURController:
        """Start listening; returns once the ports are bound (``host`` is then set). Starting a
        started controller is an error (it would bind the same ports twice)."""
        if self._server is not None or self._proc is not None:
            raise RuntimeError(f"fake UR controller at {self.host}: already started")
        if self.process:
            import multiprocess

            from robot.process import DEFAULT_START_METHOD

            parent, child = multiprocess.get_context(DEFAULT_START_METHOD).Pipe(duplex=True)
            self._rpc = parent
            self._proc = _FakeURProcess(self.options, self._arm_kind, child)
            self._proc.start(wait=True)
            if not parent.poll(self._rpc_timeout_s):
                self.stop()
                raise DeviceProcessError("fake UR controller process did not report its address")
            _, self.host = parent.recv()
        else:
            arm = self._arm if self._arm is not None else make_arm(self._arm_kind, self.options)
            self._server = FakeURServer(self.options, arm).start()
            self.host = self._server.host
        return self

    def stop(self) -> None:
        """Close every socket and stop the server (and its process). Idempotent."""
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._proc is not None:
            self._proc.stop(wait=True)
            self._proc = None
        if self._rpc is not None:
            self._rpc.close()
            self._rpc = None

    def __enter__(self) -> FakeURController:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def server(self) -> FakeURServer:
        """The in-process server (thread mode only), for white-box tests."""
        if self._server is None:
            raise RuntimeError("fake UR: no in-process server (not started, or process=True)")
        return self._server

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self._server is not None:
            return getattr(self._server, name)(*args, **kwargs)
        if self._proc is None or self._rpc is None:
            raise RuntimeError("fake UR controller is not running; use it as a context manager")
        self._proc.check()
        self._rpc.send((name, args, kwargs))
        if not self._rpc.poll(self._rpc_timeout_s):
            raise DeviceProcessError(
                f"fake UR controller process did not answer {name} in {self._rpc_timeout_s} s"
            )
        status, value = self._rpc.recv()
        if status != "ok":
            raise RuntimeError(value)
        return value

    # ------------------------------------------------------------------ faults
    def inject_protective_stop(self) -> None:
        """Protective stop: arm halts, program pauses, safety_status_bits bits 2 and 10 set."""
        self._call("inject_protective_stop")

    def inject_emergency_stop(self) -> None:
        """Emergency stop: arm halts and powers off, program stops, safety bits 6, 7 and 10 set."""
        self._call("inject_emergency_stop")

    def clear_faults(self) -> None:
        """Back to normal: safety cleared, powered, paused program resumed, connections answered."""
        self._call("clear_faults")

    def drop_connections(self, refuse_new: bool = False) -> int:
        """Close every client socket now (returns how many); ``refuse_new`` also refuses reconnects
        until ``accept_connections()``/``clear_faults()``."""
        return int(self._call("drop_connections", refuse_new))

    def accept_connections(self) -> None:
        self._call("accept_connections")

    def freeze(self) -> None:
        """Stop answering: no data packages, no replies, sockets stay open (``unfreeze`` ends it)."""
        self._call("freeze")

    def unfreeze(self) -> None:
        self._call("unfreeze")

    # ------------------------------------------------------------------ state
    def set_joint_positions(self, q: Any) -> None:
        """Teleport the arm to joints ``q`` (rad), at rest."""
        self._call("set_joint_positions", [float(v) for v in q])

    def state(self) -> dict[str, Any]:
        """Snapshot of the controller: see ``FakeURServer.state``."""
        return dict(self._call("state"))

    def servo_log(self, since: int | None = None) -> tuple[int, list[tuple[float, ...]]]:
        """servoL packages as they arrived on the wire: see ``FakeURServer.servo_log``."""
        n, rows = self._call("servo_log", since)
        return int(n), [tuple(r) for r in rows]

    def arm_log(self, since: int | None = None) -> tuple[int, list[tuple[float, ...]]]:
        """The arm's TCP position per controller tick: see ``FakeURServer.arm_log``."""
        n, rows = self._call("arm_log", since)
        return int(n), [tuple(r) for r in rows]

    @property
    def pid(self) -> int | None:
        """The fake's process id (process mode; None in thread mode), e.g. to pause it with SIGSTOP."""
        return None if self._proc is None else self._proc.pid

    # ------------------------------------------------------------------ gripper (URCap, port 63352)
    def gripper_set_object(self, width_m: float | None, inside: bool = False) -> None:
        """Put an object of ``width_m`` (m) between the gripper's fingers (None: take it away); closing
        stops on it (OBJ 2). ``inside``: the pads are inside a hollow object of that inner width:
        opening stops on it (OBJ 1)."""
        self._call("gripper_set_object", width_m, bool(inside))

    def gripper_inject_fault(self, code: int) -> None:
        """Set the gripper's FLT code; a major fault stops it until a reset (0x0B, 0x0E are minor)."""
        self._call("gripper_inject_fault", int(code))

    def gripper_state(self) -> dict[str, Any]:
        """The fake gripper's state: width_m, pos, obj, sta, flt, pre, requests, gotos."""
        return dict(self._call("gripper_state"))

    def wait_until(
        self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 5.0, poll_s: float = 0.01
    ) -> dict[str, Any]:
        """Poll ``state()`` until ``predicate(state)`` holds; returns that state.

        Raises TimeoutError with the last state's key fields after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            st = self.state()
            if predicate(st):
                return st
            if time.monotonic() > deadline:
                brief = {
                    k: st[k] for k in ("runtime_state", "safety_status_bits", "robot_mode", "connections")
                }
                raise TimeoutError(f"fake UR: condition not met within {timeout_s} s; state {brief}")
            time.sleep(poll_s)
