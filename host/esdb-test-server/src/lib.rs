//! A protocol-level EventStoreDB / KurrentDB test server.
//!
//! It speaks the gRPC protocol the official client uses — `ServerFeatures`,
//! `Streams.Read` (stream and `$all` reads, `$all` subscriptions with event-type and
//! stream filters, filtered checkpoints, caught-up) and `Streams.Append` (with
//! expected-revision checks and idempotent retries) — from stubs compiled at build time
//! from the `kurrentdb` crate's own `.proto` files. Everything lives in memory.
//!
//! Faults, for tests: [`TestServer::drop_subscriptions`] ends every live subscription
//! with an error, [`TestServer::stop`] / [`TestServer::start_again`] take the port down
//! and bring it back with the same data (refused connections in between), and
//! [`TestServer::stall`] makes subscriptions go quiet for a while.
//! [`TestServer::set_batch_append`] hides batch append, like a server older than 21.10.
//!
//! Cluster mode ([`TestCluster`]): several nodes, each on a port of its own, share one
//! log and answer the client's discovery (`Gossip.Read`) with every member's state and
//! liveness. Only the leader takes appends (followers answer `not-leader` naming it, as
//! the server does); any live node serves reads and subscriptions. A node can be killed
//! and restarted, and the leader can change: the client finds the new shape through
//! gossip, as it does against a real cluster.
// Handlers answer with tonic's `Status`, as the generated service traits require.
#![allow(clippy::result_large_err)]

pub mod proto {
    //! Stubs generated from the `kurrentdb` crate's `protos/`.
    #![allow(missing_docs, clippy::all)]
    pub mod event_store {
        pub mod client {
            tonic::include_proto!("event_store.client");
            pub mod streams {
                tonic::include_proto!("event_store.client.streams");
            }
            pub mod server_features {
                tonic::include_proto!("event_store.client.server_features");
            }
            pub mod gossip {
                tonic::include_proto!("event_store.client.gossip");
            }
        }
    }
    pub mod google {
        pub mod rpc {
            tonic::include_proto!("google.rpc");
        }
    }
}

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use proto::event_store::client as common;
use proto::event_store::client::gossip;
use proto::event_store::client::server_features as features;
use proto::event_store::client::streams;
use streams::read_req::options as ropts;

/// One event to store.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Stream id.
    pub stream: String,
    /// Event type.
    pub event_type: String,
    /// Event id.
    pub id: uuid::Uuid,
    /// Payload bytes.
    pub data: Vec<u8>,
    /// User metadata bytes.
    pub metadata: Vec<u8>,
    /// `application/json` or `application/octet-stream`.
    pub content_type: String,
    /// Creation time in ms since the Unix epoch.
    pub created_ms: u64,
}

/// A stored event: what was appended plus where it landed.
#[derive(Debug, Clone)]
struct Stored {
    event: NewEvent,
    revision: u64,
    position: u64,
}

/// Positions are spaced like byte offsets, so they never equal indexes by accident.
const POSITION_STEP: u64 = 64;

/// The log: every event in `$all` order, and each stream's events by revision.
#[derive(Default)]
struct Log {
    all: Vec<Arc<Stored>>,
    streams: HashMap<String, Vec<usize>>,
}

impl Log {
    fn push(&mut self, event: NewEvent) -> Arc<Stored> {
        let index = self.all.len();
        let revisions = self.streams.entry(event.stream.clone()).or_default();
        let stored = Arc::new(Stored {
            revision: revisions.len() as u64,
            position: (index as u64 + 1) * POSITION_STEP,
            event,
        });
        revisions.push(index);
        self.all.push(stored.clone());
        stored
    }

    /// Index of the first event after `position` in `$all`.
    fn after(&self, position: u64) -> usize {
        self.all.partition_point(|e| e.position <= position)
    }
}

/// State that outlives restarts of the listener.
struct Shared {
    log: RwLock<Log>,
    /// Number of events in the log, for live subscriptions to wait on.
    head: watch::Sender<usize>,
    /// Subscriptions send nothing until this instant.
    stalled_until: Mutex<Option<Instant>>,
    /// Subscriptions served so far (for tests to see resubscriptions).
    subscriptions: AtomicU64,
    /// The nodes serving this log, as gossip describes them.
    members: Mutex<Members>,
    /// Append requests answered (unary appends and batch-append requests alike).
    appends: AtomicU64,
    /// Batch-append sessions opened.
    batch_sessions: AtomicU64,
    /// Whether `BatchAppend` is offered (and advertised).
    batch_append: AtomicBool,
}

/// The cluster's members: where each listens, whether it is up, which one leads.
struct Members {
    nodes: Vec<Member>,
    leader: usize,
}

/// One member as gossip reports it.
struct Member {
    addr: SocketAddr,
    id: uuid::Uuid,
    alive: bool,
}

impl Members {
    /// The gossip state of node `i`.
    fn state(&self, i: usize) -> gossip::member_info::VNodeState {
        use gossip::member_info::VNodeState;
        match self.nodes.get(i) {
            Some(n) if !n.alive => VNodeState::Shutdown,
            Some(_) if i == self.leader => VNodeState::Leader,
            _ => VNodeState::Follower,
        }
    }
}

