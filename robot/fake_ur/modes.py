"""The UR controller's mode and status enumerations that the fake controller's ports share.

Values as the RTDE guide defines them: ``runtime_state``, ``robot_mode``, ``safety_mode``,
``joint_mode`` and the bit numbers of ``safety_status_bits`` and ``robot_status_bits``. No timing:
plain constants, read by ``robot.fake_ur.server`` and its ports under the controller's lock.
"""

# UR enumerations (RTDE guide).
RUNTIME_STOPPING = 0
RUNTIME_STOPPED = 1
RUNTIME_PLAYING = 2
RUNTIME_PAUSING = 3
RUNTIME_PAUSED = 4
RUNTIME_RESUMING = 5
ROBOT_MODE_POWER_OFF = 3
ROBOT_MODE_IDLE = 5
ROBOT_MODE_RUNNING = 7
SAFETY_MODE_NORMAL = 1
SAFETY_MODE_PROTECTIVE_STOP = 3
SAFETY_MODE_ROBOT_EMERGENCY_STOP = 7
JOINT_MODE_RUNNING = 253

# safety_status_bits
SAFETY_BIT_NORMAL = 0
SAFETY_BIT_PROTECTIVE_STOPPED = 2
SAFETY_BIT_ROBOT_EMERGENCY_STOPPED = 6
SAFETY_BIT_EMERGENCY_STOPPED = 7
SAFETY_BIT_STOPPED_DUE_TO_SAFETY = 10
# robot_status_bits
ROBOT_BIT_POWER_ON = 0
ROBOT_BIT_PROGRAM_RUNNING = 1
