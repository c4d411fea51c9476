"""A Sparkplug B edge node with one device, built on pysparkplug (an independent implementation
of Sparkplug B from PyPI): its Client speaks MQTT 3.1.1 through paho-mqtt, and its payload
classes (NBirth, DBirth, NData, DData, DDeath, NDeath) encode the protobuf.

Two connections, run as two phases of this script:
- `a`: NBIRTH (bdSeq 0; a Float with an engineering unit, a Boolean, a UInt32, an Int16, a
  String), DBIRTH, NDATA and DDATA by alias only, a historical metric, then a seq gap and an
  alias no birth defined; then the process ends without DISCONNECT, so the broker stores the
  will: NDEATH with bdSeq 0.
- `b`: a new session (bdSeq 1): NBIRTH, NDATA, DDEATH, then an NDEATH published and a clean
  DISCONNECT.
- `intruder`: born as itself, then an NBIRTH under another edge node's id (Line4); with
  SPARKPLUG_PASSWORD set it authenticates as Line3, and the second is not its to publish.

Prints the events the gateway must have made of what it published, one JSON object a line:
{"device", "message", "values": {name: value}, "units": {name: unit}, "historical", "stale",
"headers"}.
"""

import json
import os
import sys
import time

from pysparkplug import (Client, DataType, DBirth, DData, DDeath, Message, MessageType, Metric,
                         NBirth, NData, NDeath, QoS, Topic)
from pysparkplug._protobuf import sparkplug_b_pb2

PORT = int(sys.argv[1])
PHASE = sys.argv[2]
GROUP, NODE, DEVICE = "Plant1", "Line3", "Press7"
NODE_KEY, DEVICE_KEY = f"{GROUP}.{NODE}", f"{GROUP}.{NODE}.{DEVICE}"
EXPECTED = []


def expect(device, message, values, units=None, historical=False, stale=None, headers=None):
    EXPECTED.append({"device": device, "message": message, "values": values,
                     "units": units or {}, "historical": historical, "stale": stale,
                     "headers": headers or {}})


class Raw:
    """Bytes pysparkplug encoded, then given a metric property it has no API for."""

    def __init__(self, data):
        self.data = data

    def encode(self, include_dtypes=False):
        return self.data


def topic(kind, device=None):
    return Topic(message_type=kind, group_id=GROUP, edge_node_id=NODE, device_id=device)


def send(client, kind, payload, device=None):
    client.publish(Message(topic=topic(kind, device), payload=payload, qos=QoS.AT_MOST_ONCE,
                           retain=False), include_dtypes=True)
    time.sleep(0.05)


def with_unit(payload, metric_name, unit):
    """The payload as pysparkplug encodes it, with an `engUnit` property on one metric."""
    pb = sparkplug_b_pb2.Payload()
    pb.ParseFromString(payload.encode(include_dtypes=True))
    for m in pb.metrics:
        if m.name == metric_name:
            m.properties.keys.append("engUnit")
            value = m.properties.values.add()
            value.type = DataType.STRING
            value.string_value = unit
    return Raw(pb.SerializeToString())


def now():
    return int(time.time() * 1000)


def connected(bd_seq):
    # With SPARKPLUG_PASSWORD set, the node authenticates as its edge node id.
    password = os.environ.get("SPARKPLUG_PASSWORD")
    client = Client(client_id=NODE, username=NODE if password else None, password=password)
    will = NDeath(timestamp=now(), bd_seq_metric=Metric(
        timestamp=now(), name="bdSeq", datatype=DataType.INT64, value=bd_seq))
    client.set_will(Message(topic=topic(MessageType.NDEATH), payload=will, qos=QoS.AT_MOST_ONCE,
                            retain=False))
    client.connect("127.0.0.1", port=PORT, blocking=False)
    deadline = time.time() + 10
    while not client._client.is_connected():
        if time.time() > deadline:
            sys.exit("no connection to the gateway")
        time.sleep(0.02)
    return client


def m(name=None, alias=None, dt=DataType.DOUBLE, value=None, ts=None, historical=False):
    return Metric(timestamp=ts if ts is not None else now(), name=name, alias=alias, datatype=dt,
                  value=value, is_historical=historical)


