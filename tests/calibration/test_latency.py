"""Camera and robot latency calibration on the sim rig, through ``rig calibrate``, against injected
ground truth (odd values the procedures cannot guess)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from robot.calibration_data import load_calibration
from tests.calibration.helpers import run_cli


@pytest.mark.timeout(120)
def test_camera_latency_recovers_injected_latency_per_camera(tmp_path, calibrate, cal_file):
    rc, res, text = calibrate(
        "camera-latency",
        "cameras.cameras.scene.sim.latency_s=0.1637",
        "cameras.cameras.scene.sim.jitter_s=0.003",
        "cameras.cameras.wrist.sim.latency_s=0.0342",
    )
    assert rc == 0, text
    got = {c["camera"]: c for c in res["cameras"]}
    assert abs(got["scene"]["latency_ms"] - 163.7) < 3.0, got
    assert abs(got["wrist"]["latency_ms"] - 34.2) < 3.0, got
    assert got["scene"]["std_ms"] > got["wrist"]["std_ms"]  # the injected jitter shows
    cal = load_calibration(cal_file)
    assert abs(cal.cameras["scene"].latency.value_s - 0.1637) < 0.003
    assert abs(cal.cameras["wrist"].latency.value_s - 0.0342) < 0.003
    assert cal.cameras["scene"].latency.n_samples >= 60
    assert (tmp_path / "camera_latency_scene.png").stat().st_size > 1000


def test_a_frame_rendered_at_the_end_of_the_cameras_backlog_still_finds_its_screen_image():
    """The sim camera renders a frame up to its backlog late (then it skips frames) and shows the
    screen image of its capture time: the calibration's screen ring must still hold that image where
    the camera looks (half the ring), with the writer ahead of time at the shipped refresh rate."""
    from calibration.camera_latency import screen_ring_capacity
    from calibration.procedures import CameraLatencyProcedure
    from robot.cameras.config import CameraConfig
    from robot.cameras.sim import _newest_at_or_before, create_screen_ring
    from robot.config import config_path, load_config
    from robot.geometry.camera_geometry import PlaneConfig

    proc = load_config(CameraLatencyProcedure, config_path("calibration/procedures/camera_latency.yaml"))
    cam = CameraConfig(name="wrist")
    plane = PlaneConfig(kind="screen", screen_width_px=8, screen_height_px=8)
    ring = create_screen_ring(plane, capacity=screen_ring_capacity(cam, proc.refresh_hz), channels=1)
    try:
        period = 1.0 / proc.refresh_hz
        t_cap = 10.0
        late = cam.sim.max_backlog_frames / cam.fps  # the latest the camera renders a frame
        k = 0
        while k * period < t_cap + late + 0.02:  # the writer: 20 ms ahead of the render's time
            ring.put({"image": np.zeros((8, 8), np.uint8), "display_time": k * period})
            k += 1
        rec = _newest_at_or_before(ring, "display_time", t_cap)
        assert t_cap - period <= rec["display_time"] <= t_cap, rec["display_time"]
    finally:
        ring.close()


@pytest.mark.timeout(90)
def test_camera_latency_fails_cleanly_when_the_screen_is_not_in_view(calibrate, cal_file):
    # The "operator" put the screen behind the camera.
    screen = (
        "{kind: screen, pose: [1.5, 0.0, 0.6, 0.0, 0.0, 0.0], screen_width_px: 180, screen_height_px: 96}"
    )
    rc, res, text = calibrate(
        "camera-latency",
        f"cameras.cameras.scene.sim.planes={{screen: {screen}}}",
        p=["cameras=[scene]", "duration_s=1.5"],
    )
    assert rc == 1
    assert "never seen" in text and "camera scene" in text
    assert "error" in res
    assert not cal_file.exists()


@pytest.mark.timeout(150)
def test_robot_latency_recovers_action_and_observation_latency(tmp_path, capsys, calibrate, cal_file):
    rc, res, text = calibrate(
        "robot-latency", "arm.sim.action_delay_s=0.1313", "arm.sim.state_latency_s=0.027"
    )
    assert rc == 0, text
    assert abs(res["dead_time_ms"] - 131.3) < 8.0, res  # one control tick at 125 Hz
    # The shift deployment uses: dead time + the sim arm's 20 ms first-order tracking.
    assert abs(res["action_latency_ms"] - 151.3) < 8.0, res
    assert abs(res["obs_latency_ms"] - 27.0) < 8.0, res
    cal = load_calibration(cal_file)
    assert abs(cal.robot.action_latency.dead_time_s - 0.1313) < 0.008
    assert cal.robot.action_latency.value_s == pytest.approx(res["action_latency_ms"] / 1e3, abs=1e-6)
    assert abs(cal.robot.obs_latency.value_s - 0.027) < 0.008
    assert (tmp_path / "robot_action_latency.png").is_file()
    assert (tmp_path / "robot_obs_latency.png").is_file()

    # `show` prints what was written.
    rc, shown, text = run_cli(capsys, ["show", "--file", str(cal_file)])
    assert rc == 0
    assert "robot action latency" in text
    assert abs(shown["robot"]["action_latency"]["value_s"] - cal.robot.action_latency.value_s) < 1e-9


@pytest.mark.timeout(120)
def test_robot_action_latency_small_delay_slow_tracking(calibrate, cal_file):
    rc, res, text = calibrate(
        "robot-latency",
        "arm.sim.action_delay_s=0.0117",
        "arm.sim.tracking_time_constant_s=0.037",
        p=["obs.enabled=false"],
    )
    assert rc == 0, text
    assert abs(res["dead_time_ms"] - 11.7) < 8.0, res
    assert abs(res["tracking_tau_ms"] - 37.0) < 10.0, res
    assert "obs_latency_ms" not in res
    assert load_calibration(cal_file).robot.obs_latency is None


@pytest.mark.timeout(120)
def test_robot_latency_of_a_second_order_arm_under_servo_smoothing(capsys, calibrate, cal_file):
    # The arm (38 ms delay, 20 ms second-order tracking) plus the UR's servoL smoothing
    # (lookahead 0.05 s, gain 600: a 12.5 ms lag): a dead time + first-order fit read 46.9 ms
    # without the smoothing.
    rc, res, text = calibrate(
        "robot-latency",
        "arm.sim.action_delay_s=0.038",
        "arm.sim.tracking_order=2",
        "arm.sim.tracking_time_constant_s=0.02",
        "arm.sim.servo_lookahead_time_s=0.05",
        "arm.sim.servo_gain=600",
        p=["obs.enabled=false"],
    )
    assert rc == 0, text
    assert res["model"] == "second_order", res
    assert abs(res["dead_time_ms"] - 38.0) < 8.0, res
    assert res["models"]["first_order"]["dead_time_ms"] > 38.0 + 8.0, res  # what one model alone says
    assert res["dead_time_ms"] < res["lag_50_ms"] < res["action_latency_ms"] < res["lag_90_ms"], res
    a = load_calibration(cal_file).robot.action_latency
    assert a.model == "second_order" and abs(a.dead_time_s - 0.038) < 0.008
    assert a.lag_50_s == pytest.approx(res["lag_50_ms"] / 1e3, abs=1e-6)
    rc, _, text = run_cli(capsys, ["show", "--file", str(cal_file)])
    assert rc == 0 and "second_order response: dead time" in text


def test_robot_latency_refuses_an_excitation_outside_the_workspace(capsys, cal_file):
    # Procedure settings (-p) and rig overrides may come in any order.
    argv = [
        "robot-latency",
        "arm.sim.action_delay_s=0.05",
        "-p",
        "center_offset_m=[0, 0.5, 0]",
        "--out",
        str(cal_file),
    ]
    rc, res, text = run_cli(capsys, [*argv, "cameras.cameras.scene.fps=15"])
    assert rc == 1
    assert "workspace" in text
    assert not cal_file.exists()


def test_show_without_a_file_prints_the_uncalibrated_fallbacks_in_use(tmp_path, capsys):
    rc = __import__("calibration.cli", fromlist=["main"]).main(
        ["show", "--file", str(tmp_path / "none.yaml"), "latency.action_latency_s=0.042"]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert (
        "NOT CALIBRATED" in out and "action latency  42.0 ms" in out and "rig calibrate camera-latency" in out
    )
    shown = json.loads(out.strip().splitlines()[-1])
    assert shown["calibrated"] is False and shown["action_latency_s"] == 0.042
