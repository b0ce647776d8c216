"""A fake UR controller for tests: the real ``ur_rtde`` 1.6.5 client talks to it as to a UR5.

TEST UTILITY. Nothing here drives a real arm. It exists so that the UR backend of the arm
controller (``ur_rtde`` -> RTDE registers -> URScript) can be exercised unmodified without an arm
or URSim (which needs Docker). Protocol facts: ``/work/shared/UR_PROTOCOL.md``.

What it speaks (on a loopback address of its own, standard UR ports):

* RTDE, port 30004: protocol version (V), controller version (v), output/input recipe setup (O, I,
  with NOT_FOUND / IN_USE like the controller), start/pause (S, P), data packages (U) streamed at
  the controller rate: 125 Hz for a CB3 (major version 3, e.g. "3.15"), 500 Hz for an e-Series
  (major 5, e.g. "5.11"), or the lower frequency a client asks for.
* Dashboard, port 29999: banner, ``PolyscopeVersion``, ``get serial number``, ``is in remote
  control``, ``stop`` -> ``Stopped``, ``play``, ``pause``, ``power on/off``, ``brake release``,
  ``unlock protective stop``, popups, ``robotmode``, ``safetystatus``, ``programState``, ``quit``.
* Script ports 30001-30003: the uploaded ``rtde_control`` program is "run" by emulating its main
  loop on the registers (``robot.fake_ur.script``): servoJ/servoL, speedJ/speedL, servoStop,
  speedStop, stopL/stopJ, moveJ/moveL (blocking and async), setTcp, setPayload, getTCPOffset,
  getForwardKinematics, stopScript.
* An arm behind it (``ArmModel``): the built-in kinematic UR5 (``KinematicArm``, ur_analytic_ik
  kinematics, first-order joint tracking) or robot/sim's simulated UR5 through ``sim_adapter``.
* Faults on demand: protective stop, emergency stop, dropped connections, a frozen controller.

Entry points:

* ``FakeURController`` (``robot.fake_ur.handle``): context manager for tests, in-process threads or
  a child process (``process=True``), with the fault methods.
* ``python -m robot.fake_ur --version 5.11 [--host 127.0.0.1]``: a standalone fake for manual use.

Not reproduced (the client never needs them for the project's calls): the realtime/primary
interfaces' outgoing state streams on 30001-30003, force mode, contact detection, freedrive/teach,
path moves (``moveJ``/``moveL`` with a path, which re-upload a modified script), IK/Jacobian/torque
queries other than those listed, custom scripts (recorded, not executed), digital/analog I/O effects.
Approximated: servoJ/servoL's time and speedJ/speedL's acceleration are ignored (the arm model's own
tracking applies); servoJ/servoL's lookahead and gain drive the sim arm's model of the UR's servo
smoothing (``robot.sim.ur5_model``; the kinematic arm ignores them); stops halt the kinematic arm at
once (the sim arm decelerates at its limits); moveJ/moveL use a trapezoidal profile without UR's blending. What a real CB3 answers
when a client asks for more than 125 Hz is unknown: the fake streams at its own rate (125 Hz) and
``state()["connections"]`` shows requested and streamed rates.

Known client behaviour (ur_rtde 1.6.5) seen against the fake: after ``drop_connections()`` with the
listeners left open, RTDEControlInterface's automatic reconnect succeeds, then reconnects again in a
loop and the client process dies with SIGSEGV within a second; with ``refuse_new=True`` it reports
the loss and ``disconnect()`` returns. ``reuploadScript()`` returns before the program runs: wait
for ``isProgramRunning()``. Seen through the arm controller (tests/robot/arm/ur): with servoL streaming,
the control interface's reconnect after a drop usually settles (it re-uploads the script and a
servoL call blocks ~0.2 s meanwhile), but about 1 in 10 times it loops and the process dies with
SIGSEGV; with ``refuse_new=True`` a servoL call raises "Timeout connecting to UR dashboard server".

Checking that a client stopped commanding: ``state()["command_packets"]`` counts every input data
package per command id as it arrives (also while frozen), whereas ``command_counts`` counts what the
script executed (a stream of servoL counts once).
"""

from robot.fake_ur.arm_model import ArmModel, KinematicArm
from robot.fake_ur.handle import FakeURController
from robot.fake_ur.server import FakeURServer, ServerOptions

__all__ = ["ArmModel", "FakeURController", "FakeURServer", "KinematicArm", "ServerOptions"]
