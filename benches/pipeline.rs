//! Pipeline throughput per stage and end to end, on 256 MiB of data that
//! looks like a database dump (half random bytes, half repetitive text).
//!
//! Run: `cargo bench --bench pipeline`. Results go in docs/BENCHMARKS.md.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use lifeboat::pipeline::{self, EncodeSettings, Expected};
use lifeboat::policy::{Algorithm, CompressionConfig};
use lifeboat::storage::{ObjectStore, ObjectWriter, StorageError};
use sha2::Digest;

const SIZE: usize = 256 << 20;

fn dump_like_data() -> Vec<u8> {
    let mut out = Vec::with_capacity(SIZE);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut row = 0u64;
    while out.len() < SIZE {
        // A text row, then a block of random bytes (like bytea or hashes).
        row += 1;
        out.extend_from_slice(
            format!(
                "{row}\tuser{row}@example.com\tpaid\t{}.{:02}\t2026-11-23 14:03:00+00\n",
                row % 997,
                row % 100
            )
            .as_bytes(),
        );
        for _ in 0..8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(SIZE);
    out
}

fn report(stage: &str, bytes: usize, secs: f64, note: &str) {
    println!(
        "| {stage:<40} | {:>8.0} | {note}",
        bytes as f64 / secs / 1e6
    );
}

fn time<F: FnMut()>(mut f: F) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

/// A writer that only counts: measures the pipeline without storage.
struct Null;

#[async_trait]
impl ObjectWriter for Null {
    async fn write(&mut self, _chunk: Bytes) -> Result<(), StorageError> {
        Ok(())
    }
    async fn finish(self: Box<Self>) -> Result<u64, StorageError> {
        Ok(0)
    }
    async fn abort(self: Box<Self>) {}
}

fn main() {
    let data = dump_like_data();
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("k");
    let recipient: age::x25519::Recipient = lifeboat::keys::generate(&key_path)
        .unwrap()
        .parse()
        .unwrap();
    let identities = Arc::new(lifeboat::keys::Identities::load(&key_path).unwrap());

    println!(
        "input: {} MiB of dump-like data (half text rows, half random bytes)\n",
        SIZE >> 20
    );
    println!("| {:<40} | {:>8} | notes", "stage", "MB/s");
    println!("|{:-<42}|{:->10}|------", "", "");

    let secs = time(|| {
        let mut h = sha2::Sha256::new();
        h.update(&data);
        std::hint::black_box(h.finalize());
    });
    report("sha256", SIZE, secs, "");

    for level in [1, 3] {
        let mut zstd_out = Vec::new();
        let secs = time(|| {
            zstd_out = zstd::encode_all(&data[..], level).unwrap();
        });
        report(
            &format!("zstd level {level} (1 thread)"),
            SIZE,
            secs,
            &format!("ratio {:.2}", SIZE as f64 / zstd_out.len() as f64),
        );
    }

    let secs = time(|| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        e.write_all(&data).unwrap();
        std::hint::black_box(e.finish().unwrap());
    });
    report("gzip level 6", SIZE, secs, "");

    let mut encrypted = Vec::new();
    let secs = time(|| {
        let enc =
            age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                .unwrap();
        let mut w = enc
            .wrap_output(Vec::with_capacity(SIZE + SIZE / 1000))
            .unwrap();
        w.write_all(&data).unwrap();
        encrypted = w.finish().unwrap();
    });
    report("age encrypt (X25519, ChaCha20-Poly1305)", SIZE, secs, "");

    let secs = time(|| {
        let d = age::Decryptor::new_buffered(&encrypted[..]).unwrap();
        let mut r = d.decrypt(identities.iter()).unwrap();
        let mut sink = Vec::with_capacity(SIZE);
        r.read_to_end(&mut sink).unwrap();
        std::hint::black_box(sink);
    });
    report("age decrypt", SIZE, secs, "");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    for (algorithm, level, workers, label) in [
        (Algorithm::Zstd, 1, 1, "zstd 1, 1 thread".to_string()),
        (Algorithm::Zstd, 3, 1, "zstd 3, 1 thread".to_string()),
        (
            Algorithm::Zstd,
            3,
            cores,
            format!("zstd 3, {cores} threads"),
        ),
        (Algorithm::Gzip, 6, 1, "gzip 6".to_string()),
    ] {
        let settings = EncodeSettings {
            compression: CompressionConfig {
                algorithm,
                level: Some(level),
                threads: None,
            },
            recipients: Arc::new(vec![recipient.clone()]),
            workers,
        };
        let input = data.clone();
        let secs = time(|| {
            rt.block_on(async {
                let p = pipeline::encode(
                    std::io::Cursor::new(input.clone()),
                    &settings,
                    "bench",
                    Box::new(Null),
                    None,
                )
                .await
                .unwrap();
                p.commit().await.unwrap();
            })
        });
        report(
            &format!("encode: sha256 → {label} → age → (null)"),
            SIZE,
            secs,
            "full encode path, no storage",
        );

        // Decode from a local folder.
        let store = lifeboat::storage::LocalStore::new(dir.path().join(format!("repo-{label}")));
        let expected = rt.block_on(async {
            let w = store.create("obj").await.unwrap();
            let p = pipeline::encode(std::io::Cursor::new(input), &settings, "obj", w, None)
                .await
                .unwrap();
            let e = p.commit().await.unwrap();
            Expected {
                key: "obj".into(),
                compression: algorithm,
                stored: e.stored,
                plaintext: e.plaintext,
                recipients: vec![],
            }
        });
        let secs = time(|| {
            rt.block_on(async {
                pipeline::decode(
                    &store,
                    &expected,
                    identities.clone(),
                    tokio::io::sink(),
                    "sink",
                    None,
                )
                .await
                .unwrap();
            })
        });
        report(
            &format!("decode: local file → age → {label} → sha256"),
            SIZE,
            secs,
            "both hashes checked",
        );
    }
}
