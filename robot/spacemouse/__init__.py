"""The SpaceMouse: one process publishing the latest normalized 6-DoF state and buttons to a ring.

``device.SpaceMouse`` is the process; its backends are ``spnav`` (libspnav, talking to spacenavd's
socket) and ``scripted`` (a scripted expert for tests and the demo). ``config`` holds the settings,
``cli`` is ``rig spacemouse``.
"""
