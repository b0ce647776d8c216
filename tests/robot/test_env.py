"""The Env on the simulated rig, through the real arm and camera processes."""

import time

import numpy as np
import pytest

from robot.config import config_path, load_config
from robot.env import Env, interpolate_poses, nearest_indices
from robot.rig_config import RigConfig

LATENCIES = {"scene": 0.073, "wrist": 0.031}


@pytest.fixture(scope="module")
def env():
    cfg = load_config(
        RigConfig,
        config_path("rig/sim.yaml"),
        [
            "task.name=touch",
            "cameras.cameras.scene.sim.latency_s=0.073",
            "cameras.cameras.wrist.sim.latency_s=0.031",
            "cameras.cameras.scene.sim.jitter_s=0.0",
            "cameras.cameras.wrist.sim.jitter_s=0.0",
            "obs.n_obs_steps=3",
        ],
    )
    with Env(cfg, spacemouse=False) as e:
        yield e


def _world_history(env, seconds=2.0):
    # Never near the whole ring: its oldest records are the ones the writer replaces next.
    k = min(env.arm.world_ring.capacity // 2, int(seconds * env.config.arm.rate_hz))
    return env.arm.world_ring.get_last(k)


@pytest.mark.timeout(120)
def test_get_obs_aligns_streams_by_capture_time_and_includes_newest_frame(env):
    # Move the arm so that misaligned robot state would show as a pose error.
    start = env.arm.get_state()["actual_tcp_pose"].copy()
    t0 = time.monotonic()
    for i in range(1, 11):
        p = start.copy()
        p[0] += 0.1 * np.sin(i * 0.6)
        p[1] += 0.08 * (i % 3 - 1)
        env.arm.schedule_waypoint(p, t0 + 0.15 * i)
    time.sleep(0.5)
    for _ in range(6):  # a count, not a duration: a loaded machine runs fewer loops in a given time
        newest = {name: cam.ring.latest() for name, cam in env.cameras.cameras.items()}
        obs = env.get_obs()
        targets = obs["timestamp"]
        assert np.allclose(np.diff(targets), env.config.obs.dt_s)
        for name in env.camera_names:
            # Each target gets the frame nearest to it by capture time (half a period away when the
            # camera keeps its rate; a camera process starved by a loaded machine skips frames, and
            # then the nearest is further). Frames that arrived after get_obs() are newer than every
            # target, so the nearest among the ring's frames read now is the one get_obs() saw.
            times = env.cameras.cameras[name].ring.get_last(20)["capture_time"]
            seen = targets >= times[0]  # targets older than this read's frames: not checkable here
            want = times[nearest_indices(times, targets[seen])]
            assert np.allclose(obs[f"{name}_capture_time"][seen], want, atol=1e-9), (name, targets, times)
        # The newest common time is the newest frame of the slowest camera: that frame is included.
        t_last = min(float(rec["capture_time"]) for rec in newest.values())
        assert targets[-1] >= t_last - 1e-9
        assert any(abs(obs[f"{n}_capture_time"][-1] - targets[-1]) < 1e-9 for n in env.camera_names)
        # Robot state at the target times matches the simulated arm's own pose history.
        world = _world_history(env)
        truth = interpolate_poses(world["time"], world["tcp_pose"], targets)
        assert np.abs(obs["robot_eef_pose"][:, :3] - truth[:, :3]).max() < 1e-3
        assert obs["camera_0"].shape == (3, 240, 320, 3) and obs["camera_1"].dtype == np.uint8
        time.sleep(0.1)
    # Camera latency injected per camera shows up as receive - capture.
    stats = env.cameras.stats()
    for name, lat in LATENCIES.items():
        assert abs(stats[name]["latency_mean_s"] - lat) < 0.002


@pytest.mark.timeout(60)
def test_exec_actions_drops_past_targets_and_counts_them(env, caplog):
    pose = env.arm.get_state()["actual_tcp_pose"].copy()
    now = time.monotonic()
    times = np.array([now - 0.5, now - 0.1, now + 0.4, now + 0.8])
    poses = np.repeat(pose[None], 4, axis=0)
    poses[:, 1] += np.array([0.05, 0.05, 0.03, 0.04])
    before = env.dropped_actions
    with caplog.at_level("INFO", logger="robot.env"):
        dropped = env.exec_actions(poses, times)
    assert dropped == 2 and env.dropped_actions == before + 2
    assert "dropped" not in caplog.text  # counted, reported per episode by collect/deploy, not per call
    time.sleep(1.2)
    final = env.arm.get_state()["actual_tcp_pose"]
    assert abs(final[1] - (pose[1] + 0.04)) < 1e-3  # the feasible ones were executed
    with pytest.raises(ValueError, match="2 poses but 1 target"):
        env.exec_actions(poses[:2], times[:1])
