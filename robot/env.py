"""The rig as one object: arm controller + cameras + SpaceMouse, time-aligned observations, actions.

``Env(rig_config)`` starts the processes as one context manager (arm first, since in simulation the
cameras render the world the arm steps; then cameras; then the SpaceMouse, which may read both) and
stops them in reverse order on every exit path. Collection, deployment and calibration all use it.

Timing contract of :meth:`Env.get_obs` (all times host monotonic seconds):
- the newest common time ``t_last`` is the oldest of the cameras' newest capture times, so every
  camera has a frame at or before it; the targets are ``t_last - dt_s * (n - 1 - i)``;
- each camera contributes, per target, its frame whose capture time is *nearest* to the target
  (with ``<=`` semantics at the newest frame: the newest frame is used, unlike the reference's strict
  ``<``), so frame and target differ by at most half a frame period when no frame was dropped;
- robot state is interpolated at the target times from the arm's state history by *capture* time
  (position linear, rotation slerp, joints linear); it is clamped, never extrapolated, at the ends;
- ``timestamp`` are the targets; ``<camera>_capture_time`` the chosen frames' capture times;
- with a gripper, ``gripper_width`` (n, 1) is the opening interpolated at the targets by capture time
  from the gripper's state history (clamped like the robot state).

Camera capture time is the device's (``obs.camera_time_source = device``) or ``receive_time`` minus
the calibrated latency (``receive``). :meth:`Env.exec_actions` shifts target times earlier by the
calibrated action latency and drops actions that can no longer be reached, saying how many;
:meth:`Env.commanded_at` reads back the pose (and width) the arm was commanded to be at at given
times from the controllers' commanded history: what a stored step's action is
(:mod:`collection.action_time`).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from robot.arm.controller import ArmController
from robot.calibration_data import CalibrationFile, load_or_warn
from robot.rig_config import RigConfig
from robot.timing import now

log = logging.getLogger("robot.env")


def interpolate_poses(times: np.ndarray, poses: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Poses ``[x, y, z, rx, ry, rz]`` at ``query`` times: linear position, slerp rotation, clamped."""
    query = np.clip(query, times[0], times[-1])
    pos = np.stack([np.interp(query, times, poses[:, i]) for i in range(3)], axis=1)
    if len(times) == 1:
        return np.repeat(poses[:1], len(query), axis=0)
    # Slerp needs strictly increasing times; drop duplicates that a paused writer may produce.
    keep = np.concatenate([[True], np.diff(times) > 0])
    rot = Slerp(times[keep], Rotation.from_rotvec(poses[keep, 3:]))(query).as_rotvec()
    return np.concatenate([pos, rot], axis=1)


