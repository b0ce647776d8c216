"""``rig replay STORE EPISODE`` through its real entry point on the simulated rig.

A timing-consistent episode (each step's action is the pose recorded at that step, as a perfect arm
under the action-time rule records it) is replayed with a simulated arm that reaches commands 150 ms
late: with that latency calibrated the replay is in step; with it uncalibrated the replay reports
the 150 ms. An episode recorded by ``rig collect`` replays in step with default settings (the rule of
collection.action_time); a legacy store replays with the old offset and says so, and ``rig episodes
convert-time`` makes it replay in step at the shared default. A real arm (the fake UR controller
behind the real ur_rtde client) moves only after the typed confirmation.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from collection import action_time
from collection.episode_store import EpisodeStore
from tests.shared_store import copy_to
from tests.sigint import interrupt_command

RIG = [sys.executable, "-m", "robot.cli"]
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DT_S = 0.1
DELAY_S = 0.15  # the simulated arm reaches a command this long after it is sent


def rig(*args: object, timeout: float = 240, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*RIG, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def circle_store(path: Path, steps: int, legacy: bool = False) -> Path:
    """One episode on a circle (5 cm radius, 3 s period: ~0.1 m/s) in the reach rig's workspace,
    under the action-time rule (action = the pose for the step's timestamp), or ``legacy``: the old
    collection rule (action = the pose one step later, no ``action_time`` attribute)."""

    def pose(t_s: np.ndarray) -> np.ndarray:
        a = 2 * math.pi * t_s / 3.0
        xyz = np.stack([0.45 + 0.05 * np.cos(a), 0.05 * np.sin(a), np.full_like(a, 0.05)], axis=1)
        return np.concatenate([xyz, np.tile([math.pi, 0.0, 0.0], (len(t_s), 1))], axis=1)

    t_s = np.arange(steps) * DT_S
    convention = None if legacy else action_time.CONVENTION
    with EpisodeStore.open(path, "w", dt_s=DT_S, action_time=convention) as store:
        store.add_episode(
            {
                "robot_eef_pose": pose(t_s),
                "action": pose(t_s + DT_S) if legacy else pose(t_s),
                "timestamp": 1000.0 + t_s,
            }
        )
    return path


def replay_figures(out: subprocess.CompletedProcess) -> dict:
    assert out.returncode == 0, out.stderr[-3000:]
    assert "tracking error over" in out.stdout and "best shift" in out.stdout
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(300)
def test_replay_with_deploy_latency_compensation_is_in_step_and_reports_an_uncalibrated_delay(tmp_path):
    store = circle_store(tmp_path / "circle.zarr", 60)
    delay = f"rig.arm.sim.action_delay_s={DELAY_S}"
    calibrated = replay_figures(rig("replay", store, 0, delay, f"rig.latency.action_latency_s={DELAY_S}"))
    assert calibrated["compared_steps"] == calibrated["steps"] == 60
    # The arm's own tracking lag (20 ms time constant) remains; a 150 ms error would show as ~150.
    assert abs(calibrated["best_shift_ms"]) <= 50, calibrated
    assert calibrated["pos_err_p50_mm"] < 6, calibrated
    # One sample of an arm moving at 0.1 m/s: tens of ms of host stall move it by several mm (3.6 mm
    # in a clean-clone make test); the path's p50 above is the timing check.
    assert calibrated["final_pos_err_mm"] < 6, calibrated
    out = rig("replay", store, 0, delay, "rig.latency.action_latency_s=0")
    uncalibrated = replay_figures(out)
    assert 100 <= uncalibrated["best_shift_ms"] <= 220, uncalibrated
    assert uncalibrated["pos_err_p50_mm"] > 2 * calibrated["pos_err_p50_mm"], (calibrated, uncalibrated)
    assert f"{uncalibrated['best_shift_ms']:.0f} ms later than recorded" in out.stdout


@pytest.mark.timeout(400)
def test_a_collected_episode_replays_along_its_recorded_path(tmp_path):
    store = tmp_path / "demos.zarr"
    out = rig(
        "collect", "--config", "collect/sim_reach.yaml", f"store={store}", "auto.episodes=1",
        "record_video=false", "auto.episode_timeout_s=10",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    with EpisodeStore.open(store, "r") as s:
        steps = s.episodes()[0].length
    figures = replay_figures(rig("replay", store, -1))
    assert figures["steps"] == steps and figures["compared_steps"] == steps
    # Default settings (the shared offset, 0): the arm retraces the demonstration in step, because a
    # stored action is the pose commanded for its observation's time (before: 95-100 ms off, 4.5-14 mm).
    assert abs(figures["best_shift_ms"]) <= 20, figures
    assert figures["pos_err_p50_mm"] < 2, figures
    assert figures["final_pos_err_mm"] < 5, figures
    assert figures["rot_err_max_deg"] < 1, figures


@pytest.mark.timeout(300)
def test_a_legacy_store_replays_with_the_old_offset_and_converts_to_the_rule(tmp_path):
    legacy = circle_store(tmp_path / "legacy.zarr", 40, legacy=True)
    out = rig("replay", legacy, 0)
    figures = replay_figures(out)
    assert "legacy store" in out.stdout and "100 ms after their observation" in out.stdout
    assert abs(figures["best_shift_ms"]) <= 50, figures
    listed = rig("episodes", "list", legacy, timeout=60)
    assert "legacy store" in listed.stdout, listed.stdout
    converted = tmp_path / "converted.zarr"
    out = rig("episodes", "convert-time", legacy, converted, timeout=60)
    assert out.returncode == 0, out.stderr
    # The lead is estimated from the store (action path against the measured path): one step here.
    lead_ms = float(re.search(r"looked up (\d+) ms earlier", out.stdout).group(1))
    assert abs(lead_ms - DT_S * 1e3) <= 10, out.stdout
    with EpisodeStore.open(converted, "r") as s:
        assert s.action_time == action_time.CONVENTION
        assert s.attrs[action_time.CONVERTED_ATTR]["approximate"] is True
        ep = s.get_episode(0)
    # Away from the start (held at the first target), action[k] is now the pose for timestamp[k].
    assert np.abs(ep["action"][2:, :3] - ep["robot_eef_pose"][2:, :3]).max() < 1e-3
    out = rig("replay", converted, 0)
    figures = replay_figures(out)
    assert "legacy store" not in out.stdout and "observation + 0 ms" in out.stdout
    assert abs(figures["best_shift_ms"]) <= 50, figures
    again = rig("episodes", "convert-time", converted, tmp_path / "again.zarr", timeout=60)
    assert again.returncode == 2 and "already follows" in again.stderr, again.stderr
    assert not (tmp_path / "again.zarr").exists()


@pytest.mark.timeout(400)
def test_a_collected_pick_place_episode_replays_its_gripper_widths_in_the_recorded_world(
    pick_place_demo, tmp_path
):
    # recorded by `rig collect` on the shipped pick_place config (the run's shared recording)
    store, seed = copy_to(pick_place_demo, tmp_path / "picks.zarr"), pick_place_demo["seeds"][0]
    with EpisodeStore.open(store, "r") as s:
        ep = s.get_episode(0)
    assert ep["action"].shape[1] == 7
    # Without a gripper on the rig, the widths cannot be replayed: one line, exit 2.
    refused = rig("replay", store, 0, timeout=60)
    assert refused.returncode == 2 and "has no gripper" in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    out = rig("replay", store, 0, "--config", "replay/sim_pick_place.yaml", f"world_seed={seed}")
    figures = replay_figures(out)
    assert "opening error" in out.stdout and f"world reset with seed {seed}" in out.stdout
    # The fingers close on the box as recorded (an empty grip would close to 0, 40 mm off) and
    # open again at the target.
    assert ep["gripper_width"].min() > 0.03
    assert figures["width_err_mean_mm"] < 5, figures
    # Opened again at the end: the last step's error is under half of how far the recorded fingers
    # had opened from the grip by then. (The episode ends while they are opening at ~0.15 m/s, so a
    # few tens of ms of host stall shift this one sample by several mm; 9.9 mm in CI.)
    reopened_mm = (ep["gripper_width"][-1] - ep["gripper_width"].min()) * 1e3
    assert reopened_mm > 10 and figures["final_width_err_mm"] < 0.5 * reopened_mm, (reopened_mm, figures)
    # In step with default settings (the action-time rule), with the gripper closing as recorded.
    assert abs(figures["best_shift_ms"]) <= 20, figures
    assert figures["pos_err_p50_mm"] < 2, figures


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    store = circle_store(tmp_path / "circle.zarr", 5)
    for args, words in [
        ((tmp_path / "none.zarr", 0), "no episode store at"),
        ((store, 3), "no episode 3"),
    ]:
        out = rig("replay", *args, timeout=60)
        assert out.returncode == 2 and words in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def real_rig_config(tmp_path: Path) -> Path:
    """A replay config for a real rig as the README says to write one: the shipped UR5e arm config on
    the reach rig (the fake controller's address is given on the command line)."""
    (tmp_path / "lab_rig.yaml").write_text(
        f"defaults:\n  - {CONFIGS / 'rig/sim_reach.yaml'}\n  - {{arm: {CONFIGS / 'arm/ur5e.yaml'}}}\nname: lab\n"
    )
    (tmp_path / "replay_lab.yaml").write_text(f"defaults:\n  - {{rig: {tmp_path / 'lab_rig.yaml'}}}\n")
    return tmp_path / "replay_lab.yaml"


@pytest.mark.timeout(300)
def test_a_real_arm_moves_only_after_the_typed_confirmation(tmp_path):
    from robot.arm.interpolator import pose_distance
    from robot.fake_ur.handle import FakeURController

    store = circle_store(tmp_path / "circle.zarr", 40)
    config = real_rig_config(tmp_path)
    with FakeURController("5.11", process=True, arm_kind="sim") as fake:
        start = fake.state()["actual_tcp_pose"]
        real = ("replay", store, 0, "--config", config, f"rig.arm.host={fake.host}")
        for answer in ("", "yes\n", "y\n"):
            out = rig(*real, timeout=60, stdin=answer)
            assert out.returncode == 1, out.stderr
            assert "REAL arm" in out.stdout and "Type 'replay'" in out.stdout
            assert "not confirmed" in out.stderr and "the arm was not moved" in out.stderr
        assert pose_distance(fake.state()["actual_tcp_pose"], start)[0] < 1e-6
        figures = replay_figures(rig(*real, stdin="replay\n"))
        with EpisodeStore.open(store, "r") as s:
            last_action = s.get_episode(0)["action"][-1]
        assert pose_distance(fake.state()["actual_tcp_pose"], last_action)[0] < 3e-3
    assert figures["compared_steps"] == 40
    # None dropped, unless the replay loop itself stalled past the commit window (actions are
    # committed that far ahead of their send time): seen once beside three busy loops at load 13.
    from deploy.replay import ReplayConfig

    shipped = ReplayConfig()  # the lab config above sets neither
    stall_s = figures["loop_max_gap_ms"] / 1e3
    room_s = shipped.commit_window_s - shipped.action_margin_s - 1 / shipped.loop_hz
    assert figures["actions_dropped"] == 0 or stall_s > room_s, figures
    # The UR's servoL lookahead (0.1 s) is not in the configured action latency: the replay shows it.
    assert 40 <= figures["best_shift_ms"] <= 200, figures
    assert figures["shifted_pos_err_p50_mm"] < 6, figures


@pytest.mark.timeout(120)
def test_ctrl_c_as_a_terminal_sends_it_stops_the_replay(tmp_path):
    store = circle_store(tmp_path / "long.zarr", 400)  # 40 s: still replaying when Ctrl-C comes
    result = interrupt_command([*RIG, "replay", str(store), "0"], tmp_path, ready="replaying", settle_s=1.0)
    result.assert_clean_interrupt(kept="the arm stopped where it was")
    assert result.took_s < 5.0, f"took {result.took_s:.1f} s to end after SIGINT"
    assert "tracking error" not in result.out
