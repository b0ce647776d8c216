"""Robotiq 2F-85 / 2F-140 through the Robotiq URCap's socket on the UR controller (port 63352).

Units: the URCap speaks counts (POS 0 open .. 255 closed, SPE and FOR 0..255). This backend speaks
metres, m/s and newtons: SPE and FOR map linearly onto the model's speed and force ranges (Robotiq
manual), and the width is ``stroke * (closed - POS) / (closed - open)`` with the open/closed counts
learnt by :meth:`RobotiqBackend.calibrate` (each unit stops at slightly different counts; without
calibration 0 and 255 are used).

Timing contract: ``connect`` activates (reset ``ACT 0``, then ``ACT 1`` and waiting for ``STA 3``,
bounded by ``activation_timeout_s``) and calibrates (a full open and close, ~2 s at full speed).
A fault present at connect (``FLT`` >= 0x08) is kept in ``start_fault_code`` before the reset clears it.
``read_state`` costs three round trips (``POS``, ``OBJ``, ``FLT``); its capture time is the middle of
the ``POS`` round trip. ``command`` is one ``SET POS SPE FOR GTO`` request.
"""

from __future__ import annotations

import logging
import time

from robot.gripper.backend import GripperError, GripperReading
from robot.gripper.config import GripperConfig
from robot.gripper.urcap import FAULTS, MAJOR_FAULT_MIN, URCapClient, URCapError, is_major_fault
from robot.timing import now

log = logging.getLogger("robot.gripper")

_POLL_S = 0.02
_START_WAIT_S = 0.3


def to_counts(value: float, lo: float, hi: float) -> int:
    """``value`` in [lo, hi] -> 0..255 (clipped)."""
    frac = (float(value) - lo) / (hi - lo)
    return int(round(min(max(frac, 0.0), 1.0) * 255))


def describe_fault(code: int) -> str:
    kind = "major fault" if is_major_fault(code) else "minor fault" if code >= MAJOR_FAULT_MIN else "fault"
    return f"{kind} 0x{code:02X}: {FAULTS.get(code, 'unknown fault code')}"


