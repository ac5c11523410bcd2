//! The bytes on a WebSocket connection's socket: server frames encoded
//! here (header and shared payload, never copied), the socket split into
//! the side tungstenite reads from and the side the [`ConnSink`] writes to,
//! and the stream tungstenite is given, whose writes (pongs, pings, close
//! frames) join the sink's queue instead of racing it to the socket.

use crate::sink::ConnSink;
use bytes::Bytes;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

/// A stream other than plain TCP (TLS over it), boxed once per connection.
pub(crate) trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// A WebSocket connection's socket, as the upgrade hands it over.
pub(crate) enum Stream {
    /// Plain TCP: frames are written to it from the offering thread.
    Tcp(TcpStream),
    /// Anything else (TLS): written by the connection's task only.
    Other(Box<dyn Duplex>),
}

/// One server WebSocket frame ready for the wire: its header (server frames
/// are unmasked, so the header depends only on the opcode and length) and
/// its payload, the one `Bytes` all recipients of a publish share. Or bytes
/// tungstenite encoded itself (control frames), with no header of ours.
pub(crate) struct Out {
    head: [u8; 10],
    head_len: u8,
    /// The `latest` channel it is a message of, which a newer message of
    /// the same channel may replace while it waits (0: none).
    latest: u64,
    body: Bytes,
}

impl Out {
    /// A final text frame carrying `payload`.
    pub(crate) fn text(payload: Bytes) -> Out {
        let mut head = [0u8; 10];
        let len = payload.len();
        head[0] = 0x81; // FIN, text
        let head_len = if len < 126 {
            head[1] = len as u8;
            2
        } else if let Ok(short) = u16::try_from(len) {
            head[1] = 126;
            head[2..4].copy_from_slice(&short.to_be_bytes());
            4
        } else {
            head[1] = 127;
            head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        Out {
            head,
            head_len,
            latest: 0,
            body: payload,
        }
    }

    /// A text frame of a `latest` channel's message (`channel` its number,
    /// not 0): while it waits, a newer one of the same channel may replace
    /// it.
    pub(crate) fn latest(payload: Bytes, channel: u64) -> Out {
        Out {
            latest: channel,
            ..Out::text(payload)
        }
    }

    /// The `latest` channel it is a message of, if any.
    pub(crate) fn latest_channel(&self) -> Option<u64> {
        (self.latest != 0).then_some(self.latest)
    }

    /// Bytes already framed (by tungstenite).
    pub(crate) fn raw(bytes: &[u8]) -> Out {
        Out {
            head: [0; 10],
            head_len: 0,
            latest: 0,
            body: Bytes::copy_from_slice(bytes),
        }
    }

    /// Whether this is one of the engine's frames (counted in
    /// `frames-sent`), not protocol bytes.
    pub(crate) fn is_frame(&self) -> bool {
        self.head_len > 0
    }

    /// Bytes it counts for in the queue's bounds: its payload.
    pub(crate) fn counted(&self) -> usize {
        self.body.len()
    }

    /// Bytes it takes on the wire.
    pub(crate) fn wire_len(&self) -> usize {
        usize::from(self.head_len) + self.body.len()
    }

    /// Its wire bytes from `skip` on: the rest of the header, the rest of
    /// the payload.
    pub(crate) fn parts(&self, skip: usize) -> [&[u8]; 2] {
        let head = &self.head[..usize::from(self.head_len)];
        match head.get(skip..) {
            Some(rest) => [rest, &self.body],
            None => [&[], self.body.get(skip - head.len()..).unwrap_or(&[])],
        }
    }
}

/// The side of the socket the connection's task writes the queue to.
pub(crate) enum Wire {
    /// The sink's own socket.
    Tcp,
    Other(WriteHalf<Box<dyn Duplex>>),
}

impl Wire {
    /// Writes `bufs`: to `tcp`, the sink's socket, for [`Wire::Tcp`].
    pub(crate) fn poll_write_vectored(
        &mut self,
        tcp: Option<&TcpStream>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match (self, tcp) {
            (Wire::Tcp, Some(tcp)) => loop {
                ready!(tcp.poll_write_ready(cx))?;
                match tcp.try_write_vectored(bufs) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    done => return Poll::Ready(done),
                }
            },
            (Wire::Tcp, None) => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
            (Wire::Other(w), _) => Pin::new(w).poll_write_vectored(cx, bufs),
        }
    }

    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Wire::Tcp => Poll::Ready(Ok(())),
            Wire::Other(w) => Pin::new(w).poll_flush(cx),
        }
    }
}

