"""A Modbus device for the tests: pymodbus's server (an independent implementation), over TCP or
RTU on a serial line, with registers that change while the gateway polls them.

Every value is a function of a generation `g` that advances every `--period` seconds of the
wall clock. Each
block the gateway reads in one request carries its own copy of `g`, so a test can check every
value of an event against the `g` of its block, exactly:

    holding 0      u16  g
    holding 1      i16  -100 - g
    holding 2-3    u32  70000 + g                 big words, big bytes (ABCD)
    holding 4-5    i32  -70000 - g                little words (CDAB)
    holding 6-9    u64  2**40 + g                 little bytes (BADC)
    holding 10-11  f32  g + 0.5                   little words and bytes (DCBA)
    holding 12-15  f64  -1234.5678 * (g + 1)      big
    holding 100    u16  2 * g                     (its own request: not next to the others)
    input 0        u16  400 + g                   read with scale 0.1, offset -40: g / 10
    input 1-4      i64  -(2**33) - g
    coil 0..4      bool 1 0 1 1 0                 (constant)
    discrete 0..2  bool 0 1 1                     (constant)

`VALUES` below is the same table as the gateway config the tests write and the checks they
make, in one place: --table prints it, --check reads events (JSON lines) and says which values
are not what the device held. Prints "ready" once serving.
"""

import argparse
import asyncio
import json
import struct
import sys
import time

from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

DT = ModbusClientMixin.DATATYPE

# name: (table, address, type, byte order, word order, scale, offset, value of g)
VALUES = {
    "gen": ("holding", 0, "u16", "big", "big", 1, 0, lambda g: g),
    "i16": ("holding", 1, "i16", "big", "big", 1, 0, lambda g: -100 - g),
    "u32": ("holding", 2, "u32", "big", "big", 1, 0, lambda g: 70000 + g),
    "i32": ("holding", 4, "i32", "big", "little", 1, 0, lambda g: -70000 - g),
    "u64": ("holding", 6, "u64", "little", "big", 1, 0, lambda g: 2**40 + g),
    "f32": ("holding", 10, "f32", "little", "little", 1, 0, lambda g: g + 0.5),
    "f64": ("holding", 12, "f64", "big", "big", 1, 0, lambda g: -1234.5678 * (g + 1)),
    "far": ("holding", 100, "u16", "big", "big", 1, 0, lambda g: 2 * g),
    "temp": ("input", 0, "u16", "big", "big", 0.1, -40, lambda g: 400 + g),
    "i64": ("input", 1, "i64", "big", "big", 1, 0, lambda g: -(2**33) - g),
    "coil0": ("coil", 0, "bool", "big", "big", 1, 0, lambda g: True),
    "coil1": ("coil", 1, "bool", "big", "big", 1, 0, lambda g: False),
    "coil3": ("coil", 3, "bool", "big", "big", 1, 0, lambda g: True),
    "coil4": ("coil", 4, "bool", "big", "big", 1, 0, lambda g: False),
    "di0": ("discrete", 0, "bool", "big", "big", 1, 0, lambda g: False),
    "di2": ("discrete", 2, "bool", "big", "big", 1, 0, lambda g: True),
}
COILS = [True, False, True, True, False]
DISCRETE = [False, True, True]
KINDS = {"u16": DT.UINT16, "i16": DT.INT16, "u32": DT.UINT32, "i32": DT.INT32,
         "u64": DT.UINT64, "i64": DT.INT64, "f32": DT.FLOAT32, "f64": DT.FLOAT64}


def encode(kind, byte_order, word_order, value):
    """The registers a device stores `value` in: pymodbus's conversion (words in `word_order`,
    bytes big-endian), then each register's bytes swapped for little byte order."""
    words = ModbusClientMixin.convert_to_registers(value, KINDS[kind], word_order=word_order)
    if byte_order == "little":
        words = [struct.unpack("<H", struct.pack(">H", w))[0] for w in words]
    return words


def fill(table, registers, g):
    """Writes generation g's values into a register table (holding or input)."""
    for name, (t, address, kind, byte_order, word_order, _, _, of) in VALUES.items():
        if t == table and kind != "bool":
            words = encode(kind, byte_order, word_order, of(g))
            registers[address:address + len(words)] = words


# The values read in one request each, and the value that carries that request's generation
# with how to get g back from it.
BLOCKS = {
    "gen": (["gen", "i16", "u32", "i32", "u64", "f32", "f64"], lambda v: v),
    "far": (["far"], lambda v: v / 2),
    "temp": (["temp", "i64"], lambda v: round((v + 40) / 0.1) - 400),
}


def check(events):
    """Each event's values against its blocks' generations: the names of the values that are
    not what the device held at any one generation, per event."""
    bad = []
    for event in events:
        values = {v["name"]: v["value"] for v in event["values"]}
        wrong = sorted(set(VALUES) ^ set(values))
        for carrier, (names, g_of) in BLOCKS.items():
            if carrier not in values:
                continue
            g = g_of(values[carrier])
            if g != int(g) or g < 0:
                wrong.append(carrier)
                continue
            for name in names:
                _, _, _, _, _, scale, offset, of = VALUES[name]
                expected = of(int(g)) * scale + offset
                if name in values and abs(values[name] - expected) > 1e-9 * max(1, abs(expected)):
                    wrong.append(name)
        for name, row in VALUES.items():
            if row[2] == "bool" and name in values and values[name] != float(row[7](0)):
                wrong.append(name)
        if wrong:
            bad.append({"seq": event.get("seq"), "wrong": wrong, "values": values})
    return bad


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tcp", type=int)
    parser.add_argument("--serial")
    parser.add_argument("--baud", type=int, default=19200)
    parser.add_argument("--unit", type=int, default=1)
    parser.add_argument("--period", type=float, default=0.7)
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if args.table:
        rows = {n: list(v[:7]) for n, v in VALUES.items()}
        print(json.dumps(rows))
        return
    if args.check:
        events = [json.loads(line) for line in sys.stdin if line.strip()]
        print(json.dumps({"checked": len(events), "bad": check(events)}))
        return
    def generation():
        # From the wall clock, so a server started again goes on changing, not back to 0;
        # below 30000, so 2 * g and 400 + g still fit a u16.
        return int(time.time() / args.period) % 30000

    async def action(function_code, start_address, address, count, registers, set_values):
        # Reads of holding (3) and input (4) registers see the values of the generation now.
        if function_code == 3:
            fill("holding", registers, generation())
        elif function_code == 4:
            fill("input", registers, generation())
        return None

    holding = [0] * 128
    inputs = [0] * 16
    fill("holding", holding, 0)
    fill("input", inputs, 0)
    device = SimDevice(
        id=args.unit,
        simdata=(
            [SimData(0, values=COILS, datatype=DataType.BITS)],
            [SimData(0, values=DISCRETE, datatype=DataType.BITS)],
            [SimData(0, values=holding, datatype=DataType.REGISTERS)],
            [SimData(0, values=inputs, datatype=DataType.REGISTERS)],
        ),
        action=action,
    )

    async def serve():
        if args.tcp:
            server = ModbusTcpServer(device, address=("127.0.0.1", args.tcp))
        else:
            # No parity: a pseudo-terminal refuses PARENB (EINVAL), a real line would not.
            server = ModbusSerialServer(device, port=args.serial, baudrate=args.baud,
                                        parity="N", stopbits=1, bytesize=8)
        # Listening (or the serial port open) before "ready"; a failure ends the script.
        await server.serve_forever(background=True)
        print("ready", flush=True)
        await server.serving

    asyncio.run(serve())


if __name__ == "__main__":
    sys.exit(main())
