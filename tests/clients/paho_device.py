"""A device on paho-mqtt (PyPI), as the end-to-end tests drive it.

Connects to a gateway over MQTT 5, 3.1.1 or 3.1 and prints what the gateway answered, one JSON
line each:
  {"connack": {"rc": 0, "session_present": false, "props": {"ReceiveMaximum": 32, ...}}}
  {"i": 0, "rc": 0, "name": "Success", "reason": null}          (one per publish, in plan mode)
  {"disconnect": 151, "reason": "..."}                          (if the gateway disconnects)
  {"done": {"acked": [1, 2, ...], "busy": 12, "refused": 0, "disconnects": 0}}   (flood mode)

Plan mode (--plan FILE): publishes each entry of a JSON list
  {"topic": ..., "payload": "...", "qos": 1, "user": [["k", "v"]], "content_type": ..., "utf8": true}
and waits for every answer.

Flood mode (--flood N --device D): publishes readings with seqs 1..N on devices/D/readings as
fast as the gateway's Receive Maximum lets it (QoS 1). An answer of "quota exceeded" (0x97) or
"unspecified error" (0x80) means "busy, resend later": the seq is resent after a back-off. Any
other failure code means "refused, do not resend": it is dropped (counted as refused). With
--acked FILE each acknowledged seq is appended to FILE as it is acknowledged, so a test that
kills the gateway knows what was acknowledged before.
"""

import argparse
import heapq
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

BUSY = {0x97, 0x80}


def say(obj):
    print(json.dumps(obj), flush=True)


def rc_value(rc):
    return rc.value if hasattr(rc, "value") else int(rc)


def props_dict(props):
    if props is None:
        return {}
    out = {}
    for name in props.names:
        if hasattr(props, name.replace(" ", "")):
            value = getattr(props, name.replace(" ", ""))
            out[name.replace(" ", "")] = value if not isinstance(value, bytes) else value.decode()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--version", choices=["5", "311", "31"], default="5")
    ap.add_argument("--client-id", default="")
    ap.add_argument("--username")
    ap.add_argument("--password")
    ap.add_argument("--plan")
    ap.add_argument("--flood", type=int, default=0)
    ap.add_argument("--device", default="")
    ap.add_argument("--acked")
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--keepalive", type=int, default=30)
    ap.add_argument("--session-expiry", type=int,
                    help="MQTT 5: connect with Clean Start 0 and this Session Expiry Interval")
    args = ap.parse_args()

    protocol = {"5": mqtt.MQTTv5, "311": mqtt.MQTTv311, "31": mqtt.MQTTv31}[args.version]
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=args.client_id, protocol=protocol
    )
    if args.username:
        client.username_pw_set(args.username, args.password)
    client.max_inflight_messages_set(0)  # no limit of paho's own: the gateway's grant applies

    lock = threading.Lock()
    connected = threading.Event()
    state = {"answers": {}, "mids": {}, "disconnects": 0, "gone": False}

    def on_connect(c, userdata, flags, rc, props):
        say({"connack": {"rc": rc_value(rc), "session_present": bool(flags.session_present),
                         "props": props_dict(props)}})
        receive_max = getattr(props, "ReceiveMaximum", None) if props is not None else None
        # paho does not apply the server's Receive Maximum itself: the flood does (below).
        state["receive_max"] = receive_max or 65535
        connected.set()

    def on_disconnect(c, userdata, flags, rc, props):
        with lock:
            state["disconnects"] += 1
            state["gone"] = True
        reason = getattr(props, "ReasonString", None) if props is not None else None
        say({"disconnect": rc_value(rc), "reason": reason})
        connected.set()

    def on_publish(c, userdata, mid, rc, props):
        reason = getattr(props, "ReasonString", None) if props is not None else None
        with lock:
            state["answers"][mid] = (rc_value(rc), getattr(rc, "getName", lambda: "")(), reason)

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_publish = on_publish
    if protocol == mqtt.MQTTv5 and args.session_expiry is not None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = args.session_expiry
        client.connect("127.0.0.1", args.port, keepalive=args.keepalive, clean_start=False,
                       properties=props)
    else:
        client.connect("127.0.0.1", args.port, keepalive=args.keepalive)
    client.loop_start()
    if not connected.wait(15) or state["gone"]:
        client.loop_stop()
        sys.exit(2)

    deadline = time.monotonic() + args.timeout
    if args.plan:
        with open(args.plan) as f:
            plan = json.load(f)
        for i, entry in enumerate(plan):
            props = None
            if protocol == mqtt.MQTTv5 and (entry.get("user") or entry.get("content_type")
                                            or entry.get("utf8")):
                props = Properties(PacketTypes.PUBLISH)
                if entry.get("user"):
                    props.UserProperty = [tuple(kv) for kv in entry["user"]]
                if entry.get("content_type"):
                    props.ContentType = entry["content_type"]
                if entry.get("utf8"):
                    props.PayloadFormatIndicator = 1
            payload = entry["payload"].encode("latin-1") if entry.get("raw") else entry["payload"]
            info = client.publish(entry["topic"], payload, qos=entry.get("qos", 1),
                                  properties=props)
            with lock:
                state["mids"][info.mid] = i
            # One at a time: the answers come back in the plan's order.
            while time.monotonic() < deadline:
                with lock:
                    if info.mid in state["answers"] or state["gone"]:
                        break
                time.sleep(0.01)
            with lock:
                answer = state["answers"].get(info.mid)
                gone = state["gone"]
            if answer is not None:
                rc, name, reason = answer
                say({"i": i, "rc": rc, "name": name, "reason": reason})
            if gone:
                break
    elif args.flood:
        acked_file = open(args.acked, "a") if args.acked else None
        pending = list(range(1, args.flood + 1))  # a heap: the lowest seq goes out first
        in_flight = {}
        acked, busy, refused = [], 0, 0
        topic = f"devices/{args.device}/readings"
        while time.monotonic() < deadline:
            with lock:
                gone = state["gone"]
                answers, state["answers"] = state["answers"], {}
            for mid, (rc, _name, _reason) in answers.items():
                seq = in_flight.pop(mid, None)
                if seq is None:
                    # Answered before its publish call returned: next round.
                    with lock:
                        state["answers"][mid] = (rc, _name, _reason)
                    continue
                if rc < 0x80:
                    acked.append(seq)
                    if acked_file:
                        acked_file.write(f"{seq}\n")
                        acked_file.flush()
                elif rc in BUSY:
                    busy += 1
                    heapq.heappush(pending, seq)
                else:
                    refused += 1
            if gone:
                break
            if not pending and not in_flight:
                break
            if any(answers[m][0] in BUSY for m in answers):
                time.sleep(0.2)  # told busy: back off
            while pending and len(in_flight) < state["receive_max"]:
                seq = heapq.heappop(pending)
                body = {"seq": seq, "time_ms": 1700000000000 + seq,
                        "values": [{"name": "t", "value": seq % 40, "unit": "Cel"}]}
                info = client.publish(topic, json.dumps(body), qos=1)
                in_flight[info.mid] = seq
            time.sleep(0.005)
        say({"done": {"acked": sorted(acked), "busy": busy, "refused": refused,
                      "disconnects": state["disconnects"]}})
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