/// What belongs to one node rather than to the log: its subscriptions.
struct Node {
    index: usize,
    /// Bumped to end this node's live subscriptions with an error.
    drops: watch::Sender<u64>,
    /// Subscriptions open on this node now.
    live: AtomicU64,
}

/// A running test server (one node; see [`TestCluster`] for several).
pub struct TestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    node: Arc<Node>,
    /// The runtime serving the port; dropping it drops every connection.
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
}

impl TestServer {
    /// Start on `127.0.0.1:0` holding `events`.
    pub fn start(events: Vec<NewEvent>) -> Result<TestServer> {
        Self::start_on("127.0.0.1:0".parse()?, events)
    }

    /// Start on `addr` holding `events`.
    pub fn start_on(addr: SocketAddr, events: Vec<NewEvent>) -> Result<TestServer> {
        Self::node(Shared::new(events), addr)
    }

    /// Start one more node of `shared`'s cluster on `addr`.
    fn node(shared: Arc<Shared>, addr: SocketAddr) -> Result<TestServer> {
        let node = Arc::new(Node {
            index: shared.lock_members().nodes.len(),
            drops: watch::channel(0).0,
            live: AtomicU64::new(0),
        });
        let (runtime, addr) = serve(addr, shared.clone(), node.clone())?;
        shared.lock_members().nodes.push(Member {
            addr,
            id: uuid::Uuid::new_v4(),
            alive: true,
        });
        Ok(TestServer {
            addr,
            shared,
            node,
            runtime: Mutex::new(Some(runtime)),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A connection string for the client (plain text, fast discovery).
    pub fn url(&self) -> String {
        format!("esdb://{}?tls=false&discoveryInterval=10", self.addr)
    }

    /// Append events straight into the log (no gRPC): for loading large test data.
    pub fn append_direct(&self, events: impl IntoIterator<Item = NewEvent>) {
        let mut log = self.shared.log.write().unwrap_or_else(|e| e.into_inner());
        for e in events {
            log.push(e);
        }
        self.shared.head.send_replace(log.all.len());
    }

    /// Events in the log.
    pub fn len(&self) -> usize {
        self.shared
            .log
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .all
            .len()
    }

    /// True when the log holds no event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `$all` subscriptions opened so far.
    pub fn subscriptions_served(&self) -> u64 {
        self.shared.subscriptions.load(Ordering::Relaxed)
    }

    /// `$all` subscriptions open on this node now.
    pub fn live_subscriptions(&self) -> u64 {
        self.node.live.load(Ordering::Relaxed)
    }

    /// Append requests answered so far (unary appends and batch-append requests).
    pub fn appends_served(&self) -> u64 {
        self.shared.appends.load(Ordering::Relaxed)
    }

    /// Batch-append sessions opened so far.
    pub fn batch_sessions_served(&self) -> u64 {
        self.shared.batch_sessions.load(Ordering::Relaxed)
    }

    /// Offer batch append or not (on by default); off, the server neither advertises
    /// nor serves it, like EventStoreDB before 21.10. Clients read the advertised
    /// methods when they connect.
    pub fn set_batch_append(&self, on: bool) {
        self.shared.batch_append.store(on, Ordering::Relaxed);
    }

    /// End every live subscription of this node with an `Unavailable` error.
    pub fn drop_subscriptions(&self) {
        self.node.drops.send_modify(|n| *n += 1);
    }

    /// Subscriptions send nothing for `d` (they stay open).
    pub fn stall(&self, d: Duration) {
        *self
            .shared
            .stalled_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + d);
    }

    /// Take the port down: every connection drops, new ones are refused.
    pub fn stop(&self) {
        self.set_alive(false);
        self.drop_subscriptions();
        if let Some(rt) = self
            .runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            rt.shutdown_background();
        }
    }

    /// Listen again on the same port with the same data.
    pub fn start_again(&self) -> Result<()> {
        let mut slot = self.runtime.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            // The old socket may linger for a moment after the runtime is gone.
            let mut tries = 0;
            let (rt, _) = loop {
                match serve(self.addr, self.shared.clone(), self.node.clone()) {
                    Ok(ok) => break ok,
                    Err(e) if tries < 50 => {
                        tries += 1;
                        tracing::debug!("rebinding {}: {e:#}", self.addr);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => return Err(e),
                }
            };
            *slot = Some(rt);
        }
        self.set_alive(true);
        Ok(())
    }

    /// Mark this node up or down in gossip.
    fn set_alive(&self, alive: bool) {
        if let Some(m) = self.shared.lock_members().nodes.get_mut(self.node.index) {
            m.alive = alive;
        }
    }

    /// Stop, and start again with the same data (a server restart).
    pub fn restart(&self) -> Result<()> {
        self.stop();
        self.start_again()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Several nodes sharing one log, with gossip, a leader and failures.
pub struct TestCluster {
    nodes: Vec<TestServer>,
}

impl TestCluster {
    /// Start `n` nodes on `127.0.0.1` ports of their own, holding `events`; node 0 leads.
    pub fn start(n: usize, events: Vec<NewEvent>) -> Result<TestCluster> {
        Self::start_on(&vec!["127.0.0.1:0".parse()?; n], events)
    }

    /// Start one node per address, holding `events`; the first leads.
    pub fn start_on(addrs: &[SocketAddr], events: Vec<NewEvent>) -> Result<TestCluster> {
        anyhow::ensure!(!addrs.is_empty(), "a cluster needs at least one node");
        let shared = Shared::new(events);
        let nodes = addrs
            .iter()
            .map(|a| TestServer::node(shared.clone(), *a))
            .collect::<Result<Vec<_>>>()?;
        Ok(TestCluster { nodes })
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &TestServer {
        &self.nodes[i]
    }

    /// The number of nodes.
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// A connection string with every node as a gossip seed (plain text, fast
    /// discovery); `extra` is appended to its parameters (`nodePreference=follower`).
    pub fn url(&self, extra: &str) -> String {
        let seeds: Vec<String> = self.nodes.iter().map(|n| n.addr.to_string()).collect();
        let sep = if extra.is_empty() { "" } else { "&" };
        format!(
            "esdb://{}?tls=false&discoveryInterval=10&gossipTimeout=500{sep}{extra}",
            seeds.join(",")
        )
    }

    /// The node that leads now.
    pub fn leader(&self) -> usize {
        self.nodes[0].shared.lock_members().leader
    }

    /// The node serving the most live subscriptions (the one clients read from).
    pub fn busiest(&self) -> usize {
        (0..self.nodes.len())
            .max_by_key(|&i| self.nodes[i].live_subscriptions())
            .unwrap_or(0)
    }

    /// Kill node `i` (connections drop, the port refuses); a killed leader hands over
    /// to the next live node, as an election would.
    pub fn kill(&self, i: usize) {
        self.nodes[i].stop();
        let next = {
            let m = self.nodes[i].shared.lock_members();
            (m.leader == i)
                .then(|| (1..m.nodes.len()).map(|k| (i + k) % m.nodes.len()))
                .and_then(|mut c| c.find(|&k| m.nodes[k].alive))
        };
        if let Some(next) = next {
            self.set_leader(next);
        }
    }

    /// Bring node `i` back (a follower, unless no live node leads).
    pub fn restart(&self, i: usize) -> Result<()> {
        self.nodes[i].start_again()?;
        let leaderless = {
            let m = self.nodes[i].shared.lock_members();
            !m.nodes[m.leader].alive
        };
        if leaderless {
            self.set_leader(i);
        }
        Ok(())
    }

    /// Make node `i` the leader. The old and new leaders change role, and a node
    /// changing role ends its subscriptions, as a real node going through an election
    /// does; their clients rediscover.
    pub fn set_leader(&self, i: usize) {
        let old = {
            let mut m = self.nodes[i].shared.lock_members();
            std::mem::replace(&mut m.leader, i)
        };
        if old != i {
            self.nodes[old].drop_subscriptions();
            self.nodes[i].drop_subscriptions();
        }
    }

    /// Append straight into the shared log (no gRPC).
    pub fn append_direct(&self, events: impl IntoIterator<Item = NewEvent>) {
        self.nodes[0].append_direct(events);
    }

    /// Events in the log.
    pub fn len(&self) -> usize {
        self.nodes[0].len()
    }

    /// True when the log holds no event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Bind and serve on a runtime of its own.
fn serve(
    addr: SocketAddr,
    shared: Arc<Shared>,
    node: Arc<Node>,
) -> Result<(tokio::runtime::Runtime, SocketAddr)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("esdb-test-server")
        .enable_all()
        .build()
        .context("starting the server runtime")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(addr))
        .with_context(|| format!("binding {addr}"))?;
    let addr = listener.local_addr()?;
    let service = Service { shared, node };
    runtime.spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let result = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            // Kestrel's HTTP/2 defaults, as an EventStoreDB / KurrentDB server has them
            // (h2's own 64 KiB would hold a pipelining client back).
            .initial_stream_window_size(Some(768 * 1024))
            .initial_connection_window_size(Some(1024 * 1024))
            .add_service(streams::streams_server::StreamsServer::new(service.clone()))
            .add_service(gossip::gossip_server::GossipServer::new(service.clone()))
            .add_service(features::server_features_server::ServerFeaturesServer::new(
                service,
            ))
            .serve_with_incoming(incoming)
            .await;
        if let Err(e) = result {
            tracing::warn!("test server stopped: {e}");
        }
    });
    Ok((runtime, addr))
}

#[derive(Clone)]
struct Service {
    shared: Arc<Shared>,
    node: Arc<Node>,
}

#[tonic::async_trait]
impl gossip::gossip_server::Gossip for Service {
    async fn read(
        &self,
        _: Request<common::Empty>,
    ) -> Result<Response<gossip::ClusterInfo>, Status> {
        let m = self.shared.lock_members();
        let ticks = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() / 100) as i64;
        let members = m
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| gossip::MemberInfo {
                instance_id: Some(common::Uuid {
                    value: Some(common::uuid::Value::String(n.id.to_string())),
                }),
                time_stamp: ticks,
                state: m.state(i) as i32,
                is_alive: n.alive,
                http_end_point: Some(gossip::EndPoint {
                    address: n.addr.ip().to_string(),
                    port: u32::from(n.addr.port()),
                }),
            })
            .collect();
        Ok(Response::new(gossip::ClusterInfo { members }))
    }
}

