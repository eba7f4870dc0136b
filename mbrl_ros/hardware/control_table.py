"""The Dynamixel X-series control table (XH430 / XM430, Protocol 2.0) and its unit conversions.

Addresses, sizes and factory defaults follow the ROBOTIS e-Manual pages of the XM430-W350 /
XH430-W350 (the family ROBEL's D'Claw and D'Kitty are built from). Only registers the driver,
the emulator or the first-run checklist touch are listed; the emulator serves the others as
plain bytes. All multi-byte values are little-endian; present current/velocity/position are
signed (two's complement).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

# -- model numbers (register 0) -------------------------------------------------------------
MODEL_NUMBERS = {
    "XH430-W350": 1000,
    "XH430-W210": 1010,
    "XM430-W350": 1020,
    "XM430-W210": 1030,
    "XH430-V350": 1040,
    "XH430-V210": 1050,
    "XL430-W250": 1060,
}
MODEL_NAMES = {v: k for k, v in MODEL_NUMBERS.items()}


@dataclass(frozen=True)
class Register:
    """One control-table entry."""

    name: str
    address: int
    size: int  # bytes
    writable: bool
    eeprom: bool  # EEPROM registers can only be written while torque is off
    default: int = 0
    signed: bool = False


_REGISTERS = (
    # EEPROM area (kept across power cycles; writable only with torque off)
    Register("model_number", 0, 2, False, True, 1000),
    Register("model_information", 2, 4, False, True, 0),
    Register("firmware_version", 6, 1, False, True, 45),
    Register("id", 7, 1, True, True, 1),
    Register("baud_rate", 8, 1, True, True, 1),
    Register("return_delay_time", 9, 1, True, True, 250),
    Register("drive_mode", 10, 1, True, True, 0),
    Register("operating_mode", 11, 1, True, True, 3),
    Register("secondary_id", 12, 1, True, True, 255),
    Register("protocol_type", 13, 1, True, True, 2),
    Register("homing_offset", 20, 4, True, True, 0, True),
    Register("moving_threshold", 24, 4, True, True, 10),
    Register("temperature_limit", 31, 1, True, True, 80),
    Register("max_voltage_limit", 32, 2, True, True, 160),
    Register("min_voltage_limit", 34, 2, True, True, 95),
    Register("pwm_limit", 36, 2, True, True, 885),
    Register("current_limit", 38, 2, True, True, 1193),
    Register("velocity_limit", 44, 4, True, True, 200),
    Register("max_position_limit", 48, 4, True, True, 4095),
    Register("min_position_limit", 52, 4, True, True, 0),
    Register("shutdown", 63, 1, True, True, 0b0011_0100),
    # RAM area
    Register("torque_enable", 64, 1, True, False, 0),
    Register("led", 65, 1, True, False, 0),
    Register("status_return_level", 68, 1, True, False, 2),
    Register("registered_instruction", 69, 1, False, False, 0),
    Register("hardware_error_status", 70, 1, False, False, 0),
    Register("velocity_i_gain", 76, 2, True, False, 1920),
    Register("velocity_p_gain", 78, 2, True, False, 100),
    Register("position_d_gain", 80, 2, True, False, 0),
    Register("position_i_gain", 82, 2, True, False, 0),
    Register("position_p_gain", 84, 2, True, False, 800),
    Register("bus_watchdog", 98, 1, True, False, 0),
    Register("goal_pwm", 100, 2, True, False, 885),
    Register("goal_current", 102, 2, True, False, 1193, True),
    Register("goal_velocity", 104, 4, True, False, 0, True),
    Register("profile_acceleration", 108, 4, True, False, 0),
    Register("profile_velocity", 112, 4, True, False, 0),
    Register("goal_position", 116, 4, True, False, 2048, True),
    Register("realtime_tick", 120, 2, False, False, 0),
    Register("moving", 122, 1, False, False, 0),
    Register("moving_status", 123, 1, False, False, 0),
    Register("present_pwm", 124, 2, False, False, 0, True),
    Register("present_current", 126, 2, False, False, 0, True),
    Register("present_velocity", 128, 4, False, False, 0, True),
    Register("present_position", 132, 4, False, False, 2048, True),
    Register("velocity_trajectory", 136, 4, False, False, 0, True),
    Register("position_trajectory", 140, 4, False, False, 0, True),
    Register("present_input_voltage", 144, 2, False, False, 120),
    Register("present_temperature", 146, 1, False, False, 30),
)
REGISTERS: dict[str, Register] = {r.name: r for r in _REGISTERS}
TABLE_SIZE = 147  # bytes 0..146 (X-series RAM ends at present_temperature)

# The registers ROBEL reads every step, as one 10-byte block (current, velocity, position).
ADDR_TORQUE_ENABLE = 64
ADDR_HARDWARE_ERROR_STATUS = 70
ADDR_GOAL_POSITION = 116
ADDR_PRESENT_CURRENT = 126
ADDR_PRESENT_VELOCITY = 128
ADDR_PRESENT_POSITION = 132
STATE_BLOCK_ADDRESS = 126
STATE_BLOCK_SIZE = 10

# Operating mode values (register 11)
OPERATING_MODES = {
    0: "current",
    1: "velocity",
    3: "position",
    4: "extended position",
    5: "current-based position",
    16: "pwm",
}
POSITION_MODE = 3

# Baud-rate register values (register 8) -> bit/s
BAUD_RATES = {0: 9600, 1: 57600, 2: 115200, 3: 1_000_000, 4: 2_000_000, 5: 3_000_000, 6: 4_000_000, 7: 4_500_000}
BAUD_CODES = {v: k for k, v in BAUD_RATES.items()}

# Hardware error status (register 70) bits. Bit 1 (hall sensor) exists on some models only.
HARDWARE_ERROR_BITS = {
    0: "input_voltage",
    1: "motor_hall_sensor",
    2: "overheating",
    3: "motor_encoder",
    4: "electrical_shock",
    5: "overload",
}
HARDWARE_ERROR_MASKS = {name: 1 << bit for bit, name in HARDWARE_ERROR_BITS.items()}


def decode_hardware_error(status: int) -> list[str]:
    """Names of the bits set in a Hardware Error Status value (empty list when healthy)."""
    if not 0 <= int(status) <= 0xFF:
        raise ValueError(f"hardware error status must be one byte, got {status}")
    return [name for bit, name in HARDWARE_ERROR_BITS.items() if status & (1 << bit)]


def encode_hardware_error(names: Iterable[str]) -> int:
    """Bit mask of hardware error names (inverse of :func:`decode_hardware_error`)."""
    mask = 0
    for name in names:
        if name not in HARDWARE_ERROR_MASKS:
            raise ValueError(f"unknown hardware error {name!r}; valid: {sorted(HARDWARE_ERROR_MASKS)}")
        mask |= HARDWARE_ERROR_MASKS[name]
    return mask


def to_signed(value: int, size: int) -> int:
    """Two's complement of an unsigned ``size``-byte integer."""
    bits = 8 * size
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


# -- units ------------------------------------------------------------------------------------
POSITION_RAD_PER_UNIT = 2.0 * math.pi / 4096.0  # 0.088 deg per unit
VELOCITY_RAD_S_PER_UNIT = 0.229 * 2.0 * math.pi / 60.0  # 0.229 rpm per unit
CURRENT_MA_PER_UNIT = 1.34  # ROBEL's default (XM430-W210 data sheet: 2.69 mA)
