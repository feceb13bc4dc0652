//! What a request comes to under the site's rules (`rules.rs`) and, in PHP mode, the router
//! (`route.rs`): a script to run, a file to serve, or an answer of its own (a `deny`, a
//! `return`, a 401 for `auth_basic`, the 301 to a directory's slash form, a 404). And the way
//! back in: an app's `X-Accel-Redirect`, which is evaluated by the same rules as an internal
//! request and is served only when it lands on a file in an `internal` location, so a script
//! echoing a user's `../` cannot hand out the config or another location's files.
//!
//! The rules are pure; this module is where their verdict meets the filesystem (`if_missing`,
//! the router) and the request (the credentials, the host for absolute redirects).

use std::path::PathBuf;

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};

use crate::auth_basic::{AuthBasic, AuthOutcome};
use crate::body::{self, ResponseBody};
use crate::cgi_params::{self, ConnectionInfo, ScriptTarget};
use crate::config::{SiteConfig, SiteMode};
use crate::error::{plain_response, GatewayError};
use crate::request_name::{request_warn, RequestName};
use crate::request_path::RequestPath;
use crate::route::{self, Route, Scripts};
use crate::rules::{Evaluation, HeaderAction, Origin, Verdict, MAX_REWRITES};

/// Where a request goes.
pub enum Destination {
    /// Run through FastCGI.
    Script(ScriptTarget),
    /// Serve this file (canonical path).
    File(PathBuf),
    /// Answered already.
    Answer(Response<ResponseBody>),
}

/// A routed request: where it goes, and what the rules add to its response.
pub struct Routing {
    /// Where it goes.
    pub destination: Destination,
    /// Response headers from `headers`/`add_headers` rules, in order.
    pub headers: Vec<HeaderAction>,
    /// The user `auth_basic` let in, for REMOTE_USER.
    pub remote_user: Option<String>,
    /// The `[upstreams.NAME]` a script goes to: a rule's, else the site's; `None`: `[upstream]`.
    pub upstream: Option<String>,
}

impl Routing {
    fn answer(response: Response<ResponseBody>) -> Routing {
        Routing {
            destination: Destination::Answer(response),
            headers: Vec::new(),
            remote_user: None,
            upstream: None,
        }
    }
}

