//! The NATS client protocol, as much of it as the load tool speaks: an
//! incremental parser for what the server sends (`INFO`, `MSG`, `HMSG`,
//! `PING`, `PONG`, `+OK`, `-ERR`) and encoders for what a client sends
//! (`CONNECT`, `PING`, `PONG`, `SUB`, `PUB`).
//!
//! Over WebSocket the server is free to split one protocol line across
//! several frames or to merge several lines (and payloads) into one frame, so
//! the parser works on a byte stream: [`Parser::push`] appends whatever a
//! frame carried, [`Parser::next_op`] returns complete operations one by one
//! and keeps any incomplete tail for the next push. A `MSG` payload is taken
//! by its declared length, never by searching for CRLF, so payload bytes that
//! look like protocol lines are delivered untouched.

use std::fmt;

/// Longest control line accepted (NATS's own default `max_control_line` is
/// 4 KiB; `INFO` lines can be longer, so allow some room).
pub const MAX_CONTROL_LINE: usize = 64 * 1024;
/// Largest payload accepted (NATS's default `max_payload` is 1 MiB).
pub const MAX_PAYLOAD: usize = 8 * 1024 * 1024;

/// One operation sent by a NATS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `INFO {json}`: the JSON text, unparsed.
    Info(String),
    /// `MSG` or `HMSG` (headers are skipped; `payload` is the body only).
    Msg {
        subject: String,
        sid: u64,
        reply: Option<String>,
        payload: Vec<u8>,
    },
    Ping,
    Pong,
    Ok,
    /// `-ERR 'text'`: the text without quotes.
    Err(String),
}

/// Why the byte stream is not valid NATS protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unknown NATS operation `{0}`")]
    UnknownOp(String),
    #[error("malformed NATS `{op}` line: {line}")]
    BadArgs { op: &'static str, line: String },
    #[error("NATS control line longer than {MAX_CONTROL_LINE} bytes")]
    LineTooLong,
    #[error("NATS payload of {0} bytes exceeds {MAX_PAYLOAD}")]
    PayloadTooLarge(usize),
    #[error("NATS payload not followed by CRLF")]
    MissingCrlf,
    #[error("NATS control line is not UTF-8")]
    NotUtf8,
}

/// Incremental parser: push bytes in, take operations out.
#[derive(Default)]
pub struct Parser {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    pos: usize,
}

impl fmt::Debug for Parser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parser")
            .field("buffered", &(self.buf.len() - self.pos))
            .finish()
    }
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the bytes of one WebSocket frame (or any chunk of the stream).
    pub fn push(&mut self, data: &[u8]) {
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet returned as an operation.
    #[cfg(test)]
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next complete operation, `Ok(None)` if more bytes are needed.
    /// After an error the stream is unusable (the connection must be closed).
    pub fn next_op(&mut self) -> Result<Option<Op>, ParseError> {
        let rest = &self.buf[self.pos..];
        let Some(eol) = find_crlf(rest) else {
            if rest.len() > MAX_CONTROL_LINE {
                return Err(ParseError::LineTooLong);
            }
            return Ok(None);
        };
        if eol > MAX_CONTROL_LINE {
            return Err(ParseError::LineTooLong);
        }
        let line = std::str::from_utf8(&rest[..eol]).map_err(|_| ParseError::NotUtf8)?;
        let (name, args) = match line.find([' ', '\t']) {
            Some(i) => (&line[..i], line[i + 1..].trim()),
            None => (line.trim_end(), ""),
        };
        let after_line = eol + 2;
        let op = match name.to_ascii_uppercase().as_str() {
            "PING" => Op::Ping,
            "PONG" => Op::Pong,
            "+OK" => Op::Ok,
            "-ERR" => Op::Err(args.trim_matches('\'').to_owned()),
            "INFO" => Op::Info(args.to_owned()),
            "MSG" | "HMSG" => {
                let headers = name.eq_ignore_ascii_case("HMSG");
                let head = parse_msg_args(args, headers, line)?;
                let total = head.total;
                if total > MAX_PAYLOAD {
                    return Err(ParseError::PayloadTooLarge(total));
                }
                if rest.len() < after_line + total + 2 {
                    return Ok(None); // wait for the rest of the payload
                }
                let body = &rest[after_line..after_line + total];
                if &rest[after_line + total..after_line + total + 2] != b"\r\n" {
                    return Err(ParseError::MissingCrlf);
                }
                let op = Op::Msg {
                    subject: head.subject,
                    sid: head.sid,
                    reply: head.reply,
                    payload: body[head.header_len..].to_vec(),
                };
                self.pos += after_line + total + 2;
                return Ok(Some(op));
            }
            _ => return Err(ParseError::UnknownOp(truncate(name, 32))),
        };
        self.pos += after_line;
        Ok(Some(op))
    }
}

