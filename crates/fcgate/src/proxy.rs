//! The life of one HTTP request inside the gateway, from routing to the first response byte.
//!
//! route (`route.rs`, PHP mode only) → static file, redirect or script → read the whole body
//! (`request_body.rs`) → pick a server (`upstream.rs`) → check out a connection (the pool
//! queues here) → send params + body → read up to the end of the CGI header block
//! (`cgi_response.rs`) → hand the rest to the client, from memory when the backend has already
//! finished, else through a spool (`response_spool.rs`). Any failure becomes a response in
//! `error.rs`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use bytes::{Bytes, BytesMut};
use fcgi::client::{ResponseEvent, ResponseStream};
use fcgi::protocol::ProtocolStatus;
use http::request::Parts;
use http::{header, HeaderValue, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use tokio::time::Instant;
use tracing::Instrument;

use crate::access_log::{AccessLog, BackendFacts, RequestFacts};
use crate::acme::{AcmeState, HTTP01_PREFIX};
use crate::body::{self, CloseAfterResponse, ResponseBody};
use crate::cgi_params::{self, ConnectionInfo, ScriptTarget};
use crate::cgi_response::{self, CgiHead, HeadParse};
use crate::compression;
use crate::config::Config;
use crate::error::{plain_response, GatewayAnswer, GatewayError};
use crate::https_policy;
use crate::metrics::GatewayMetrics;
use crate::real_client::{self, Resolution};
use crate::request_body::{self, BodyBudget};
use crate::request_name::{request_info, request_warn, RequestName};
use crate::response_end::{self, Pending, Reporters};
use crate::response_framing::{self, BodyFit, ClientFraming};
use crate::response_spool::{log_backend_stderr, log_length_mismatch, spool_response, SpoolLimits};
use crate::retry::{Attempts, Failure, Next, RetryRules};
use crate::rules::HeaderAction;
use crate::site_routing::{self, Accel, Destination};
use crate::tls::TlsSetup;
use crate::upstream::{ServerSet, Upstream};

/// What the backend made of one attempt.
enum Answer {
    Response(Response<ResponseBody>),
    /// END_REQUEST with FCGI_OVERLOADED before any output: not processed, may be retried.
    Overloaded,
    /// END_REQUEST with FCGI_CANT_MPX_CONN: not processed; the pool stopped multiplexing, so
    /// the request goes again on a connection of its own.
    CannotMultiplex,
    /// The connection died before the backend sent anything.
    Lost(fcgi::client::ClientError),
}

/// A request routed to a script, its body read: what every attempt sends.
struct Job<'a> {
    /// The `[upstreams.NAME]` it goes to; `None`: `[upstream]`.
    group: Option<String>,
    parts: Parts,
    target: ScriptTarget,
    body: request_body::SpooledBody,
    connection: &'a ConnectionInfo,
    exchange: Exchange,
    rules: RetryRules,
}

/// What [`Gateway::prepare`] made of a request.
enum Prepared<'a> {
    /// For the backend (boxed: a `Job` is far larger than a response).
    Job(Box<Job<'a>>),
    /// Answered already: a static file, a redirect, a 404.
    Answered(Response<ResponseBody>),
}

/// How one attempt ended.
enum Attempt {
    /// A response or an error to answer with: no retry.
    Done(Result<Response<ResponseBody>, GatewayError>),
    /// Failed at server `index` in a way the retry policy decides on.
    Failed {
        index: usize,
        failure: Failure,
        error: Option<fcgi::client::ClientError>,
    },
}

/// What one configuration put in force: the config, the pools of its servers, its access log.
/// A reload builds a new one (keeping the pools of servers that did not change) and swaps it in
/// whole; a request holds the one it started with until it ends.
pub struct Generation {
    /// The validated configuration.
    pub config: Config,
    /// The servers and their pools (`[upstream]`).
    pub upstream: Arc<Upstream>,
    /// `[upstreams.NAME]`, the other groups, with their own servers and pools.
    pub groups: BTreeMap<String, Arc<Upstream>>,
    /// Where its requests are logged.
    pub access_log: Arc<AccessLog>,
    /// The certificates its `tls` listeners present; `None` without any.
    pub tls: Option<Arc<TlsSetup>>,
}

impl Generation {
    /// Every group: `[upstream]`, then the `[upstreams.NAME]` ones by name.
    pub fn upstreams(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        std::iter::once(&self.upstream).chain(self.groups.values())
    }

    /// The group a script goes to: `[upstreams.NAME]` for `Some(NAME)` (validated to exist;
    /// `[upstream]` if it somehow does not), else `[upstream]`.
    fn group(&self, name: Option<&str>) -> &Arc<Upstream> {
        name.and_then(|name| self.groups.get(name))
            .unwrap_or(&self.upstream)
    }
}

