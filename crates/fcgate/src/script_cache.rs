//! A short memory of the scripts a PHP site's router found on disk (`script_lookup_cache`):
//! which request paths name a regular script file reached without a symlink, so that a hot
//! script (a front controller's `/index.php`, on every request) costs one `statx` per validity
//! period instead of one per request. On a two-core machine that `statx` was the largest part
//! of the kernel time fcgate spent per request beyond HAProxy's, which checks nothing.
//!
//! It is nginx's `open_file_cache` with `open_file_cache_valid`, and what PHP itself does a
//! step later: its realpath cache trusts a path for 120 s (`realpath_cache_ttl`) and opcache a
//! script's timestamp for 2 s (`opcache.revalidate_freq`). Only what is safe to remember is
//! remembered:
//! - found scripts only, never a miss: a script deployed now is found on its first request;
//! - scripts only, never static files: php-fpm opens a script itself, so a script deleted
//!   within the validity reaches php-fpm, which answers the 404 itself, while fcgate opens
//!   static files itself and so checks them every time;
//! - only paths without a symlink on the way: a link is judged by `follow_symlinks` on every
//!   request. Turning a remembered script into a link needs write access to the root, which
//!   lets a writer drop a script there anyway.
//!
//! Bounded: at most [`CAPACITY`] paths a site. When full, expired entries are swept, and if
//! none has expired a new path is simply not remembered. A sweep runs only once the earliest
//! time an entry can expire has passed, so a cache full of fresh entries (a site with more hot
//! scripts than that) costs a miss one comparison, not a walk over every entry under the
//! lock. The time comes in from the caller, so the rules are tested without a clock. Written
//! by hand: a map behind a mutex with a time per entry; the caching crates bring eviction
//! threads and policies this does not need.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Paths remembered per site at most: far more scripts than an application keeps hot (a
/// WordPress install has a few hundred), and a few hundred KiB at worst.
pub const CAPACITY: usize = 4096;

/// The scripts one site's router found, each with the time it was found.
pub struct ScriptCache {
    validity: Duration,
    capacity: usize,
    found: Mutex<Found>,
}

/// What the mutex guards: the paths, and when the first of them can expire.
#[derive(Default)]
struct Found {
    scripts: HashMap<Box<[String]>, FoundScript>,
    /// No entry expires before this (`None`: empty). A lower bound, not exact: renewing an
    /// entry leaves it where it was, and the next sweep makes it exact again.
    earliest_expiry: Option<Instant>,
}

struct FoundScript {
    /// The script's canonical path (the root joined with the segments).
    path: PathBuf,
    /// Its lookup's start plus the validity: trusted before this instant, not from it on.
    expires_at: Instant,
}

impl ScriptCache {
    /// A cache trusting what it finds for `validity` (the configuration allows an hour at most);
    /// `Duration::ZERO` turns it off.
    pub fn new(validity: Duration) -> ScriptCache {
        ScriptCache::with_capacity(validity, CAPACITY)
    }

    fn with_capacity(validity: Duration, capacity: usize) -> ScriptCache {
        ScriptCache {
            validity,
            capacity,
            found: Mutex::new(Found::default()),
        }
    }

    /// How long a found script is trusted.
    pub fn validity(&self) -> Duration {
        self.validity
    }

    /// Whether it remembers anything at all.
    pub fn is_enabled(&self) -> bool {
        !self.validity.is_zero()
    }

    /// The script at `segments` (under the site's root), if a lookup that began less than the
    /// validity before `now` found it.
    pub fn get(&self, segments: &[String], now: Instant) -> Option<PathBuf> {
        let found = self.lock();
        let script = found.scripts.get(segments)?;
        (now < script.expires_at).then(|| script.path.clone())
    }

    /// Remembers that a lookup begun at `checked_at` found a script at `path` for `segments`,
    /// unless the cache is off or full of entries still fresh.
    pub fn remember(&self, segments: &[String], path: &Path, checked_at: Instant) {
        if !self.is_enabled() {
            return;
        }
        let mut found = self.lock();
        if found.scripts.len() >= self.capacity && !found.scripts.contains_key(segments) {
            let none_expired = found
                .earliest_expiry
                .is_some_and(|earliest| checked_at < earliest);
            if none_expired {
                return;
            }
            found
                .scripts
                .retain(|_, script| checked_at < script.expires_at);
            found.earliest_expiry = found.scripts.values().map(|script| script.expires_at).min();
            if found.scripts.len() >= self.capacity {
                return;
            }
        }
        // Finite: the configuration allows an hour at most.
        let expires_at = checked_at + self.validity;
        found.earliest_expiry = Some(
            found
                .earliest_expiry
                .map_or(expires_at, |earliest| earliest.min(expires_at)),
        );
        found.scripts.insert(
            segments.into(),
            FoundScript {
                path: path.to_path_buf(),
                expires_at,
            },
        );
    }

    /// How many paths it holds, fresh or not.
    pub fn len(&self) -> usize {
        self.lock().scripts.len()
    }

