//! A TCP proxy between a test's clients and its server that can cut, close and resume their
//! connections, to show what clients do when the network fails under them.
//!
//! ```no_run
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() {
//! use std::time::Duration;
//! use sqlx::Connection as _;
//!
//! let db = pglock_tests::TestDb::new().await;
//! let proxy = pglock_tests::proxy::Proxy::start(db.url()).await;
//! let mut conn = sqlx::PgConnection::connect(&proxy.url()).await.unwrap();
//! proxy.cut(); // a silent partition: the query below gets no answer
//! let query = sqlx::query("SELECT 1").execute(&mut conn);
//! assert!(tokio::time::timeout(Duration::from_millis(200), query).await.is_err());
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Whether bytes flow through the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Forward,
    Cut,
}

/// A TCP proxy on 127.0.0.1 in front of a server, with controls that act on every connection
/// through it at once:
///
/// * [`cut`](Proxy::cut): a silent network partition. Nothing is forwarded in either direction,
///   and nothing is closed: both peers' sockets stay open, what they send is held (in the proxy,
///   or in the kernel's buffers once the proxy stops reading), and neither gets an error. A
///   client's query gets no answer until a timeout of its own fires; the server's session stays
///   in `pg_stat_activity`. The kernel under the proxy still answers TCP keepalive probes, so
///   a server's `tcp_keepalives_*` never end a cut connection (see
///   [`SHORT_KEEPALIVES`](crate::SHORT_KEEPALIVES)): the test decides when the server notices,
///   with `close`.
/// * [`resume`](Proxy::resume): forward again; what was held is delivered, in order.
/// * [`close`](Proxy::close): close both sides of every connection open now, as a peer's host
///   or a middlebox giving up would: the client's next read or write fails with an I/O error,
///   and the server ends the session as soon as it reads from it (at once when it is idle or
///   waiting for a lock with `client_connection_check_interval`; after its statement
///   otherwise). Connections made afterwards are served as usual.
///
/// New connections are accepted while cut (the kernel completes the handshake), but nothing
/// flows on them until [`resume`](Proxy::resume).
///
/// The proxy runs on the tokio runtime it was started on; dropping it stops accepting and
/// closes every connection through it.
pub struct Proxy {
    addr: SocketAddr,
    url: String,
    control: Arc<Control>,
    accepting: JoinHandle<()>,
}

/// What the proxy's tasks watch.
struct Control {
    flow: watch::Sender<Flow>,
    /// Bumped by `close`: each connection ends when it changes.
    closings: watch::Sender<u64>,
    open: AtomicUsize,
}

impl Proxy {
    /// Starts a proxy on a free port of 127.0.0.1 in front of the server of `url` (a
    /// `postgres://` URL whose host is an address or `localhost`), forwarding.
    ///
    /// # Panics
    ///
    /// When the URL does not parse or has no port, or no port can be bound.
    pub async fn start(url: &str) -> Proxy {
        let mut parsed =
            url::Url::parse(url).unwrap_or_else(|e| panic!("pglock-tests: bad server URL: {e}"));
        let port = parsed
            .port()
            .unwrap_or_else(|| panic!("pglock-tests: the proxy needs a URL with a port"));
        let host = match parsed.host_str() {
            Some("localhost") | None => "127.0.0.1".to_owned(),
            Some(host) => host.trim_matches(['[', ']']).to_owned(),
        };
        let upstream: SocketAddr = format!("{host}:{port}")
            .parse()
            .unwrap_or_else(|e| panic!("pglock-tests: the proxy needs an IP address: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("pglock-tests: cannot bind the proxy's port: {e}"));
        let addr = listener.local_addr().expect("the listener's address");
        parsed.set_host(Some("127.0.0.1")).expect("an IP host");
        parsed.set_port(Some(addr.port())).expect("a port");
        let control = Arc::new(Control {
            flow: watch::Sender::new(Flow::Forward),
            closings: watch::Sender::new(0),
            open: AtomicUsize::new(0),
        });
        let accepting = tokio::spawn(accept(listener, upstream, control.clone()));
        Proxy {
            addr,
            url: parsed.into(),
            control,
            accepting,
        }
    }

    /// The URL given to [`start`](Proxy::start), leading through the proxy instead.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Stops forwarding in both directions without closing anything: a silent partition (see
    /// the type's docs). Takes effect at once: bytes the proxy has read but not yet written are
    /// held too.
    pub fn cut(&self) {
        self.control.flow.send_replace(Flow::Cut);
    }

    /// Forwards again after [`cut`](Proxy::cut), delivering what was held.
    pub fn resume(&self) {
        self.control.flow.send_replace(Flow::Forward);
    }

    /// [`cut`](Proxy::cut) now, and [`close`](Proxy::close) after `notice`, unless
    /// [`resume`](Proxy::resume)d by then: a partition that the server notices after `notice`,
    /// as one whose TCP keepalives give up after that long would (pair it with
    /// [`KEEPALIVE_NOTICE`](crate::KEEPALIVE_NOTICE) for a server started with
    /// [`SHORT_KEEPALIVES`](crate::SHORT_KEEPALIVES)). Returns at once; the close happens on a
    /// task of the proxy's runtime.
    pub fn cut_and_close_after(&self, notice: std::time::Duration) {
        self.cut();
        let control = self.control.clone();
        let mut flow = control.flow.subscribe();
        tokio::spawn(async move {
            let resumed = flow.wait_for(|flow| *flow == Flow::Forward);
            if tokio::time::timeout(notice, resumed).await.is_err() {
                control.closings.send_modify(|closings| *closings += 1);
            }
        });
    }

    /// Closes both sides of every connection through the proxy now (see the type's docs).
    pub fn close(&self) {
        self.control.closings.send_modify(|closings| *closings += 1);
    }

    /// How many connections through the proxy are open.
    pub fn open_connections(&self) -> usize {
        self.control.open.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.close();
    }
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("flow", &*self.control.flow.borrow())
            .field("open", &self.open_connections())
            .finish()
    }
}

/// Accept clients and serve each on a task of its own, until the proxy is dropped.
async fn accept(listener: TcpListener, upstream: SocketAddr, control: Arc<Control>) {
    while let Ok((client, _)) = listener.accept().await {
        tokio::spawn(serve(client, upstream, control.clone()));
    }
}

/// Connect the client to the server and pump bytes both ways until either side closes or the
/// proxy closes the connection. Returning drops both sockets, which closes them.
async fn serve(client: TcpStream, upstream: SocketAddr, control: Arc<Control>) {
    let mut closing = control.closings.subscribe();
    let Ok(server) = TcpStream::connect(upstream).await else {
        return; // Dropping the client closes it, as a refused connection would.
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    control.open.fetch_add(1, Ordering::SeqCst);
    let (from_client, to_client) = client.into_split();
    let (from_server, to_server) = server.into_split();
    tokio::select! {
        () = pump(from_client, to_server, control.flow.subscribe()) => {}
        () = pump(from_server, to_client, control.flow.subscribe()) => {}
        _ = closing.changed() => {}
    }
    control.open.fetch_sub(1, Ordering::SeqCst);
}

/// Copy bytes from one socket to the other while the flow is on. While it is off, nothing is
/// read; bytes already read wait until it is on again.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut flow: watch::Receiver<Flow>) {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        if flow.wait_for(|flow| *flow == Flow::Forward).await.is_err() {
            return;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            // Cut before anything arrived: stop reading.
            _ = flow.wait_for(|flow| *flow == Flow::Cut) => continue,
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Cut while these bytes were in flight: hold them.
        if flow.wait_for(|flow| *flow == Flow::Forward).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