/// Everything a request needs: the generation in force, and what outlives reloads (request
/// ids, the request-body budget, the metrics).
pub struct Gateway {
    current: ArcSwap<Generation>,
    next_request_id: AtomicU64,
    /// The port of the first `tls` listener as bound, for `tls.redirect_to_https`.
    https_port: AtomicU16,
    /// Certificates obtained by ACME and the challenge answers; for the life of the process
    /// (a reload that changes `[acme]` needs a restart).
    acme: Option<Arc<AcmeState>>,
    /// Request bodies held at once, against `max_request_body_buffer_total`.
    body_budget: Arc<BodyBudget>,
    metrics: Arc<GatewayMetrics>,
}

impl Gateway {
    /// A gateway for `config` with its `upstream` ([`Upstream::start`]) and `access_log`, both
    /// started by the caller (either can fail: a name that does not resolve, a file that
    /// cannot be opened).
    pub fn new(
        config: Config,
        upstream: Arc<Upstream>,
        groups: BTreeMap<String, Arc<Upstream>>,
        access_log: AccessLog,
        tls: Option<TlsSetup>,
        acme: Option<Arc<AcmeState>>,
    ) -> Arc<Gateway> {
        let body_budget = BodyBudget::new(config.limits.max_request_body_buffer_total);
        Arc::new(Gateway {
            current: ArcSwap::from_pointee(Generation {
                config,
                upstream,
                groups,
                access_log: Arc::new(access_log),
                tls: tls.map(Arc::new),
            }),
            next_request_id: AtomicU64::new(1),
            https_port: AtomicU16::new(443),
            acme,
            body_budget,
            metrics: Arc::new(GatewayMetrics::default()),
        })
    }

    /// The generation in force now.
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// Puts `next` in force for requests that start from now on; requests in flight keep the
    /// one they started with.
    pub fn replace(&self, next: Generation) {
        self.current.store(Arc::new(next));
    }

    /// The ACME state, when `[acme]` is configured.
    pub fn acme(&self) -> Option<&Arc<AcmeState>> {
        self.acme.as_ref()
    }

    /// Where plain-HTTP requests are redirected to (`tls.redirect_to_https`): set once the
    /// listeners are bound, since a configured port 0 is only known then.
    pub(crate) fn set_https_port(&self, port: u16) {
        self.https_port.store(port, Ordering::Relaxed);
    }

    /// Gateway-wide figures: responses by status class, request durations, retries.
    pub fn metrics(&self) -> &GatewayMetrics {
        &self.metrics
    }

    /// The access log in force, for SIGUSR1 and its dropped-lines figure.
    pub fn access_log(&self) -> Arc<AccessLog> {
        Arc::clone(&self.current.load().access_log)
    }

    /// Request-body bytes held right now, memory and temp files together.
    pub fn request_body_bytes_held(&self) -> u64 {
        self.body_budget.held()
    }

    /// The `[upstream]` pools in force.
    pub fn upstream(&self) -> Arc<Upstream> {
        Arc::clone(&self.current.load().upstream)
    }

    /// Every group in force, `[upstream]` first, for stats and shutdown.
    pub fn upstreams(&self) -> Vec<Arc<Upstream>> {
        self.current.load().upstreams().cloned().collect()
    }

    /// Counts and logs a request hyper refused with `status` before it reached [`Self::handle`]
    /// (a malformed request line, a head too large), so the access log has every request.
    pub fn count_refused_by_hyper(&self, client: std::net::SocketAddr, status: u16) {
        self.metrics.requests.record(status);
        let request_id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let generation = self.current.load();
        generation.access_log.write(
            &RequestFacts::unparsed(request_id, client),
            &BackendFacts::default(),
            status,
            0,
            std::time::Duration::ZERO,
        );
    }