struct MsgHead {
    subject: String,
    sid: u64,
    reply: Option<String>,
    header_len: usize,
    total: usize,
}

/// `MSG <subject> <sid> [reply-to] <#bytes>` or
/// `HMSG <subject> <sid> [reply-to] <#header bytes> <#total bytes>`.
fn parse_msg_args(args: &str, headers: bool, line: &str) -> Result<MsgHead, ParseError> {
    let op = if headers { "HMSG" } else { "MSG" };
    let bad = || ParseError::BadArgs {
        op,
        line: truncate(line, 200),
    };
    let parts: Vec<&str> = args.split_ascii_whitespace().collect();
    let sizes = if headers { 2 } else { 1 };
    let reply = match parts.len().checked_sub(sizes) {
        Some(2) => None,
        Some(3) => Some(parts[2].to_owned()),
        _ => return Err(bad()),
    };
    let sid = parts[1].parse::<u64>().map_err(|_| bad())?;
    let nums: Vec<usize> = parts[parts.len() - sizes..]
        .iter()
        .map(|s| s.parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let (header_len, total) = if headers {
        (nums[0], nums[1])
    } else {
        (0, nums[0])
    };
    if header_len > total {
        return Err(bad());
    }
    Ok(MsgHead {
        subject: parts[0].to_owned(),
        sid,
        reply,
        header_len,
        total,
    })
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// `CONNECT {...}\r\nPING\r\n`: verbose off (no `+OK` per operation), echo
/// off (a connection never receives its own publishes), and a PING so the
/// answering PONG confirms the server accepted the CONNECT.
pub fn connect_frame(name: &str) -> Vec<u8> {
    let opts = serde_json::json!({
        "verbose": false,
        "pedantic": false,
        "tls_required": false,
        "name": name,
        "lang": "rust",
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": 1,
        "echo": false,
        "headers": false,
        "no_responders": false,
    });
    format!("CONNECT {opts}\r\nPING\r\n").into_bytes()
}

pub const PING: &[u8] = b"PING\r\n";
pub const PONG: &[u8] = b"PONG\r\n";

/// `SUB <subject> [queue] <sid>`.
pub fn sub_frame(subject: &str, queue: Option<&str>, sid: u64) -> Vec<u8> {
    match queue {
        Some(q) => format!("SUB {subject} {q} {sid}\r\n").into_bytes(),
        None => format!("SUB {subject} {sid}\r\n").into_bytes(),
    }
}

/// `PUB <subject> [reply-to] <#bytes>\r\n<payload>\r\n`.
pub fn pub_frame(subject: &str, reply: Option<&str>, payload: &[u8]) -> Vec<u8> {
    let head = match reply {
        Some(r) => format!("PUB {subject} {r} {}\r\n", payload.len()),
        None => format!("PUB {subject} {}\r\n", payload.len()),
    };
    let mut out = Vec::with_capacity(head.len() + payload.len() + 2);
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(p: &mut Parser) -> Vec<Op> {
        let mut out = Vec::new();
        while let Some(op) = p.next_op().expect("valid stream") {
            out.push(op);
        }
        out
    }

    #[test]
    fn merged_frame_yields_every_op() {
        let mut p = Parser::new();
        p.push(b"INFO {\"server_id\":\"x\"}\r\nPING\r\nMSG a.b 7 5\r\nhello\r\n+OK\r\nPONG\r\n");
        let ops = all(&mut p);
        assert_eq!(
            ops,
            vec![
                Op::Info("{\"server_id\":\"x\"}".into()),
                Op::Ping,
                Op::Msg {
                    subject: "a.b".into(),
                    sid: 7,
                    reply: None,
                    payload: b"hello".to_vec()
                },
                Op::Ok,
                Op::Pong,
            ]
        );
        assert_eq!(p.buffered(), 0);
    }

    #[test]
    fn split_at_every_byte_gives_the_same_ops() {
        let stream_ok: &[u8] =
            b"INFO {}\r\nMSG s 1 _INBOX.x.1 3\r\nabc\r\nPING\r\nHMSG s 2 12 15\r\nNATS/1.0\r\n\r\nxyz\r\n-ERR 'Slow Consumer'\r\n";
        let mut whole = Parser::new();
        whole.push(stream_ok);
        let expected = all(&mut whole);
        assert_eq!(expected.len(), 5);
        assert_eq!(
            expected[1],
            Op::Msg {
                subject: "s".into(),
                sid: 1,
                reply: Some("_INBOX.x.1".into()),
                payload: b"abc".to_vec()
            }
        );
        assert_eq!(
            expected[3],
            Op::Msg {
                subject: "s".into(),
                sid: 2,
                reply: None,
                payload: b"xyz".to_vec()
            }
        );
        assert_eq!(expected[4], Op::Err("Slow Consumer".into()));
        for chunk in 1..=7 {
            let mut p = Parser::new();
            let mut got = Vec::new();
            for piece in stream_ok.chunks(chunk) {
                p.push(piece);
                got.extend(all(&mut p));
            }
            assert_eq!(got, expected, "chunk size {chunk}");
            assert_eq!(p.buffered(), 0);
        }
    }

    #[test]
    fn payload_with_protocol_like_bytes_is_taken_by_length() {
        let payload = b"PING\r\nMSG x 1 2\r\n\r\n\r\nPONG";
        let mut frame = format!("MSG chan 3 {}\r\n", payload.len()).into_bytes();
        frame.extend_from_slice(payload);
        frame.extend_from_slice(b"\r\nPING\r\n");
        let mut p = Parser::new();
        // Split in the middle of the payload, right after a fake CRLF.
        let cut = frame.len() - 20;
        p.push(&frame[..cut]);
        assert_eq!(p.next_op(), Ok(None));
        p.push(&frame[cut..]);
        let ops = all(&mut p);
        assert_eq!(
            ops,
            vec![
                Op::Msg {
                    subject: "chan".into(),
                    sid: 3,
                    reply: None,
                    payload: payload.to_vec()
                },
                Op::Ping
            ]
        );
    }

    #[test]
    fn lowercase_ops_are_accepted() {
        let mut p = Parser::new();
        p.push(b"ping\r\nmsg a 1 0\r\n\r\n");
        assert_eq!(
            all(&mut p),
            vec![
                Op::Ping,
                Op::Msg {
                    subject: "a".into(),
                    sid: 1,
                    reply: None,
                    payload: vec![]
                }
            ]
        );
    }

    #[test]
    fn malformed_streams_are_errors() {
        let mut p = Parser::new();
        p.push(b"BOGUS\r\n");
        assert_eq!(p.next_op(), Err(ParseError::UnknownOp("BOGUS".into())));

        let mut p = Parser::new();
        p.push(b"MSG a notanumber 3\r\nabc\r\n");
        assert!(matches!(p.next_op(), Err(ParseError::BadArgs { .. })));

        let mut p = Parser::new();
        p.push(b"MSG a 1 3\r\nabcXY");
        assert_eq!(p.next_op(), Err(ParseError::MissingCrlf));

        let mut p = Parser::new();
        p.push(&vec![b'A'; MAX_CONTROL_LINE + 1]);
        assert_eq!(p.next_op(), Err(ParseError::LineTooLong));
    }

    #[test]
    fn encoders_round_trip_through_the_parser_shape() {
        assert_eq!(
            pub_frame("s", Some("r.1"), b"x\r\ny"),
            b"PUB s r.1 4\r\nx\r\ny\r\n".to_vec()
        );
        assert_eq!(sub_frame("s", Some("q"), 9), b"SUB s q 9\r\n".to_vec());
        assert_eq!(sub_frame("s", None, 9), b"SUB s 9\r\n".to_vec());
        let c = String::from_utf8(connect_frame("n")).expect("utf8");
        assert!(c.starts_with("CONNECT {") && c.ends_with("}\r\nPING\r\n"));
    }
}