enum ReadSide {
    /// The sink's own socket.
    Tcp,
    Other(ReadHalf<Box<dyn Duplex>>),
}

/// The stream tungstenite runs on: it reads from the socket; what it
/// writes (pongs, pings, the close frame) joins the sink's queue, behind
/// the frames queued before, and its flush writes the queue out.
pub(crate) struct Inbound {
    read: ReadSide,
    wire: Wire,
    sink: Arc<ConnSink>,
}

impl Inbound {
    /// Splits `stream`; a plain TCP socket goes to the sink `make_sink`
    /// makes, which both sides then use.
    pub(crate) fn new(
        stream: Stream,
        make_sink: impl FnOnce(Option<TcpStream>) -> Arc<ConnSink>,
    ) -> Inbound {
        match stream {
            Stream::Tcp(tcp) => Inbound {
                read: ReadSide::Tcp,
                wire: Wire::Tcp,
                sink: make_sink(Some(tcp)),
            },
            Stream::Other(s) => {
                let (r, w) = tokio::io::split(s);
                Inbound {
                    read: ReadSide::Other(r),
                    wire: Wire::Other(w),
                    sink: make_sink(None),
                }
            }
        }
    }

    /// The connection's sink.
    pub(crate) fn sink(&self) -> &Arc<ConnSink> {
        &self.sink
    }
}

impl AsyncRead for Inbound {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match &mut this.read {
            ReadSide::Tcp => loop {
                let Some(tcp) = this.sink.tcp() else {
                    return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
                };
                ready!(tcp.poll_read_ready(cx))?;
                match tcp.try_read(buf.initialize_unfilled()) {
                    Ok(n) => {
                        buf.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            },
            ReadSide::Other(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Inbound {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.sink.push_raw(buf).map(|()| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.sink.poll_drain(cx, &mut this.wire)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.sink.poll_drain(cx, &mut this.wire))?;
        match &mut this.wire {
            // The socket closes when the connection's task lets it go.
            Wire::Tcp => Poll::Ready(Ok(())),
            Wire::Other(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(out: &Out, skip: usize) -> Vec<u8> {
        out.parts(skip).concat()
    }

    #[test]
    fn text_frames_have_the_shortest_length_encoding() {
        // RFC 6455 5.2: 7-bit length up to 125, then 16-bit, then 64-bit.
        for (len, head) in [
            (0usize, vec![0x81, 0]),
            (125, vec![0x81, 125]),
            (126, vec![0x81, 126, 0, 126]),
            (65_535, vec![0x81, 126, 0xff, 0xff]),
            (65_536, vec![0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let payload = Bytes::from(vec![b'x'; len]);
            let out = Out::text(payload.clone());
            let bytes = wire(&out, 0);
            assert_eq!(&bytes[..head.len()], &head[..], "length {len}");
            assert_eq!(&bytes[head.len()..], &payload[..]);
            assert_eq!((out.counted(), out.wire_len()), (len, len + head.len()));
        }
    }

    #[test]
    fn the_payload_is_shared_not_copied() {
        let payload = Bytes::from_static(b"{\"type\":\"pong\"}");
        let out = Out::text(payload.clone());
        assert_eq!(out.parts(0)[1].as_ptr(), payload.as_ptr());
    }

    #[test]
    fn slices_resume_anywhere_in_a_frame() {
        let out = Out::text(Bytes::from_static(b"hello"));
        let whole = wire(&out, 0);
        for skip in 0..=whole.len() {
            assert_eq!(wire(&out, skip), &whole[skip..], "from {skip}");
        }
        let raw = Out::raw(&[0x8a, 0]);
        assert!(!raw.is_frame());
        assert_eq!(wire(&raw, 1), [0]);
    }
}
