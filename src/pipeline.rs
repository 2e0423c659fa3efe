//! The artifact pipeline.
//!
//! Encode: plaintext stream → sha256 → zstd or gzip → age → storage, in one
//! streaming pass. The CPU stages run on a blocking thread and hand ~1 MiB
//! chunks through a small channel to the storage writer, which keeps a fixed
//! number of multipart parts in flight: memory is bounded whatever the size
//! of the input, and nothing is staged on disk.
//!
//! Decode: storage → sha256 → age → zstd or gzip → sha256 → output, checking
//! both hashes and sizes against the manifest. Output is capped at the
//! recorded plaintext size, so a corrupt or hostile object cannot produce
//! unbounded data.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;

use crate::keys::Identities;
use crate::policy::{Algorithm, CompressionConfig};
use crate::storage::{ObjectStore, ObjectWriter, StorageError};

/// Size of the chunks handed from the CPU stages to the storage writer.
const CHUNK: usize = 1 << 20;
/// Chunks buffered between the CPU stages and the storage writer.
const CHANNEL_DEPTH: usize = 2;
/// Read size from the input.
const READ_BUF: usize = 256 * 1024;

/// Size and sha256 of a byte stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// What encoding produced: digests of the plaintext and of the stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub plaintext: Digest,
    pub stored: Digest,
}

/// Errors of the pipeline. Each names the object involved.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("reading the data to back up for {key}: {source}")]
    Input { key: String, source: io::Error },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot set up age encryption: {0}")]
    Encrypt(String),
    #[error("object {key} is corrupt: {detail}; it cannot be restored from this copy")]
    Corrupt { key: String, detail: String },
    #[error("no identity in {identity_file} can decrypt {key} (it was encrypted to {recipients}); use the identity file matching the policy's recipients")]
    WrongKey {
        key: String,
        identity_file: String,
        recipients: String,
    },
    #[error("reading object {key}: {source}")]
    Read { key: String, source: io::Error },
    #[error("writing the decoded data of {key} to {target}: {source}")]
    Output {
        key: String,
        target: String,
        source: io::Error,
    },
}

impl crate::outcome::Classify for PipelineError {
    fn outcome(&self) -> crate::outcome::Outcome {
        use crate::outcome::Outcome;
        match self {
            Self::Corrupt { .. } => Outcome::Integrity,
            Self::WrongKey { .. } => Outcome::WrongKey,
            Self::Storage(e) => e.outcome(),
            Self::Input { .. } | Self::Encrypt(_) | Self::Read { .. } | Self::Output { .. } => {
                Outcome::Failure
            }
        }
    }
}

/// How artifacts are encoded.
#[derive(Clone)]
pub struct EncodeSettings {
    pub compression: CompressionConfig,
    pub recipients: Arc<Vec<age::x25519::Recipient>>,
    /// zstd worker threads (at least one; gzip uses one). The frames are
    /// standard either way: plain `zstd -d` reads them.
    pub workers: u32,
}

/// An object whose bytes are all written but which is not yet visible.
/// The caller commits it once the producer of the data reported success
/// (a `pg_dump` can close its output and then fail), or aborts it.
pub struct Pending {
    pub key: String,
    pub encoded: Encoded,
    writer: Box<dyn ObjectWriter>,
}

impl Pending {
    /// Makes the object durable and visible.
    pub async fn commit(self) -> Result<Encoded, StorageError> {
        self.writer.finish().await?;
        Ok(self.encoded)
    }
    /// Discards the object.
    pub async fn abort(self) {
        self.writer.abort().await;
    }
}

/// Streams `input` through hash, compression and encryption into `writer`.
/// `progress` counts plaintext bytes read, for progress reports.
pub async fn encode<R>(
    input: R,
    settings: &EncodeSettings,
    key: &str,
    mut writer: Box<dyn ObjectWriter>,
    progress: Option<Arc<AtomicU64>>,
) -> Result<Pending, PipelineError>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    let bridge = SyncIoBridge::new(input);
    let settings = settings.clone();
    let key_owned = key.to_string();
    let cpu = tokio::task::spawn_blocking(move || {
        encode_blocking(bridge, &settings, &key_owned, tx, progress)
    });

    let mut storage_err = None;
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = writer.write(chunk).await {
            storage_err = Some(e);
            // Dropping the receiver stops the CPU stages.
            break;
        }
    }
    drop(rx);
    let cpu_result = cpu.await.expect("encode thread panicked");
    match (storage_err, cpu_result) {
        (None, Ok(encoded)) => Ok(Pending {
            key: key.to_string(),
            encoded,
            writer,
        }),
        (Some(e), _) => {
            writer.abort().await;
            Err(e.into())
        }
        (None, Err(e)) => {
            writer.abort().await;
            Err(e)
        }
    }
}