/// Routes a client's request.
pub async fn route(
    site: &SiteConfig,
    parts: &Parts,
    connection: &ConnectionInfo,
    request_id: u64,
) -> Result<Routing, GatewayError> {
    let raw_path = parts.uri.path();
    if matches!(site.mode, SiteMode::App) && site.rules.is_empty() {
        // App mode as it always was: the app sees the path exactly as decoded, `//` and all.
        return Ok(Routing {
            destination: Destination::Script(ScriptTarget::app(raw_path)),
            headers: Vec::new(),
            remote_user: None,
            upstream: site.upstream.clone(),
        });
    }
    let request =
        RequestPath::parse(raw_path).ok_or(GatewayError::BadRequest("invalid request path"))?;
    let Evaluation {
        verdict,
        headers,
        auth,
        upstream,
    } = site
        .rules
        .evaluate(request, parts.uri.query(), Origin::Client, &|path| {
            exists(site, path)
        });
    // What the rules refuse needs no credentials; what they let through (or answer with a
    // `return`) does, when a rule asks for them.
    let passes = matches!(verdict, Verdict::Return { .. } | Verdict::Route { .. });
    let mut remote_user = None;
    if let (true, Some(auth)) = (passes, &auth) {
        match auth.check(parts.headers.get(header::AUTHORIZATION)).await {
            AuthOutcome::Granted(user) => remote_user = Some(user),
            AuthOutcome::Refused(reason) => {
                log_refusal(request_id, parts, reason);
                return Ok(Routing::answer(unauthorized(auth)));
            }
        }
    }
    let destination = match verdict {
        Verdict::Return {
            status,
            location,
            body,
            rule,
        } => {
            let rule = site.rules.label(rule);
            tracing::debug!(request = request_id, "answered by {rule}");
            Destination::Answer(fixed_answer(status, location, body, parts, connection)?)
        }
        Verdict::Route {
            path,
            query,
            rewritten,
            scripts,
            ..
        } => match &site.mode {
            SiteMode::App => {
                let mut target = if rewritten {
                    ScriptTarget::app_decoded(path.text())
                } else {
                    ScriptTarget::app(raw_path)
                };
                target.query = query;
                Destination::Script(target)
            }
            SiteMode::Php(php) => match route::resolve(php, &path, scripts) {
                Route::Script(mut target) => {
                    target.query = query;
                    Destination::Script(target)
                }
                Route::Static { path } => Destination::File(path),
                Route::RedirectToDirectory { location } => {
                    let query = query.as_deref().or(parts.uri.query());
                    let target = with_query(location, query);
                    Destination::Answer(redirect(
                        StatusCode::MOVED_PERMANENTLY,
                        &target,
                        parts,
                        connection,
                    )?)
                }
                Route::Forbidden => Destination::Answer(plain_response(StatusCode::FORBIDDEN)),
                Route::NotFound => Destination::Answer(plain_response(StatusCode::NOT_FOUND)),
            },
        },
        Verdict::Deny { status, rule } => {
            let rule = site.rules.label(rule);
            tracing::debug!(request = request_id, "denied by {rule}");
            Destination::Answer(plain_response(status))
        }
        Verdict::Internal { rule } => {
            let rule = site.rules.label(rule);
            tracing::debug!(request = request_id, "an internal location ({rule})");
            Destination::Answer(plain_response(StatusCode::NOT_FOUND))
        }
        Verdict::RewriteLoop => {
            return Err(GatewayError::Rules(format!(
                "more than {MAX_REWRITES} rewrites: a rewrite cycle?"
            )))
        }
        Verdict::BadRewrite { rule, produced } => {
            return Err(GatewayError::Rules(format!(
                "{} rewrote the path to `{produced}`, which cannot be routed",
                site.rules.label(rule)
            )))
        }
    };
    Ok(Routing {
        destination,
        headers,
        remote_user,
        upstream: upstream.or_else(|| site.upstream.clone()),
    })
}

/// What an app's `X-Accel-Redirect` comes to.
pub enum Accel {
    /// Serve this file in the app's stead, with the rules' headers for its location.
    File {
        /// The file (canonical path).
        path: PathBuf,
        /// Headers of the internal location's rules.
        headers: Vec<HeaderAction>,
    },
    /// Refused (the rules deny it, it is not in an internal location, nothing is there).
    Answer(Response<ResponseBody>),
}

/// The app's headers a file served through `X-Accel-Redirect` keeps, as nginx does: what the
/// app says about the download (its name, caching) and the cookies it set. The file's own
/// type, length and validators describe the body.
pub const ACCEL_KEPT_HEADERS: [header::HeaderName; 4] = [
    header::CONTENT_DISPOSITION,
    header::SET_COOKIE,
    header::CACHE_CONTROL,
    header::EXPIRES,
];

/// The `X-Accel-Redirect` header's name.
pub const X_ACCEL_REDIRECT: &str = "x-accel-redirect";

/// The `X-Sendfile` header's name (Apache's mod_xsendfile, lighttpd): a file's path on disk.
pub const X_SENDFILE: &str = "x-sendfile";

/// Whether an app's response hands the answer over to a file (`X-Accel-Redirect` or
/// `X-Sendfile`).
pub fn hands_over(headers: &HeaderMap) -> bool {
    headers.contains_key(X_ACCEL_REDIRECT) || headers.contains_key(X_SENDFILE)
}

