//! TLS (`tls.cert-file`, `tls.key-file`): `https://` and `wss://` on the
//! transport's one port, with rustls and its pure-Rust `ring` provider.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A certificate chain and its private key, read from PEM files.
pub struct Tls {
    cert_file: PathBuf,
    key_file: PathBuf,
    certs: Vec<CertificateDer<'static>>,
    /// rustls' settings offering HTTP/1.1 only, and offering `h2` first.
    http1: Arc<ServerConfig>,
    http2: Arc<ServerConfig>,
}

/// Why the TLS files cannot be used. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file cannot be read, or holds no PEM certificate.
    #[error("certificate file {path}: {message}")]
    Cert {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The key file cannot be read, or holds no PEM private key.
    #[error("key file {path}: {message}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Both parse, but rustls refuses them together (a key that is not the
    /// certificate's, an unsupported algorithm).
    #[error("certificate {cert} with key {key}: {message}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        message: String,
    },
}

impl Tls {
    /// Reads `cert_file` (PEM: the certificate, then its chain) and
    /// `key_file` (PEM: PKCS#8, PKCS#1 or SEC1), and checks that rustls
    /// accepts them together.
    pub fn from_pem_files(
        cert_file: impl AsRef<Path>,
        key_file: impl AsRef<Path>,
    ) -> Result<Tls, TlsError> {
        let cert_file = cert_file.as_ref().to_owned();
        let key_file = key_file.as_ref().to_owned();
        let cert_err = |message: String| TlsError::Cert {
            path: cert_file.clone(),
            message,
        };
        // Read first, so an unreadable file says so in the OS's words.
        let cert_pem = std::fs::read(&cert_file).map_err(|e| cert_err(e.to_string()))?;
        let certs = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cert_err(format!("not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(cert_err(
                "no PEM certificate (BEGIN CERTIFICATE) in it".to_owned(),
            ));
        }
        let key_err = |message: String| TlsError::Key {
            path: key_file.clone(),
            message,
        };
        let key_pem = std::fs::read(&key_file).map_err(|e| key_err(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| key_err(format!("no PEM private key: {e}")))?;
        let config = |alpn: &[&[u8]]| {
            server_config(&certs, &key, alpn).map_err(|e| TlsError::Pair {
                cert: cert_file.clone(),
                key: key_file.clone(),
                message: e.to_string(),
            })
        };
        let http1 = config(&[b"http/1.1"])?;
        let http2 = config(&[b"h2", b"http/1.1"])?;
        Ok(Tls {
            cert_file,
            key_file,
            certs,
            http1,
            http2,
        })
    }

    /// The certificate file.
    pub fn cert_file(&self) -> &Path {
        &self.cert_file
    }

    /// The key file.
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }

    /// The acceptor: ALPN `http/1.1`, or `h2` then `http/1.1` when
    /// `http2`.
    pub(crate) fn acceptor(&self, http2: bool) -> tokio_rustls::TlsAcceptor {
        let config = if http2 { &self.http2 } else { &self.http1 };
        tokio_rustls::TlsAcceptor::from(Arc::clone(config))
    }
}

/// rustls' server settings: TLS 1.2 and 1.3 with the ring provider, and
/// `alpn` offered.
fn server_config(
    certs: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs.to_vec(), key.clone_key())?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

impl Clone for Tls {
    fn clone(&self) -> Tls {
        Tls {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            certs: self.certs.clone(),
            http1: Arc::clone(&self.http1),
            http2: Arc::clone(&self.http2),
        }
    }
}

impl PartialEq for Tls {
    fn eq(&self, other: &Tls) -> bool {
        self.cert_file == other.cert_file
            && self.key_file == other.key_file
            && self.certs == other.certs
    }
}

impl Eq for Tls {}

/// The files only: never the key.
impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("certs", &self.certs.len())
            .finish_non_exhaustive()
    }
}

/// A connection's byte stream: plain TCP, or TLS over it.
pub(crate) enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Io {
    /// Whether TLS negotiated HTTP/2 by ALPN.
    pub(crate) fn alpn_h2(&self) -> bool {
        match self {
            Io::Plain(_) => false,
            Io::Tls(s) => s.get_ref().1.alpn_protocol() == Some(b"h2"),
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
