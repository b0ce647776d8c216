"""The parallel gripper (Robotiq 2F-85/2F-140 through the UR controller's URCap socket, or simulated):
config, backends, the gripper process and its CLI side by side, like ``robot/arm``."""
