//! Tests of PHP-mode routing against a real directory tree, path tricks included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::symlink;
use std::time::Duration;

use tempfile::TempDir;

use crate::script_cache::ScriptCache;

use super::*;

/// A document root plus a directory outside it, which symlinks point into.
struct Tree {
    _root_dir: TempDir,
    outside: TempDir,
    site: PhpSite,
}

impl Tree {
    fn new() -> Tree {
        let root_dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = root_dir.path().canonicalize().unwrap();
        let file = |relative: &str, text: &str| {
            let path = root.join(relative);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        file("index.php", "<?php front");
        file("info.php", "<?php phpinfo();");
        file("UPPER.PHP", "<?php upper");
        file("style.css", "body{}");
        file("café.css", "body{}");
        file("uploads/x.jpg", "<?php hidden in an image");
        file("blog/index.php", "<?php blog");
        file("docs/index.html", "<h1>docs</h1>");
        file("dir.php/inner.php", "<?php inner");
        file("with space/index.php", "<?php spaced");
        file(".env", "SECRET=1");
        file(".git/config", "[core]");
        file(".well-known/security.txt", "Contact: x");
        fs::create_dir(root.join("empty")).unwrap();
        fs::write(outside.path().join("evil.php"), "<?php evil").unwrap();
        fs::write(outside.path().join("secret.txt"), "secret").unwrap();
        symlink(outside.path(), root.join("link-out")).unwrap();
        symlink(
            outside.path().join("secret.txt"),
            root.join("secret-link.txt"),
        )
        .unwrap();
        symlink(outside.path().join("evil.php"), root.join("script-out.php")).unwrap();
        symlink(root.join("info.php"), root.join("alias.php")).unwrap();
        symlink(root.join("info.php"), root.join("disguised.txt")).unwrap();
        symlink(root.join("uploads/x.jpg"), root.join("upload-run.php")).unwrap();
        let site = PhpSite {
            root: root.into(),
            index: "index.php".into(),
            script_extensions: vec!["php".into()],
            front_controller: true,
            directory_without_index: DirectoryWithoutIndex::Forbidden,
            follow_symlinks: FollowSymlinks::WithinRoot,
            // On, as by default (and for longer than a test takes), so that every test here
            // goes through the cache.
            script_cache: Arc::new(ScriptCache::new(Duration::from_secs(60))),
        };
        Tree {
            _root_dir: root_dir,
            outside,
            site,
        }
    }

    fn resolve(&self, uri_path: &str) -> Route {
        let request = RequestPath::parse(uri_path).expect("a routable path");
        resolve(&self.site, &request, Scripts::Run)
    }

    fn resolve_static_only(&self, uri_path: &str) -> Route {
        let request = RequestPath::parse(uri_path).expect("a routable path");
        resolve(&self.site, &request, Scripts::Never)
    }

    fn without_script_cache(mut self) -> Tree {
        self.site.script_cache = Arc::new(ScriptCache::new(Duration::ZERO));
        self
    }

    fn following(mut self, follow_symlinks: FollowSymlinks) -> Tree {
        self.site.follow_symlinks = follow_symlinks;
        self
    }

    fn script(&self, script_name: &str, path_info: &str) -> Route {
        Route::Script(ScriptTarget {
            script_filename: self.site.root.join(script_name.trim_start_matches('/')),
            script_name: script_name.into(),
            path_info: path_info.into(),
            document_root: Some(self.site.root.clone()),
            query: None,
            remote_user: None,
        })
    }

    fn front_controller(&self) -> Route {
        self.script("/index.php", "")
    }

    fn static_file(&self, relative: &str) -> Route {
        Route::Static {
            path: self.site.root.join(relative),
        }
    }
}

#[test]
fn existing_scripts_run() {
    let tree = Tree::new();
    assert_eq!(tree.resolve("/info.php"), tree.script("/info.php", ""));
    assert_eq!(tree.resolve("/alias.php"), tree.script("/alias.php", ""));
    assert_eq!(
        tree.resolve("/dir.php/inner.php"),
        tree.script("/dir.php/inner.php", "")
    );
}

#[test]
fn path_info_is_split_after_the_first_script() {
    let tree = Tree::new();
    assert_eq!(
        tree.resolve("/info.php/a/b"),
        tree.script("/info.php", "/a/b")
    );
    assert_eq!(
        tree.resolve("/info.php/a/"),
        tree.script("/info.php", "/a/")
    );
    assert_eq!(tree.resolve("/info.php/"), tree.script("/info.php", "/"));
    assert_eq!(
        tree.resolve("/info.php/x.php/y"),
        tree.script("/info.php", "/x.php/y")
    );
    assert_eq!(
        tree.resolve("/info.php/caf%C3%A9"),
        tree.script("/info.php", "/café")
    );
    assert_eq!(
        tree.resolve("/info.php//a/./b"),
        tree.script("/info.php", "/a/b")
    );
}

#[test]
fn script_extension_files_are_never_static() {
    let tree = Tree::new();
    assert_eq!(tree.resolve("/UPPER.PHP"), tree.script("/UPPER.PHP", ""));
    assert_eq!(tree.resolve("/disguised.txt"), Route::NotFound);
    assert_eq!(tree.resolve("/upload-run.php"), Route::NotFound);
}

#[test]
fn existing_files_are_static() {
    let tree = Tree::new();
    assert_eq!(tree.resolve("/style.css"), tree.static_file("style.css"));
    assert_eq!(
        tree.resolve("/uploads/x.jpg"),
        tree.static_file("uploads/x.jpg")
    );
    assert_eq!(tree.resolve("/caf%C3%A9.css"), tree.static_file("café.css"));
    assert_eq!(
        tree.resolve("/blog/../style.css"),
        tree.static_file("style.css")
    );
    assert_eq!(tree.resolve("//./style.css"), tree.static_file("style.css"));
    assert_eq!(
        tree.resolve("/.well-known/security.txt"),
        tree.static_file(".well-known/security.txt")
    );
}

#[test]
fn a_file_with_a_trailing_slash_is_not_that_file() {
    let tree = Tree::new();
    assert_eq!(tree.resolve("/style.css/"), tree.front_controller());
}

#[test]
fn non_script_prefix_never_runs() {
    let tree = Tree::new();
    // Nor reaches the front controller: the path names a script, and that script is missing.
    assert_eq!(tree.resolve("/uploads/x.jpg/evil.php"), Route::NotFound);
    assert_eq!(tree.resolve("/uploads/x.jpg%2Fevil.php"), Route::NotFound);
    assert_eq!(
        tree.resolve("/uploads/x.jpg/pretty"),
        tree.front_controller()
    );
}

#[test]
fn directories() {
    let tree = Tree::new();
    assert_eq!(tree.resolve("/"), tree.front_controller());
    assert_eq!(tree.resolve("/blog/"), tree.script("/blog/index.php", ""));
    assert_eq!(
        tree.resolve("/blog"),
        Route::RedirectToDirectory {
            location: "/blog/".into()
        }
    );
    assert_eq!(
        tree.resolve("/with%20space"),
        Route::RedirectToDirectory {
            location: "/with%20space/".into()
        }
    );
    assert_eq!(
        tree.resolve("/dir.php"),
        Route::RedirectToDirectory {
            location: "/dir.php/".into()
        }
    );
    assert_eq!(
        tree.resolve("/with%20space/"),
        tree.script("/with space/index.php", "")
    );
    assert_eq!(tree.resolve("/empty/"), Route::Forbidden);
    assert_eq!(
        tree.resolve("/docs/"),
        Route::Forbidden,
        "index.html is not the index"
    );
    assert_eq!(tree.resolve("/blog/."), tree.script("/blog/index.php", ""));
    // A directory that does not exist is a missing path, not a folder without an index.
    assert_eq!(tree.resolve("/no-such-dir/"), tree.front_controller());
}

#[test]
fn a_directory_without_an_index_can_fall_through_to_the_front_controller() {
    let mut tree = Tree::new();
    tree.site.directory_without_index = DirectoryWithoutIndex::FrontController;
    assert_eq!(tree.resolve("/empty/"), tree.front_controller());
    assert_eq!(tree.resolve("/docs/"), tree.front_controller());
    assert_eq!(tree.resolve("/blog/"), tree.script("/blog/index.php", ""));
    tree.site.front_controller = false;
    assert_eq!(tree.resolve("/empty/"), Route::NotFound);
}

#[test]
fn a_root_without_an_index_is_forbidden() {
    let tree = Tree::new();
    fs::remove_file(tree.site.root.join("index.php")).unwrap();
    assert_eq!(tree.resolve("/"), Route::Forbidden);
    assert_eq!(tree.resolve("/users/7"), Route::NotFound);
}

#[test]
fn plain_directory_index_without_front_controller() {
    let mut tree = Tree::new();
    tree.site.index = "index.html".into();
    tree.site.front_controller = false;
    assert_eq!(tree.resolve("/docs/"), tree.static_file("docs/index.html"));
    assert_eq!(tree.resolve("/empty/"), Route::Forbidden);
    assert_eq!(tree.resolve("/missing"), Route::NotFound);
}

#[test]
fn missing_scripts_are_not_found() {
    let tree = Tree::new();
    for path in [
        "/missing.php",
        "/MISSING.PHP",
        "/missing.php/",
        "/missing.php/x",
        "/blog/missing.php",
        "/blog/missing.php/x/y",
        "/dir.php/missing.php",
        "/dir.php/missing",
        "/style.css/x.php",
        "/style.css/x.php/",
        // SCRIPT_NAME ends at the first script-named segment, a directory here (nginx's
        // non-greedy `^(.+?\.php)(/.*)$` stops there too), so inner.php does not run.
        "/dir.php/inner.php/x",
    ] {
        assert_eq!(tree.resolve(path), Route::NotFound, "{path}");
    }
    // What does exist still runs, PATH_INFO included.
    assert_eq!(
        tree.resolve("/index.php/extra"),
        tree.script("/index.php", "/extra")
    );
    assert_eq!(
        tree.resolve("/blog/index.php"),
        tree.script("/blog/index.php", "")
    );
}

#[test]
fn missing_paths_go_to_the_front_controller() {
    let mut tree = Tree::new();
    assert_eq!(tree.resolve("/users/7"), tree.front_controller());
    assert_eq!(tree.resolve("/some/pretty/url"), tree.front_controller());
    assert_eq!(tree.resolve("/report.php.bak"), tree.front_controller());
    assert_eq!(tree.resolve("/blog/2024/"), tree.front_controller());
    tree.site.front_controller = false;
    assert_eq!(tree.resolve("/users/7"), Route::NotFound);
    tree.site.front_controller = true;
    fs::remove_file(tree.site.root.join("index.php")).unwrap();
    // Looked up again (the cache trusts the front controller it found for its validity).
    let tree = tree.without_script_cache();
    assert_eq!(tree.resolve("/users/7"), Route::NotFound);
}

#[test]
fn traversal_above_the_root_is_a_bad_request() {
    for path in [
        "/../etc/passwd",
        "/%2e%2e/etc/passwd",
        "/%2E%2E%2Fetc%2Fpasswd",
        "/x.php/../../etc/passwd",
        "/info.php/../../etc/passwd",
        "/blog/../../etc/passwd",
        "/..",
    ] {
        assert_eq!(RequestPath::parse(path), None, "{path}");
    }
}

#[test]
fn undecodable_paths_are_bad_requests() {
    for path in [
        "/info%00.php",
        "/%00",
        "/info.php/x%0d%0aSet-Cookie:%20a=1",
        "/a%0ab",
        "/tab%09.css",
        "/del%7f",
        "/%ff.css",
        "/%zz",
        "/%4",
        "/%",
        "",
        "*",
        "info.php",
    ] {
        assert_eq!(RequestPath::parse(path), None, "{path:?}");
    }
}

#[test]
fn symlinks_out_of_the_root_are_refused() {
    let tree = Tree::new();
    assert_eq!(tree.resolve("/link-out/secret.txt"), Route::NotFound);
    // The same answer whether or not the target exists outside the root.
    assert_eq!(tree.resolve("/link-out/nope.txt"), Route::NotFound);
    assert_eq!(tree.resolve("/link-out/nope.php"), Route::NotFound);
    assert_eq!(tree.resolve("/link-out/sub/deeper"), Route::NotFound);
    assert_eq!(tree.resolve("/link-out/evil.php"), Route::NotFound);
    assert_eq!(tree.resolve("/link-out/"), Route::NotFound);
    assert_eq!(tree.resolve("/secret-link.txt"), Route::NotFound);
    assert_eq!(tree.resolve("/script-out.php"), Route::NotFound);
    assert_eq!(tree.resolve("/script-out.php/x"), Route::NotFound);
    assert!(tree.outside.path().join("evil.php").exists());
}

#[test]
fn follow_symlinks_never_refuses_every_link() {
    let tree = Tree::new().following(FollowSymlinks::Never);
    // Links inside the root too: `alias.php` is a link to `info.php`.
    assert_eq!(tree.resolve("/alias.php"), Route::NotFound);
    assert_eq!(tree.resolve("/link-out/secret.txt"), Route::NotFound);
    assert_eq!(tree.resolve("/secret-link.txt"), Route::NotFound);
    assert_eq!(tree.resolve("/info.php"), tree.script("/info.php", ""));
    assert_eq!(tree.resolve("/style.css"), tree.static_file("style.css"));
}

#[test]
fn follow_symlinks_always_leaves_the_root() {
    let tree = Tree::new().following(FollowSymlinks::Always);
    let outside = tree.outside.path().canonicalize().unwrap();
    assert_eq!(
        tree.resolve("/link-out/secret.txt"),
        Route::Static {
            path: outside.join("secret.txt")
        }
    );
    assert_eq!(
        tree.resolve("/secret-link.txt"),
        Route::Static {
            path: outside.join("secret.txt")
        }
    );
    // A script is run under the name it was asked by, as nginx passes $document_root$uri.
    assert_eq!(
        tree.resolve("/script-out.php"),
        tree.script("/script-out.php", "")
    );
    // What stays refused whatever the links: a script reached under another name, and the
    // other way round.
    assert_eq!(tree.resolve("/disguised.txt"), Route::NotFound);
    assert_eq!(tree.resolve("/upload-run.php"), Route::NotFound);
    assert_eq!(tree.resolve("/link-out/nope.txt"), tree.front_controller());
}

/// `owner`: a link is followed when whoever owns it owns its target. Changing the owner of a
/// link takes root; the CI runs as root.
#[test]
fn follow_symlinks_owner_compares_the_link_with_its_target() {
    let tree = Tree::new().following(FollowSymlinks::Owner);
    let nobody = 65534;
    if let Err(error) =
        std::os::unix::fs::lchown(tree.site.root.join("secret-link.txt"), Some(nobody), None)
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "cannot change a link's owner (CI runs as root): {error}"
        );
        eprintln!("skipped: changing a link's owner takes root ({error})");
        return;
    }
    // Owned by the test's user, as is its target: followed, out of the root.
    let outside = tree.outside.path().canonicalize().unwrap();
    assert_eq!(
        tree.resolve("/link-out/secret.txt"),
        Route::Static {
            path: outside.join("secret.txt")
        }
    );
    // Owned by nobody, its target by the test's user: refused, as nginx's if_not_owner.
    assert_eq!(tree.resolve("/secret-link.txt"), Route::NotFound);
}

