//! The HTTP API of `projector run` (axum, on its own small tokio runtime): projection
//! status, read-only queries, tables, control calls that answer, Prometheus metrics,
//! readiness, and the status page at `/`.
//!
//! Control calls (`replay`, `resume`, `retry-dead-letters`) need `Authorization: Bearer
//! <token>`; read-only calls need it only from off the machine. The registry carries out
//! control calls on its own thread (it is the one writer) and answers through a channel.

mod metrics;
pub mod status;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::config::HttpSettings;
use crate::query::{QueryError, QueryLimits};
use crate::registry::{Command, Commander, Roster};
use crate::schema::valid_projection_name;
use status::Rates;

use crate::client;
pub use crate::client::{ADDRESS_FILE, TOKEN_FILE};

/// The other hosts: which shard this is, and the projections other shards run.
pub struct Peers {
    /// This host's place in the cluster.
    pub cluster: crate::cluster::Cluster,
    /// Projections of the modules folder run elsewhere, with their owner shard.
    pub elsewhere: Arc<Mutex<Vec<(String, usize)>>>,
}

/// What the handlers share.
struct Api {
    peers: Peers,
    data: PathBuf,
    roster: Roster,
    commander: Commander,
    token: String,
    limits: QueryLimits,
    rates: Mutex<Rates>,
    /// Queries running at once: the projections' writers share the same cores, so a
    /// crowd of readers queues here instead of slowing every projection down.
    queries: tokio::sync::Semaphore,
}

type Shared = Arc<Api>;

/// A running server; dropping it stops it.
pub struct Server {
    /// The address it listens on.
    pub addr: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

/// Start the API on `settings.listen` (None when it is empty).
pub fn start(
    settings: &HttpSettings,
    data: &Path,
    peers: Peers,
    roster: Roster,
    commander: Commander,
) -> Result<Option<Server>> {
    if settings.listen.trim().is_empty() {
        return Ok(None);
    }
    let token = token(settings, data)?;
    let api = Arc::new(Api {
        peers,
        data: data.to_path_buf(),
        roster,
        commander,
        token,
        limits: QueryLimits {
            max_rows: settings.max_rows,
            timeout_ms: settings.query_timeout_ms,
        },
        rates: Mutex::default(),
        queries: tokio::sync::Semaphore::new(settings.query_concurrency.max(1)),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("http")
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(&settings.listen))
        .with_context(|| format!("listening on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    let app = router(api);
    runtime.spawn(async move {
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
        if let Err(e) = served {
            tracing::error!("the HTTP server stopped: {e}");
        }
    });
    crate::runtime::write_atomic(
        &data.join(ADDRESS_FILE),
        format!("http://{addr}").as_bytes(),
    )?;
    tracing::info!(url = %format!("http://{addr}/"), "HTTP API and status page");
    Ok(Some(Server {
        addr,
        _runtime: runtime,
    }))
}

/// The token: configured, from `PROJECTOR_TOKEN`, or generated into an owner-only file.
fn token(settings: &HttpSettings, data: &Path) -> Result<String> {
    if let Some(t) = settings.token.clone().filter(|t| !t.is_empty()) {
        return Ok(t);
    }
    if let Ok(t) = std::env::var("PROJECTOR_TOKEN")
        && !t.is_empty()
    {
        return Ok(t);
    }
    let mut bytes = [0u8; 24];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?,
        &mut bytes,
    )
    .context("reading /dev/urandom")?;
    let token = hex::encode(bytes);
    let path = data.join(TOKEN_FILE);
    let _ = std::fs::remove_file(&path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, token.as_bytes())?;
    Ok(token)
}

fn router(api: Shared) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/readyz", get(|| async { "ready" }))
        .route("/metrics", get(metrics))
        .route("/api/projections", get(projections))
        .route("/api/modules/refused", get(refused_modules))
        .route("/api/projections/{name}/query", post(query))
        .route("/api/projections/{name}/tables", get(tables))
        .route("/api/projections/{name}/replay", post(replay))
        .route("/api/projections/{name}/resume", post(resume))
        .route(
            "/api/projections/{name}/retry-dead-letters",
            post(retry_dead_letters),
        )
        .route("/api/projections/{name}/promote", post(promote))
        .route("/api/projections/{name}/rollback", post(rollback))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(api)
}

/// An answer with a status and a JSON `{"error": …}` body.
fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": message.to_string() })),
    )
        .into_response()
}

