"""Ctrl-C as a terminal sends it (SIGINT to the process group) ends every long-running command the
same way: one ``interrupted: <what was kept>`` line, exit 130, no process and no /dev/shm file of
the run left. rig collect, deploy and train have their own tests next to their other tests."""

from __future__ import annotations

import pytest

from tests.sigint import RIG, interrupt_command

# (arguments after `rig`, a line printed once the command is doing its long-running work)
COMMANDS = {
    # The sim arm starts away from home: homing at the shipped 5 cm/s takes seconds.
    "arm home": (["arm", "home", "sim.initial_pose=[0.3, 0.2, 0.3, 3.14159, 0, 0]"], "homing: to"),
    "spacemouse test": (["spacemouse", "test", "--config", "spacemouse/scripted.yaml"], "Ctrl-C to quit"),
    "cameras preview": (["cameras", "preview"], "fps"),
    "calibrate camera-latency": (["calibrate", "camera-latency"], "filming the time code"),
    "calibrate robot-latency": (["calibrate", "robot-latency"], "chirp"),
    "calibrate intrinsics": (["calibrate", "intrinsics"], "pose 1/"),
    "calibrate hand-eye": (["calibrate", "hand-eye"], "pose 1/"),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", list(COMMANDS))
def test_one_sigint_to_the_group_ends_the_command_with_exit_130(tmp_path, name):
    args, ready = COMMANDS[name]
    if args[0] == "calibrate":  # never the rig's calibration file
        args = [*args, "--out", str(tmp_path / "calibration.yaml"), "--plots", str(tmp_path / "plots")]
    result = interrupt_command([*RIG, *args], tmp_path, ready=ready)
    result.assert_clean_interrupt(kept="nothing was written")
    assert result.took_s < 5.0, f"took {result.took_s:.1f} s to end after SIGINT"
    if args[0] == "calibrate":
        assert not (tmp_path / "calibration.yaml").exists()


@pytest.mark.timeout(240)
def test_sigint_during_the_demos_training_stage_keeps_its_checkpoint(tmp_path):
    out = tmp_path / "demo"
    cmd = [
        *RIG,
        "demo",
        "--episodes",
        "2",
        "--eval-episodes",
        "1",
        "--train-steps",
        "100000",
        "--out",
        str(out),
    ]
    result = interrupt_command(cmd, tmp_path, ready="step/s", ready_timeout_s=200, settle_s=3.0)
    result.assert_clean_interrupt(kept="stage 'train' stopped (checkpoint of step")
    assert "rig train --resume" in result.err and (out / "train" / "latest").exists()