    /// Answers one request; never fails: errors become error responses. `ending` asks an
    /// HTTP/1.x connection to end after this response (`None` on HTTP/2).
    pub async fn handle(
        &self,
        mut request: Request<Incoming>,
        connection: &ConnectionInfo,
        ending: Option<&CloseAfterResponse>,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        let request_id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let span = tracing::debug_span!("request", id = request_id, method = %request.method(), path = request.uri().path());
        let generation = self.current.load_full();
        let behind_proxy = real_client(&generation.config, &request, connection, request_id);
        let connection = behind_proxy.as_ref().unwrap_or(connection);
        let logged = generation.access_log.enabled().then(|| {
            RequestFacts::new(
                request_id,
                connection.remote_addr(),
                request.method(),
                request.uri(),
                request.version(),
                request.headers(),
            )
        });
        let mut facts = BackendFacts::default();
        // Cheap (shared buffers): warnings about the request and its error answer name it.
        let name = RequestName::new(request_id, request.method().clone(), request.uri().clone());
        // Kept only when some site has error pages: the page's own request is made of them.
        let for_error_page = generation
            .config
            .has_error_pages()
            .then(|| (request.version(), request.headers().clone()));
        let compression = &generation.config.compression;
        let wanted = compression::Wanted::of(compression, &request);
        // For the static-file path (PHP mode; unread in app mode).
        let precompressed = wanted.precompressed(compression);
        if let Some(precompressed) = precompressed {
            request.extensions_mut().insert(precompressed);
        }
        let mut rule_headers = Vec::new();
        let mut response = match self
            .serve(
                &generation,
                request,
                ClientSide {
                    info: connection,
                    ending,
                },
                &name,
                &mut facts,
                &mut rule_headers,
            )
            .instrument(span)
            .await
        {
            Ok(response) => response,
            Err(error) => error.into_response(&name),
        };
        if let Some((version, headers)) = for_error_page {
            let request = ErrorPageRequest {
                name,
                version,
                headers,
                precompressed,
                client: ClientSide {
                    info: connection,
                    ending,
                },
            };
            // Boxed: an error page runs a request of its own, and inline its future would
            // double the size of every request's, error pages or not.
            response = Box::pin(self.error_page(&generation, response, request, &mut facts)).await;
        }
        // Before compression, which a rule's `Cache-Control: no-transform` turns off.
        site_routing::apply_headers(&mut response, &rule_headers);
        // Before `attach`: the access log counts the bytes sent, compressed.
        let mut response = compression::apply(compression, &wanted, response).await;
        if let (true, Some(hsts)) = (connection.https(), &generation.config.tls.hsts) {
            https_policy::add_hsts(&mut response, hsts);
        }
        let pending = Pending {
            started,
            logged,
            backend: facts,
        };
        let reporters = Reporters {
            access_log: Arc::clone(&generation.access_log),
            metrics: Arc::clone(&self.metrics),
        };
        response_end::attach(reporters, pending, response)
    }

    async fn serve(
        &self,
        generation: &Generation,
        request: Request<Incoming>,
        client: ClientSide<'_>,
        name: &RequestName,
        facts: &mut BackendFacts,
        rule_headers: &mut Vec<HeaderAction>,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let job = match self
            .prepare(generation, request, client, name, rule_headers)
            .await?
        {
            Prepared::Job(job) => job,
            Prepared::Answered(response) => return Ok(response),
        };
        self.run(generation, &job, facts, rule_headers).await
    }

