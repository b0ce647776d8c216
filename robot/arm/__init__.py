"""The arm: the arm controller process and what it runs.

``controller.ArmController`` is one OS process at the robot's rate (UR CB3 125 Hz, e-Series 500 Hz):
it drains its command queue, evaluates the pose interpolator (``interpolator``), filters the target
(``safety``), drives a backend (``backend`` protocol; ``ur_backend`` through ur_rtde, ``sim_backend``
the simulated UR5) and publishes the state into its ring buffer. ``config`` holds its settings,
``cli`` is ``rig arm``.
"""
