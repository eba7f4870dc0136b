"""Dynamixel Protocol 2.0 packets: CRC-16, byte stuffing, instruction/status encoding, a stream parser.

This module is the *servo side* of the protocol, used by the servo emulator
(:mod:`mbrl_ros.hardware.emulator`). The driver (:mod:`mbrl_ros.hardware.dynamixel_bus`) talks
through the real ``dynamixel_sdk``, so the two sides are written independently and a test of
the driver against the emulator checks one against the other.

Packet layout (ROBOTIS e-Manual, "Protocol 2.0")::

    FF FF FD 00 | ID | LEN_L LEN_H | INST | PARAM... | CRC_L CRC_H

``LEN`` counts the bytes after itself (instruction, parameters and the two CRC bytes). A status
packet has ``INST = 0x55`` and an error byte as its first parameter. The CRC is CRC-16/BUYPASS
(polynomial 0x8005, initial value 0, not reflected) over every byte from the header to the last
parameter, computed on the *stuffed* packet. Byte stuffing: inside the instruction and
parameter field, every ``FF FF FD`` is sent as ``FF FF FD FD`` so that a header never appears
inside a packet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

HEADER = bytes((0xFF, 0xFF, 0xFD, 0x00))
BROADCAST_ID = 0xFE
MAX_ID = 0xFC  # 252: highest ID a device may have

# Instructions
PING = 0x01
READ = 0x02
WRITE = 0x03
REG_WRITE = 0x04
ACTION = 0x05
FACTORY_RESET = 0x06
REBOOT = 0x08
CLEAR = 0x10
STATUS = 0x55
SYNC_READ = 0x82
SYNC_WRITE = 0x83
FAST_SYNC_READ = 0x8A
BULK_READ = 0x92
BULK_WRITE = 0x93
FAST_BULK_READ = 0x9A

INSTRUCTION_NAMES = {
    PING: "ping",
    READ: "read",
    WRITE: "write",
    REG_WRITE: "reg_write",
    ACTION: "action",
    FACTORY_RESET: "factory_reset",
    REBOOT: "reboot",
    CLEAR: "clear",
    STATUS: "status",
    SYNC_READ: "sync_read",
    SYNC_WRITE: "sync_write",
    FAST_SYNC_READ: "fast_sync_read",
    BULK_READ: "bulk_read",
    BULK_WRITE: "bulk_write",
    FAST_BULK_READ: "fast_bulk_read",
}

# Status packet error byte: bit 7 is the hardware-alert flag, bits 0..6 an error number.
ERR_NONE = 0
ERR_RESULT_FAIL = 1
ERR_INSTRUCTION = 2
ERR_CRC = 3
ERR_DATA_RANGE = 4
ERR_DATA_LENGTH = 5
ERR_DATA_LIMIT = 6
ERR_ACCESS = 7
ERR_ALERT = 0x80

ERROR_NAMES = {
    ERR_RESULT_FAIL: "result fail",
    ERR_INSTRUCTION: "instruction error",
    ERR_CRC: "CRC error",
    ERR_DATA_RANGE: "data range error",
    ERR_DATA_LENGTH: "data length error",
    ERR_DATA_LIMIT: "data limit error",
    ERR_ACCESS: "access error",
}


def _make_crc_table(poly: int = 0x8005) -> tuple[int, ...]:
    """The 256-entry MSB-first table of CRC-16 with generator ``poly``."""
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ poly) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _make_crc_table()


def crc16(data: bytes | bytearray, crc: int = 0) -> int:
    """CRC-16 of Protocol 2.0 (poly 0x8005, init 0, MSB first) of ``data``."""
    for b in data:
        crc = ((crc << 8) ^ _CRC_TABLE[((crc >> 8) ^ b) & 0xFF]) & 0xFFFF
    return crc


def stuff(body: bytes) -> bytes:
    """Byte-stuff an instruction+parameter field: each ``FF FF FD`` becomes ``FF FF FD FD``."""
    out = bytearray()
    for b in body:
        out.append(b)
        if b == 0xFD and len(out) >= 3 and out[-3] == 0xFF and out[-2] == 0xFF:
            out.append(0xFD)
    return bytes(out)


def unstuff(body: bytes) -> bytes:
    """Undo :func:`stuff` (drop the ``FD`` that follows each ``FF FF FD``)."""
    out = bytearray()
    i = 0
    while i < len(body):
        b = body[i]
        out.append(b)
        if (
            b == 0xFD
            and len(out) >= 3
            and out[-3] == 0xFF
            and out[-2] == 0xFF
            and i + 1 < len(body)
            and body[i + 1] == 0xFD
        ):
            i += 1  # skip the stuffing byte
        i += 1
    return bytes(out)


def encode_packet(dxl_id: int, instruction: int, params: bytes = b"") -> bytes:
    """A complete packet (header, stuffing, length, CRC) with ``instruction`` and ``params``."""
    if not 0 <= dxl_id <= 0xFF:
        raise ValueError(f"Dynamixel ID must be in 0..255, got {dxl_id}")
    body = stuff(bytes((instruction,)) + bytes(params))
    length = len(body) + 2
    head = HEADER + bytes((dxl_id, length & 0xFF, length >> 8))
    crc = crc16(head + body)
    return head + body + bytes((crc & 0xFF, crc >> 8))


def encode_status(dxl_id: int, error: int = 0, params: bytes = b"") -> bytes:
    """A status packet (instruction 0x55) with the ``error`` byte and ``params``."""
    return encode_packet(dxl_id, STATUS, bytes((error & 0xFF,)) + bytes(params))


@dataclass(frozen=True)
class Packet:
    """One decoded packet (stuffing removed)."""

    dxl_id: int
    instruction: int
    params: bytes
    crc_ok: bool = True

    @property
    def name(self) -> str:
        return INSTRUCTION_NAMES.get(self.instruction, f"0x{self.instruction:02X}")


def decode_packet(raw: bytes) -> Packet:
    """Decode exactly one complete packet; raises ``ValueError`` on a malformed packet.

    A CRC mismatch does not raise: the result has ``crc_ok=False`` (the servo must answer it
    with a CRC error status, so the caller needs the ID).
    """
    if len(raw) < 10 or raw[:4] != HEADER:
        raise ValueError(f"not a Protocol 2.0 packet: {raw[:8].hex(' ')}")
    length = raw[5] | (raw[6] << 8)
    if len(raw) != 7 + length or length < 3:
        raise ValueError(f"packet length field {length} does not match {len(raw)} bytes")
    crc = raw[-2] | (raw[-1] << 8)
    body = unstuff(raw[7:-2])
    return Packet(raw[4], body[0], bytes(body[1:]), crc16(raw[:-2]) == crc)


class PacketParser:
    """Incremental parser of a byte stream into packets (resynchronises on the header).

    ``feed(data)`` returns the packets completed by ``data``. Bytes before a header are
    dropped and counted in ``dropped_bytes``; ``crc_errors`` counts packets with a bad CRC
    (they are still returned, with ``crc_ok=False``).
    """

    MAX_LENGTH = 1024  # larger length fields are treated as garbage (as the SDK does)

    def __init__(self) -> None:
        self._buf = bytearray()
        self.dropped_bytes = 0
        self.crc_errors = 0

    def reset(self) -> None:
        self._buf.clear()

    def feed(self, data: bytes) -> list[Packet]:
        self._buf.extend(data)
        return list(self._drain())

    def _drain(self) -> Iterator[Packet]:
        buf = self._buf
        while True:
            start = buf.find(HEADER[:3])
            if start < 0:
                # keep a possible partial header at the end
                keep = 2 if buf.endswith(b"\xff\xff") else (1 if buf.endswith(b"\xff") else 0)
                self.dropped_bytes += len(buf) - keep
                del buf[: len(buf) - keep]
                return
            if start:
                self.dropped_bytes += start
                del buf[:start]
            if len(buf) < 7:
                return
            if buf[3] != 0x00:  # FF FF FD FD is stuffing, not a header; skip it
                self.dropped_bytes += 1
                del buf[:1]
                continue
            length = buf[5] | (buf[6] << 8)
            if length < 3 or length > self.MAX_LENGTH:
                self.dropped_bytes += 1
                del buf[:1]
                continue
            if len(buf) < 7 + length:
                return
            raw = bytes(buf[: 7 + length])
            del buf[: 7 + length]
            pkt = decode_packet(raw)
            if not pkt.crc_ok:
                self.crc_errors += 1
            yield pkt


def u16(v: int) -> bytes:
    return int(v & 0xFFFF).to_bytes(2, "little")


def u32(v: int) -> bytes:
    return int(v & 0xFFFFFFFF).to_bytes(4, "little")


def le_uint(data: bytes) -> int:
    return int.from_bytes(data, "little", signed=False)


def le_int(data: bytes) -> int:
    return int.from_bytes(data, "little", signed=True)


def split_id_blocks(params: bytes, block: int) -> Optional[list[bytes]]:
    """Split ``params`` into blocks of ``block`` bytes; ``None`` if the size does not divide."""
    if block <= 0 or len(params) % block:
        return None
    return [params[i : i + block] for i in range(0, len(params), block)]
