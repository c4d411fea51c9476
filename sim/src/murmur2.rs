//! Kafka's default partitioner for keyed records: `murmur2(key) & 0x7fffffff % partitions`,
//! as the Java client, kafka-python and librdkafka's `murmur2_random` compute it.

/// MurmurHash2 with Kafka's seed, as `org.apache.kafka.common.utils.Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        for (i, b) in rest.iter().enumerate().rev() {
            h ^= u32::from(*b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for `key` among `partitions`.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    if partitions <= 0 {
        return 0;
    }
    (murmur2(key) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_java_clients_test_vectors() {
        // From Kafka's UtilsTest.testMurmur2, confirmed with kafka-python's murmur2.
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
        assert_eq!(murmur2(b"abc"), 479_470_107);
        assert_eq!(murmur2(b"sim-env-3"), 12_182_598);
        assert_eq!(murmur2(b""), 275_646_681);
    }

    #[test]
    fn partitions_are_non_negative_and_in_range() {
        for key in [&b"21"[..], b"foobar", b"abc", b""] {
            let p = partition_for(key, 7);
            assert!((0..7).contains(&p), "{p}");
        }
        assert_eq!(partition_for(b"foobar", 0), 0);
    }
}