fn encode_blocking(
    mut input: impl Read,
    settings: &EncodeSettings,
    key: &str,
    tx: mpsc::Sender<Bytes>,
    progress: Option<Arc<AtomicU64>>,
) -> Result<Encoded, PipelineError> {
    let sink = ChannelWriter {
        tx,
        buf: BytesMut::with_capacity(CHUNK),
        hasher: Sha256::new(),
        size: 0,
    };
    let encryptor = age::Encryptor::with_recipients(
        settings.recipients.iter().map(|r| r as &dyn age::Recipient),
    )
    .map_err(|e| PipelineError::Encrypt(e.to_string()))?;
    let out_err = |source: io::Error| PipelineError::Output {
        key: key.to_string(),
        target: "the storage writer".into(),
        source,
    };
    let encrypted = encryptor.wrap_output(sink).map_err(out_err)?;
    let mut compressor =
        Compressor::new(encrypted, settings.compression, settings.workers).map_err(out_err)?;

    let mut plain_hasher = Sha256::new();
    let mut plain_size = 0u64;
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(PipelineError::Input {
                    key: key.to_string(),
                    source,
                })
            }
        };
        plain_hasher.update(&buf[..n]);
        plain_size += n as u64;
        if let Some(p) = &progress {
            p.fetch_add(n as u64, Ordering::Relaxed);
        }
        compressor.write_all(&buf[..n]).map_err(out_err)?;
    }
    let encrypted = compressor.finish().map_err(out_err)?;
    let mut sink = encrypted.finish().map_err(out_err)?;
    sink.flush_chunk().map_err(out_err)?;
    Ok(Encoded {
        plaintext: Digest {
            size: plain_size,
            sha256: hex::encode(plain_hasher.finalize()),
        },
        stored: Digest {
            size: sink.size,
            sha256: hex::encode(sink.hasher.finalize()),
        },
    })
}

/// Encodes a small, bounded input (a WAL segment: 16 MiB) in memory, for
/// a single PUT whose key can carry the digests. Blocking: call it from a
/// blocking thread.
pub fn encode_bytes(
    data: &[u8],
    settings: &EncodeSettings,
    key: &str,
) -> Result<(Vec<u8>, Encoded), PipelineError> {
    let out_err = |source: io::Error| PipelineError::Output {
        key: key.to_string(),
        target: "memory".into(),
        source,
    };
    let encryptor = age::Encryptor::with_recipients(
        settings.recipients.iter().map(|r| r as &dyn age::Recipient),
    )
    .map_err(|e| PipelineError::Encrypt(e.to_string()))?;
    // The plaintext hash runs beside compression and encryption: a WAL
    // segment is pushed while PostgreSQL waits, so latency counts.
    let (plain_sha, stored) = std::thread::scope(|scope| {
        let hasher = scope.spawn(|| hex::encode(Sha256::digest(data)));
        let stored = (|| {
            let sink = Vec::with_capacity(data.len() / 2 + 4096);
            let encrypted = encryptor.wrap_output(sink).map_err(out_err)?;
            let mut compressor = Compressor::new(encrypted, settings.compression, settings.workers)
                .map_err(out_err)?;
            compressor.write_all(data).map_err(out_err)?;
            compressor
                .finish()
                .map_err(out_err)?
                .finish()
                .map_err(out_err)
        })();
        (hasher.join().expect("hash thread panicked"), stored)
    });
    let stored = stored?;
    let encoded = Encoded {
        plaintext: Digest {
            size: data.len() as u64,
            sha256: plain_sha,
        },
        stored: Digest {
            size: stored.len() as u64,
            sha256: hex::encode(Sha256::digest(&stored)),
        },
    };
    Ok((stored, encoded))
}

/// Decodes an object already in memory and checks both digests. Blocking.
pub fn decode_bytes(
    stored: &[u8],
    expected: &Expected,
    identities: &Identities,
) -> Result<Vec<u8>, PipelineError> {
    let mut out = Vec::with_capacity(expected.plaintext.size.min(1 << 30) as usize);
    decode_blocking(stored, &mut out, expected, identities, "memory", None)?;
    Ok(out)
}

