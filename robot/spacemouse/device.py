"""The SpaceMouse process: the latest normalized 6-DoF teleop state, published at a fixed rate.

Backends (``SpaceMouseConfig.backend``):

- ``spnav``: motion and button events from spacenavd through libspnav (:mod:`robot.spacemouse.spnav`).
- ``scripted``: an expert ``expert(obs) -> (axes, buttons)`` evaluated on the newest records of the
  rings handed to the process, or a replayed trajectory (:mod:`robot.spacemouse.scripted`).

Timing contract: every ``1 / rate_hz`` s (on a fixed grid, host monotonic clock) the process reads
every event that arrived since the previous tick and writes one record to :attr:`SpaceMouse.ring`:

- ``axes`` (6,) float64 in [-1, 1]: [x, y, z, rx, ry, rz] after axis map, normalization by
  ``max_raw``, deadzone, sign and scale (see :func:`normalize_axes`); **zero once no motion event
  arrived for ``decay_timeout_s``** (spacenavd does not always send a final zero event, and holding
  the last one would make the arm drift).
- ``buttons`` (n,) bool: pressed state; ``button_presses`` (n,) int64: press events counted since
  start (a press and release between two ticks still increments it, so roles bound to "button
  pressed" never miss a click).
- ``event_time``: host monotonic s when the process read the newest motion event (0.0 before the
  first); at most one period after spacenavd sent it. Scripted: the tick time.
- ``publish_time``: host monotonic s of this tick.
- ``connected``: False in the last record written after spacenavd went away (axes zero, buttons
  released); the process then fails, and :meth:`SpaceMouse.check` / :meth:`SpaceMouse.latest` raise
  :class:`~robot.process.DeviceProcessError` naming the daemon socket.
- ``raw_axes`` (6,) float64: spnav: the newest raw event in device order; scripted: the expert's or
  trajectory's values before clipping.

The parent owns the ring (created in ``__init__``, unlinked by :meth:`SpaceMouse.close` or the
context manager exit); readers in other processes get it by pickling ``SpaceMouse.ring``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from robot.process import ClosedOnFailedStart, DeviceProcess
from robot.shm.ring_buffer import RingBuffer
from robot.spacemouse.config import SpaceMouseConfig
from robot.spacemouse.scripted import Expert, TrajectoryPlayer, build_expert
from robot.timing import RateLoop, now

# A teleop state at 100-200 Hz does not need the spin of precise_wait; sleeping keeps the core free.
_SPIN_S = 0.0


def spacemouse_layout(num_buttons: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """Record layout of the SpaceMouse state ring (see the module docstring for the fields)."""
    return {
        "axes": ((6,), "float64"),
        "buttons": ((num_buttons,), "bool"),
        "button_presses": ((num_buttons,), "int64"),
        "event_time": ((), "float64"),
        "publish_time": ((), "float64"),
        "connected": ((), "bool"),
        "raw_axes": ((6,), "float64"),
    }


def normalize_axes(raw_device: np.ndarray, config: SpaceMouseConfig) -> np.ndarray:
    """Map raw spacenavd values (device order x, y, z, rx, ry, rz) to output axes in [-1, 1].

    ``out[i] = clip(sign[i] * scale[i] * deadzone(clip(raw[axis_map[i]] / max_raw, -1, 1)), -1, 1)``
    where ``deadzone(v) = 0`` for ``|v| <= deadzone`` and ``sign(v) * (|v| - dz) / (1 - dz)`` above,
    so an axis rises continuously from 0 at the deadzone edge to 1 at full deflection.
    """
    v = np.asarray(raw_device, dtype=np.float64)[config.axis_map] / config.max_raw
    v = np.clip(v, -1.0, 1.0)
    dz = config.deadzone
    mag = np.abs(v)
    v = np.where(mag <= dz, 0.0, np.sign(v) * (mag - dz) / (1.0 - dz))
    v = v * np.asarray(config.sign, np.float64) * np.asarray(config.scale, np.float64)
    return np.clip(v, -1.0, 1.0) + 0.0  # + 0.0 turns -0.0 into 0.0


class SpaceMouse(ClosedOnFailedStart, DeviceProcess):
    """SpaceMouse (or scripted stand-in) in its own process, publishing to :attr:`ring`.

    ``obs_rings`` (scripted expert only): ``{name: RingBuffer}``; each tick the expert gets
    ``{name: ring.latest() or None, "time": now}``. ``expert`` overrides ``config.scripted.expert``; it
    must be picklable (it is sent to the child, where it runs and keeps its state).

    ``start()`` returns once the device is open and the first record (zero axes) is in the ring;
    with the spnav backend it raises :class:`~robot.process.DeviceProcessError` carrying a message
    that names the socket and ``sudo systemctl start spacenavd`` when spacenavd is not running.
    """

    def __init__(
        self,
        config: SpaceMouseConfig | None = None,
        *,
        obs_rings: Mapping[str, RingBuffer] | None = None,
        expert: Expert | None = None,
        name: str = "spacemouse",
        **process_kwargs: Any,
    ):
        super().__init__(name, **process_kwargs)
        self.config = config or SpaceMouseConfig()
        self.obs_rings = dict(obs_rings or {})
        self.expert = expert
        sc = self.config.scripted
        if self.config.backend == "scripted" and not (
            expert is not None or sc.expert is not None or sc.trajectory or sc.trajectory_file
        ):
            raise ValueError(
                f"{name}: the scripted backend needs an expert (argument or scripted.expert) or a "
                "trajectory (scripted.trajectory or scripted.trajectory_file)"
            )
        self.num_buttons = self.config.num_buttons
        self.ring = RingBuffer.create(
            spacemouse_layout(self.num_buttons), self.config.ring_capacity, label="spacemouse"
        )
        self.device_name: str | None = None

    # ------------------------------------------------------------------ parent side
    def latest(self, check: bool = True) -> dict[str, Any]:
        """Newest state record ``{field: array} + counter``; non-blocking.

        With ``check`` (default) first raises DeviceProcessError if the process failed, e.g. because
        spacenavd went away, so a dead teleop is never read as "no motion".
        """
        if check:
            self.check()
        return self.ring.latest()

    def status(self) -> dict[str, Any]:
        """Non-raising summary for displays: ``alive``, ``connected`` (False once spacenavd went away
        or the process died), ``age_s`` (s since the newest record was published, None before any)
        and ``error`` (the child's traceback text, or None)."""
        alive = self.is_alive
        rec = self.ring.latest() if self.ring.count > 0 else None
        return {
            "alive": alive,
            "connected": bool(alive and rec is not None and rec["connected"]),
            "age_s": None if rec is None else now() - float(rec["publish_time"]),
            "error": self.error,
        }

    def close(self) -> None:
        """Stop the process (if running) and unlink the ring. Idempotent."""
        if self._proc is not None and self._proc.is_alive():
            self.stop()
        self.ring.close()

    def __exit__(self, *exc: object) -> None:
        self.stop(wait=True)
        self.ring.close()

    # ------------------------------------------------------------------ child side
    def setup(self) -> None:
        n = self.num_buttons
        self._buttons = np.zeros(n, bool)
        self._presses = np.zeros(n, np.int64)
        self._raw = np.zeros(6)
        self._event_time = 0.0
        self._conn = None
        self._player: TrajectoryPlayer | None = None
        self._expert_fn: Expert | None = None
        if self.config.backend == "spnav":
            from robot.spacemouse.spnav import SpnavConnection

            self._conn = SpnavConnection(self.config.socket_path)
            # Device queries must precede event reading (libspnav drops pending events on a request).
            self.device_name = self._conn.device_name()
            print(
                f"{self.name}: connected to spacenavd at {self._conn.socket_path} (protocol "
                f"{self._conn.protocol}), device: {self.device_name or 'unknown'}",
                file=sys.stderr,
                flush=True,
            )
        else:
            self._setup_scripted()
        self._publish(now(), np.zeros(6), connected=True)

    def _setup_scripted(self) -> None:
        sc = self.config.scripted
        if self.expert is not None:
            self._expert_fn = self.expert
        elif sc.expert is not None:
            self._expert_fn = build_expert(sc.expert.target, sc.expert.kwargs)
        elif sc.trajectory_file:
            with np.load(sc.trajectory_file) as f:
                buttons = f["buttons"] if "buttons" in f.files else None
                self._player = TrajectoryPlayer(
                    f["time_s"], f["axes"], buttons, self.num_buttons, sc.loop, sc.interpolate
                )
        else:
            kfs = sc.trajectory
            buttons = np.array([kf.buttons or [False] * self.num_buttons for kf in kfs], bool)
            self._player = TrajectoryPlayer(
                [kf.time_s for kf in kfs],
                np.array([kf.axes for kf in kfs]),
                buttons,
                self.num_buttons,
                sc.loop,
                sc.interpolate,
            )
        self.device_name = "scripted " + ("expert" if self._expert_fn is not None else "trajectory")

    def run_loop(self) -> None:
        loop = RateLoop(self.config.rate_hz, spin_s=_SPIN_S)
        start_time = loop.start_time
        while not self.should_stop():
            loop.wait()
            t = now()
            if self._conn is not None:
                self._tick_spnav(t)
            else:
                self._tick_scripted(t, t - start_time)

    def _tick_spnav(self, t: float) -> None:
        from robot.spacemouse.spnav import ButtonEvent, MotionEvent, SpnavDisconnected

        try:
            while (ev := self._conn.poll()) is not None:
                if isinstance(ev, MotionEvent):
                    self._raw = np.array(ev.axes, np.float64)
                    self._event_time = t
                elif isinstance(ev, ButtonEvent) and 0 <= ev.bnum < self.num_buttons:
                    if ev.pressed and not self._buttons[ev.bnum]:
                        self._presses[ev.bnum] += 1
                    self._buttons[ev.bnum] = ev.pressed
        except SpnavDisconnected:
            # Leave a record that says so (zero motion, released buttons), then fail loudly.
            self._buttons[:] = False
            self._publish(t, np.zeros(6), connected=False)
            raise
        if self._event_time > 0 and t - self._event_time <= self.config.decay_timeout_s:
            axes = normalize_axes(self._raw, self.config)
        else:
            axes = np.zeros(6)
        self._publish(t, axes, connected=True)

    def _tick_scripted(self, t: float, elapsed_s: float) -> None:
        if self._expert_fn is not None:
            obs: dict[str, Any] = {
                name: (ring.latest() if ring.count > 0 else None) for name, ring in self.obs_rings.items()
            }
            obs["time"] = t
            axes, buttons = self._expert_fn(obs)
        else:
            axes, buttons = self._player.sample(elapsed_s)
        axes = np.asarray(axes, np.float64)
        buttons = np.asarray(buttons, bool)
        if axes.shape != (6,) or buttons.shape != (self.num_buttons,):
            raise ValueError(
                f"{self.name}: scripted source returned axes {axes.shape} and buttons {buttons.shape}; "
                f"expected (6,) and ({self.num_buttons},)"
            )
        self._presses += buttons & ~self._buttons
        self._buttons = buttons.copy()
        self._raw = axes
        self._event_time = t
        self._publish(t, np.clip(axes, -1.0, 1.0), connected=True)

    def _publish(self, t: float, axes: np.ndarray, connected: bool) -> None:
        self.ring.put(
            {
                "axes": axes,
                "buttons": self._buttons,
                "button_presses": self._presses,
                "event_time": self._event_time,
                "publish_time": t,
                "connected": connected,
                "raw_axes": self._raw,
            }
        )

    def teardown(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None:
            conn.close()
        for ring in self.obs_rings.values():
            ring.close()
        self.ring.close()
