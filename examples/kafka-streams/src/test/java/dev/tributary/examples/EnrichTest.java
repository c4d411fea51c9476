package dev.tributary.examples;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.time.Instant;
import java.util.Map;
import java.util.Properties;

import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.TestInputTopic;
import org.apache.kafka.streams.TestOutputTopic;
import org.apache.kafka.streams.TopologyTestDriver;
import org.junit.jupiter.api.Test;

class EnrichTest {
    private static final String READING = "{\"device_id\":\"truck-1\",\"seq\":1,\"kind\":\"reading\",\"values\":[{\"name\":\"fuel\",\"value\":61.5,\"unit\":\"%\"}]}";

    private static String position(int seq) {
        return "{\"device_id\":\"truck-1\",\"seq\":" + seq + ",\"kind\":\"position\",\"lat\":52.5,\"lon\":13.4}";
    }

    @Test
    void positionsAreJoinedWithTheLatestReadingAndCountedPerMinute() {
        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, "test");
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, "unused:9092");
        try (TopologyTestDriver driver = new TopologyTestDriver(Enrich.topology("r", "p", "e", "m"), props)) {
            TestInputTopic<String, String> readings = driver.createInputTopic("r", new StringSerializer(), new StringSerializer());
            TestInputTopic<String, String> positions = driver.createInputTopic("p", new StringSerializer(), new StringSerializer());
            TestOutputTopic<String, String> enriched = driver.createOutputTopic("e", new StringDeserializer(), new StringDeserializer());
            TestOutputTopic<String, String> perMinute = driver.createOutputTopic("m", new StringDeserializer(), new StringDeserializer());
            Instant t = Instant.parse("2026-12-07T10:00:00Z");
            // A position before any reading has nothing to join with.
            positions.pipeInput("truck-1", position(1), t);
            readings.pipeInput("truck-1", READING, t.plusSeconds(1));
            positions.pipeInput("truck-1", position(2), t.plusSeconds(30));
            positions.pipeInput("truck-1", position(3), t.plusSeconds(70));
            // Another truck in the same partition, hours behind (it buffered through an outage):
            // still counted in its own minute.
            positions.pipeInput("truck-2", position(1), t.minusSeconds(3 * 3600));
            assertEquals(2, enriched.getQueueSize());
            assertEquals("{\"position\":" + position(2) + ",\"reading\":" + READING + "}", enriched.readValue());
            Map<String, String> counts = perMinute.readKeyValuesToMap();
            long minute = t.toEpochMilli();
            assertEquals("2", counts.get("truck-1@" + minute));
            assertEquals("1", counts.get("truck-1@" + (minute + 60_000)));
            assertEquals("1", counts.get("truck-2@" + (minute - 3 * 3_600_000)));
        }
    }
}
