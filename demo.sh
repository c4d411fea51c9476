#!/usr/bin/env bash
# The main job on embedded defaults, no Kafka needed: builds Tributary, starts the gateway with
# config/gateway.toml (file sink under ./data), runs the simulator against it over TCP and MQTT,
# stops the gateway (which prints what was received, spooled and forwarded per topic), and
# shows what reached the sink.
set -euo pipefail
cd "$(dirname "$0")"
DEVICES=${DEVICES:-50}
EVENTS=${EVENTS:-200}

echo "==> Building (the first build compiles librdkafka and SQLite: a few minutes)"
cargo build --bins --locked
bin=target/debug

echo "==> Starting the gateway: TCP on :7878, MQTT on :1883, spool and sink in ./data"
"$bin/tributary" run --config config/gateway.toml &
gateway=$!
trap 'kill "$gateway" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if (exec 3<>/dev/tcp/127.0.0.1/7878) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then break; fi
  sleep 0.1
done

echo "==> $DEVICES devices x $EVENTS events over TCP"
"$bin/tributary-sim" --transport tcp --gateway 127.0.0.1:7878 --devices "$DEVICES" --events "$EVENTS" --prefix tcp
echo "==> $DEVICES devices x $EVENTS events over MQTT (QoS 1)"
"$bin/tributary-sim" --transport mqtt --gateway 127.0.0.1:1883 --devices "$DEVICES" --events "$EVENTS" --prefix mqtt

echo "==> Stopping the gateway (SIGTERM: drain, then the summary)"
kill -TERM "$gateway"
wait "$gateway"
trap - EXIT
echo
echo "==> The file sink (one JSON line per message, as a Kafka consumer would see it):"
wc -l data/sink/*.jsonl
head -n 1 data/sink/telemetry.positions.jsonl