class RobotiqBackend:
    """Implements :class:`robot.gripper.backend.GripperBackend` over :class:`URCapClient`."""

    def __init__(self, config: GripperConfig):
        self.config = config
        self.description = f"Robotiq {config.model.upper()} at {config.host}:{config.port}"
        self.client = URCapClient(config.host, config.port, config.connect_timeout_s, config.reply_timeout_s)
        self.open_count = 0
        self.closed_count = 255
        self.start_fault_code = 0
        """The FLT code found at connect, before the reset that clears it (0: none)."""

    # ------------------------------------------------------------------ setup
    def connect(self, t: float) -> None:
        try:
            self.client.connect()
            self.activate()
            if self.config.auto_calibrate:
                self.calibrate()
        except URCapError as exc:
            raise GripperError(str(exc)) from None

    def activate(self) -> None:
        """Reset and activate; returns once ``STA`` is 3 (raises GripperError after the timeout). A
        fault found before the reset is kept in :attr:`start_fault_code` and logged: the reset clears
        it on the gripper, so this is the only trace of it."""
        c = self.client
        flt = c.get("FLT")
        if flt >= MAJOR_FAULT_MIN:
            self.start_fault_code = flt
            # Reported by whoever reads start_fault_code (rig gripper: one line, exit code 1).
            log.info("gripper (%s): %s at start; the reset clears it", self.description, describe_fault(flt))
        if c.get("STA") == 3 and c.get("ACT") == 1 and not is_major_fault(flt):
            return
        c.set(ACT=0, ATR=0)
        self._wait(lambda: c.get("STA") == 0, "reset (STA 0)")
        c.set(ACT=1)
        self._wait(lambda: c.get("STA") == 3, "activate (STA 3)")

    def calibrate(self) -> None:
        """Open and close fully once and keep the counts where the fingers stopped."""
        spec = self.config.spec
        spe = 255
        frc = to_counts(spec.force_range_n[0], *spec.force_range_n)
        self.open_count = self._move_to_end(0, spe, frc, "open fully")
        self.closed_count = self._move_to_end(255, spe, frc, "close fully")
        if self.closed_count - self.open_count < 50:
            raise GripperError(
                f"calibration found open {self.open_count} and closed "
                f"{self.closed_count} counts: something blocks the fingers; clear them and restart"
            )
        self._move_to_end(0, spe, frc, "open fully")
        log.info(
            "gripper (%s): calibrated: open at %d counts, closed at %d",
            self.description,
            self.open_count,
            self.closed_count,
        )

    def _move_to_end(self, pos: int, spe: int, frc: int, what: str) -> int:
        c = self.client
        c.set(POS=pos, SPE=spe, FOR=frc, GTO=1)
        self._wait(lambda: c.get("PRE") == pos, f"accept the target of '{what}'")
        # OBJ still shows the previous motion's end until this one starts (a few ms later); fingers
        # already at the end never start, hence the bounded wait.
        start_deadline = time.monotonic() + _START_WAIT_S
        while c.get("OBJ") != 0 and time.monotonic() < start_deadline:
            time.sleep(_POLL_S / 4)
        self._wait(lambda: c.get("OBJ") != 0, what)
        if c.get("OBJ") != 3:
            raise GripperError(
                f"the fingers stopped on something during calibration ({what}): clear the fingers and restart"
            )
        return c.get("POS")

    def _wait(self, cond, what: str) -> None:
        deadline = time.monotonic() + self.config.activation_timeout_s
        while not cond():
            flt = self.client.get("FLT")
            if is_major_fault(flt):
                raise GripperError(f"could not {what}: {describe_fault(flt)}")
            if time.monotonic() > deadline:
                raise GripperError(
                    f"did not {what} within "
                    f"{self.config.activation_timeout_s:.0f} s (FLT {flt}); check the gripper's power and "
                    "its cable to the tool flange"
                )
            time.sleep(_POLL_S)

    # ------------------------------------------------------------------ loop
    def width_from_counts(self, pos: int) -> float:
        span = max(self.closed_count - self.open_count, 1)
        frac = (self.closed_count - pos) / span
        return self.config.max_width_m * min(max(frac, 0.0), 1.0)

    def counts_from_width(self, width_m: float) -> int:
        frac = min(max(float(width_m) / self.config.max_width_m, 0.0), 1.0)
        return int(round(self.closed_count - frac * (self.closed_count - self.open_count)))

    def read_state(self, t: float) -> GripperReading:
        try:
            # OBJ before POS: once OBJ says the fingers stopped (on an object or at the target), the POS
            # read after it is where they stopped. Read the other way round, a loaded host's gap between
            # the two GETs paired "object detected" with a width from before the stop (3 mm off; CI).
            obj = self.client.get("OBJ")
            t0 = now()
            pos = self.client.get("POS")
            t1 = now()
            flt = self.client.get("FLT")
        except URCapError as exc:
            raise GripperError(str(exc)) from None
        return GripperReading(
            width_m=self.width_from_counts(pos),
            moving=obj == 0,
            object_detected=obj in (1, 2),
            fault_code=flt,
            capture_time=0.5 * (t0 + t1),
            receive_time=t1,
        )

    def command(self, width_m: float, speed_m_s: float, force_n: float, t: float) -> None:
        spec = self.config.spec
        try:
            self.client.set(
                POS=self.counts_from_width(width_m),
                SPE=to_counts(speed_m_s, *spec.speed_range_m_s),
                FOR=to_counts(force_n, *spec.force_range_n),
                GTO=1,
            )
        except URCapError as exc:
            raise GripperError(str(exc)) from None

    def hold(self, t: float) -> None:
        try:
            if self.client.get("OBJ") == 0:  # moving: stop here; a grip (OBJ 1/2) keeps its force
                self.client.set(POS=self.client.get("POS"), GTO=1)
        except URCapError as exc:
            log.error("gripper (%s): could not hold: %s", self.description, exc)

    def close(self) -> None:
        self.client.close()
