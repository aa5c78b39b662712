//! Order-preserving integer keys for float32 scores, and the radix sorts
//! that order a class's pixels once.
//!
//! A finite f32 maps to a u32 whose unsigned order is the float order
//! (flip all bits of negatives, the sign bit of positives), with -0.0 and
//! +0.0 given the same key because they compare equal as thresholds. An LSD
//! radix sort of u32 keys takes four passes of 8 bits (fewer: a digit that
//! all keys share, such as the exponent byte of maps in a narrow range, is
//! skipped); measured about twice as fast as `sort_unstable` and than
//! 11-bit digits on 10^7 keys (the 256-bucket scatter stays in L1).

/// The sortable key of a finite `x` (NaN must be rejected before).
#[inline]
pub fn key(x: f32) -> u32 {
    // -0.0 == 0.0 as a threshold: give both the key of +0.0.
    let bits = if x == 0.0 { 0 } else { x.to_bits() };
    if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

/// The float of a key made by [`key`].
#[inline]
pub fn value(k: u32) -> f32 {
    let bits = if k & 0x8000_0000 != 0 { k & 0x7fff_ffff } else { !k };
    f32::from_bits(bits)
}

const BITS: u32 = 8;
const PASSES: usize = 4;
const BUCKETS: usize = 1 << BITS;
const MASK: u32 = (BUCKETS - 1) as u32;

/// Sorts u32 keys ascending (LSD radix, 8-bit digits).
pub fn sort_u32(keys: &mut Vec<u32>) {
    radix(keys, |k| k);
}

/// Sorts u64 items ascending by their upper 32 bits (the key), carrying the
/// lower 32 bits (a payload such as a region id) along. Stable.
pub fn sort_u64_by_high(items: &mut Vec<u64>) {
    radix(items, |x| (x >> 32) as u32);
}

fn radix<T: Copy + Default>(items: &mut Vec<T>, key_of: impl Fn(T) -> u32) {
    if items.len() < 2 {
        return;
    }
    if items.len() < 256 {
        items.sort_by_key(|&x| key_of(x));
        return;
    }
    // All digit histograms in one read.
    let mut hist = vec![[0usize; BUCKETS]; PASSES];
    for &x in items.iter() {
        let k = key_of(x);
        for (pass, h) in hist.iter_mut().enumerate() {
            h[((k >> (pass as u32 * BITS)) & MASK) as usize] += 1;
        }
    }
    let mut scratch = vec![T::default(); items.len()];
    let n = items.len();
    for (pass, h) in hist.iter().enumerate() {
        // A digit shared by every item orders nothing: skip the pass.
        if h.contains(&n) {
            continue;
        }
        let mut offsets = [0usize; BUCKETS];
        let mut sum = 0;
        for (o, &c) in offsets.iter_mut().zip(h.iter()) {
            *o = sum;
            sum += c;
        }
        let shift = pass as u32 * BITS;
        for &x in items.iter() {
            let d = ((key_of(x) >> shift) & MASK) as usize;
            scratch[offsets[d]] = x;
            offsets[d] += 1;
        }
        std::mem::swap(items, &mut scratch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_preserve_order_and_round_trip() {
        let xs = [f32::NEG_INFINITY, -3.5, -1e-30, -f32::MIN_POSITIVE, 0.0, 1e-45, 0.1, 1.0, 3.4e38, f32::INFINITY];
        for w in xs.windows(2) {
            assert!(key(w[0]) < key(w[1]), "{} {}", w[0], w[1]);
        }
        for &x in &xs {
            assert_eq!(value(key(x)), x);
        }
        assert_eq!(key(-0.0), key(0.0));
    }

    #[test]
    fn radix_sorts_like_a_comparison_sort() {
        let mut state = 12345u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut keys: Vec<u32> = (0..10_000).map(|_| next() as u32).collect();
        let mut expected = keys.clone();
        expected.sort();
        sort_u32(&mut keys);
        assert_eq!(keys, expected);

        // Stability and payload: equal keys keep their input order.
        let mut items: Vec<u64> = (0..5_000u64).map(|i| ((next() % 50) << 32) | i).collect();
        let mut expected = items.clone();
        expected.sort_by_key(|x| x >> 32);
        sort_u64_by_high(&mut items);
        assert_eq!(items, expected);
    }
}