    /// Sends a job to the backend, trying again as the retry policy allows; an answer with
    /// `X-Accel-Redirect` or `X-Sendfile` becomes the file it names.
    async fn run(
        &self,
        generation: &Generation,
        job: &Job<'_>,
        facts: &mut BackendFacts,
        rule_headers: &mut Vec<HeaderAction>,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let name = &job.exchange.name;
        // Every attempt picks from the servers in force now, so the indices ruled out keep
        // meaning the same servers whatever re-resolution swaps in meanwhile.
        let servers = generation.group(job.group.as_deref()).servers();
        let mut attempts = Attempts::default();
        loop {
            let (index, failure, error) = match self
                .attempt(generation, &servers, job, &attempts, facts)
                .await
            {
                Attempt::Done(Ok(response)) if site_routing::hands_over(response.headers()) => {
                    return self
                        .accel_redirect(generation, job, response, rule_headers)
                        .await
                }
                Attempt::Done(result) => return result,
                Attempt::Failed {
                    index,
                    failure,
                    error,
                } => (index, failure, error),
            };
            let Some(pause) =
                self.after_failure(failure, index, &servers, &job.rules, &mut attempts)
            else {
                return Err(match (failure, error) {
                    (_, Some(error)) => error.into(),
                    (Failure::Overloaded, None) => GatewayError::Overloaded {
                        attempts: attempts.overloaded_answers(),
                    },
                    _ => GatewayError::CannotMultiplex {
                        attempts: attempts.cannot_multiplex_answers(),
                    },
                });
            };
            facts.retries += 1;
            match (&failure, &error) {
                (Failure::Connect { .. }, Some(error)) => {
                    request_warn!(name, "trying again: {error}")
                }
                (_, Some(error)) => request_info!(name, "retrying: {error}"),
                (_, None) => request_info!(name, "retrying: {failure:?}"),
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Checks the head and routes the request; a script's request also has its body read.
    /// Static files, redirects and 404s are answered here.
    async fn prepare<'a>(
        &self,
        generation: &Generation,
        request: Request<Incoming>,
        client: ClientSide<'a>,
        name: &RequestName,
        rule_headers: &mut Vec<HeaderAction>,
    ) -> Result<Prepared<'a>, GatewayError> {
        let (parts, body) = request.into_parts();
        crate::request_guard::check(&parts, &generation.config.limits.head)?;
        if let Some(acme) = &self.acme {
            if let Some(token) = parts.uri.path().strip_prefix(HTTP01_PREFIX) {
                return Ok(Prepared::Answered(http01_answer(acme, token)));
            }
        }
        let connection = client.info;
        if generation.config.tls.redirect_to_https && !connection.https() {
            let https_port = self.https_port.load(Ordering::Relaxed);
            let response = https_policy::redirect(&parts, connection, https_port);
            return Ok(Prepared::Answered(response));
        }
        // A few stat calls on the local docroot: done inline, as nginx's try_files does,
        // because a thread hop per request costs more than the calls themselves.
        let host = cgi_params::request_host_name(&parts);
        let site = generation
            .config
            .site_for(host)
            .ok_or(GatewayError::UnknownHost)?;
        let routing = site_routing::route(site, &parts, connection, name.id).await?;
        *rule_headers = routing.headers;
        let mut target = match routing.destination {
            Destination::Script(target) => target,
            Destination::File(path) => {
                return serve_static(path, parts).await.map(Prepared::Answered)
            }
            Destination::Answer(response) => return Ok(Prepared::Answered(response)),
        };
        target.remote_user = routing.remote_user;
        let group = routing.upstream;
        let declared_length = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        let limits = &generation.config.limits;
        let body =
            request_body::read_body(body, declared_length, limits, &self.body_budget).await?;
        Ok(Prepared::Job(Box::new(Job::new(
            generation,
            group,
            parts,
            target,
            body,
            client,
            name.clone(),
        ))))
    }

    /// The site's error page for a short answer fcgate made itself (`error_pages`), served or
    /// run as a GET of its own and sent with the original status; the original answer when
    /// there is no page, it is not an answer of fcgate's, or the page fails (an error page
    /// never gets an error page).
    async fn error_page(
        &self,
        generation: &Generation,
        original: Response<ResponseBody>,
        mut request: ErrorPageRequest<'_>,
        facts: &mut BackendFacts,
    ) -> Response<ResponseBody> {
        if original.extensions().get::<GatewayAnswer>().is_none() {
            return original;
        }
        let status = original.status();
        let mut parts = request.parts();
        let Some(site) = generation
            .config
            .site_for(cgi_params::request_host_name(&parts))
        else {
            return original;
        };
        let Some(page) = site.error_pages.get(&status.as_u16()) else {
            return original;
        };
        let page_response = match site_routing::error_page(site, page) {
            Some(Destination::File(path)) => {
                if let Some(precompressed) = request.precompressed {
                    parts.extensions.insert(precompressed);
                }
                serve_static(path, parts).await
            }
            Some(Destination::Script(target)) => {
                let body = request_body::SpooledBody::empty(&self.body_budget);
                let job = Job::new(
                    generation,
                    site.upstream.clone(),
                    parts,
                    target,
                    body,
                    request.client,
                    request.name.clone(),
                );
                self.run(generation, &job, facts, &mut Vec::new()).await
            }
            _ => Err(GatewayError::Rules(format!(
                "error page `{page}` is neither a file nor a script"
            ))),
        };
        match page_response {
            Ok(page_response) if page_response.status().is_success() => {
                error_page_with(status, &original, page_response)
            }
            Ok(page_response) => {
                request_warn!(
                    request.name,
                    "error page `{page}` for {status} answered {}; sending the plain answer",
                    page_response.status()
                );
                original
            }
            Err(error) => {
                request_warn!(
                    request.name,
                    "error page `{page}` for {status} failed: {error}; sending the plain answer"
                );
                original
            }
        }
    }

    /// Serves the file an app named in `X-Accel-Redirect` or `X-Sendfile` instead of its
    /// response, as a GET
    /// (HEAD stays HEAD) with the client's own headers, so Range and conditionals apply.
    async fn accel_redirect(
        &self,
        generation: &Generation,
        job: &Job<'_>,
        app_response: Response<ResponseBody>,
        rule_headers: &mut Vec<HeaderAction>,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let (app_head, _empty_or_ignored) = app_response.into_parts();
        // The site that ran the script: a redirect never crosses into another site's root.
        let site = generation
            .config
            .site_for(cgi_params::request_host_name(&job.parts))
            .ok_or(GatewayError::UnknownHost)?;
        match site_routing::accel_redirect(site, &app_head.headers, &job.exchange.name)? {
            Accel::Answer(response) => Ok(response),
            Accel::File { path, headers } => {
                rule_headers.extend(headers);
                let mut parts = internal_get(
                    &job.parts.method,
                    &job.parts.uri,
                    job.parts.version,
                    job.parts.headers.clone(),
                    Conditions::Keep,
                );
                if let Some(precompressed) =
                    job.parts.extensions.get::<compression::Precompressed>()
                {
                    parts.extensions.insert(*precompressed);
                }
                let mut response = serve_static(path, parts).await?;
                if response.status().is_success() || response.status() == StatusCode::NOT_MODIFIED {
                    site_routing::keep_app_headers(&app_head.headers, response.headers_mut());
                }
                Ok(response)
            }
        }
    }

    /// One try: a server, a connection, the request sent and the response head read.
    async fn attempt(
        &self,
        generation: &Generation,
        upstream: &ServerSet,
        job: &Job<'_>,
        attempts: &Attempts,
        facts: &mut BackendFacts,
    ) -> Attempt {
        let Some((index, server)) = upstream.pick(attempts.ruled_out()) else {
            return Attempt::Done(Err(GatewayError::NoUpstream));
        };
        let pool = server.pool();
        let asked_at = Instant::now();
        let checkout = if attempts.wants_fresh_connection() {
            pool.checkout_fresh().await
        } else {
            pool.checkout().await
        };
        let queue_wait = asked_at.elapsed();
        facts.queue_wait = Some(queue_wait);
        server.metrics().queue_wait.observe(queue_wait);
        let mut lease = match checkout {
            Ok(lease) => lease,
            Err(error) if error.is_connect() => {
                let timeout = error.is_timeout();
                return Attempt::Failed {
                    index,
                    failure: Failure::Connect { timeout },
                    error: Some(error),
                };
            }
            Err(error) => return Attempt::Done(Err(error.into())),
        };
        let reused = lease.was_reused();
        facts.reused = Some(reused);
        if generation.access_log.enabled() {
            facts.address = Some(Arc::clone(server.address_text()));
        }
        let sent_at = Instant::now();
        tracing::debug!(
            backend = %pool.address(),
            connection = lease.connection_id(),
            reused,
            "sending to FastCGI"
        );
        let body = match job.body.request_body().await {
            Ok(body) => body,
            Err(error) => return Attempt::Done(Err(error)),
        };
        let site = &generation.config.site;
        let content_length = job.body.len();
        let write_params = |add: &mut dyn FnMut(&[u8], &[u8])| {
            cgi_params::for_each_param(
                &job.parts,
                job.connection,
                &job.target,
                content_length,
                site,
                add,
            )
        };
        if !job.rules.repeatable {
            lease.set_unrepeatable();
        }
        let answer = match lease.send_request(write_params, body).await {
            Ok(events) => {
                let answer = self.read_response(events, &job.exchange).await;
                let header_time = sent_at.elapsed();
                facts.header_time = Some(header_time);
                server.metrics().response_header.observe(header_time);
                answer
            }
            Err(error) if error.is_connection_lost() => Ok(Answer::Lost(error)),
            Err(error) => Err(error.into()),
        };
        match answer {
            Ok(Answer::Response(response)) => {
                upstream.record_success(index);
                server
                    .metrics()
                    .responses
                    .record(response.status().as_u16());
                Attempt::Done(Ok(response))
            }
            Err(error) => {
                if matches!(&error, GatewayError::Backend(cause) if cause.is_protocol()) {
                    upstream.record_failure(index);
                }
                Attempt::Done(Err(error))
            }
            // FCGI_OVERLOADED: the request was not processed (FastCGI 1.0 §5.5), so it is
            // safe to send again whatever its method; the pool has lowered its cap.
            Ok(Answer::Overloaded) => Attempt::Failed {
                index,
                failure: Failure::Overloaded,
                error: None,
            },
            Ok(Answer::CannotMultiplex) => Attempt::Failed {
                index,
                failure: Failure::CannotMultiplex,
                error: None,
            },
            // The connection died before any answer. The app may or may not have read the
            // request, so only requests that may be repeated go again (docs/architecture.md).
            Ok(Answer::Lost(error)) => Attempt::Failed {
                index,
                failure: Failure::ConnectionLost {
                    reused,
                    multiplexing_refused: error.is_multiplexing_refused(),
                    sent: !error.is_not_sent(),
                },
                error: Some(error),
            },
        }
    }

    /// Carries out the retry policy's verdict on `failure` at server `index`: counts the
    /// failure against the server and the retry in the metrics; the pause before the next
    /// attempt, or `None` to give up.
    fn after_failure(
        &self,
        failure: Failure,
        index: usize,
        upstream: &ServerSet,
        rules: &RetryRules,
        attempts: &mut Attempts,
    ) -> Option<std::time::Duration> {
        let now = Instant::now().into_std();
        let verdict = attempts.after(failure, index, now, rules, |ruled_out| {
            upstream.pick(ruled_out).is_some()
        });
        if verdict.server_failed {
            upstream.record_failure(index);
        }
        match verdict.next {
            Next::Retry { reason, pause } => {
                self.metrics.count_retry(reason);
                if let Some(server) = upstream.get(index) {
                    server.metrics().retries.count(reason);
                }
                Some(pause)
            }
            Next::GiveUp => None,
        }
    }

    /// Reads up to the end of the CGI header block, then passes the body on.
    async fn read_response(
        &self,
        mut events: ResponseStream,
        exchange: &Exchange,
    ) -> Result<Answer, GatewayError> {
        let mut partial_head = BytesMut::new();
        let mut heard_back = false;
        loop {
            let event = match events.next_event().await {
                Ok(event) => event,
                Err(error) if !heard_back && error.is_connection_lost() => {
                    return Ok(Answer::Lost(error))
                }
                Err(error) => return Err(error.into()),
            };
            heard_back = true;
            match event {
                ResponseEvent::Stdout(data) => {
                    // Usually the whole head is in the first record: parse it in place.
                    let buffered = if partial_head.is_empty() {
                        data
                    } else {
                        partial_head.extend_from_slice(&data);
                        std::mem::take(&mut partial_head).freeze()
                    };
                    let mut buffered = buffered;
                    loop {
                        match cgi_response::parse_head(&buffered)? {
                            HeadParse::Incomplete => {
                                partial_head = BytesMut::from(&buffered[..]);
                                break;
                            }
                            // 103 Early Hints comes before the real head (PHP 8.4's
                            // headers_send(103)); hyper cannot send an interim response, so
                            // it is dropped and the head after it is the response's.
                            HeadParse::Complete { head, body_start }
                                if head.status == StatusCode::EARLY_HINTS =>
                            {
                                buffered = buffered.slice(body_start..);
                            }
                            HeadParse::Complete { head, body_start } => {
                                let rest = buffered.slice(body_start..);
                                return self
                                    .respond(head, rest, events, exchange)
                                    .map(Answer::Response);
                            }
                        }
                    }
                }
                ResponseEvent::Stderr(data) => log_backend_stderr(&exchange.name, &data),
                // The connection went back to the pool with the END_REQUEST.
                ResponseEvent::End(end) if end.protocol_status == ProtocolStatus::Overloaded => {
                    return Ok(Answer::Overloaded);
                }
                ResponseEvent::End(end) if end.protocol_status == ProtocolStatus::CantMpxConn => {
                    return Ok(Answer::CannotMultiplex);
                }
                ResponseEvent::End(_) => return Err(GatewayError::MissingResponseHead),
            }
        }
    }

    /// Builds the client's response from the app's head and the body so far: from memory when
    /// the app has already finished, else through a spool. The framing is fcgate's own
    /// (`response_framing.rs`): the app's `Content-Length` is checked against what it sends.
    fn respond(
        &self,
        mut head: CgiHead,
        first_body_bytes: Bytes,
        mut events: ResponseStream,
        exchange: &Exchange,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        response_framing::strip_hop_by_hop(&mut head.headers);
        let declared = response_framing::declared_length(&mut head.headers)?;
        let framing = ClientFraming::new(exchange.is_head, head.status, declared);
        if let (ClientFraming::Bodiless, Some(length)) = (framing, declared) {
            // The length of what a GET would have got; hyper sends no body for HEAD.
            if exchange.is_head {
                head.headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            }
        }
        let memory_limit = exchange.spool.memory;
        // The body so far: `first`, then `more`. A small response is usually one piece, held
        // without a list to allocate.
        let mut first = first_body_bytes;
        let mut more = Vec::new();
        let mut buffered = first.len();
        // Small responses are usually complete already: answer from memory, no spool task.
        while buffered <= memory_limit {
            match events.try_next_event() {
                None => break,
                Some(Ok(ResponseEvent::Stdout(data))) => {
                    buffered += data.len();
                    if first.is_empty() {
                        first = data;
                    } else {
                        more.push(data);
                    }
                }
                Some(Ok(ResponseEvent::Stderr(data))) => log_backend_stderr(&exchange.name, &data),
                Some(Ok(ResponseEvent::End(_))) => {
                    let body = if more.is_empty() {
                        first
                    } else {
                        more.insert(0, first);
                        more.concat().into()
                    };
                    return Ok(complete_response(head, body, framing, exchange));
                }
                Some(Err(error)) => return Err(error.into()),
            }
        }
        let mut chunks = more;
        if !first.is_empty() {
            chunks.insert(0, first);
        }
        if let ClientFraming::Declared(length) = framing {
            head.headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            // Already more than declared: the client can be told before the head goes out,
            // as for a complete response; the spool has the connection end either way.
            if buffered as u64 > length && exchange.version < Version::HTTP_2 {
                head.headers
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
        }
        let body = spool_response(
            chunks,
            events,
            exchange.spool,
            framing,
            exchange.name.clone(),
            exchange.close.clone(),
        );
        Ok(build_response(head, body))
    }
}

/// What the response side needs to know about the request it answers.
struct Exchange {
    /// Named in the response's warnings.
    name: RequestName,
    /// HEAD gets no body, whatever the app sends.
    is_head: bool,
    /// The client's HTTP version: `Connection: close` exists only before HTTP/2.
    version: Version,
    /// The client's HTTP/1.x connection, which a streamed body that overruns its declared
    /// length ends (`body.rs`); `None` over HTTP/2 and for requests fcgate makes itself.
    close: Option<CloseAfterResponse>,
    /// How much of the response may wait for a slow client, and for how long.
    spool: SpoolLimits,
}

impl<'a> Job<'a> {
    fn new(
        generation: &Generation,
        group: Option<String>,
        parts: Parts,
        target: ScriptTarget,
        body: request_body::SpooledBody,
        client: ClientSide<'a>,
        name: RequestName,
    ) -> Job<'a> {
        let limits = &generation.config.limits;
        let exchange = Exchange {
            name,
            is_head: parts.method == http::Method::HEAD,
            version: parts.version,
            close: client.ending.cloned(),
            spool: SpoolLimits {
                memory: limits.response_buffer_size,
                total: limits.max_response_buffer,
                send_timeout: limits.send_timeout,
            },
        };
        let upstream = group
            .as_ref()
            .and_then(|name| generation.config.upstream_groups.get(name))
            .unwrap_or(&generation.config.upstream);
        let rules = RetryRules {
            repeatable: parts.method.is_idempotent() || upstream.retry_non_idempotent,
            connect_timeout: upstream.pool.connect_timeout,
        };
        Job {
            group,
            parts,
            target,
            body,
            connection: client.info,
            exchange,
            rules,
        }
    }
}

/// What an error page's own request is made of: the client's request line and headers (kept
/// only when a site has `error_pages`), without a body.
struct ErrorPageRequest<'a> {
    /// The client's method and URI, which the page's request reuses.
    name: RequestName,
    version: Version,
    headers: http::HeaderMap,
    precompressed: Option<compression::Precompressed>,
    client: ClientSide<'a>,
}

