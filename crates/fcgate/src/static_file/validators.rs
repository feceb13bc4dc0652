//! Which version of a file a validator names: the `If-Range` condition (RFC 9110 §13.1.5), and
//! the entity-tag tower-http gives a file, recomputed to check that the file this module reads
//! is the one `ServeFile` described. Pure: the file's facts and the clock are passed in.

use std::time::{Duration, SystemTime};

/// tower-http 0.7's `ETag::from_metadata`: the mtime's seconds and nanoseconds since the epoch
/// and the length, in hex, quoted; `None` for an mtime before the epoch (tower-http sends no
/// ETag then). A tower-http that changes the format fails `static_file`'s unit test pinning it;
/// until then a mismatch only costs the ranges (the whole file is sent), never a wrong byte.
pub(crate) fn serve_file_etag(length: u64, modified: SystemTime) -> Option<String> {
    let since_epoch = modified.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    Some(format!(
        "\"{:x}.{:08x}-{:x}\"",
        since_epoch.as_secs(),
        since_epoch.subsec_nanos(),
        length
    ))
}

/// What the current representation is known by: the ETag and Last-Modified values the response
/// carries, and the file's mtime at full precision.
pub(crate) struct Current<'a> {
    /// The `ETag` field value.
    pub(crate) etag: Option<&'a [u8]>,
    /// The `Last-Modified` field value.
    pub(crate) last_modified: Option<&'a [u8]>,
    /// The file's modification time.
    pub(crate) modified: SystemTime,
}

/// Whether a Range may be honoured under `If-Range: value` (RFC 9110 §13.1.5); when it may not,
/// the whole current file is sent, so a client resuming a download of a changed file starts
/// over instead of splicing new bytes onto old ones.
///
/// - An entity-tag matches only by strong comparison (§8.8.3.2): the same opaque tag, neither
///   one weak. `W/"…"` never matches, whatever the current tag.
/// - An HTTP-date matches only when it is exactly the `Last-Modified` value this response
///   carries (byte for byte, so another date format never matches) and that date is a strong
///   validator (§8.8.2.2): the origin must know the file did not change twice within the second
///   the date names. It cannot know that while that second is still running, so a file
///   modified less than a second before `now` (being written, say) gets the whole file. Older
///   changes within one second stay invisible to a date; the ETag, with nanoseconds and the
///   length, tells them apart. (nginx compares the dates only.)
pub(crate) fn if_range_holds(value: &[u8], current: &Current<'_>, now: SystemTime) -> bool {
    if value.starts_with(b"W/") {
        return false;
    }
    if value.starts_with(b"\"") {
        return current
            .etag
            .is_some_and(|etag| !etag.starts_with(b"W/") && etag == value);
    }
    let settled = now
        .duration_since(current.modified)
        .is_ok_and(|age| age >= Duration::from_secs(1));
    settled && current.last_modified == Some(value)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const LAST_MODIFIED: &[u8] = b"Tue, 15 Nov 1994 08:12:31 GMT";

    fn current(etag: &'static [u8], modified: SystemTime) -> Current<'static> {
        Current {
            etag: Some(etag),
            last_modified: Some(LAST_MODIFIED),
            modified,
        }
    }

    fn modified() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(784_887_151)
    }

    #[test]
    fn the_etag_format_of_tower_http() {
        let modified = SystemTime::UNIX_EPOCH + Duration::new(0x6560_0000, 0x1234);
        assert_eq!(
            serve_file_etag(0x2f, modified).unwrap(),
            "\"65600000.00001234-2f\""
        );
        let before_epoch = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(serve_file_etag(1, before_epoch), None);
    }

    #[test]
    fn entity_tags_compare_strongly() {
        let now = modified() + Duration::from_secs(3600);
        let strong = current(b"\"abc\"", modified());
        assert!(if_range_holds(b"\"abc\"", &strong, now));
        assert!(!if_range_holds(b"\"abd\"", &strong, now));
        assert!(!if_range_holds(b"W/\"abc\"", &strong, now));
        assert!(!if_range_holds(b"\"abc\", \"abd\"", &strong, now));
        let weak = current(b"W/\"abc\"", modified());
        assert!(!if_range_holds(b"W/\"abc\"", &weak, now));
        assert!(!if_range_holds(b"\"abc\"", &weak, now));
        let none = Current {
            etag: None,
            ..current(b"", modified())
        };
        assert!(!if_range_holds(b"\"abc\"", &none, now));
    }

    #[test]
    fn dates_match_exactly_and_only_once_the_second_is_over() {
        let settled = modified() + Duration::from_secs(1);
        let file = current(b"\"abc\"", modified());
        assert!(if_range_holds(LAST_MODIFIED, &file, settled));
        // The same instant in RFC 850 form, an earlier and a later date: no.
        assert!(!if_range_holds(
            b"Tuesday, 15-Nov-94 08:12:31 GMT",
            &file,
            settled
        ));
        assert!(!if_range_holds(
            b"Tue, 15 Nov 1994 08:12:30 GMT",
            &file,
            settled
        ));
        assert!(!if_range_holds(
            b"Tue, 15 Nov 1994 08:12:32 GMT",
            &file,
            settled
        ));
        assert!(!if_range_holds(b"garbage", &file, settled));
        // Modified within the last second, or "in the future" by a clock step: weak.
        let racing = modified() + Duration::from_millis(999);
        assert!(!if_range_holds(LAST_MODIFIED, &file, racing));
        assert!(!if_range_holds(
            LAST_MODIFIED,
            &file,
            modified() - Duration::from_secs(5)
        ));
        let undated = Current {
            last_modified: None,
            ..current(b"\"abc\"", modified())
        };
        assert!(!if_range_holds(LAST_MODIFIED, &undated, settled));
    }
}
