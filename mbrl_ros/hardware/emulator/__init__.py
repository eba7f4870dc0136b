"""A Dynamixel Protocol 2.0 servo emulator on a pseudo-terminal, backed by the MuJoCo robot.

Three parts, one module each:

* :mod:`.physics` - what the servos move: :class:`RobelSimBackend` (the task layer's MuJoCo
  robot, with the servos' no-load speed bound) or :class:`FirstOrderBackend` (no contact).
* :mod:`.servo` - the servo model: X-series control tables, write semantics (EEPROM lock,
  limits, reboot), calibration to and from the physics, injected faults (:class:`ServoBank`).
* :mod:`.server` - the pty server: Protocol 2.0 packets in, status packets out, wire timing,
  real-time physics thread (:class:`ServoEmulator`, ``mbrl-ros emulate``).

``from mbrl_ros.hardware.emulator import ServoEmulator`` keeps working as before the split.
"""

from mbrl_ros.hardware.emulator.physics import (
    XH430_NO_LOAD_SPEED,
    FirstOrderBackend,
    PhysicsBackend,
    RobelSimBackend,
    make_backend,
)
from mbrl_ros.hardware.emulator.server import ServoEmulator, default_pose, serve_forever
from mbrl_ros.hardware.emulator.servo import (
    FAULT_KINDS,
    MA_PER_NM,
    STALL_CURRENT_MA,
    Faults,
    GoalWrite,
    Servo,
    ServoBank,
    parse_fault,
)

__all__ = [
    "FAULT_KINDS",
    "MA_PER_NM",
    "STALL_CURRENT_MA",
    "XH430_NO_LOAD_SPEED",
    "Faults",
    "FirstOrderBackend",
    "GoalWrite",
    "PhysicsBackend",
    "RobelSimBackend",
    "Servo",
    "ServoBank",
    "ServoEmulator",
    "default_pose",
    "make_backend",
    "parse_fault",
    "serve_forever",
]
