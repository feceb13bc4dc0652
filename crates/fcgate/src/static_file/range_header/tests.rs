//! The Range table of RFC 9110 §14.1.2 and §14.2 (its examples on a 10,000-byte file), merging,
//! the bounds, and hostile headers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;

use super::*;

fn ranges(pairs: &[(u64, u64)]) -> RangePlan {
    RangePlan::Ranges(
        pairs
            .iter()
            .map(|&(first, last)| ByteRange { first, last })
            .collect(),
    )
}

fn plan_of(header: &str, length: u64) -> RangePlan {
    plan(header.as_bytes(), length)
}

#[test]
fn the_rfc_examples() {
    // RFC 9110 §14.1.2, a representation of length 10000.
    assert_eq!(plan_of("bytes=0-499", 10_000), ranges(&[(0, 499)]));
    assert_eq!(plan_of("bytes=500-999", 10_000), ranges(&[(500, 999)]));
    assert_eq!(plan_of("bytes=-500", 10_000), ranges(&[(9_500, 9_999)]));
    assert_eq!(plan_of("bytes=9500-", 10_000), ranges(&[(9_500, 9_999)]));
    assert_eq!(
        plan_of("bytes=0-0,-1", 10_000),
        ranges(&[(0, 0), (9_999, 9_999)])
    );
    assert_eq!(
        plan_of("bytes=0-999,4500-5499,-1000", 10_000),
        ranges(&[(0, 999), (4_500, 5_499), (9_000, 9_999)])
    );
    // Overlapping and adjacent: "500-600,601-999" and "500-700,601-999" are each one range.
    assert_eq!(
        plan_of("bytes=500-600,601-999", 10_000),
        ranges(&[(500, 999)])
    );
    assert_eq!(
        plan_of("bytes=500-700,601-999", 10_000),
        ranges(&[(500, 999)])
    );
}

#[test]
fn ends_past_the_file_are_cut_and_suffixes_longer_than_it_take_it_all() {
    assert_eq!(plan_of("bytes=5-100", 10), ranges(&[(5, 9)]));
    assert_eq!(plan_of("bytes=-100", 10), ranges(&[(0, 9)]));
    assert_eq!(plan_of("bytes=0-", 1), ranges(&[(0, 0)]));
    assert_eq!(plan_of("bytes=9-9", 10), ranges(&[(9, 9)]));
}

#[test]
fn the_unit_is_case_insensitive_and_whitespace_around_specs_is_allowed() {
    assert_eq!(plan_of("BYTES=0-1", 10), ranges(&[(0, 1)]));
    assert_eq!(plan_of("Bytes=0-1 , 4-5", 10), ranges(&[(0, 1), (4, 5)]));
    assert_eq!(plan_of("bytes=0-1,,\t,4-5,", 10), ranges(&[(0, 1), (4, 5)]));
}

#[test]
fn parts_keep_the_order_asked_for() {
    assert_eq!(plan_of("bytes=20-29,0-9", 100), ranges(&[(20, 29), (0, 9)]));
    // A merged range stands where its earliest member was.
    assert_eq!(
        plan_of("bytes=50-59,0-9,5-14", 100),
        ranges(&[(50, 59), (0, 14)])
    );
    assert_eq!(
        plan_of("bytes=50-59,0-9,40-49", 100),
        ranges(&[(40, 59), (0, 9)])
    );
}

#[test]
fn nothing_inside_the_file_is_unsatisfiable() {
    for header in [
        "bytes=10-",
        "bytes=10-20",
        "bytes=-0",
        "bytes=-0,-0",
        "bytes=10-19,-0",
        "bytes=18446744073709551615-",
        "bytes=99999999999999999999999999999999999999-",
    ] {
        assert_eq!(plan_of(header, 10), RangePlan::Unsatisfiable, "{header}");
    }
    // One satisfiable range is enough; the others are dropped.
    assert_eq!(plan_of("bytes=-0,20-30,2-3", 10), ranges(&[(2, 3)]));
}

#[test]
fn headers_that_do_not_parse_are_unsatisfiable() {
    for header in [
        "bytes=",
        "bytes= ",
        "bytes=,",
        "bytes=abc",
        "bytes=5-2",
        "bytes=-",
        "bytes=1",
        "bytes=1-2-3",
        "bytes=0-1,x",
        "bytes=--1",
        "bytes=+1-2",
        "bytes=0x10-",
        "bytes=1 - 2",
        "bytes=-1-2",
        "bytes=1-\u{0660}",
    ] {
        assert_eq!(plan_of(header, 10), RangePlan::Unsatisfiable, "{header:?}");
    }
}

#[test]
fn other_units_and_empty_files_get_the_whole_file() {
    for header in [
        "items=0-1",
        "bytes 0-1",
        "bytes",
        "",
        "byte=0-1",
        "bytesx=0-1",
    ] {
        assert_eq!(plan_of(header, 10), RangePlan::Whole, "{header:?}");
    }
    for header in ["bytes=0-", "bytes=-1", "bytes=abc"] {
        assert_eq!(plan_of(header, 0), RangePlan::Whole, "{header:?}");
    }
}

