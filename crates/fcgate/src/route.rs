//! What a request path maps to in PHP mode: a static file, a script, a redirect to the
//! directory's slash form, the front controller, a 403 for a folder without an index, or nothing.
//!
//! The rules are nginx's `try_files $uri $uri/ /index.php?$query_string` with
//! `fastcgi_split_path_info ^(.+?\.php)(/.*)$`, plus its `\.php` location's
//! `try_files $fastcgi_script_name =404` (a path naming a script that does not exist is a 404,
//! not the front controller's business) and `autoindex off` (an existing directory without its
//! index is a 403, `directory_without_index`). All made safe by construction: the path is
//! decoded once, `.`/`..` resolved lexically (never above the root), every file found is
//! resolved through its symlinks (one `lstat` per segment; in full only when one is a link),
//! each of which `follow_symlinks` must allow (by default: only links that stay inside the
//! canonical root), a script runs only if it really is a regular file with a script extension,
//! and a script is never served as text. The path arrives normalised (`request_path.rs`) and
//! past the rules (`rules.rs`; dotfiles are the built-in rule's), which may have said that
//! scripts do not run here (`Scripts::Never`). Filesystem reads are synchronous: a few `stat`
//! calls on the local root, made inline (a thread hop would cost more than the calls).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::cgi_params::ScriptTarget;
use crate::config::{DirectoryWithoutIndex, FollowSymlinks, PhpSite};
use crate::request_path::{slash_joined, slash_joined_len, RequestPath};
pub use crate::rules::Scripts;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Serve this file (canonical path, inside the root, not a script).
    Static {
        /// The file to serve.
        path: PathBuf,
    },
    /// Run a script through FastCGI.
    Script(ScriptTarget),
    /// A directory asked for without its trailing slash: 301 to `location` (a percent-encoded
    /// path; the caller appends `?query` if the request had one).
    RedirectToDirectory {
        /// The path with a trailing slash.
        location: String,
    },
    /// 403: an existing directory without an index file (`directory_without_index`).
    Forbidden,
    /// 404.
    NotFound,
}

/// Maps a normalised request path (`request_path.rs`; rules have seen it already) to a
/// [`Route`].
pub fn resolve(site: &PhpSite, request: &RequestPath, scripts: Scripts) -> Route {
    let router = Router {
        site,
        scripts_run: scripts == Scripts::Run,
    };
    router.resolve(request)
}

/// One request's routing: the site and what rules said about scripts.
struct Router<'a> {
    site: &'a PhpSite,
    scripts_run: bool,
}

impl Router<'_> {
    fn resolve(&self, request: &RequestPath) -> Route {
        let site = self.site;
        if self.scripts_run {
            match split_script(site, request) {
                Split::Script(target) => return Route::Script(target),
                Split::Refused => return Route::NotFound,
                Split::NoScript => {}
            }
        }
        match lookup(site, &request.segments) {
            Entry::File(_) if request.trailing_slash => self.unmatched(request),
            Entry::File(found) => self.file_route(&request.segments, found),
            Entry::Directory if request.trailing_slash => self.directory_index(&request.segments),
            Entry::Directory => Route::RedirectToDirectory {
                location: percent_encode_path(&format!("/{}/", request.segments.join("/"))),
            },
            Entry::Missing => self.unmatched(request),
            Entry::Unusable => Route::NotFound,
        }
    }

    /// A path that matches no file: 404 when it names a script (a segment with a script
    /// extension, where `fastcgi_split_path_info` would end SCRIPT_NAME), else the front
    /// controller. An old `/wp-login.php` probed by a scanner, or `/uploads/x.jpg/evil.php`,
    /// must not cost an app boot or let the app guess what was meant; `/some/pretty/url` is the
    /// front controller's to route.
    fn unmatched(&self, request: &RequestPath) -> Route {
        if request
            .segments
            .iter()
            .any(|segment| self.site.is_script_name(segment))
        {
            Route::NotFound
        } else {
            self.front_controller()
        }
    }

    /// An existing regular file at the full request path.
    fn file_route(&self, segments: &[String], found: Found) -> Route {
        let site = self.site;
        let requested_name = segments.last().map_or("", String::as_str);
        match (
            site.is_script_name(requested_name),
            is_real_script(site, &found.real),
        ) {
            (true, true) if self.scripts_run => {
                Route::Script(script_target(site, segments, String::new(), found))
            }
            (false, false) => Route::Static { path: found.real },
            // A script reached under another name, or a non-script under a script name, or a
            // script where scripts do not run: neither run it nor show it.
            _ => Route::NotFound,
        }
    }

    /// `dir/`: its index file if there is one, else what `directory_without_index` says.
    fn directory_index(&self, segments: &[String]) -> Route {
        let site = self.site;
        let mut index_segments = segments.to_vec();
        index_segments.push(site.index.clone());
        match lookup(site, &index_segments) {
            Entry::File(found) => self.file_route(&index_segments, found),
            Entry::Unusable => Route::NotFound,
            Entry::Directory | Entry::Missing => match site.directory_without_index {
                DirectoryWithoutIndex::Forbidden => Route::Forbidden,
                DirectoryWithoutIndex::FrontController => self.front_controller(),
            },
        }
    }

    /// `/index.php` for whatever matched nothing, if enabled, present, and scripts run here.
    fn front_controller(&self) -> Route {
        let site = self.site;
        if !site.front_controller || !self.scripts_run {
            return Route::NotFound;
        }
        let index = [site.index.clone()];
        match lookup(site, &index) {
            Entry::File(found)
                if site.is_script_name(&site.index) && is_real_script(site, &found.real) =>
            {
                Route::Script(script_target(site, &index, String::new(), found))
            }
            _ => Route::NotFound,
        }
    }
}