/// The client connection a request came on: what the params say of it, and how to ask it to
/// end after this response (HTTP/1.x only).
#[derive(Clone, Copy)]
struct ClientSide<'a> {
    info: &'a ConnectionInfo,
    ending: Option<&'a CloseAfterResponse>,
}

impl ErrorPageRequest<'_> {
    /// The page's own request, as nginx's internal redirect to an `error_page`: no range, no
    /// condition (they were about what failed).
    /// Takes the headers: the page's request is made once.
    fn parts(&mut self) -> Parts {
        internal_get(
            self.name.method(),
            self.name.uri(),
            self.version,
            std::mem::take(&mut self.headers),
            Conditions::Drop,
        )
    }
}

/// Whether a request fcgate makes in a client's stead keeps the client's Range and
/// preconditions.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Conditions {
    /// A download handed over by `X-Accel-Redirect`: Range and If-* apply to the file.
    Keep,
    /// An error page: they were about what failed.
    Drop,
}

/// A GET (a HEAD stays a HEAD) of `uri` with the client's headers and never a body: what
/// fcgate asks in the client's stead for an `X-Accel-Redirect` file or an error page.
fn internal_get(
    method: &http::Method,
    uri: &http::Uri,
    version: Version,
    mut headers: http::HeaderMap,
    conditions: Conditions,
) -> Parts {
    for name in [
        header::CONTENT_LENGTH,
        header::CONTENT_TYPE,
        header::TRANSFER_ENCODING,
    ] {
        headers.remove(name);
    }
    if conditions == Conditions::Drop {
        for name in [
            header::RANGE,
            header::IF_RANGE,
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_UNMODIFIED_SINCE,
        ] {
            headers.remove(name);
        }
    }
    let mut request = Request::new(());
    *request.method_mut() = if *method == http::Method::HEAD {
        http::Method::HEAD
    } else {
        http::Method::GET
    };
    *request.uri_mut() = uri.clone();
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    request.into_parts().0
}

