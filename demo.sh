#!/usr/bin/env bash
# The main job on embedded defaults, no Kafka needed: builds Tributary, starts the gateway with
# config/gateway.toml (file sink under ./data), runs the simulator's default scenario against it
# (environment stations and trucks over TCP, machines and cars over MQTT QoS 1), stops the
# gateway (which prints what was received, spooled and forwarded per topic), and checks the
# sink against what the simulator sent with `tributary-sim verify`.
set -euo pipefail
cd "$(dirname "$0")"
DEVICES=${DEVICES:-100}
EVENTS=${EVENTS:-200}

echo "==> Building (the first build compiles librdkafka and SQLite: a few minutes)"
cargo build --bins --locked
bin=target/debug

# Each demo starts from an empty ./data, so the check below sees this run's events only; an
# earlier one is kept, renamed, never deleted.
if [ -e data ]; then
  previous="data.$(date +%Y%m%d-%H%M%S)"
  echo "==> Keeping the previous ./data as ./$previous"
  mv data "$previous"
fi

echo "==> Starting the gateway: TCP on :7878, MQTT on :1883, spool and sink in ./data"
"$bin/tributary" run --config config/gateway.toml &
gateway=$!
trap 'kill "$gateway" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if (exec 3<>/dev/tcp/127.0.0.1/7878) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then break; fi
  sleep 0.1
done

echo "==> $DEVICES simulated devices x $EVENTS events (config/sim.toml: stations, machines, trucks, cars)"
"$bin/tributary-sim" run --devices "$DEVICES" --events "$EVENTS" --manifest data/run.json

echo "==> Stopping the gateway (SIGTERM: drain, then the summary)"
kill -TERM "$gateway"
wait "$gateway"
trap - EXIT
echo
echo "==> The file sink (one JSON line per message, as a Kafka consumer would see it):"
wc -l data/sink/*.jsonl
tail -n 1 data/sink/telemetry.positions.jsonl
echo
echo "==> Checking the sink against what was sent: nothing missing, no duplicates, in order"
"$bin/tributary-sim" verify --manifest data/run.json --file-sink data/sink
