"""The scripted SpaceMouse backend: trajectory replay and experts run inside the SpaceMouse process."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from robot.config import ConfigError, build_config
from robot.process import DeviceProcessError
from robot.shm.ring_buffer import RingBuffer
from robot.spacemouse.config import ExpertSpec, ScriptedConfig, ScriptedKeyframe, SpaceMouseConfig
from robot.spacemouse.device import SpaceMouse
from robot.spacemouse.scripted import WaypointExpert
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)

ARM_LAYOUT = {
    "time": ((), "float64"),
    "actual_tcp_pose": ((6,), "float64"),
    "target_tcp_pose": ((6,), "float64"),
}


def _runs(values: np.ndarray) -> list[np.ndarray]:
    """Consecutive distinct rows of ``values`` (run-length compressed)."""
    out = [values[0]]
    for v in values[1:]:
        if not np.array_equal(v, out[-1]):
            out.append(v)
    return out


def test_trajectory_replay_publishes_keyframes_in_order_then_zero():
    a0, a1, a2 = [0.5, 0, 0, 0, 0, 0], [0, -0.25, 0, 0, 0, 1.0], [0, 0, 2.0, 0, 0, 0]  # 2.0 is clipped
    kfs = [
        ScriptedKeyframe(time_s=0.0, axes=a0, buttons=[False, False]),
        ScriptedKeyframe(time_s=0.25, axes=a1, buttons=[True, False]),
        ScriptedKeyframe(time_s=0.5, axes=a2, buttons=[False, True]),
        ScriptedKeyframe(time_s=0.75, axes=[0] * 6, buttons=[False, False]),
    ]
    cfg = SpaceMouseConfig(backend="scripted", scripted=ScriptedConfig(trajectory=kfs, interpolate=False))
    with SpaceMouse(cfg) as sm:
        wait_until(lambda: sm.ring.count > 100, what="1 s of records")
        recs = sm.ring.get_since(0)
        sm.check()
    axes_runs = _runs(recs["axes"])
    expected = [[0] * 6, a0, a1, [0, 0, 1.0, 0, 0, 0], [0] * 6]
    assert [r.tolist() for r in axes_runs] == expected
    assert recs["raw_axes"][recs["axes"][:, 2] == 1.0][0, 2] == 2.0  # raw keeps the unclipped value
    assert recs["button_presses"][-1].tolist() == [1, 1]
    assert [r.tolist() for r in _runs(recs["buttons"])] == [[0, 0], [1, 0], [0, 1], [0, 0]]
    assert np.all(np.diff(recs["publish_time"]) > 0)


def _simulate_arm(sm: SpaceMouse, arm: RingBuffer, pose: np.ndarray, until, timeout_s: float, speed=0.4):
    """A kinematic stand-in for the arm under teleop: the TCP moves with linear velocity
    ``axes[:3] * speed`` (m/s) and angular velocity ``axes[3:] * 2 * speed`` (rad/s) in the base frame.
    Returns the (time, pose, buttons, presses) history."""
    history = []
    t_prev = time.monotonic()
    deadline = t_prev + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.005)
        rec = sm.latest()
        t = time.monotonic()
        dt = t - t_prev
        t_prev = t
        pose[:3] += rec["axes"][:3] * speed * dt
        rot = Rotation.from_rotvec(rec["axes"][3:] * 2 * speed * dt) * Rotation.from_rotvec(pose[3:])
        pose[3:] = rot.as_rotvec()
        arm.put({"time": t, "actual_tcp_pose": pose, "target_tcp_pose": pose})
        history.append((t, pose.copy(), rec["buttons"].copy(), rec["button_presses"].copy()))
        if until(rec, pose):
            return history
    raise AssertionError(f"the scripted teleop did not finish within {timeout_s} s; pose {pose}")


def test_waypoint_expert_in_the_spacemouse_process_steers_the_arm_through_waypoints():
    waypoints = [
        [0.45, 0.0, 0.30],
        {"pose": [0.45, 0.10, 0.25, 0.0, 0.0, 0.4], "press": [1]},
        {"pose": [0.40, 0.05, 0.25, 0.0, 0.0, 0.0], "press": [0], "hold_s": 0.2},
    ]
    spec = ExpertSpec(
        target="robot.spacemouse.scripted:WaypointExpert",
        kwargs={"waypoints": waypoints, "kp_pos": 10.0, "kp_rot": 3.0, "pos_tol_m": 0.004},
    )
    cfg = SpaceMouseConfig(backend="scripted", rate_hz=100.0, scripted=ScriptedConfig(expert=spec))
    pose = np.array([0.40, 0.0, 0.30, 0.0, 0.0, 0.0])
    with RingBuffer.create(ARM_LAYOUT, 64, label="fakearm") as arm:
        with SpaceMouse(cfg, obs_rings={"arm": arm}) as sm:
            assert np.all(sm.latest()["axes"] == 0)  # no arm record yet: the expert holds still
            history = _simulate_arm(
                sm, arm, pose, until=lambda rec, p: rec["button_presses"][0] >= 1, timeout_s=20.0
            )
            # Then it holds at the last waypoint and stays done: zero axes, buttons released.
            time.sleep(0.4)
            arm.put({"time": time.monotonic(), "actual_tcp_pose": pose, "target_tcp_pose": pose})
            final = wait_until(
                lambda: (r := sm.latest())["publish_time"] > time.monotonic() - 0.05 and r,
                what="a fresh record",
            )
            sm.check()
    times = np.array([h[0] for h in history])
    poses = np.array([h[1] for h in history])
    presses = np.array([h[3] for h in history])
    wp_pos = [np.array(w if isinstance(w, list) else w["pose"])[:3] for w in waypoints]

    def first_reach(i: int, after: float) -> float:
        near = (np.linalg.norm(poses[:, :3] - wp_pos[i], axis=1) < 0.006) & (times >= after)
        assert near.any(), f"waypoint {i} never reached"
        return times[np.argmax(near)]

    t0 = first_reach(0, times[0])
    t1 = first_reach(1, t0)
    t2 = first_reach(2, t1)
    assert t0 < t1 < t2
    # Button 1 pressed once, at waypoint 1 (after reaching it, before leaving for waypoint 2).
    i_press1 = np.argmax(presses[:, 1] >= 1)
    assert presses[-1, 1] == 1 and times[i_press1] >= t1
    assert np.linalg.norm(poses[i_press1, :3] - wp_pos[1]) < 0.006
    assert abs(Rotation.from_rotvec(poses[i_press1, 3:]).magnitude() - 0.4) < 0.05  # rotation reached too
    i_press0 = np.argmax(presses[:, 0] >= 1)
    assert times[i_press0] >= t2 and np.linalg.norm(poses[i_press0, :3] - wp_pos[2]) < 0.006
    assert np.all(final["axes"] == 0) and not final["buttons"].any()
    assert final["button_presses"].tolist() == [1, 1]


def _always_fails(obs):
    raise RuntimeError("expert lost track of the T block")


def test_expert_failure_is_reported_by_check():
    cfg = SpaceMouseConfig(backend="scripted")
    with SpaceMouse(cfg, expert=_always_fails) as sm:

        def failed():
            try:
                sm.check()
            except DeviceProcessError as exc:
                return exc

        exc = wait_until(failed, what="the expert failure to be reported")
    assert "expert lost track of the T block" in str(exc)


def test_waypoint_expert_presses_each_button_once_and_then_stops():
    expert = WaypointExpert(
        [{"pose": [0.1, 0, 0], "press": [0]}, {"pose": [0.1, 0, 0], "press": [0, 1]}], press_s=0.05
    )
    pose = np.zeros(6)
    buttons_log = []
    for k in range(400):
        axes, buttons = expert({"arm": {"actual_tcp_pose": pose}, "time": k * 0.01})
        assert np.all(np.abs(axes) <= 1.0)
        pose[:3] += axes[:3] * 0.5 * 0.01
        buttons_log.append(buttons.copy())
    log = np.array(buttons_log)
    rising = (log[1:] & ~log[:-1]).sum(axis=0) + log[0]
    assert rising.tolist() == [2, 1]  # the second waypoint's press of 0 is a separate click
    assert expert.done and np.all(axes == 0)
    assert np.linalg.norm(pose[:3] - [0.1, 0, 0]) < expert.pos_tol_m


def test_scripted_backend_without_a_source_is_refused_and_bad_mappings_rejected():
    with pytest.raises(ValueError, match="needs an expert"):
        SpaceMouse(SpaceMouseConfig(backend="scripted"))
    with pytest.raises(ConfigError, match="axis_map"):
        build_config(SpaceMouseConfig, {"axis_map": [0, 0, 1, 2, 3, 4]})
    with pytest.raises(ConfigError, match="sign"):
        build_config(SpaceMouseConfig, {"sign": [1, 1, 1, 1, 1, 2]})
    with pytest.raises(ConfigError, match="unknown key 'dead_zone'"):
        build_config(SpaceMouseConfig, {"dead_zone": 0.1})
