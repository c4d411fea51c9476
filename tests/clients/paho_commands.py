"""A device that takes commands, on paho-mqtt (PyPI), as the end-to-end tests drive it.

Connects over MQTT 5 (or 3.1.1 with --v311), subscribes to its own commands
(devices/{id}/commands/#, QoS 1) and prints each command it receives, one JSON line each:
  {"suback": [1]}
  {"command": {...}, "topic": "...", "response_topic": "...", "correlation": "..."}
then answers it: on the command's Response Topic with its Correlation Data (MQTT 5), or on
devices/{id}/results/{command id} (3.1.1), with {"ok": true, "name": ..., "seen": N}.
It ends after --count commands (printing {"done": N}) or --timeout seconds.
With --keep-session (MQTT 5) it connects with Clean Start 0 and a Session Expiry Interval of
300 s, and when the gateway says the session is present it does not subscribe again (the
subscription is the session's), printing {"session_present": true}.
"""

import argparse
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def say(obj):
    print(json.dumps(obj), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--device", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=30)
    ap.add_argument("--v311", action="store_true")
    ap.add_argument("--filter", default=None)
    ap.add_argument("--keep-session", action="store_true")
    args = ap.parse_args()

    version = mqtt.MQTTv311 if args.v311 else mqtt.MQTTv5
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=args.device, protocol=version
    )
    seen = []
    done = threading.Event()
    lock = threading.Lock()

    def on_connect(c, userdata, flags, rc, props=None):
        if args.keep_session and flags.session_present:
            say({"session_present": True})
            return
        c.subscribe(args.filter or f"devices/{args.device}/commands/#", qos=1)

    def on_subscribe(c, userdata, mid, codes, props=None):
        say({"suback": [getattr(r, "value", r) for r in codes]})
        if all(getattr(r, "value", r) >= 0x80 for r in codes):
            done.set()

    def on_message(c, userdata, msg):
        command = json.loads(msg.payload)
        response_topic = None
        correlation = None
        p = getattr(msg, "properties", None)
        if p is not None:
            response_topic = getattr(p, "ResponseTopic", None)
            correlation = getattr(p, "CorrelationData", None)
        say(
            {
                "command": command,
                "topic": msg.topic,
                "response_topic": response_topic,
                "correlation": correlation.decode() if correlation else None,
            }
        )
        with lock:
            seen.append(command["id"])
            n = len(seen)
        answer = json.dumps({"ok": True, "name": command["name"], "seen": n})
        if args.v311:
            c.publish(f"devices/{args.device}/results/{command['id']}", answer, qos=1)
        else:
            props = Properties(PacketTypes.PUBLISH)
            if correlation:
                props.CorrelationData = correlation
            c.publish(response_topic, answer, qos=1, properties=props)
        if n >= args.count:
            done.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    if args.keep_session:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 300
        client.connect("127.0.0.1", args.port, keepalive=30, clean_start=False, properties=props)
    else:
        client.connect("127.0.0.1", args.port, keepalive=30)
    client.loop_start()
    done.wait(args.timeout)
    time.sleep(1.0)  # let the last answers be acknowledged
    say({"done": len(seen)})
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    sys.exit(main())