enum Split {
    Script(ScriptTarget),
    /// The candidate exists but must not run (outside the root, special file, disguised).
    Refused,
    /// No script in the path, or the candidate is not a file: try the path as a whole.
    NoScript,
}

/// `fastcgi_split_path_info ^(.+?\.php)(/.*)$`: the FIRST segment with a script extension ends
/// SCRIPT_NAME; the rest is PATH_INFO. It runs only if it is a real script file.
fn split_script(site: &PhpSite, request: &RequestPath) -> Split {
    let segments = &request.segments;
    let Some(script_end) = segments
        .iter()
        .position(|segment| site.is_script_name(segment))
    else {
        return Split::NoScript;
    };
    let script_segments = &segments[..=script_end];
    match lookup(site, script_segments) {
        Entry::File(found) if is_real_script(site, &found.real) => {
            let rest = &segments[script_end + 1..];
            let mut path_info = String::new();
            for segment in rest {
                path_info.push('/');
                path_info.push_str(segment);
            }
            if request.trailing_slash {
                path_info.push('/');
            }
            Split::Script(script_target(site, script_segments, path_info, found))
        }
        Entry::File(_) | Entry::Unusable => Split::Refused,
        Entry::Directory | Entry::Missing => Split::NoScript,
    }
}

/// The script at `segments`, which `lookup` found as `found`. SCRIPT_FILENAME is the path as
/// asked for under the root (nginx's `$document_root$fastcgi_script_name`), not where a
/// symlink in it leads; without a link on the way the two are the same path, already built.
fn script_target(
    site: &PhpSite,
    segments: &[String],
    path_info: String,
    found: Found,
) -> ScriptTarget {
    let script_name = slash_joined(segments);
    let script_filename = if found.through_link {
        let mut literal = path_buffer(&site.root, segments);
        literal.extend(segments);
        literal
    } else {
        found.real
    };
    ScriptTarget {
        script_filename,
        script_name,
        path_info,
        document_root: Some(Arc::clone(&site.root)),
        query: None,
        remote_user: None,
    }
}

/// A regular file `lookup` found.
struct Found {
    /// Its canonical path.
    real: PathBuf,
    /// A symlink was followed on the way, so `real` is not the path as asked for.
    through_link: bool,
}

/// The resolved file must itself be named as a script: a `x.php` symlink to an uploaded
/// `avatar.jpg` must not run the upload.
fn is_real_script(site: &PhpSite, real: &Path) -> bool {
    real.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| site.is_script_name(name))
}

enum Entry {
    /// A regular file.
    File(Found),
    Directory,
    Missing,
    /// Resolves outside the root (a symlink out), or is a FIFO, socket or device.
    Unusable,
}

/// The root is canonical and the segments are normalised (no `.`, `..` or empty ones), so the
/// path can leave the root only through a symlink below it. One `lstat` per segment finds out;
/// only a path with a link in it is resolved in full. (`realpath` would cost a `readlink` for
/// every component of the whole absolute path, root included, on every request.)
///
/// A script found so is remembered for `script_lookup_cache` (`script_cache.rs`): a front
/// controller's `index.php` is looked up on nearly every request.
fn lookup(site: &PhpSite, segments: &[String]) -> Entry {
    let cache = &site.script_cache;
    // Only scripts are remembered. The time is taken before the disk is asked, so an entry's
    // validity counts from before the check it stands for.
    let cacheable_at = (cache.is_enabled()
        && segments
            .last()
            .is_some_and(|name| site.is_script_name(name)))
    .then(Instant::now);
    if let Some(now) = cacheable_at {
        if let Some(real) = cache.get(segments, now) {
            return Entry::File(Found {
                real,
                through_link: false,
            });
        }
    }
    let entry = lookup_on_disk(site, segments);
    if let (Some(checked_at), Entry::File(found)) = (cacheable_at, &entry) {
        if !found.through_link {
            cache.remember(segments, &found.real, checked_at);
        }
    }
    entry
}