#[tonic::async_trait]
impl features::server_features_server::ServerFeatures for Service {
    async fn get_supported_methods(
        &self,
        _: Request<common::Empty>,
    ) -> Result<Response<features::SupportedMethods>, Status> {
        let method = |service: &str, name: &str| features::SupportedMethod {
            method_name: name.into(),
            service_name: service.into(),
            features: vec![],
        };
        let mut methods = vec![
            method("event_store.client.streams.streams", "read"),
            method("event_store.client.streams.streams", "append"),
        ];
        if self.shared.batch_append.load(Ordering::Relaxed) {
            methods.push(method("event_store.client.streams.streams", "batchappend"));
        }
        Ok(Response::new(features::SupportedMethods {
            methods,
            event_store_server_version: "24.10.0".into(),
        }))
    }
}

type ReadItem = Result<streams::ReadResp, Status>;

/// Counts an open subscription until dropped (also when its runtime is shut down).
struct Live(Arc<Node>);

impl Live {
    fn new(node: Arc<Node>) -> Live {
        node.live.fetch_add(1, Ordering::Relaxed);
        Live(node)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a read or subscription asks for.
struct ReadPlan {
    stream: Option<String>,
    /// Index into `$all` (or into the stream's revisions) to start from.
    from: usize,
    backwards: bool,
    count: Option<u64>,
    filter: Option<EventFilter>,
}

/// A server-side filter, and how often it reports checkpoints.
struct EventFilter {
    on_stream: bool,
    prefixes: Vec<String>,
    regex: Option<regex::Regex>,
    checkpoint_every: u64,
}

impl EventFilter {
    fn matches(&self, e: &Stored) -> bool {
        let subject = if self.on_stream {
            &e.event.stream
        } else {
            &e.event.event_type
        };
        if !self.prefixes.is_empty() {
            return self
                .prefixes
                .iter()
                .any(|p| subject.starts_with(p.as_str()));
        }
        self.regex.as_ref().is_none_or(|r| r.is_match(subject))
    }
}

impl Service {
    /// Only the leader takes writes: others answer `not-leader` with its address, which
    /// sends the client to it.
    fn leader_only(&self) -> Result<(), Status> {
        let m = self.shared.lock_members();
        if m.leader == self.node.index {
            return Ok(());
        }
        let leader = m.nodes[m.leader].addr;
        let mut status = Status::not_found(format!("not the leader; the leader is {leader}"));
        let meta = status.metadata_mut();
        let ascii = |s: String| s.parse::<tonic::metadata::MetadataValue<_>>();
        if let (Ok(e), Ok(h), Ok(p)) = (
            ascii("not-leader".into()),
            ascii(leader.ip().to_string()),
            ascii(leader.port().to_string()),
        ) {
            meta.insert("exception", e);
            meta.insert("leader-endpoint-host", h);
            meta.insert("leader-endpoint-port", p);
        }
        Err(status)
    }

    fn plan(&self, options: streams::read_req::Options) -> Result<ReadPlan, Status> {
        let log = self.shared.log.read().unwrap_or_else(|e| e.into_inner());
        let backwards = options.read_direction == ropts::ReadDirection::Backwards as i32;
        let count = match options.count_option {
            Some(ropts::CountOption::Count(n)) => Some(n),
            Some(ropts::CountOption::Subscription(_)) => None,
            None => return Err(Status::invalid_argument("count or subscription required")),
        };
        let filter = match options.filter_option {
            Some(ropts::FilterOption::Filter(f)) => {
                let (on_stream, expr) = match f.filter {
                    Some(ropts::filter_options::Filter::StreamIdentifier(x)) => (true, x),
                    Some(ropts::filter_options::Filter::EventType(x)) => (false, x),
                    None => return Err(Status::invalid_argument("empty filter")),
                };
                let regex =
                    if expr.regex.is_empty() {
                        None
                    } else {
                        Some(regex::Regex::new(&expr.regex).map_err(|e| {
                            Status::invalid_argument(format!("bad filter regex: {e}"))
                        })?)
                    };
                let window = match f.window {
                    Some(ropts::filter_options::Window::Max(m)) => u64::from(m),
                    _ => 32,
                };
                Some(EventFilter {
                    on_stream,
                    prefixes: expr.prefix,
                    regex,
                    checkpoint_every: window * u64::from(f.checkpoint_interval_multiplier.max(1)),
                })
            }
            _ => None,
        };
        let (stream, from) = match options.stream_option {
            Some(ropts::StreamOption::All(all)) => {
                let from = match all.all_option {
                    Some(ropts::all_options::AllOption::Position(p)) => {
                        // Subscriptions (and backward reads) start after the position;
                        // forward reads include it.
                        if count.is_none() || backwards {
                            log.after(p.commit_position)
                        } else {
                            log.after(p.commit_position.saturating_sub(1))
                        }
                    }
                    Some(ropts::all_options::AllOption::End(_)) => log.all.len(),
                    _ => 0,
                };
                (None, from)
            }
            Some(ropts::StreamOption::Stream(s)) => {
                let name = s
                    .stream_identifier
                    .map(|i| String::from_utf8_lossy(&i.stream_name).into_owned())
                    .unwrap_or_default();
                let len = log.streams.get(&name).map_or(0, |r| r.len());
                let from = match s.revision_option {
                    Some(ropts::stream_options::RevisionOption::Revision(r)) => {
                        if count.is_none() || backwards {
                            (r as usize + 1).min(len)
                        } else {
                            (r as usize).min(len)
                        }
                    }
                    Some(ropts::stream_options::RevisionOption::End(_)) => len,
                    _ => 0,
                };
                (Some(name), from)
            }
            None => return Err(Status::invalid_argument("no stream option")),
        };
        Ok(ReadPlan {
            stream,
            from,
            backwards,
            count,
            filter,
        })
    }

    /// A finite read (`count`): events in order, then the stream ends.
    fn read_finite(&self, plan: &ReadPlan, count: u64) -> Result<Vec<ReadItem>, Status> {
        let log = self.shared.log.read().unwrap_or_else(|e| e.into_inner());
        let indexes: Vec<usize> = match &plan.stream {
            None => (0..log.all.len()).collect(),
            Some(name) => match log.streams.get(name) {
                Some(r) => r.clone(),
                None => {
                    return Ok(vec![Ok(content(
                        streams::read_resp::Content::StreamNotFound(
                            streams::read_resp::StreamNotFound {
                                stream_identifier: Some(stream_id(name)),
                            },
                        ),
                    ))]);
                }
            },
        };
        let picked: Box<dyn Iterator<Item = &usize>> = if plan.backwards {
            Box::new(indexes[..plan.from.min(indexes.len())].iter().rev())
        } else {
            Box::new(indexes[plan.from.min(indexes.len())..].iter())
        };
        Ok(picked
            .map(|&i| &log.all[i])
            .filter(|e| plan.filter.as_ref().is_none_or(|f| f.matches(e)))
            .take(count as usize)
            .map(|e| Ok(event_message(e)))
            .collect())
    }
}

fn content(c: streams::read_resp::Content) -> streams::ReadResp {
    streams::ReadResp { content: Some(c) }
}

fn stream_id(name: &str) -> common::StreamIdentifier {
    common::StreamIdentifier {
        stream_name: name.as_bytes().to_vec(),
    }
}

fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

fn event_message(e: &Stored) -> streams::ReadResp {
    use streams::read_resp::read_event;
    let mut metadata = HashMap::new();
    metadata.insert("type".to_string(), e.event.event_type.clone());
    metadata.insert("content-type".to_string(), e.event.content_type.clone());
    // .NET ticks (100 ns) since the Unix epoch, as the server sends them.
    metadata.insert(
        "created".to_string(),
        (e.event.created_ms * 10_000).to_string(),
    );
    content(streams::read_resp::Content::Event(
        streams::read_resp::ReadEvent {
            event: Some(read_event::RecordedEvent {
                id: Some(common::Uuid {
                    value: Some(common::uuid::Value::String(e.event.id.to_string())),
                }),
                stream_identifier: Some(stream_id(&e.event.stream)),
                stream_revision: e.revision,
                prepare_position: e.position,
                commit_position: e.position,
                metadata,
                custom_metadata: e.event.metadata.clone(),
                data: e.event.data.clone(),
            }),
            link: None,
            position: Some(read_event::Position::CommitPosition(e.position)),
        },
    ))
}

/// Serve one `$all` subscription: catch up, report caught-up, then follow live appends;
/// ends with an error when the test drops subscriptions.
async fn subscribe(
    shared: Arc<Shared>,
    node: Arc<Node>,
    plan: ReadPlan,
    tx: mpsc::Sender<ReadItem>,
) {
    use streams::read_resp::Content;
    let mut drops = node.drops.subscribe();
    let generation = *drops.borrow_and_update();
    let mut head = shared.head.subscribe();
    let id = uuid::Uuid::new_v4().to_string();
    let send = |item: ReadItem| {
        let tx = tx.clone();
        async move { tx.send(item).await.is_ok() }
    };
    if !send(Ok(content(Content::Confirmation(
        streams::read_resp::SubscriptionConfirmation {
            subscription_id: id,
        },
    ))))
    .await
    {
        return;
    }
    let (mut next, mut considered, mut caught_up) = (plan.from, 0u64, false);
    loop {
        let stall = *shared
            .stalled_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(until) = stall.filter(|u| *u > Instant::now()) {
            tokio::time::sleep_until(until.into()).await;
        }
        if *drops.borrow() != generation {
            let _ = tx
                .send(Err(Status::unavailable(
                    "subscription dropped by the test server",
                )))
                .await;
            return;
        }
        let batch: Vec<Arc<Stored>> = {
            let log = shared.log.read().unwrap_or_else(|e| e.into_inner());
            log.all[next.min(log.all.len())..]
                .iter()
                .take(512)
                .cloned()
                .collect()
        };
        if batch.is_empty() {
            if !caught_up {
                caught_up = true;
                let position = next.checked_sub(1).map(|i| streams::read_resp::Position {
                    commit_position: (i as u64 + 1) * POSITION_STEP,
                    prepare_position: (i as u64 + 1) * POSITION_STEP,
                });
                if !send(Ok(content(Content::CaughtUp(
                    streams::read_resp::CaughtUp {
                        timestamp: Some(now()),
                        stream_revision: None,
                        position,
                    },
                ))))
                .await
                {
                    return;
                }
            }
            tokio::select! {
                _ = head.changed() => {}
                _ = drops.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            continue;
        }
        for e in &batch {
            next += 1;
            considered += 1;
            let wanted = plan.filter.as_ref().is_none_or(|f| f.matches(e));
            let item = if wanted {
                Some(event_message(e))
            } else {
                plan.filter
                    .as_ref()
                    .filter(|f| considered % f.checkpoint_every == 0)
                    .map(|_| {
                        content(Content::Checkpoint(streams::read_resp::Checkpoint {
                            commit_position: e.position,
                            prepare_position: e.position,
                            timestamp: Some(now()),
                        }))
                    })
            };
            if let Some(item) = item
                && !send(Ok(item)).await
            {
                return;
            }
        }
    }
}

#[tonic::async_trait]
impl streams::streams_server::Streams for Service {
    type ReadStream = ReceiverStream<ReadItem>;
    type BatchAppendStream = ReceiverStream<Result<streams::BatchAppendResp, Status>>;

    async fn read(
        &self,
        request: Request<streams::ReadReq>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("no options"))?;
        let plan = self.plan(options)?;
        let (tx, rx) = mpsc::channel(1024);
        match plan.count {
            Some(count) => {
                let items = self.read_finite(&plan, count)?;
                tokio::spawn(async move {
                    for item in items {
                        if tx.send(item).await.is_err() {
                            return;
                        }
                    }
                });
            }
            None if plan.stream.is_none() => {
                self.shared.subscriptions.fetch_add(1, Ordering::Relaxed);
                let live = Live::new(self.node.clone());
                let shared = self.shared.clone();
                tokio::spawn(async move {
                    subscribe(shared, live.0.clone(), plan, tx).await;
                    drop(live);
                });
            }
            None => return Err(Status::unimplemented("stream subscriptions")),
        }
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn append(
        &self,
        request: Request<Streaming<streams::AppendReq>>,
    ) -> Result<Response<streams::AppendResp>, Status> {
        use streams::append_req::Content;
        use streams::append_req::options::ExpectedStreamRevision as Expected;
        self.leader_only()?;
        let mut incoming = request.into_inner();
        let Some(Content::Options(options)) = incoming.message().await?.and_then(|m| m.content)
        else {
            return Err(Status::invalid_argument("append must start with options"));
        };
        let stream = stream_name(options.stream_identifier);
        let expect = match options.expected_stream_revision {
            Some(Expected::Revision(r)) => Expect::Revision(r),
            Some(Expected::NoStream(_)) => Expect::NoStream,
            Some(Expected::StreamExists(_)) => Expect::Exists,
            _ => Expect::Any,
        };
        let mut events = Vec::new();
        while let Some(m) = incoming.message().await? {
            if let Some(Content::ProposedMessage(p)) = m.content {
                events.push(new_event(
                    &stream,
                    p.id,
                    &p.metadata,
                    p.custom_metadata,
                    p.data,
                )?);
            }
        }
        if events.is_empty() {
            return Err(Status::invalid_argument("no events to append"));
        }
        match self.shared.append(&stream, expect, events) {
            Ok((revision, position)) => Ok(Response::new(success(revision, position))),
            Err(current) => {
                use streams::append_resp::wrong_expected_version::{
                    CurrentRevisionOption, ExpectedRevisionOption,
                };
                let wrong = streams::append_resp::WrongExpectedVersion {
                    current_revision_option: Some(match current {
                        Some(n) => CurrentRevisionOption::CurrentRevision(n),
                        None => CurrentRevisionOption::CurrentNoStream(common::Empty {}),
                    }),
                    expected_revision_option: Some(match expect {
                        Expect::Revision(r) => ExpectedRevisionOption::ExpectedRevision(r),
                        Expect::NoStream => {
                            ExpectedRevisionOption::ExpectedNoStream(common::Empty {})
                        }
                        Expect::Exists => {
                            ExpectedRevisionOption::ExpectedStreamExists(common::Empty {})
                        }
                        Expect::Any => ExpectedRevisionOption::ExpectedAny(common::Empty {}),
                    }),
                    ..Default::default()
                };
                Ok(Response::new(streams::AppendResp {
                    result: Some(streams::append_resp::Result::WrongExpectedVersion(wrong)),
                }))
            }
        }
    }

    async fn delete(
        &self,
        _: Request<streams::DeleteReq>,
    ) -> Result<Response<streams::DeleteResp>, Status> {
        Err(Status::unimplemented(
            "delete is not part of the test server",
        ))
    }

    async fn tombstone(
        &self,
        _: Request<streams::TombstoneReq>,
    ) -> Result<Response<streams::TombstoneResp>, Status> {
        Err(Status::unimplemented(
            "tombstone is not part of the test server",
        ))
    }

    async fn batch_append(
        &self,
        request: Request<Streaming<streams::BatchAppendReq>>,
    ) -> Result<Response<Self::BatchAppendStream>, Status> {
        if !self.shared.batch_append.load(Ordering::Relaxed) {
            return Err(Status::unimplemented(
                "batch append is switched off on this test server",
            ));
        }
        self.leader_only()?;
        self.shared.batch_sessions.fetch_add(1, Ordering::Relaxed);
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(1024);
        let shared = self.shared.clone();
        // One session: requests are applied in the order they arrive; a request may
        // come in several parts (`is_final` on the last), keyed by its correlation id.
        tokio::spawn(async move {
            let mut parts: HashMap<uuid::Uuid, (Option<BatchOptions>, Vec<Proposed>)> =
                HashMap::new();
            loop {
                let req = match incoming.message().await {
                    Ok(Some(req)) => req,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::debug!("batch append session ended: {e}");
                        return;
                    }
                };
                let Some(correlation) = req.correlation_id.as_ref().and_then(uuid_of) else {
                    let _ = tx
                        .send(Err(Status::invalid_argument(
                            "batch append request without a correlation id",
                        )))
                        .await;
                    return;
                };
                let entry = parts.entry(correlation).or_default();
                if req.options.is_some() {
                    entry.0 = req.options;
                }
                entry.1.extend(req.proposed_messages);
                if !req.is_final {
                    continue;
                }
                let (options, proposed) = parts.remove(&correlation).unwrap_or_default();
                let reply = shared.batch_request(correlation, options, proposed);
                if tx.send(Ok(reply)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn success(revision: u64, position: u64) -> streams::AppendResp {
    use streams::append_resp::success::{CurrentRevisionOption, PositionOption};
    streams::AppendResp {
        result: Some(streams::append_resp::Result::Success(
            streams::append_resp::Success {
                current_revision_option: Some(CurrentRevisionOption::CurrentRevision(revision)),
                position_option: Some(PositionOption::Position(streams::append_resp::Position {
                    commit_position: position,
                    prepare_position: position,
                })),
            },
        )),
    }
}

type BatchOptions = streams::batch_append_req::Options;
type Proposed = streams::batch_append_req::ProposedMessage;

/// What an append expects of its stream.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Any,
    NoStream,
    Exists,
    Revision(u64),
}

impl Shared {
    /// A log holding `events`, with no node yet.
    fn new(events: Vec<NewEvent>) -> Arc<Shared> {
        let mut log = Log::default();
        for e in events {
            log.push(e);
        }
        let head = log.all.len();
        Arc::new(Shared {
            log: RwLock::new(log),
            head: watch::channel(head).0,
            stalled_until: Mutex::new(None),
            subscriptions: Default::default(),
            members: Mutex::new(Members {
                nodes: Vec::new(),
                leader: 0,
            }),
            appends: Default::default(),
            batch_sessions: Default::default(),
            batch_append: AtomicBool::new(true),
        })
    }

    /// The members, even after a panic elsewhere.
    fn lock_members(&self) -> std::sync::MutexGuard<'_, Members> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Append `events` to `stream` if `expect` holds: the last event's revision and
    /// position, or the stream's current revision (None: no stream) when it does not.
    /// An append retried with the same ids at the same revisions succeeds, once.
    fn append(
        &self,
        stream: &str,
        expect: Expect,
        events: Vec<NewEvent>,
    ) -> Result<(u64, u64), Option<u64>> {
        self.appends.fetch_add(1, Ordering::Relaxed);
        let mut log = self.log.write().unwrap_or_else(|e| e.into_inner());
        let existing = log.streams.get(stream).map_or(&[][..], |r| r.as_slice());
        let current = existing.len().checked_sub(1).map(|r| r as u64);
        // The revision the first new event would get if the expectation holds.
        let first = match expect {
            Expect::Revision(r) => Some(r + 1),
            Expect::NoStream => Some(0),
            _ => None,
        };
        if let Some(first) = first {
            let same = !events.is_empty()
                && events.iter().enumerate().all(|(k, e)| {
                    existing
                        .get(first as usize + k)
                        .is_some_and(|&i| log.all[i].event.id == e.id)
                });
            if same {
                let last = existing[first as usize + events.len() - 1];
                return Ok((first + events.len() as u64 - 1, log.all[last].position));
            }
        }
        let ok = match expect {
            Expect::Revision(r) => current == Some(r),
            Expect::NoStream => current.is_none(),
            Expect::Exists => current.is_some(),
            Expect::Any => true,
        };
        if !ok {
            return Err(current);
        }
        let mut last = (current.unwrap_or(0), 0);
        for e in events {
            let stored = log.push(e);
            last = (stored.revision, stored.position);
        }
        self.head.send_replace(log.all.len());
        Ok(last)
    }

    /// Apply one batch-append request and answer it.
    fn batch_request(
        &self,
        correlation: uuid::Uuid,
        options: Option<BatchOptions>,
        proposed: Vec<Proposed>,
    ) -> streams::BatchAppendResp {
        use streams::batch_append_req::options::ExpectedStreamPosition as Req;
        use streams::batch_append_resp::{self as resp, ExpectedStreamPosition as Echo};
        let options = options.unwrap_or_default();
        let stream = stream_name(options.stream_identifier);
        let (expect, echo) = match options.expected_stream_position {
            Some(Req::StreamPosition(r)) => (Expect::Revision(r), Echo::StreamPosition(r)),
            Some(Req::NoStream(())) => (Expect::NoStream, Echo::NoStream(())),
            Some(Req::StreamExists(())) => (Expect::Exists, Echo::StreamExists(())),
            _ => (Expect::Any, Echo::Any(())),
        };
        let events: Result<Vec<NewEvent>, Status> = proposed
            .into_iter()
            .map(|p| new_event(&stream, p.id, &p.metadata, p.custom_metadata, p.data))
            .collect();
        let error = |code: tonic::Code, message: String, details: Option<prost_types::Any>| {
            resp::Result::Error(proto::google::rpc::Status {
                code: code as i32,
                message,
                details,
            })
        };
        let result = match events {
            Err(status) => error(status.code(), status.message().to_string(), None),
            Ok(events) if events.is_empty() => {
                let log = self.log.read().unwrap_or_else(|e| e.into_inner());
                let current = log.streams.get(&stream).map(|r| r.len() as u64 - 1);
                use resp::success::CurrentRevisionOption as Current;
                resp::Result::Success(resp::Success {
                    current_revision_option: Some(match current {
                        Some(r) => Current::CurrentRevision(r),
                        None => Current::NoStream(()),
                    }),
                    position_option: Some(resp::success::PositionOption::NoPosition(())),
                })
            }
            Ok(events) => match self.append(&stream, expect, events) {
                Ok((revision, position)) => resp::Result::Success(resp::Success {
                    current_revision_option: Some(
                        resp::success::CurrentRevisionOption::CurrentRevision(revision),
                    ),
                    position_option: Some(resp::success::PositionOption::Position(
                        common::AllStreamPosition {
                            commit_position: position,
                            prepare_position: position,
                        },
                    )),
                }),
                Err(current) => {
                    use common::wrong_expected_version::{
                        CurrentStreamRevisionOption as C, ExpectedStreamPositionOption as E,
                    };
                    let details = common::WrongExpectedVersion {
                        current_stream_revision_option: Some(match current {
                            Some(r) => C::CurrentStreamRevision(r),
                            None => C::CurrentNoStream(()),
                        }),
                        expected_stream_position_option: Some(match expect {
                            Expect::Revision(r) => E::ExpectedStreamPosition(r),
                            Expect::NoStream => E::ExpectedNoStream(()),
                            Expect::Exists => E::ExpectedStreamExists(()),
                            Expect::Any => E::ExpectedAny(()),
                        }),
                    };
                    // As the server answers: message "WrongExpectedVersion", code
                    // ALREADY_EXISTS, the details packed.
                    error(
                        tonic::Code::AlreadyExists,
                        "WrongExpectedVersion".into(),
                        Some(prost_types::Any {
                            type_url: "type.googleapis.com/event_store.client.WrongExpectedVersion"
                                .into(),
                            value: prost::Message::encode_to_vec(&details),
                        }),
                    )
                }
            },
        };
        streams::BatchAppendResp {
            correlation_id: Some(common::Uuid {
                value: Some(common::uuid::Value::String(correlation.to_string())),
            }),
            stream_identifier: Some(stream_id(&stream)),
            result: Some(result),
            expected_stream_position: Some(echo),
        }
    }
}

/// A stream name off the wire.
fn stream_name(id: Option<common::StreamIdentifier>) -> String {
    id.map(|i| String::from_utf8_lossy(&i.stream_name).into_owned())
        .unwrap_or_default()
}

/// A UUID off the wire (string or structured form).
fn uuid_of(u: &common::Uuid) -> Option<uuid::Uuid> {
    match u.value.as_ref()? {
        common::uuid::Value::String(s) => s.parse().ok(),
        common::uuid::Value::Structured(s) => {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&s.most_significant_bits.to_be_bytes());
            b[8..].copy_from_slice(&s.least_significant_bits.to_be_bytes());
            Some(uuid::Uuid::from_bytes(b))
        }
    }
}

/// A proposed event (unary or batch append) as the log stores it.
fn new_event(
    stream: &str,
    id: Option<common::Uuid>,
    metadata: &HashMap<String, String>,
    custom_metadata: Vec<u8>,
    data: Vec<u8>,
) -> Result<NewEvent, Status> {
    let id = match id {
        Some(u) if u.value.is_some() => {
            uuid_of(&u).ok_or_else(|| Status::invalid_argument("bad event id"))?
        }
        _ => uuid::Uuid::new_v4(),
    };
    let get = |k: &str| metadata.get(k).cloned().unwrap_or_default();
    Ok(NewEvent {
        stream: stream.to_string(),
        event_type: get("type"),
        id,
        data,
        metadata: custom_metadata,
        content_type: get("content-type"),
        created_ms: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    })
}

/// Read an NDJSON event file (the format `projector` reads: `stream`, `type`, `data`,
/// optional `id`, `metadata`, `created`) into events. Lines whose `id` is not a UUID get
/// one derived from their line number.
pub fn read_ndjson(path: &std::path::Path) -> Result<Vec<NewEvent>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let v: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
            let field = |k: &str| {
                v[k].as_str()
                    .map(String::from)
                    .with_context(|| format!("{}:{}: missing `{k}`", path.display(), i + 1))
            };
            let id = v["id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| uuid::Uuid::from_u128(i as u128 + 1));
            Ok(NewEvent {
                stream: field("stream")?,
                event_type: field("type")?,
                id,
                data: serde_json::to_vec(&v["data"])?,
                metadata: if v["metadata"].is_null() {
                    Vec::new()
                } else {
                    serde_json::to_vec(&v["metadata"])?
                },
                content_type: "application/json".into(),
                created_ms: v["created"].as_u64().unwrap_or(0),
            })
        })
        .collect()
}
