//! A blocking "does this server accept connections" check that speaks just enough of the
//! Postgres wire protocol, so it can run anywhere (no async runtime needed, unlike sqlx).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Connects to `port` on 127.0.0.1 as `postgres` to database `postgres` (no password), and
/// returns once the server says it is ready for queries.
///
/// `Err` carries the reason: connection refused, the server's own error (such as "the database
/// system is starting up"), or that it wants a password.
pub(crate) fn accepts_connections(port: u16) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let timeout = Some(Duration::from_secs(5));
    stream
        .set_read_timeout(timeout)
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(timeout)
        .map_err(|e| e.to_string())?;
    stream
        .write_all(&startup_message("postgres", "postgres"))
        .map_err(|e| format!("send startup message to {addr}: {e}"))?;
    loop {
        let (tag, body) =
            read_message(&mut stream).map_err(|e| format!("read from {addr}: {e}"))?;
        match tag {
            b'Z' => break, // ReadyForQuery.
            b'E' => return Err(format!("server at {addr} said: {}", error_text(&body))),
            b'R' if body.get(..4) != Some(&[0, 0, 0, 0]) => {
                return Err(format!("server at {addr} asks for a password"));
            }
            _ => {} // AuthenticationOk, ParameterStatus, BackendKeyData, NoticeResponse...
        }
    }
    // Terminate, politely; the answer does not matter.
    let _ = stream.write_all(&[b'X', 0, 0, 0, 4]);
    Ok(())
}

/// A protocol 3.0 StartupMessage.
fn startup_message(user: &str, database: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608_i32.to_be_bytes()); // 3 << 16: protocol 3.0.
    for (key, value) in [("user", user), ("database", database)] {
        for text in [key, value] {
            body.extend_from_slice(text.as_bytes());
            body.push(0);
        }
    }
    body.push(0);
    let len = i32::try_from(body.len() + 4).expect("startup message is small");
    let mut message = len.to_be_bytes().to_vec();
    message.extend(body);
    message
}

/// One backend message: its type byte and its body.
fn read_message(stream: &mut impl Read) -> std::io::Result<(u8, Vec<u8>)> {
    let mut header = [0_u8; 5];
    stream.read_exact(&mut header)?;
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let len = usize::try_from(len)
        .ok()
        .and_then(|len| len.checked_sub(4))
        .filter(|len| *len < 1 << 20)
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "not a Postgres server")
        })?;
    let mut body = vec![0; len];
    stream.read_exact(&mut body)?;
    Ok((header[0], body))
}

/// The human-readable message (`M` field) of an ErrorResponse body.
fn error_text(body: &[u8]) -> String {
    body.split(|byte| *byte == 0)
        .find_map(|field| field.strip_prefix(b"M"))
        .map(|message| String::from_utf8_lossy(message).into_owned())
        .unwrap_or_else(|| "an error".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_message_has_its_length_first() {
        let message = startup_message("postgres", "postgres");
        let len = i32::from_be_bytes(message[..4].try_into().unwrap());
        assert_eq!(usize::try_from(len).unwrap(), message.len());
        assert!(message.ends_with(b"postgres\0\0"));
    }

    #[test]
    fn error_text_is_the_message_field() {
        let body = b"SFATAL\0C57P03\0Mthe database system is starting up\0\0";
        assert_eq!(error_text(body), "the database system is starting up");
    }

    #[test]
    fn a_closed_port_is_an_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(accepts_connections(port).is_err());
    }
}