/// Refused unless the caller shows the token (or, for reads, calls from this machine).
fn authorize(api: &Api, headers: &HeaderMap, peer: SocketAddr, write: bool) -> Option<Response> {
    if !write && peer.ip().is_loopback() {
        return None;
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => Some(error(
            StatusCode::UNAUTHORIZED,
            "this call needs `Authorization: Bearer <token>` (the host's token: config [http] token, PROJECTOR_TOKEN, or data/api.token)",
        )),
        Some(t) if t == api.token => None,
        Some(_) => Some(error(StatusCode::FORBIDDEN, "wrong token")),
    }
}

/// A refusal when a projection name from the URL is not a valid name (checked before it
/// reaches a path or the registry).
fn bad_name(name: &str) -> Option<Response> {
    (!valid_projection_name(name)).then(|| {
        error(
            StatusCode::BAD_REQUEST,
            format!("invalid projection name {name:?}"),
        )
    })
}

async fn page() -> Html<&'static str> {
    Html(include_str!("status.html"))
}

/// `?local=true`: this host's projections only (what peers ask each other).
#[derive(Deserialize)]
struct Local {
    #[serde(default)]
    local: bool,
}

async fn projections(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<Local>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = authorize(&api, &headers, peer, false) {
        return refused;
    }
    let mut list = match current(&api) {
        Ok(list) => list,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    };
    let cluster = &api.peers.cluster;
    let here = cluster.describe(cluster.index);
    for s in &mut list {
        s.owner = Some(here.clone());
    }
    if !q.local {
        let elsewhere = api
            .peers
            .elsewhere
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let cluster = cluster.clone();
        let theirs = tokio::task::spawn_blocking(move || from_peers(&cluster, &elsewhere))
            .await
            .unwrap_or_default();
        list.extend(theirs);
        list.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Json(list).into_response()
}

/// The statuses of the projections other shards own, asked of each owner once; an
/// owner that does not answer shows its projections as `unreachable`.
fn from_peers(
    cluster: &crate::cluster::Cluster,
    elsewhere: &[(String, usize)],
) -> Vec<status::ProjectionStatus> {
    let mut shards: Vec<usize> = elsewhere.iter().map(|(_, s)| *s).collect();
    shards.sort_unstable();
    shards.dedup();
    let mut out = Vec::new();
    for shard in shards {
        let names = elsewhere
            .iter()
            .filter(|(_, s)| *s == shard)
            .map(|(n, _)| n);
        let answer = cluster.peer(shard).map(|base| {
            client::request(base, "GET", "/api/projections?local=true", None, None).and_then(|r| {
                Ok(serde_json::from_str::<Vec<status::ProjectionStatus>>(
                    &r.body,
                )?)
            })
        });
        match answer {
            Some(Ok(list)) => {
                let owned: Vec<&String> = names.collect();
                out.extend(list.into_iter().filter(|s| owned.contains(&&s.name)));
            }
            _ => out.extend(names.map(|n| status::ProjectionStatus {
                name: n.clone(),
                state: "unreachable".into(),
                owner: Some(cluster.describe(shard)),
                ..Default::default()
            })),
        }
    }
    out
}

/// When another shard owns `name`: its answer to the same request, or a 503 naming it.
async fn forward(
    api: &Api,
    name: &str,
    method: &str,
    path_and_query: String,
    headers: &HeaderMap,
    body: Vec<u8>,
) -> Option<Response> {
    let cluster = &api.peers.cluster;
    if cluster.owns(name) {
        return None;
    }
    let shard = cluster.owner(name);
    let who = cluster.describe(shard);
    let Some(base) = cluster.peer(shard).map(String::from) else {
        return Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "projection `{name}` runs on {who}, whose address is not configured ([cluster] peers)"
            ),
        ));
    };
    let pass: Vec<(String, String)> = [header::AUTHORIZATION, header::ACCEPT]
        .iter()
        .filter_map(|h| {
            Some((
                h.as_str().to_string(),
                headers.get(h)?.to_str().ok()?.to_string(),
            ))
        })
        .collect();
    let method = method.to_string();
    let answer = tokio::task::spawn_blocking(move || {
        let hs: Vec<(&str, &str)> = pass.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        client::request_with(&base, &method, &path_and_query, &hs, &body)
    })
    .await;
    Some(match answer {
        Ok(Ok(r)) => {
            let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let kind = r
                .content_type
                .unwrap_or_else(|| "application/json".to_string());
            (status, [(header::CONTENT_TYPE, kind)], r.body).into_response()
        }
        Ok(Err(e)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("projection `{name}` runs on {who}, which is unreachable: {e:#}"),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    })
}

/// Every projection's status now.
fn current(api: &Api) -> Result<Vec<status::ProjectionStatus>> {
    let roster = api.roster.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut rates = api.rates.lock().unwrap_or_else(|e| e.into_inner());
    status::statuses(&api.data, &roster, &mut rates)
}