/// `lookup` without the cache.
fn lookup_on_disk(site: &PhpSite, segments: &[String]) -> Entry {
    let mut path = path_buffer(&site.root, segments);
    let mut metadata = None;
    for segment in segments {
        path.push(segment);
        match fs::symlink_metadata(&path) {
            Ok(found) if found.file_type().is_symlink() => {
                return lookup_through_links(site, segments);
            }
            Ok(found) => metadata = Some(found),
            Err(_) => return Entry::Missing,
        }
    }
    let metadata = match metadata {
        Some(metadata) => metadata,
        None => match fs::metadata(&path) {
            Ok(metadata) => metadata,
            Err(_) => return Entry::Missing,
        },
    };
    classify(&metadata, path, false)
}

/// Resolves `segments` one at a time, each symlink in full as it is met and judged by
/// `follow_symlinks`. A link that is not followed makes the whole path unusable, whatever
/// follows it: whether `outlink/secret.txt` exists outside the root must not change the answer
/// (resolving the whole path at once would say "missing" for `outlink/nope.txt` and "unusable"
/// for `outlink/secret.txt`).
fn lookup_through_links(site: &PhpSite, segments: &[String]) -> Entry {
    let mut real = site.root.to_path_buf();
    for segment in segments {
        real.push(segment);
        match fs::symlink_metadata(&real) {
            Ok(link) if link.file_type().is_symlink() => match fs::canonicalize(&real) {
                Ok(target) => match follows(site, &link, &target) {
                    Ok(()) => real = target,
                    Err(reason) => {
                        tracing::debug!(
                            link = %real.display(),
                            target = %target.display(),
                            "symlink not followed: {reason} (follow_symlinks = \"{}\")",
                            site.follow_symlinks.as_setting()
                        );
                        return Entry::Unusable;
                    }
                },
                // A dangling link: its target does not exist, wherever it points.
                Err(_) => return Entry::Missing,
            },
            Ok(_) => {}
            Err(_) => return Entry::Missing,
        }
    }
    match fs::metadata(&real) {
        Ok(metadata) => classify(&metadata, real, true),
        Err(_) => Entry::Missing,
    }
}

/// Whether `follow_symlinks` lets a request through the link described by `link` (its own
/// `lstat`) to `target` (canonical, existing); else why not, for the debug log.
fn follows(site: &PhpSite, link: &fs::Metadata, target: &Path) -> Result<(), &'static str> {
    use std::os::unix::fs::MetadataExt;
    match site.follow_symlinks {
        FollowSymlinks::Always => Ok(()),
        FollowSymlinks::Never => Err("it is a symlink"),
        FollowSymlinks::WithinRoot if target.starts_with(&site.root) => Ok(()),
        FollowSymlinks::WithinRoot => Err("it leads out of the root"),
        // nginx's if_not_owner compares the link with what it points to, as here: the target
        // is the final object, links within the link's own target path included.
        FollowSymlinks::Owner => match fs::metadata(target) {
            Ok(target_metadata) if target_metadata.uid() == link.uid() => Ok(()),
            Ok(_) => Err("its owner does not own its target"),
            Err(_) => Err("its target cannot be read"),
        },
    }
}

/// `root`, with room for `segments` to be pushed onto it without reallocating: this runs on
/// every request, and `Path::join` or a `push` past the capacity allocates again.
fn path_buffer(root: &Path, segments: &[String]) -> PathBuf {
    let mut path = PathBuf::with_capacity(root.as_os_str().len() + slash_joined_len(segments));
    path.push(root);
    path
}

fn classify(metadata: &fs::Metadata, real: PathBuf, through_link: bool) -> Entry {
    if metadata.is_file() {
        Entry::File(Found { real, through_link })
    } else if metadata.is_dir() {
        Entry::Directory
    } else {
        Entry::Unusable
    }
}

/// Whether the path, once decoded, holds a control character (`%0d%0a`, `%00`): such a path is
/// a 400 in app mode as in PHP mode, before it reaches PATH_INFO or a log line.
/// Checked on every request, so it scans the escapes in place instead of decoding a copy.
pub(crate) fn decodes_to_control_characters(uri_path: &str) -> bool {
    let path = uri_path.as_bytes();
    let hex = |at: usize| path.get(at).and_then(|&byte| char::from(byte).to_digit(16));
    memchr::memchr_iter(b'%', path).any(|percent| {
        let (Some(high), Some(low)) = (hex(percent + 1), hex(percent + 2)) else {
            return false;
        };
        let byte = high << 4 | low;
        byte < 0x20 || byte == 0x7f
    })
}

/// What a redirect's path escapes: everything but RFC 3986 `pchar`s and `/`; `\` included, so
/// a directory named `\evil.example` cannot become a `//evil.example` redirect in a browser.
const PATH_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@')
    .remove(b'/');

fn percent_encode_path(path: &str) -> String {
    utf8_percent_encode(path, PATH_ESCAPES).to_string()
}

#[cfg(test)]
mod tests;