/// Resolves the file an app's response names: `X-Accel-Redirect` (a URI path, nginx's) or
/// `X-Sendfile` (a path on disk, which must lie under the root and is then the URI path
/// relative to it). Either way the path goes through the rules and must land on a file in an
/// `internal` location.
pub fn accel_redirect(
    site: &SiteConfig,
    app_headers: &HeaderMap,
    name: &RequestName,
) -> Result<Accel, GatewayError> {
    let SiteMode::Php(php) = &site.mode else {
        return Err(GatewayError::AccelRedirect(
            "files are served only in PHP mode (with a `root`)".to_owned(),
        ));
    };
    let (header, request, text) = match app_headers.get(X_ACCEL_REDIRECT) {
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| GatewayError::AccelRedirect("not ASCII".to_owned()))?;
            let path = text.split_once('?').map_or(text, |(path, _)| path);
            ("X-Accel-Redirect", RequestPath::parse(path), text)
        }
        None => {
            let text = app_headers
                .get(X_SENDFILE)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default();
            // A path on disk, decoded as it is: under the root, it is the URI path that
            // names it. The root is canonical; `..` is resolved lexically, never above it.
            let under_root = std::path::Path::new(text)
                .strip_prefix(&php.root)
                .ok()
                .and_then(|relative| relative.to_str())
                .and_then(|relative| RequestPath::from_decoded(&format!("/{relative}")));
            ("X-Sendfile", under_root, text)
        }
    };
    let Some(request) = request else {
        return Err(GatewayError::AccelRedirect(format!(
            "{header} `{text}` is not a path in the site"
        )));
    };
    let evaluation = site
        .rules
        .evaluate(request, None, Origin::Internal, &|path| exists(site, path));
    let refuse = |why: String| {
        request_warn!(name, "{header} `{text}` refused: {why}");
        Ok(Accel::Answer(plain_response(StatusCode::NOT_FOUND)))
    };
    match evaluation.verdict {
        Verdict::Route {
            path,
            internal: true,
            ..
        } => match route::resolve(php, &path, Scripts::Never) {
            Route::Static { path } => Ok(Accel::File {
                path,
                headers: evaluation.headers,
            }),
            _ => refuse(format!("no file at `{}`", path.text())),
        },
        Verdict::Route { path, .. } => refuse(format!(
            "`{}` is not in an `internal` location",
            path.text()
        )),
        Verdict::Deny { status, rule } => {
            let rule = site.rules.label(rule);
            request_warn!(name, "{header} `{text}` denied by {rule}");
            Ok(Accel::Answer(plain_response(status)))
        }
        other => refuse(format!("the rules answer {other:?}")),
    }
}

/// Where a site's error page (`error_pages`, a path with an optional query) leads: through
/// the rules as an internal request, so it may live in an `internal` location, to a file or a
/// script; `None` for anything else (denied, missing, a redirect).
pub fn error_page(site: &SiteConfig, page: &str) -> Option<Destination> {
    let (path, page_query) = match page.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (page, None),
    };
    let request = RequestPath::parse(path)?;
    let evaluation = site
        .rules
        .evaluate(request, page_query, Origin::Internal, &|path| {
            exists(site, path)
        });
    let Verdict::Route {
        path,
        query,
        scripts,
        ..
    } = evaluation.verdict
    else {
        return None;
    };
    let query = query.or(page_query.map(str::to_owned));
    match &site.mode {
        SiteMode::App => {
            let mut target = ScriptTarget::app_decoded(path.text());
            target.query = query;
            Some(Destination::Script(target))
        }
        SiteMode::Php(php) => match route::resolve(php, &path, scripts) {
            Route::Script(mut target) => {
                target.query = query;
                Some(Destination::Script(target))
            }
            Route::Static { path } => Some(Destination::File(path)),
            _ => None,
        },
    }
}

/// Adds the rules' headers to a response, on the statuses nginx's `add_header` uses: success
/// and redirects, not errors (a year of `Cache-Control` on a 404 would pin the 404).
pub fn apply_headers(response: &mut Response<ResponseBody>, headers: &[HeaderAction]) {
    if headers.is_empty() {
        return;
    }
    let status = response.status().as_u16();
    if !matches!(
        status,
        200 | 201 | 204 | 206 | 301 | 302 | 303 | 304 | 307 | 308
    ) {
        return;
    }
    let map = response.headers_mut();
    for action in headers {
        match action {
            HeaderAction::Set(name, value) => {
                map.insert(name.clone(), value.clone());
            }
            HeaderAction::Add(name, value) => {
                map.append(name.clone(), value.clone());
            }
            HeaderAction::Expires(lifetime) => {
                // nginx's `expires 30d`: both headers, so HTTP/1.0 caches and current ones agree.
                let expires = httpdate::fmt_http_date(std::time::SystemTime::now() + *lifetime);
                let max_age = format!("max-age={}", lifetime.as_secs());
                for (name, text) in [(header::EXPIRES, expires), (header::CACHE_CONTROL, max_age)] {
                    if let Ok(value) = HeaderValue::try_from(text) {
                        map.insert(name, value);
                    }
                }
            }
        }
    }
}

