"""An independent check of what the gateway wrote, with kafka-python (not librdkafka).

    check_kafka.py BROKERS MANIFEST.json TOPIC [TOPIC ...] [--read-committed]

MANIFEST is the simulator's manifest: per device, the first seq it sent and the highest seq
the gateway acknowledged to it. The check reads every partition of the topics from the start
to its end offset (the high watermark, or the last stable offset when reading committed), and
prints one JSON object:

- acknowledged: events the gateway acknowledged to a device (first_seq..=acked_up_to)
- found: acknowledged events present in Kafka at least once
- missing: acknowledged events not in Kafka (the first few are listed in missing_sample)
- duplicates: records whose event-id was already read (each carries the same event-id, and
  the check fails a duplicate whose value differs from the first copy: different_copies)
- out_of_order: records of a device that are new (not duplicates) but follow, in the
  partition, a record of the same device with a higher seq
- split_devices: devices whose records are in more than one partition
- wrong_key: records whose key is not the value's device_id
- records: every record read

Exit 0 always when the topics could be read; the test decides what is acceptable.
"""

import json
import sys
import time

from kafka import KafkaConsumer, TopicPartition


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    read_committed = "--read-committed" in sys.argv
    brokers, manifest_path, topics = args[0], args[1], args[2:]
    manifest = json.load(open(manifest_path))
    consumer = KafkaConsumer(
        bootstrap_servers=brokers.split(","),
        enable_auto_commit=False,
        group_id=None,
        isolation_level="read_committed" if read_committed else "read_uncommitted",
        consumer_timeout_ms=1000,
        request_timeout_ms=30000,
    )
    partitions = []
    deadline = time.time() + 60
    for topic in topics:
        while True:
            ps = consumer.partitions_for_topic(topic)
            if ps:
                break
            if time.time() > deadline:
                raise SystemExit(f"no partitions for {topic}")
            time.sleep(0.5)
        partitions += [TopicPartition(topic, p) for p in sorted(ps)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    end = consumer.end_offsets(partitions)

    seen = {}  # event-id -> value bytes of its first copy
    max_seq = {}  # device -> highest seq read so far
    partition_of = {}  # device -> set of (topic, partition)
    stats = dict(records=0, duplicates=0, different_copies=0, out_of_order=0, wrong_key=0)
    done = {tp for tp in partitions if end[tp] == 0}
    idle_since = time.time()
    while len(done) < len(partitions):
        batch = consumer.poll(timeout_ms=1000, max_records=5000)
        if not batch:
            if time.time() - idle_since > 120:
                raise SystemExit(f"stuck reading: {len(done)} of {len(partitions)} partitions done")
            for tp in partitions:
                if consumer.position(tp) >= end[tp]:
                    done.add(tp)
            continue
        idle_since = time.time()
        for tp, records in batch.items():
            for m in records:
                if m.offset >= end[tp]:
                    continue
                stats["records"] += 1
                value = json.loads(m.value)
                device, seq = value["device_id"], value["seq"]
                headers = {k: v.decode() for k, v in (m.headers or [])}
                event_id = headers.get("event-id", f"{device}:{seq}")
                if m.key is None or m.key.decode() != device:
                    stats["wrong_key"] += 1
                partition_of.setdefault(device, set()).add((tp.topic, tp.partition))
                if event_id in seen:
                    stats["duplicates"] += 1
                    if seen[event_id] != m.value:
                        stats["different_copies"] += 1
                    continue
                seen[event_id] = m.value
                if seq < max_seq.get(device, -1):
                    stats["out_of_order"] += 1
                max_seq[device] = max(seq, max_seq.get(device, -1))
            if consumer.position(tp) >= end[tp]:
                done.add(tp)

    acknowledged = found = 0
    missing = []
    for d in manifest["devices"]:
        if d.get("acked_up_to") is None:
            continue
        for seq in range(d["first_seq"], d["acked_up_to"] + 1):
            acknowledged += 1
            if f"{d['id']}:{seq}" in seen:
                found += 1
            else:
                missing.append(f"{d['id']}:{seq}")
    print(json.dumps(dict(
        acknowledged=acknowledged,
        found=found,
        missing=len(missing),
        missing_sample=missing[:10],
        split_devices=sum(1 for p in partition_of.values() if len(p) > 1),
        **stats,
    )))


if __name__ == "__main__":
    main()