def born(client, bd_seq, seq):
    birth = NBirth(timestamp=now(), seq=seq, metrics=(
        m("bdSeq", None, DataType.INT64, bd_seq),
        m("Inputs/Temperature", 1, DataType.FLOAT, 21.5),
        m("Outputs/Run", 2, DataType.BOOLEAN, True),
        m("Count", 4, DataType.UINT32, 7),
        m("Offset", 5, DataType.INT16, -3),
        m("Status", 3, DataType.STRING, "ok"),
    ))
    send(client, MessageType.NBIRTH, with_unit(birth, "Inputs/Temperature", "Cel"))
    expect(NODE_KEY, "NBIRTH",
           {"online": 1, "bdSeq": bd_seq, "Inputs.Temperature": 21.5, "Outputs.Run": 1,
            "Count": 7, "Offset": -3},
           units={"Inputs.Temperature": "Cel"}, headers={"metric.Status": "ok"})


def phase_a():
    client = connected(0)
    born(client, 0, 0)
    send(client, MessageType.DBIRTH, DBirth(timestamp=now(), seq=1, metrics=(
        m("Pressure", 10, DataType.DOUBLE, 3.25),
        m("Strokes", 11, DataType.UINT64, 1000),
    )), DEVICE)
    expect(DEVICE_KEY, "DBIRTH", {"online": 1, "Pressure": 3.25, "Strokes": 1000})
    # Data by alias alone, as Sparkplug sends it after the births.
    send(client, MessageType.NDATA, NData(timestamp=now(), seq=2, metrics=(
        m(alias=1, dt=DataType.FLOAT, value=22.0), m(alias=4, dt=DataType.UINT32, value=8))))
    expect(NODE_KEY, "NDATA", {"Inputs.Temperature": 22.0, "Count": 8},
           units={"Inputs.Temperature": "Cel"})
    earlier = now() - 60_000
    send(client, MessageType.DDATA, DData(timestamp=now(), seq=3, metrics=(
        m(alias=10, value=3.5),
        m(alias=10, value=3.0, ts=earlier, historical=True))), DEVICE)
    expect(DEVICE_KEY, "DDATA", {"Pressure": 3.0}, historical=True)
    expect(DEVICE_KEY, "DDATA", {"Pressure": 3.5})
    # seq 4 never sent: a gap; from here the node's data is flagged until its next birth.
    send(client, MessageType.NDATA, NData(timestamp=now(), seq=5, metrics=(
        m(alias=1, dt=DataType.FLOAT, value=23.0),)))
    expect(NODE_KEY, "NDATA", {"Inputs.Temperature": 23.0}, units={"Inputs.Temperature": "Cel"},
           stale="seq-gap")
    send(client, MessageType.NDATA, NData(timestamp=now(), seq=6, metrics=(
        m(alias=99, value=1.25),)))
    expect(NODE_KEY, "NDATA", {"alias_99": 1.25}, stale="seq-gap")
    # The will: the node drops off without DISCONNECT.
    expect(NODE_KEY, "NDEATH", {"online": 0, "bdSeq": 0})
    print_expected()
    time.sleep(1.0)
    os._exit(0)


def phase_b():
    client = connected(1)
    born(client, 1, 0)
    send(client, MessageType.NDATA, NData(timestamp=now(), seq=1, metrics=(
        m(alias=1, dt=DataType.FLOAT, value=24.0),)))
    expect(NODE_KEY, "NDATA", {"Inputs.Temperature": 24.0}, units={"Inputs.Temperature": "Cel"})
    send(client, MessageType.DDEATH, DDeath(timestamp=now(), seq=2), DEVICE)
    # The device's birth was in the other session: this node's current one never had it, so
    # the death is the device's last word; its events carry no stale flag since the node was
    # born in this session.
    expect(DEVICE_KEY, "DDEATH", {"online": 0})
    send(client, MessageType.NDEATH, NDeath(timestamp=now(), bd_seq_metric=Metric(
        timestamp=now(), name="bdSeq", datatype=DataType.INT64, value=1)))
    expect(NODE_KEY, "NDEATH", {"online": 0, "bdSeq": 1})
    time.sleep(0.5)
    client.disconnect()
    print_expected()


def phase_intruder():
    """Born as itself, then an NBIRTH under another edge node's id, which the ACL refuses."""
    global NODE
    client = connected(0)
    born(client, 0, 0)
    NODE = "Line4"
    send(client, MessageType.NBIRTH, NBirth(timestamp=now(), seq=0, metrics=(
        m("bdSeq", None, DataType.INT64, 0), m("Inputs/Temperature", 1, DataType.FLOAT, 99.0))))
    time.sleep(0.5)
    client.disconnect()
    print_expected()


def print_expected():
    for e in EXPECTED:
        print(json.dumps(e), flush=True)


if __name__ == "__main__":
    {"a": phase_a, "b": phase_b, "intruder": phase_intruder}[PHASE]()
