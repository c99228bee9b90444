//! Bucketing is pinned, uniform and independent between flags.

use ff_core::{BUCKETS, bucket};

#[test]
fn matches_the_independent_test_vectors() {
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("bucketing-vectors.json")).expect("vectors file parses");
    let vectors = doc["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 300);
    for v in vectors {
        let (salt, value) = (v["salt"].as_str().unwrap(), v["value"].as_str().unwrap());
        let expected = v["bucket"].as_u64().unwrap() as u32;
        assert_eq!(bucket(salt, value), expected, "salt {salt:?} value {value:?}");
        let hash = ff_core::murmur3_32(format!("{salt}:{value}").as_bytes(), 0);
        assert_eq!(u64::from(hash), v["hash"].as_u64().unwrap());
    }
}

/// Pearson's chi-square statistic of `counts` against a uniform expectation.
fn chi_square(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    let expected = total as f64 / counts.len() as f64;
    counts.iter().map(|&c| (c as f64 - expected).powi(2) / expected).sum()
}

#[test]
fn uniform_over_100000_ids() {
    let mut percent = vec![0u64; 100];
    let mut fine = vec![0u64; BUCKETS as usize];
    for i in 0..100_000 {
        let b = bucket("NEW_CHECKOUT", &format!("user-{i}"));
        percent[(b / 100) as usize] += 1;
        fine[b as usize] += 1;
    }
    // 99 degrees of freedom: the 0.1 % critical value is 148.2.
    let x = chi_square(&percent);
    assert!(x < 148.2, "chi-square over 100 groups: {x}");
    // 9,999 degrees of freedom: mean 9,999, sd ~141; allow 5 sd.
    let x = chi_square(&fine);
    assert!(x < 9_999.0 + 5.0 * 141.4, "chi-square over 10,000 buckets: {x}");
}

#[test]
fn flags_bucket_independently() {
    // Users inside 10 % of flag A should be inside 10 % of flag B about 10 % of the time.
    let (mut a, mut both) = (0u32, 0u32);
    for i in 0..100_000 {
        let id = format!("user-{i}");
        if bucket("FLAG_A", &id) < 1_000 {
            a += 1;
            if bucket("FLAG_B", &id) < 1_000 {
                both += 1;
            }
        }
    }
    let share = f64::from(both) / f64::from(a);
    assert!((0.085..0.115).contains(&share), "{both} of {a} ({share})");
}

#[test]
fn a_salt_reshuffles_and_stays_put() {
    let moved =
        (0..10_000).filter(|i| bucket("A", &format!("u{i}")) != bucket("B", &format!("u{i}"))).count();
    assert!(moved > 9_900, "{moved}");
    for i in 0..1_000 {
        let id = format!("u{i}");
        assert_eq!(bucket("A", &id), bucket("A", &id));
        assert!(bucket("A", &id) < BUCKETS);
    }
}