/// The end of the CPU stages: hashes the stored bytes and sends them on in
/// chunks of about [`CHUNK`] bytes.
struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
    buf: BytesMut,
    hasher: Sha256,
    size: u64,
}

impl ChannelWriter {
    fn flush_chunk(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, BytesMut::with_capacity(CHUNK)).freeze();
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the storage writer stopped"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.hasher.update(data);
        self.size += data.len() as u64;
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush_chunk()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Compressor<W: Write> {
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Gzip(flate2::write::GzEncoder<W>),
}

impl<W: Write> Compressor<W> {
    fn new(inner: W, cfg: CompressionConfig, workers: u32) -> io::Result<Self> {
        let level = cfg.effective_level();
        Ok(match cfg.algorithm {
            Algorithm::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(inner, level)?;
                // A frame checksum lets plain `zstd -d` detect damage too.
                enc.include_checksum(true)?;
                // Worker threads (one at least): compression overlaps
                // hashing and encryption instead of running in turn with
                // them, and large streams use the cores the machine has.
                enc.multithread(workers.max(1))?;
                Compressor::Zstd(enc)
            }
            Algorithm::Gzip => Compressor::Gzip(flate2::write::GzEncoder::new(
                inner,
                flate2::Compression::new(level as u32),
            )),
        })
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Zstd(e) => e.finish(),
            Compressor::Gzip(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Zstd(e) => e.write(data),
            Compressor::Gzip(e) => e.write(data),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Zstd(e) => e.flush(),
            Compressor::Gzip(e) => e.flush(),
        }
    }
}

/// What a stored object must look like, from its manifest.
#[derive(Debug, Clone)]
pub struct Expected {
    pub key: String,
    pub compression: Algorithm,
    pub stored: Digest,
    pub plaintext: Digest,
    /// Recipients the object was encrypted to, for error messages.
    pub recipients: Vec<String>,
}

/// Checks an object's stored size and sha256 without decrypting it.
pub async fn check_stored(
    store: &dyn ObjectStore,
    expected: &Expected,
) -> Result<(), PipelineError> {
    use tokio::io::AsyncReadExt;
    let mut reader = store.get(&expected.key).await?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let n = reader
            .read(&mut buf)
            .await
            .map_err(|source| PipelineError::Read {
                key: expected.key.clone(),
                source,
            })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    compare(
        &expected.key,
        "stored",
        &expected.stored,
        &Digest {
            size,
            sha256: hex::encode(hasher.finalize()),
        },
    )
}

fn compare(key: &str, what: &str, want: &Digest, got: &Digest) -> Result<(), PipelineError> {
    if want.size != got.size {
        return Err(PipelineError::Corrupt {
            key: key.to_string(),
            detail: format!(
                "{what} size is {} bytes, the manifest records {}",
                got.size, want.size
            ),
        });
    }
    if want.sha256 != got.sha256 {
        return Err(PipelineError::Corrupt {
            key: key.to_string(),
            detail: format!(
                "{what} sha256 is {}, the manifest records {}",
                got.sha256, want.sha256
            ),
        });
    }
    Ok(())
}

/// Streams a stored object through decryption and decompression into `out`,
/// checking stored and plaintext digests. `target` names `out` in errors;
/// `progress` counts plaintext bytes written.
///
/// On a digest mismatch an error is returned after the data was written:
/// callers that write into a live target must treat it as failed.
pub async fn decode<W>(
    store: &dyn ObjectStore,
    expected: &Expected,
    identities: Arc<Identities>,
    out: W,
    target: &str,
    progress: Option<Arc<AtomicU64>>,
) -> Result<(), PipelineError>
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let reader = store.get(&expected.key).await?;
    let input = SyncIoBridge::new(reader);
    let output = SyncIoBridge::new(out);
    let expected = expected.clone();
    let target = target.to_string();
    tokio::task::spawn_blocking(move || {
        decode_blocking(input, output, &expected, &identities, &target, progress)
    })
    .await
    .expect("decode thread panicked")
}

/// Remembers the first I/O error of a stage, so a failure deep in the
/// decoder chain can be blamed on the right party (storage, output, or the
/// object's own bytes).
#[derive(Default, Clone)]
struct ErrorSlot(Arc<Mutex<Option<io::Error>>>);