def nearest_indices(sample_times: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index of the sample nearest each target (ties -> the later sample)."""
    idx = np.searchsorted(sample_times, targets, side="left")
    idx = np.clip(idx, 1, len(sample_times) - 1) if len(sample_times) > 1 else np.zeros_like(idx)
    if len(sample_times) > 1:
        earlier = sample_times[idx - 1]
        later = sample_times[idx]
        idx = np.where(np.abs(targets - earlier) < np.abs(later - targets), idx - 1, idx)
    return idx


class Env:
    """The rig (see module docstring). ``with Env(cfg) as env: obs = env.get_obs()``.

    Args:
        config: the rig config.
        spacemouse: start the SpaceMouse process (collection, takeover); False for headless runs.
        expert: scripted SpaceMouse expert (overrides the config's), e.g. a task expert.
        task: sim task hook (default: built from ``config.task``).
        calibration: a loaded calibration, or None to load ``config.calibration_file`` /
            ``configs/calibration/<name>.yaml`` (a warning when missing).
        screen_rings: sim only: ``{camera name: ring}`` of images for cameras with a ``screen`` plane
            (see :func:`robot.cameras.sim.create_screen_ring`); the caller owns the rings.
    """

    def __init__(
        self,
        config: RigConfig,
        *,
        spacemouse: bool = True,
        expert: Any = None,
        task: Any = None,
        calibration: CalibrationFile | None = None,
        screen_rings: dict[str, Any] | None = None,
    ):
        self.config = config
        self._screen_rings = dict(screen_rings or {})
        self.calibration = (
            calibration if calibration is not None else load_or_warn(config.calibration_file, config.name)
        )
        self.action_latency_s = self._action_latency()
        self.camera_latency_s = self._camera_latencies()
        if task is None and config.is_sim:
            from robot.sim.tasks import make_task

            task = make_task(config.task.name, **config.task.params)
        self.task = task
        self._expert = expert
        self._want_spacemouse = spacemouse
        self.arm: ArmController | None = None
        self.gripper: Any = None
        self.gripper_latency_s = self._gripper_latency()
        self.cameras: Any = None
        self.spacemouse: Any = None
        self.camera_names = list(config.cameras.cameras)
        self._started = False
        self.dropped_actions = 0

    # ------------------------------------------------------------------ calibration
    def _action_latency(self) -> float:
        cal = self.calibration
        if cal is not None and cal.robot.action_latency is not None:
            return cal.robot.action_latency.value_s
        return self.config.latency.action_latency_s

    def _gripper_latency(self) -> float:
        cal = self.calibration
        if cal is not None and cal.gripper.action_latency is not None:
            return cal.gripper.action_latency.value_s
        return self.config.latency.gripper_latency_s

    @property
    def action_dim(self) -> int:
        """6 (TCP pose) or 7 (pose + gripper width) on a rig with a gripper."""
        return 7 if self.config.gripper.enabled else 6

    def _camera_latencies(self) -> dict[str, float]:
        out = dict(self.config.latency.camera_latency_s)
        if self.calibration is not None:
            for name, cam in self.calibration.cameras.items():
                if cam.latency is not None:
                    out[name] = cam.latency.value_s
        return out

    def describe_timing(self) -> str:
        """One line per timing number in use and where it came from (printed at start by CLIs)."""
        src = (
            "calibration"
            if self.calibration is not None and self.calibration.robot.action_latency
            else "config"
        )
        a = self.calibration.robot.action_latency if src == "calibration" else None
        if a is not None and a.dead_time_s is not None:
            src += f": ramp lag of a {a.model} response, dead time {a.dead_time_s * 1e3:.1f} ms"
        lines = [f"action latency {self.action_latency_s * 1e3:.1f} ms ({src})"]
        if self.config.gripper.enabled:
            gsrc = (
                "calibration"
                if self.calibration is not None and self.calibration.gripper.action_latency
                else "config"
            )
            lines.append(f"gripper latency {self.gripper_latency_s * 1e3:.1f} ms ({gsrc})")
        lines.append(
            f"observation dt {self.config.obs.dt_s * 1e3:.0f} ms x {self.config.obs.n_obs_steps} steps"
        )
        if self.config.obs.camera_time_source == "receive":
            for name in self.camera_names:
                lines.append(f"camera {name} latency {self.camera_latency_s.get(name, 0.0) * 1e3:.1f} ms")
        else:
            lines.append("camera capture times: device timestamps")
        return "; ".join(lines)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Env:
        from robot.cameras.multi_camera import MultiCamera

        try:
            gripper_ring = None
            if self.config.gripper.enabled:
                from robot.gripper.controller import GripperController

                self.gripper = GripperController(self.config.gripper)
                gripper_ring = self.gripper.state_ring if self.config.is_sim else None
            self.arm = ArmController(self.config.arm, task=self.task, gripper_ring=gripper_ring)
            self.arm.start()
            if self.gripper is not None:
                self.gripper.world_ring = self.arm.world_ring  # sim: what lies between the fingers
                self.gripper.start()
            if self.config.cameras.cameras:
                self.cameras = MultiCamera(
                    self.config.cameras, world_ring=self.arm.world_ring, screen_rings=self._screen_rings
                )
                self.cameras.start()
            if self._want_spacemouse:
                from robot.spacemouse.device import SpaceMouse

                rings = {"arm": self.arm.state_ring}
                if self.gripper is not None:
                    rings["gripper"] = self.gripper.state_ring
                if self.arm.world_ring is not None:
                    rings["world"] = self.arm.world_ring
                self.spacemouse = SpaceMouse(self.config.spacemouse, obs_rings=rings, expert=self._expert)
                self.spacemouse.start()
            self._started = True
            self.wait_for_frames()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every process (SpaceMouse, cameras, then the arm, which decelerates) and free memory."""
        for dev in (self.spacemouse, self.cameras, self.gripper, self.arm):
            if dev is None:
                continue
            try:
                dev.stop()
            except Exception as exc:  # keep stopping the others
                log.error("stopping %s failed: %s", getattr(dev, "name", dev), exc)
            finally:
                close = getattr(dev, "close", None)
                if close is not None:
                    close()
        self.spacemouse = self.cameras = self.gripper = self.arm = None
        self._started = False

    def __enter__(self) -> Env:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def check(self) -> None:
        """Raise if any device process failed (with its traceback) or the arm is faulted."""
        if self.arm is not None:
            self.arm.check()
        if self.gripper is not None:
            self.gripper.check()
        if self.cameras is not None:
            self.cameras.check()
        if self.spacemouse is not None:
            self.spacemouse.check()

    def heartbeat(self) -> None:
        if self.arm is not None:
            self.arm.heartbeat()
        if self.gripper is not None:
            self.gripper.heartbeat()

    def wait_for_frames(self, timeout_s: float = 20.0) -> None:
        """Block until every camera has enough frames for one get_obs()."""
        if self.cameras is None:
            return
        deadline = now() + timeout_s
        while now() < deadline:
            self.check()
            if all(
                cam.ring.count >= min(self._frames_needed(), cam.ring.capacity - 1)
                for cam in self._camera_list()
            ):
                return
            time.sleep(0.01)
        raise TimeoutError(f"cameras delivered no frames within {timeout_s:.0f} s: check cabling / config")

    def wait_for_frames_since(
        self, t_ready: float, n_obs_steps: int | None = None, timeout_s: float = 5.0
    ) -> None:
        """Block until ``get_obs(n_obs_steps)`` taken now uses only frames captured at or after
        ``t_ready`` (host monotonic s: when a reset or homing finished), by capture time: frames still
        in flight when the world changed (``latency_s`` of a slow camera) show the world before it."""
        if self.cameras is None:
            return
        n = n_obs_steps or self.config.obs.n_obs_steps
        fps = min(c.fps for c in self.config.cameras.cameras.values())
        # The oldest target of get_obs() is (n-1) dt before the newest frame; one frame period more
        # keeps the frame nearest to it after t_ready too.
        need = t_ready + (n - 1) * self.config.obs.dt_s + 1.0 / fps
        deadline = now() + timeout_s
        while True:
            self.check()
            self.heartbeat()
            if min(self._newest_capture_times()) >= need:
                return
            if now() > deadline:
                raise TimeoutError(
                    f"cameras delivered no frame captured after the reset within {timeout_s:.0f} s: "
                    "check cabling / config"
                )
            time.sleep(0.005)

    # ------------------------------------------------------------------ observations
    def _newest_capture_times(self) -> list[float]:
        """Each camera's newest capture time (by the configured time source), -inf before its first frame."""
        out = []
        for name, cam in zip(self.camera_names, self._camera_list(), strict=True):
            recs = cam.ring.get_last(1)
            out.append(float(self._capture_times(name, recs)[-1]) if len(recs["counter"]) else -np.inf)
        return out

    def _camera_list(self) -> list[Any]:
        cams = self.cameras.cameras
        return [cams[n] for n in self.camera_names] if isinstance(cams, dict) else list(cams)

    def _frames_needed(self) -> int:
        obs = self.config.obs
        fps = max(c.fps for c in self.config.cameras.cameras.values())
        return int(math.ceil(obs.n_obs_steps * obs.dt_s * fps)) + 3

    def _capture_times(self, name: str, recs: dict[str, np.ndarray]) -> np.ndarray:
        if self.config.obs.camera_time_source == "receive":
            return recs["receive_time"] - self.camera_latency_s.get(name, 0.0)
        return recs["capture_time"]

    def get_obs(self, n_obs_steps: int | None = None) -> dict[str, np.ndarray]:
        """Time-aligned observations (see module docstring). Non-blocking (copies from the rings).

        Returns ``camera_<i>`` (n, H, W, 3) uint8 in config order, ``<name>_capture_time`` (n,),
        ``robot_eef_pose`` (n, 6), ``robot_joint`` (n, 6), ``robot_capture_time`` (n,) (the targets),
        and ``timestamp`` (n,): the aligned target times.
        """
        n = n_obs_steps or self.config.obs.n_obs_steps
        dt_s = self.config.obs.dt_s
        out: dict[str, np.ndarray] = {}
        cam_recs = []
        cams = (
            list(zip(self.camera_names, self._camera_list(), strict=True)) if self.cameras is not None else []
        )
        if cams:
            newest = self._newest_capture_times()
            for (name, _), t in zip(cams, newest, strict=True):
                if t == -np.inf:
                    raise RuntimeError(f"camera {name} has delivered no frame yet")
            t_last = min(newest)
        else:
            t_last = float(self.arm.get_state()["capture_time"])
        targets = t_last - dt_s * np.arange(n - 1, -1, -1)
        for (name, cam), t_newest in zip(cams, newest if cams else [], strict=True):
            # Back from this camera's newest frame to the oldest target: a camera ahead of the slowest
            # one (a starved process, a longer latency) needs more than n * dt of its frames.
            k = min(cam.ring.capacity - 1, int(math.ceil((t_newest - targets[0]) * cam.config.fps)) + 3)
            recs = cam.ring.get_last(k)
            cam_recs.append((name, recs, self._capture_times(name, recs)))
        for i, (name, recs, times) in enumerate(cam_recs):
            idx = nearest_indices(times, targets)
            out[f"camera_{i}"] = recs["color"][idx]
            out[f"{name}_capture_time"] = times[idx]
        history_s = n * dt_s + 0.5
        k = min(self.arm.state_ring.capacity - 1, int(math.ceil(history_s * self.config.arm.rate_hz)))
        st = self.arm.state_ring.get_last(k)
        out["robot_eef_pose"] = interpolate_poses(st["capture_time"], st["actual_tcp_pose"], targets)
        out["robot_joint"] = np.stack(
            [np.interp(targets, st["capture_time"], st["actual_q"][:, j]) for j in range(6)], axis=1
        )
        out["robot_capture_time"] = targets.copy()
        if self.gripper is not None:
            g = self.gripper
            k = min(g.state_ring.capacity - 1, int(math.ceil(history_s * self.config.gripper.rate_hz)) + 2)
            gs = g.state_ring.get_last(k)
            out["gripper_width"] = np.interp(targets, gs["capture_time"], gs["width_m"])[:, None]
        out["timestamp"] = targets
        return out

    # ------------------------------------------------------------------ actions
    def commanded_at(self, times: np.ndarray) -> np.ndarray:
        """The pose (and, with a gripper, width) the arm was commanded to be at at each of ``times``
        (host monotonic s, in the past): what a stored step's ``action`` is
        (:mod:`collection.action_time`).

        Read from what the controllers actually sent: the arm's ``target_tcp_pose`` (after its safety
        filter) interpolated at tick time ``t - action_latency_s`` (position linear, rotation slerp;
        clamped, never extrapolated), and the gripper's ``target_width_m`` last sent at or before
        ``t - gripper_latency_s`` (a width is a level). Returns (n, 6), or (n, 7) with a gripper.
        Non-blocking; reads at most half of each state ring (older times are clamped to the oldest
        record read)."""
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        t_now = now()
        ring = self.arm.state_ring
        span_s = max(t_now - float(times.min()) + self.action_latency_s, 0.0) + 0.1
        k = min(ring.capacity // 2, int(math.ceil(span_s * self.config.arm.rate_hz)) + 4)
        st = ring.get_last(k)
        poses = interpolate_poses(st["tick_time"], st["target_tcp_pose"], times - self.action_latency_s)
        if self.gripper is None:
            return poses
        g = self.gripper.state_ring
        span_s = max(t_now - float(times.min()) + self.gripper_latency_s, 0.0) + 0.1
        k = min(g.capacity // 2, int(math.ceil(span_s * self.config.gripper.rate_hz)) + 4)
        gs = g.get_last(k)
        sent = gs["target_width_m"]
        # Before the first width was sent (NaN), the fingers were where they were measured.
        sent = np.where(np.isnan(sent), gs["width_m"], sent)
        idx = np.searchsorted(gs["tick_time"], times - self.gripper_latency_s, side="right") - 1
        widths = sent[np.clip(idx, 0, len(sent) - 1)]
        return np.concatenate([poses, widths[:, None]], axis=1)

    def exec_actions(
        self,
        poses: np.ndarray,
        target_times: np.ndarray,
        compensate_latency: bool = True,
        margin_s: float = 0.0,
    ) -> int:
        """Schedule TCP ``poses`` (N, 6) to be reached at ``target_times`` (N,) host monotonic s; with a
        gripper, ``poses`` may be (N, 7) actions whose last column is the width (m).

        With ``compensate_latency`` each waypoint is sent ``action_latency_s`` earlier, so that the arm
        *is* there at the stamped time. Actions whose (shifted) time is not after ``now + margin_s``
        are dropped; returns how many were dropped (also logged and added to ``dropped_actions``).
        """
        poses = np.asarray(poses, dtype=np.float64)
        widths = None
        if poses.ndim == 2 and poses.shape[1] == 7:
            if self.gripper is None:
                raise ValueError("exec_actions: 7-column actions (pose + width) but this rig has no gripper")
            poses, widths = poses[:, :6], poses[:, 6]
        poses = poses.reshape(-1, 6)
        times = np.asarray(target_times, dtype=np.float64).reshape(-1)
        if len(poses) != len(times):
            raise ValueError(f"exec_actions: {len(poses)} poses but {len(times)} target times")
        send_times = times - (self.action_latency_s if compensate_latency else 0.0)
        feasible = send_times > now() + margin_s
        for pose, t in zip(poses[feasible], send_times[feasible], strict=True):
            self.arm.schedule_waypoint(pose, float(t))
        if widths is not None:
            self.exec_widths(widths, times, compensate_latency, margin_s)
        dropped = int(np.count_nonzero(~feasible))
        if dropped:
            self.dropped_actions += dropped
            # Counted, not printed: callers report drops per episode (a line per tick floods the terminal).
            log.debug("exec_actions: dropped %d of %d actions whose time had passed", dropped, len(poses))
        return dropped

    def exec_widths(
        self,
        widths: np.ndarray,
        target_times: np.ndarray,
        compensate_latency: bool = True,
        margin_s: float = 0.0,
    ) -> None:
        """Gripper widths (m) to be commanded at ``target_times`` (host monotonic s), each sent
        ``gripper_latency_s`` earlier. A width whose time has passed is superseded by the next one;
        if all passed, the newest is sent at once (a width is a level, not a path: late beats never).
        Widths sent together replace the gripper's pending ones from their first time on."""
        widths = np.asarray(widths, dtype=np.float64).reshape(-1)
        times = np.asarray(target_times, dtype=np.float64).reshape(-1)
        send_times = times - (self.gripper_latency_s if compensate_latency else 0.0)
        feasible = send_times > now() + margin_s
        if not feasible.any():
            self.gripper.schedule_width(float(widths[-1]), now())
            return
        for w, t in zip(widths[feasible], send_times[feasible], strict=True):
            self.gripper.schedule_width(float(w), float(t))

    # ------------------------------------------------------------------ convenience
    def home(self) -> None:
        self.arm.home(wait=True)

    def reset_world(self, seed: int) -> None:
        self.arm.reset_world(seed)

    def task_success(self) -> bool:
        return bool(self.arm.get_state()["task_success"])