async fn metrics(State(api): State<Shared>) -> Response {
    match current(&api) {
        Ok(list) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            metrics::render(&list),
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

/// The body of a query call.
#[derive(Deserialize)]
struct QueryBody {
    sql: String,
}

async fn query(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refused) = authorize(&api, &headers, peer, false) {
        return refused;
    }
    if let Some(refused) = bad_name(&name) {
        return refused;
    }
    let path = format!("/api/projections/{name}/query");
    if let Some(theirs) = forward(&api, &name, "POST", path, &headers, body.to_vec()).await {
        return theirs;
    }
    let sql = match serde_json::from_slice::<QueryBody>(&body) {
        Ok(b) => b.sql,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body must be {{\"sql\": \"SELECT …\"}}: {e}"),
            );
        }
    };
    let ndjson = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/x-ndjson"));
    let (data, limits) = (api.data.clone(), api.limits);
    let Ok(_permit) = api.queries.acquire().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the host is shutting down");
    };
    let answer = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let sink: Option<&mut dyn std::io::Write> = if ndjson { Some(&mut out) } else { None };
        crate::query::query_with(&data, &name, &sql, limits, sink).map(|t| (t, out))
    })
    .await;
    match answer {
        Ok(Ok((_, out))) if ndjson => {
            ([(header::CONTENT_TYPE, "application/x-ndjson")], out).into_response()
        }
        Ok(Ok((table, _))) => Json(table).into_response(),
        Ok(Err(e @ QueryError::NotFound(_))) => error(StatusCode::NOT_FOUND, e),
        Ok(Err(e @ QueryError::TooSlow(_))) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn tables(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = authorize(&api, &headers, peer, false) {
        return refused;
    }
    if let Some(refused) = bad_name(&name) {
        return refused;
    }
    let path = format!("/api/projections/{name}/tables");
    if let Some(theirs) = forward(&api, &name, "GET", path, &headers, Vec::new()).await {
        return theirs;
    }
    match crate::query::tables(&api.data, &name) {
        Ok(t) => Json(t).into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, format!("{e:#}")),
    }
}

/// The module files this host refused and has not loaded since (what was wrong, and
/// where), from its catalog.
async fn refused_modules(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = authorize(&api, &headers, peer, false) {
        return refused;
    }
    let data = api.data.clone();
    let read = tokio::task::spawn_blocking(move || {
        crate::store::Catalog::open_read_only(&data).and_then(|c| c.refused())
    })
    .await;
    match read {
        Ok(Ok(list)) => Json(list).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `?until=P` of a replay.
#[derive(Deserialize)]
struct Until {
    until: Option<u64>,
}

async fn replay(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<Until>,
    headers: HeaderMap,
) -> Response {
    let call = match q.until {
        Some(u) => format!("replay?until={u}"),
        None => "replay".into(),
    };
    control(&api, &headers, peer, &name, &call, |name| Command::Replay {
        name,
        until: q.until,
    })
    .await
}

async fn resume(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    control(&api, &headers, peer, &name, "resume", |name| {
        Command::Resume { name }
    })
    .await
}

async fn retry_dead_letters(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    control(&api, &headers, peer, &name, "retry-dead-letters", |name| {
        Command::RetryDeadLetters { name }
    })
    .await
}

async fn promote(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    control(&api, &headers, peer, &name, "promote", |name| {
        Command::Promote { name }
    })
    .await
}

async fn rollback(
    State(api): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    control(&api, &headers, peer, &name, "rollback", |name| {
        Command::Rollback { name }
    })
    .await
}

/// Pass a control call to the registry and answer what it did.
async fn control(
    api: &Api,
    headers: &HeaderMap,
    peer: SocketAddr,
    name: &str,
    call: &str,
    command: impl FnOnce(String) -> Command,
) -> Response {
    if let Some(refused) = authorize(api, headers, peer, true) {
        return refused;
    }
    if let Some(refused) = bad_name(name) {
        return refused;
    }
    let path = format!("/api/projections/{name}/{call}");
    if let Some(theirs) = forward(api, name, "POST", path, headers, Vec::new()).await {
        return theirs;
    }
    let reply = api.commander.send(command(name.to_string()));
    let answer =
        tokio::task::spawn_blocking(move || reply.recv_timeout(Duration::from_secs(120))).await;
    match answer {
        Ok(Ok(Ok(done))) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "accepted": true, "message": done })),
        )
            .into_response(),
        Ok(Ok(Err(why))) => error(StatusCode::CONFLICT, why),
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the host did not answer (shutting down?)",
        ),
    }
}