/// A `static` rule's location: files only, no script run or shown, no front controller.
#[test]
fn where_scripts_never_run_only_files_are_served() {
    let tree = Tree::new();
    assert_eq!(
        tree.resolve_static_only("/style.css"),
        tree.static_file("style.css")
    );
    for path in [
        "/info.php",
        "/info.php/x",
        "/UPPER.PHP",
        "/missing",
        "/blog/",
        "/nope.php",
    ] {
        assert_eq!(tree.resolve_static_only(path), Route::NotFound, "{path}");
    }
    assert_eq!(tree.resolve_static_only("/empty/"), Route::Forbidden);
}

#[test]
fn special_files_are_refused() {
    let tree = Tree::new();
    let socket_path = tree.site.root.join("app.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket_path).unwrap();
    assert_eq!(tree.resolve("/app.sock"), Route::NotFound);
}

#[test]
fn control_characters_are_found_after_decoding() {
    assert!(decodes_to_control_characters("/x%0d%0a"));
    assert!(decodes_to_control_characters("/%00"));
    assert!(!decodes_to_control_characters("/a%20b"));
    assert!(!decodes_to_control_characters("/plain"));
    assert!(!decodes_to_control_characters("/bad%zz"));
}

#[test]
fn percent_decoding() {
    use crate::request_path::percent_decode;
    assert_eq!(percent_decode("/a%20b%2Fc+d").unwrap(), b"/a b/c+d");
    assert_eq!(percent_decode("%C3%a9").unwrap(), "é".as_bytes());
    assert_eq!(percent_decode("%"), None);
    assert_eq!(percent_decode("%a"), None);
    assert_eq!(percent_decode("%g0"), None);
    assert_eq!(percent_decode("%+1"), None);
}

#[test]
fn redirect_locations_are_encoded() {
    assert_eq!(
        percent_encode_path("/a b/é?#%\\/"),
        "/a%20b/%C3%A9%3F%23%25%5C/"
    );
    assert_eq!(
        percent_encode_path("/ok-._~!$&'()*+,;=:@/"),
        "/ok-._~!$&'()*+,;=:@/"
    );
}

#[test]
fn a_found_script_is_remembered_for_the_cache_validity() {
    let tree = Tree::new();
    assert_eq!(tree.resolve("/info.php/a"), tree.script("/info.php", "/a"));
    assert_eq!(tree.site.script_cache.len(), 1);
    // Gone from disk, still trusted (php-fpm would answer its 404): the lookup was not made.
    fs::remove_file(tree.site.root.join("info.php")).unwrap();
    assert_eq!(tree.resolve("/info.php"), tree.script("/info.php", ""));
    assert_eq!(tree.resolve("/info.php/b"), tree.script("/info.php", "/b"));
    // Without the cache the same request looks, and finds nothing.
    let tree = tree.without_script_cache();
    assert_eq!(tree.resolve("/info.php"), Route::NotFound);
    assert!(tree.site.script_cache.is_empty());
}

#[test]
fn a_missing_script_is_never_remembered() {
    let tree = Tree::new();
    assert_eq!(tree.resolve("/new.php"), Route::NotFound);
    fs::write(tree.site.root.join("new.php"), "<?php new").unwrap();
    assert_eq!(tree.resolve("/new.php"), tree.script("/new.php", ""));
}

#[test]
fn only_scripts_reached_without_a_link_are_remembered() {
    let tree = Tree::new();
    // Through a followed link (judged by follow_symlinks every time), a static file (opened
    // by fcgate itself), links that are refused.
    assert_eq!(tree.resolve("/alias.php"), tree.script("/alias.php", ""));
    assert_eq!(tree.resolve("/style.css"), tree.static_file("style.css"));
    assert_eq!(tree.resolve("/script-out.php"), Route::NotFound);
    assert_eq!(tree.resolve("/upload-run.php"), Route::NotFound);
    assert!(tree.site.script_cache.is_empty());
    // A script replaced by a link before it was ever remembered: judged at once.
    fs::remove_file(tree.site.root.join("UPPER.PHP")).unwrap();
    symlink(
        tree.outside.path().join("evil.php"),
        tree.site.root.join("UPPER.PHP"),
    )
    .unwrap();
    assert_eq!(tree.resolve("/UPPER.PHP"), Route::NotFound);
    assert!(tree.site.script_cache.is_empty());
}