impl ErrorSlot {
    fn record(&self, e: &io::Error) -> io::Error {
        let mut slot = self.0.lock().expect("poisoned");
        if slot.is_none() {
            *slot = Some(io::Error::new(e.kind(), e.to_string()));
        }
        io::Error::new(e.kind(), e.to_string())
    }
    fn take(&self) -> Option<io::Error> {
        self.0.lock().expect("poisoned").take()
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
    errors: ErrorSlot,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf).map_err(|e| self.errors.record(&e))?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

fn decode_blocking<R: Read, W: Write>(
    input: R,
    mut output: W,
    expected: &Expected,
    identities: &Identities,
    target: &str,
    progress: Option<Arc<AtomicU64>>,
) -> Result<(), PipelineError> {
    let key = expected.key.clone();
    let corrupt = |detail: String| PipelineError::Corrupt {
        key: key.clone(),
        detail,
    };
    let read_errors = ErrorSlot::default();
    let mut stored = HashingReader {
        inner: input,
        hasher: Sha256::new(),
        size: 0,
        errors: read_errors.clone(),
    };
    let blame = |e: io::Error, what: &str| -> PipelineError {
        match read_errors.take() {
            Some(source) => PipelineError::Read {
                key: key.clone(),
                source,
            },
            None => corrupt(format!("{what}: {e}")),
        }
    };

    let result = (|| -> Result<(u64, String), PipelineError> {
        let decryptor =
            age::Decryptor::new_buffered(io::BufReader::with_capacity(READ_BUF, &mut stored))
                .map_err(|e| match e {
                    age::DecryptError::Io(io) => blame(io, "reading the age header"),
                    other => corrupt(format!("age header: {other}")),
                })?;
        let decrypted = decryptor.decrypt(identities.iter()).map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => PipelineError::WrongKey {
                key: key.clone(),
                identity_file: identities.path.display().to_string(),
                recipients: if expected.recipients.is_empty() {
                    "unknown recipients".into()
                } else {
                    expected.recipients.join(", ")
                },
            },
            age::DecryptError::Io(io) => blame(io, "decrypting"),
            other => corrupt(format!("decrypting: {other}")),
        })?;
        let mut plain: Box<dyn Read> = match expected.compression {
            Algorithm::Zstd => Box::new(
                zstd::stream::read::Decoder::new(decrypted)
                    .map_err(|e| corrupt(format!("zstd: {e}")))?,
            ),
            Algorithm::Gzip => Box::new(flate2::read::GzDecoder::new(decrypted)),
        };
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let limit = expected.plaintext.size;
        let mut buf = vec![0u8; READ_BUF];
        loop {
            let n = match plain.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(blame(e, "decrypting or decompressing")),
            };
            size += n as u64;
            if size > limit {
                return Err(corrupt(format!(
                    "it decodes to more than the {limit} plaintext bytes the manifest records"
                )));
            }
            hasher.update(&buf[..n]);
            if let Some(p) = &progress {
                p.fetch_add(n as u64, Ordering::Relaxed);
            }
            output
                .write_all(&buf[..n])
                .map_err(|source| PipelineError::Output {
                    key: key.clone(),
                    target: target.to_string(),
                    source,
                })?;
        }
        Ok((size, hex::encode(hasher.finalize())))
    })();
    let (plain_size, plain_sha) = result?;
    output.flush().map_err(|source| PipelineError::Output {
        key: key.clone(),
        target: target.to_string(),
        source,
    })?;
    drop(output);
    // Bytes after the end of the age stream are damage too; hash them
    // without holding them (there may be gigabytes).
    io::copy(&mut stored, &mut io::sink())
        .map_err(|e| blame(e, "reading after the end of the age stream"))?;
    compare(
        &key,
        "stored",
        &expected.stored,
        &Digest {
            size: stored.size,
            sha256: hex::encode(stored.hasher.finalize()),
        },
    )?;
    compare(
        &key,
        "plaintext",
        &expected.plaintext,
        &Digest {
            size: plain_size,
            sha256: plain_sha,
        },
    )
}

/// Decodes a small object (a manifest-sized inventory or globals script)
/// into memory; its size is bounded by the manifest's plaintext size.
pub async fn decode_to_vec(
    store: &dyn ObjectStore,
    expected: &Expected,
    identities: Arc<Identities>,
) -> Result<Vec<u8>, PipelineError> {
    use tokio::io::AsyncReadExt;
    let (writer, mut reader) = tokio::io::duplex(CHUNK);
    let collect = async move {
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.map(|_| out)
    };
    let (decoded, collected) = tokio::join!(
        decode(store, expected, identities, writer, "memory", None),
        collect
    );
    decoded?;
    collected.map_err(|source| PipelineError::Output {
        key: expected.key.clone(),
        target: "memory".into(),
        source,
    })
}
