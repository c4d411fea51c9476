package dev.tributary.examples;

import java.time.Duration;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.TimeWindows;

/**
 * Each vehicle's positions joined with its latest reading, and its positions counted per minute
 * of event time, from the topics a Tributary gateway writes.
 *
 * <p>Both input topics are keyed by device id with the gateway's partitioner (Java's murmur2), so
 * they are co-partitioned when they have the same number of partitions: the join needs no
 * repartitioning. The record timestamp is the event time, so the windows are event-time windows.
 * Values stay the gateway's JSON text: the join wraps them, it does not parse them.
 */
public final class Enrich {
    private Enrich() {}

    /** How late a position may arrive (behind the newest seen in its partition) and still count. */
    public static final Duration GRACE = Duration.ofHours(6);

    /** The topology: {@code enriched} gets {"position":...,"reading":...} for each position of a
     * device with a reading; {@code perMinute} gets "device@windowStartMs" = positions counted. */
    public static Topology topology(String readings, String positions, String enriched, String perMinute) {
        StreamsBuilder builder = new StreamsBuilder();
        KTable<String, String> latest = builder.table(readings, Consumed.with(Serdes.String(), Serdes.String()));
        KStream<String, String> fixes = builder.stream(positions, Consumed.with(Serdes.String(), Serdes.String()));
        fixes.join(latest, (position, reading) -> "{\"position\":" + position + ",\"reading\":" + reading + "}")
            .to(enriched, Produced.with(Serdes.String(), Serdes.String()));
        fixes.groupByKey()
            // A generous grace: one partition holds many devices, and a device that buffered
            // through an outage (or the gateway's spool through a Kafka outage) arrives hours
            // behind the others. With no grace its positions would be dropped as late.
            .windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofMinutes(1), GRACE))
            .count()
            .toStream()
            .map((window, count) -> KeyValue.pair(window.key() + "@" + window.window().start(), count.toString()))
            .to(perMinute, Produced.with(Serdes.String(), Serdes.String()));
        return builder.build();
    }

    /** Runs until stopped: Enrich BOOTSTRAP READINGS POSITIONS ENRICHED PER_MINUTE [APPLICATION_ID]. */
    public static void main(String[] args) throws InterruptedException {
        if (args.length < 5) {
            System.err.println("usage: Enrich BOOTSTRAP READINGS POSITIONS ENRICHED PER_MINUTE [APPLICATION_ID]");
            System.exit(64);
        }
        Properties props = new Properties();
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, args.length > 5 ? args[5] : "tributary-enrich");
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        // Committed records only: unchanged when the gateway forwards with transactions.
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.ISOLATION_LEVEL_CONFIG), "read_committed");
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 1000);
        props.put(StreamsConfig.STATE_DIR_CONFIG, System.getProperty("java.io.tmpdir") + "/tributary-streams");
        KafkaStreams streams = new KafkaStreams(topology(args[1], args[2], args[3], args[4]), props);
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(Duration.ofSeconds(10));
            stopped.countDown();
        }));
        streams.start();
        stopped.await();
    }
}
