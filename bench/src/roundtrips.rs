//! Counting round trips instead of guessing them: a loopback proxy between sqlx and Postgres
//! that reads the client's side of the protocol and counts the messages that end a request.
//!
//! sqlx waits for the server's `ReadyForQuery` after each simple `Query` ('Q') and after each
//! `Sync` ('S') of the extended protocol, so each such message is one round trip. `Parse` ('P')
//! messages are counted too: a statement prepared again (rather than found in sqlx's cache) shows
//! up there.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::Res;

/// Counts of client messages seen by the proxy.
#[derive(Debug, Default)]
pub struct Counts {
    pub round_trips: AtomicU64,
    pub parses: AtomicU64,
}

impl Counts {
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.round_trips.load(Ordering::SeqCst),
            self.parses.load(Ordering::SeqCst),
        )
    }
}

/// A running proxy: connect to `127.0.0.1:port` instead of the server.
pub struct Proxy {
    pub port: u16,
    pub counts: Arc<Counts>,
}

/// Starts a proxy in front of `upstream` (`host:port`). Clients must not ask for TLS
/// (`sslmode=disable`): the first message is then the startup message.
pub async fn start(upstream: String) -> Res<Proxy> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let counts = Arc::new(Counts::default());
    let shared = counts.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let counts = shared.clone();
            tokio::spawn(async move {
                if let Ok(server) = TcpStream::connect(&upstream).await {
                    let _ = relay(client, server, counts).await;
                }
            });
        }
    });
    Ok(Proxy { port, counts })
}

async fn relay(client: TcpStream, server: TcpStream, counts: Arc<Counts>) -> Res<()> {
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    tokio::spawn(async move { tokio::io::copy(&mut from_server, &mut to_client).await });

    // The startup message: length, then the rest, no type byte.
    let len = from_client.read_u32().await? as usize;
    let mut body = vec![0; len.saturating_sub(4)];
    from_client.read_exact(&mut body).await?;
    to_server.write_u32(len as u32).await?;
    to_server.write_all(&body).await?;
    loop {
        let kind = match from_client.read_u8().await {
            Ok(kind) => kind,
            Err(_) => return Ok(()),
        };
        let len = from_client.read_u32().await? as usize;
        let mut body = vec![0; len.saturating_sub(4)];
        from_client.read_exact(&mut body).await?;
        match kind {
            b'Q' | b'S' => {
                counts.round_trips.fetch_add(1, Ordering::SeqCst);
            }
            b'P' => {
                counts.parses.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
        let mut message = Vec::with_capacity(len + 1);
        message.push(kind);
        message.extend_from_slice(&(len as u32).to_be_bytes());
        message.extend_from_slice(&body);
        to_server.write_all(&message).await?;
    }
}