    /// Whether it holds no path.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The map; a panic elsewhere while it was held left it whole (every change is one call),
    /// so a poisoned lock is taken as it is.
    fn lock(&self) -> std::sync::MutexGuard<'_, Found> {
        self.found.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Two caches are the same setting when they trust for as long: the configuration is compared
/// on reload, and what a cache holds is not configuration.
impl PartialEq for ScriptCache {
    fn eq(&self, other: &ScriptCache) -> bool {
        self.validity == other.validity
    }
}

impl Eq for ScriptCache {}

impl fmt::Debug for ScriptCache {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ScriptCache")
            .field("validity", &self.validity)
            .field("paths", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn segments(path: &str) -> Vec<String> {
        path.split('/').map(String::from).collect()
    }

    #[test]
    fn a_found_script_is_trusted_for_the_validity_and_not_after() {
        let cache = ScriptCache::new(Duration::from_secs(2));
        let start = Instant::now();
        let key = segments("blog/index.php");
        assert_eq!(cache.get(&key, start), None);
        cache.remember(&key, Path::new("/srv/blog/index.php"), start);
        assert_eq!(
            cache.get(&key, start + Duration::from_millis(1999)),
            Some(PathBuf::from("/srv/blog/index.php"))
        );
        assert_eq!(cache.get(&key, start + Duration::from_secs(2)), None);
        assert_eq!(cache.get(&segments("blog/other.php"), start), None);
    }

    #[test]
    fn a_new_lookup_renews_the_trust() {
        let cache = ScriptCache::new(Duration::from_secs(2));
        let start = Instant::now();
        let key = segments("index.php");
        cache.remember(&key, Path::new("/srv/index.php"), start);
        let later = start + Duration::from_secs(3);
        cache.remember(&key, Path::new("/srv/index.php"), later);
        assert!(cache.get(&key, later + Duration::from_secs(1)).is_some());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn zero_validity_remembers_nothing() {
        let cache = ScriptCache::new(Duration::ZERO);
        let start = Instant::now();
        let key = segments("index.php");
        cache.remember(&key, Path::new("/srv/index.php"), start);
        assert!(!cache.is_enabled());
        assert!(cache.is_empty());
        assert_eq!(cache.get(&key, start), None);
    }

    #[test]
    fn a_full_cache_sweeps_expired_paths_and_otherwise_takes_no_more() {
        let cache = ScriptCache::with_capacity(Duration::from_secs(2), 2);
        let start = Instant::now();
        cache.remember(&segments("a.php"), Path::new("/srv/a.php"), start);
        cache.remember(
            &segments("b.php"),
            Path::new("/srv/b.php"),
            start + Duration::from_secs(1),
        );
        // Full, and both fresh: a third path is not remembered, the two stay.
        let third = start + Duration::from_millis(1500);
        cache.remember(&segments("c.php"), Path::new("/srv/c.php"), third);
        assert_eq!(cache.get(&segments("c.php"), third), None);
        assert!(cache.get(&segments("a.php"), third).is_some());
        // A known path is still renewed when full.
        cache.remember(&segments("a.php"), Path::new("/srv/a.php"), third);
        assert_eq!(cache.len(), 2);
        // Once b.php has expired (a.php was renewed) the sweep makes room for c.php.
        let later = start + Duration::from_millis(3200);
        cache.remember(&segments("c.php"), Path::new("/srv/c.php"), later);
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&segments("c.php"), later).is_some());
        assert!(cache.get(&segments("a.php"), later).is_some());
        assert_eq!(cache.get(&segments("b.php"), later), None);
    }

    #[test]
    fn a_full_cache_of_fresh_paths_is_swept_only_once_one_can_have_expired() {
        let cache = ScriptCache::with_capacity(Duration::from_secs(2), 2);
        let start = Instant::now();
        let at = |millis| start + Duration::from_millis(millis);
        let earliest_expiry = || cache.lock().earliest_expiry;
        cache.remember(&segments("a.php"), Path::new("/srv/a.php"), at(0));
        cache.remember(&segments("b.php"), Path::new("/srv/b.php"), at(1000));
        assert_eq!(earliest_expiry(), Some(at(2000)));
        // Renewing a.php leaves the bound where it was: a lower bound, not exact.
        cache.remember(&segments("a.php"), Path::new("/srv/a.php"), at(1500));
        assert_eq!(earliest_expiry(), Some(at(2000)));
        // Past the bound a miss sweeps; nothing has expired, and the bound becomes exact.
        cache.remember(&segments("c.php"), Path::new("/srv/c.php"), at(2100));
        assert_eq!(cache.len(), 2);
        assert_eq!(earliest_expiry(), Some(at(3000)));
        // Before it, misses leave the map alone (no sweep could free anything).
        cache.remember(&segments("d.php"), Path::new("/srv/d.php"), at(2900));
        assert_eq!(cache.get(&segments("d.php"), at(2900)), None);
        assert_eq!(earliest_expiry(), Some(at(3000)));
        // At it, b.php has expired and makes room.
        cache.remember(&segments("d.php"), Path::new("/srv/d.php"), at(3000));
        assert!(cache.get(&segments("d.php"), at(3000)).is_some());
        assert_eq!(cache.get(&segments("b.php"), at(3000)), None);
        assert_eq!(earliest_expiry(), Some(at(3500)));
    }

    #[test]
    fn caches_compare_by_their_setting_alone() {
        let one = ScriptCache::new(Duration::from_secs(2));
        one.remember(
            &segments("index.php"),
            Path::new("/srv/index.php"),
            Instant::now(),
        );
        assert_eq!(one, ScriptCache::new(Duration::from_secs(2)));
        assert_ne!(one, ScriptCache::new(Duration::ZERO));
    }
}