#[test]
fn huge_numbers_saturate() {
    let huge = "9".repeat(500);
    assert_eq!(plan_of(&format!("bytes=0-{huge}"), 10), ranges(&[(0, 9)]));
    assert_eq!(plan_of(&format!("bytes=-{huge}"), 10), ranges(&[(0, 9)]));
    assert_eq!(
        plan_of(&format!("bytes={huge}-{huge}"), 10),
        RangePlan::Unsatisfiable
    );
    assert_eq!(
        plan_of("bytes=0-18446744073709551615", u64::MAX),
        ranges(&[(0, u64::MAX - 1)])
    );
    assert_eq!(
        plan_of("bytes=18446744073709551614-", u64::MAX),
        ranges(&[(u64::MAX - 1, u64::MAX - 1)])
    );
}

#[test]
fn at_most_sixteen_ranges_after_merging() {
    let sixteen: Vec<String> = (0..16).map(|i| format!("{0}-{0}", i * 2)).collect();
    let RangePlan::Ranges(sent) = plan_of(&format!("bytes={}", sixteen.join(",")), 100) else {
        panic!("sixteen ranges refused");
    };
    assert_eq!(sent.len(), MAX_RANGES);
    let seventeen: Vec<String> = (0..17).map(|i| format!("{0}-{0}", i * 2)).collect();
    assert_eq!(
        plan_of(&format!("bytes={}", seventeen.join(",")), 100),
        RangePlan::Whole
    );
    // Seventeen that merge into fewer are fine.
    let touching: Vec<String> = (0..17).map(|i| format!("{i}-{i}")).collect();
    assert_eq!(
        plan_of(&format!("bytes={}", touching.join(",")), 100),
        ranges(&[(0, 16)])
    );
}

#[test]
fn thousands_of_ranges() {
    // The same byte a thousand times is one range; "Apache Killer" overlaps send nothing twice.
    let same = vec!["0-0"; MAX_RANGE_SPECS].join(",");
    assert_eq!(plan_of(&format!("bytes={same}"), 10), ranges(&[(0, 0)]));
    let killer: Vec<String> = (0..1000).map(|i| format!("0-{i}")).collect();
    assert_eq!(
        plan_of(&format!("bytes={}", killer.join(",")), 10_000),
        ranges(&[(0, 999)])
    );
    // Past the spec limit the header is not even merged.
    let too_many = vec!["0-0"; MAX_RANGE_SPECS + 1].join(",");
    assert_eq!(plan_of(&format!("bytes={too_many}"), 10), RangePlan::Whole);
    let scattered: Vec<String> = (0..2000).map(|i| format!("{0}-{0}", i * 2)).collect();
    assert_eq!(
        plan_of(&format!("bytes={}", scattered.join(",")), 10_000),
        RangePlan::Whole
    );
}

proptest! {
    /// Whatever the header, the ranges sent lie inside the file, are disjoint and not adjacent,
    /// and are at most MAX_RANGES.
    #[test]
    fn ranges_sent_are_inside_disjoint_and_bounded(
        header in prop::collection::vec(
            prop::sample::select(b"0123456789-, \t=bytesBYTESx".to_vec()), 0..64),
        length in prop_oneof![0u64..40, Just(u64::MAX)],
    ) {
        let mut full = b"bytes=".to_vec();
        full.extend_from_slice(&header);
        for candidate in [&full, &header] {
            if let RangePlan::Ranges(sent) = plan(candidate, length) {
                prop_assert!(!sent.is_empty() && sent.len() <= MAX_RANGES);
                let mut sorted = sent.clone();
                sorted.sort_by_key(|range| range.first);
                for range in &sorted {
                    prop_assert!(range.first <= range.last && range.last < length);
                }
                for pair in sorted.windows(2) {
                    prop_assert!(pair[0].last + 1 < pair[1].first);
                }
            }
        }
    }

    /// Merging changes which bytes are sent by nothing: every byte asked for is sent once.
    #[test]
    fn merging_keeps_exactly_the_bytes_asked_for(
        specs in prop::collection::vec((0u64..60, 0u64..60), 1..12),
    ) {
        let length = 50;
        let header = specs
            .iter()
            .map(|&(a, b)| format!("{}-{}", a.min(b), a.max(b)))
            .collect::<Vec<_>>()
            .join(",");
        let header = format!("bytes={header}");
        let mut asked = [false; 50];
        for &(a, b) in &specs {
            for byte in a.min(b)..=a.max(b).min(49) {
                if let Some(slot) = asked.get_mut(usize::try_from(byte).unwrap()) {
                    *slot = true;
                }
            }
        }
        let mut sent = [0u32; 50];
        match plan(header.as_bytes(), length) {
            RangePlan::Ranges(ranges) => {
                for range in ranges {
                    for byte in range.first..=range.last {
                        sent[usize::try_from(byte).unwrap()] += 1;
                    }
                }
                for (byte, &wanted) in asked.iter().enumerate() {
                    prop_assert_eq!(sent[byte], u32::from(wanted), "byte {}", byte);
                }
            }
            RangePlan::Unsatisfiable => prop_assert!(!asked.contains(&true)),
            RangePlan::Whole => prop_assert!(false, "{} ranges at most", specs.len()),
        }
    }
}