/// The page's body and type under the original status, with what the original said about
/// the error itself (a 401's challenge, a 503's Retry-After, a 405's Allow, closing the
/// connection after a refused body).
fn error_page_with(
    status: StatusCode,
    original: &Response<ResponseBody>,
    mut page: Response<ResponseBody>,
) -> Response<ResponseBody> {
    *page.status_mut() = status;
    let headers = page.headers_mut();
    // Validators describe the page file, not an answer that changes with every request.
    for name in [header::ETAG, header::LAST_MODIFIED, header::ACCEPT_RANGES] {
        headers.remove(name);
    }
    for name in [
        header::WWW_AUTHENTICATE,
        header::RETRY_AFTER,
        header::ALLOW,
        header::CONNECTION,
        header::LOCATION,
    ] {
        if let Some(value) = original.headers().get(&name) {
            headers.insert(name, value.clone());
        }
    }
    page
}

/// The response to a request whose app output is all in: `body` is every byte the app sent
/// after its head, fitted to what it declared.
fn complete_response(
    mut head: CgiHead,
    mut body: Bytes,
    framing: ClientFraming,
    exchange: &Exchange,
) -> Response<ResponseBody> {
    if framing == ClientFraming::Bodiless {
        return build_response(head, body::full(Bytes::new()));
    }
    let fit = BodyFit::of(framing.declared(), body.len() as u64);
    log_length_mismatch(&exchange.name, fit);
    match fit {
        BodyFit::Matches => build_response(head, body::full(body)),
        BodyFit::Longer { declared, .. } => {
            // Shorter than `body`, so it fits in usize.
            body.truncate(declared as usize);
            // The app is confused about its own output: start the client afresh rather
            // than trust anything more on this connection.
            if exchange.version < Version::HTTP_2 {
                head.headers
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            build_response(head, body::full(body))
        }
        BodyFit::Shorter { declared, sent } => {
            head.headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(declared));
            let missing = std::io::Error::other(format!(
                "the backend sent {sent} of the {declared} bytes it declared"
            ));
            build_response(head, body::then_error(body, missing))
        }
    }
}