/// Copies [`ACCEL_KEPT_HEADERS`] from the app's response onto the file's.
pub fn keep_app_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for name in ACCEL_KEPT_HEADERS {
        let mut values = from.get_all(&name).iter().peekable();
        if values.peek().is_some() {
            to.remove(&name);
        }
        for value in values {
            to.append(name.clone(), value.clone());
        }
    }
}

/// Whether a file or directory is at `path` (`if_missing` rules); never in app mode.
fn exists(site: &SiteConfig, path: &RequestPath) -> bool {
    match &site.mode {
        SiteMode::Php(php) => {
            let mut full = php.root.to_path_buf();
            full.extend(&path.segments);
            full.exists()
        }
        SiteMode::App => false,
    }
}

/// A `return`: a redirect to `location` (made absolute when it is a path), or `status` with
/// `body` (or the status line's reason).
fn fixed_answer(
    status: StatusCode,
    location: Option<String>,
    body: Option<String>,
    parts: &Parts,
    connection: &ConnectionInfo,
) -> Result<Response<ResponseBody>, GatewayError> {
    if let Some(location) = location {
        return redirect(status, &location, parts, connection);
    }
    Ok(match body {
        Some(text) => {
            let mut response = Response::new(body::full(text.into()));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
        }
        None => plain_response(status),
    })
}

fn with_query(path: String, query: Option<&str>) -> String {
    match query {
        Some(query) => format!("{path}?{query}"),
        None => path,
    }
}

/// A redirect to `target`: an absolute URL as it is, a path made absolute the way nginx writes
/// it (`absolute_redirect on`): the connection's scheme, the host and port the client named
/// (not the port fcgate listens on, which a NAT or container may hide). A request without a
/// usable host (HTTP/1.0 without Host) gets the path alone.
fn redirect(
    status: StatusCode,
    target: &str,
    parts: &Parts,
    connection: &ConnectionInfo,
) -> Result<Response<ResponseBody>, GatewayError> {
    // The authority of an HTTP/2 request or an absolute-form target wins over Host (RFC 9113
    // §8.3.1, RFC 9112 §3.2.2), as for HTTP_HOST; userinfo is never echoed back. Validated, so
    // it is ASCII.
    let host = cgi_params::request_authority(parts).and_then(|host| std::str::from_utf8(host).ok());
    let absolute = match host {
        Some(host) if target.starts_with('/') && !target.starts_with("//") => {
            let scheme = if connection.https() { "https" } else { "http" };
            format!("{scheme}://{host}{target}")
        }
        _ => target.to_owned(),
    };
    let value = HeaderValue::try_from(absolute)
        .map_err(|_| GatewayError::BadRequest("path cannot be redirected"))?;
    let mut response = plain_response(status);
    response.headers_mut().insert(header::LOCATION, value);
    Ok(response)
}

fn unauthorized(auth: &AuthBasic) -> Response<ResponseBody> {
    let mut response = plain_response(StatusCode::UNAUTHORIZED);
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, auth.challenge().clone());
    response
}

/// A browser's first request carries no credentials: that is the protocol, not news. A wrong
/// password or an unknown user is (fail2ban reads these lines).
fn log_refusal(request_id: u64, parts: &Parts, reason: &'static str) {
    let (method, path) = (&parts.method, parts.uri.path());
    if reason == "no credentials" {
        tracing::debug!(request = request_id, %method, path, "auth_basic: {reason}");
    } else {
        tracing::info!(request = request_id, %method, path, "auth_basic refused: {reason}");
    }
}