fn build_response(head: CgiHead, body: ResponseBody) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    *response.headers_mut() = head.headers;
    response
}

/// A file from the document root: validators, conditional requests and ranges, If-Range and
/// several ranges included (`static_file.rs`).
async fn serve_static(
    path: std::path::PathBuf,
    parts: Parts,
) -> Result<Response<ResponseBody>, GatewayError> {
    let precompressed = parts
        .extensions
        .get::<compression::Precompressed>()
        .copied();
    // Boxed: serving a file takes a 2 KiB future, and the request future of every script
    // request would otherwise carry it (and be moved with it) for the few that send a file.
    let mut response = Box::pin(crate::static_file::serve(&path, parts, precompressed)).await;
    // Compressed under `compression.static`, not `compression.scripts`.
    response.extensions_mut().insert(compression::StaticFile);
    Ok(response)
}

/// The answer to an ACME HTTP-01 validation request (RFC 8555 §8.3): the key authorization
/// of a pending challenge, else 404. Before the redirect to HTTPS: validation starts over HTTP.
fn http01_answer(acme: &AcmeState, token: &str) -> Response<ResponseBody> {
    match acme.http01_answer(token) {
        Some(answer) => {
            let mut response = Response::new(body::full(Bytes::from(answer)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            response
        }
        None => plain_response(StatusCode::NOT_FOUND),
    }
}

/// The connection as a trusted proxy's header describes it (`trusted_proxies`); `None` when the
/// peer is the client (not trusted, or no header). A header that stops being believable midway
/// is worth a line naming the request.
fn real_client(
    config: &Config,
    request: &Request<Incoming>,
    connection: &ConnectionInfo,
    request_id: u64,
) -> Option<ConnectionInfo> {
    let settings = &config.real_client;
    if settings.trusted.is_empty() {
        return None;
    }
    let peer = connection.remote_addr();
    let resolution =
        real_client::resolve(peer, request.headers(), &settings.trusted, settings.header);
    if let Resolution::Malformed {
        client,
        bad,
        reason,
    } = &resolution
    {
        tracing::warn!(
            request = request_id,
            method = %request.method(),
            path = request.uri().path(),
            %peer,
            "{} from a trusted proxy: {reason} `{bad}`; taking {} as the client",
            settings.header.as_str(),
            client.addr
        );
    }
    let client = resolution.client()?;
    Some(connection.behind_proxy(client.addr, client.https))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `Gateway::handle` returns, for whichever lifetimes.
    fn handle_future_size<'a, F: std::future::Future>(
        _: fn(
            &'a Gateway,
            Request<Incoming>,
            &'a ConnectionInfo,
            Option<&'a CloseAfterResponse>,
        ) -> F,
    ) -> usize {
        std::mem::size_of::<F>()
    }

    /// hyper moves a request's future by value (into each HTTP/2 stream's task, into the
    /// HTTP/1 dispatcher, over the task's output at the end), so its size is copied several
    /// times a request. The rare paths (static files, error pages) are boxed to keep it small:
    /// 3.7 KiB with them boxed, 6.9 KiB without.
    #[test]
    fn a_request_future_stays_small() {
        let size = handle_future_size(Gateway::handle);
        assert!(size <= 4096, "Gateway::handle's future takes {size} bytes");
    }
}
