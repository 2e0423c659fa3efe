//! The encode/decode pipeline against real stores: sizes around the
//! multipart boundary, random and compressible data, wrong keys, damage.

use std::path::Path;
use std::sync::Arc;

use lifeboat::keys::Identities;
use lifeboat::pipeline::{self, EncodeSettings, Expected, PipelineError};
use lifeboat::policy::{Algorithm, CompressionConfig};
use lifeboat::storage::{LocalStore, ObjectStore};

use crate::harness::Garage;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    // xorshift: deterministic, incompressible.
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn compressible_bytes(n: usize) -> Vec<u8> {
    let line = b"2026-11-23 14:03:00 UTC INSERT INTO orders VALUES (42, 'paid', 19.99);\n";
    line.iter().cycle().take(n).copied().collect()
}

struct Keys {
    _dir: tempfile::TempDir,
    identities: Arc<Identities>,
    other: Arc<Identities>,
    settings: EncodeSettings,
}

fn keys(algorithm: Algorithm) -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    let recipient = lifeboat::keys::generate(&path).unwrap();
    let other_path = dir.path().join("other");
    lifeboat::keys::generate(&other_path).unwrap();
    Keys {
        identities: Arc::new(Identities::load(&path).unwrap()),
        other: Arc::new(Identities::load(&other_path).unwrap()),
        settings: EncodeSettings {
            compression: CompressionConfig {
                algorithm,
                level: None,
                threads: None,
            },
            recipients: Arc::new(vec![recipient.parse().unwrap()]),
            workers: 2,
        },
        _dir: dir,
    }
}

async fn put(store: &dyn ObjectStore, key: &str, data: Vec<u8>, k: &Keys) -> Expected {
    let writer = store.create(key).await.unwrap();
    let pending = pipeline::encode(std::io::Cursor::new(data), &k.settings, key, writer, None)
        .await
        .unwrap();
    let enc = pending.commit().await.unwrap();
    Expected {
        key: key.to_string(),
        compression: k.settings.compression.algorithm,
        stored: enc.stored,
        plaintext: enc.plaintext,
        recipients: vec![],
    }
}

async fn get(
    store: &dyn ObjectStore,
    e: &Expected,
    ids: Arc<Identities>,
) -> Result<Vec<u8>, PipelineError> {
    pipeline::decode_to_vec(store, e, ids).await
}

async fn round_trips(store: &dyn ObjectStore) {
    let cases: Vec<(&str, Vec<u8>, Algorithm)> = vec![
        ("empty", vec![], Algorithm::Zstd),
        ("1kib-random", random_bytes(1024, 1), Algorithm::Zstd),
        ("10mib-random", random_bytes(10 << 20, 2), Algorithm::Zstd),
        ("10mib-text", compressible_bytes(10 << 20), Algorithm::Zstd),
        // Larger than one 8 MiB part after compression: a real multipart upload.
        ("20mib-random", random_bytes(20 << 20, 3), Algorithm::Zstd),
        ("empty-gzip", vec![], Algorithm::Gzip),
        (
            "10mib-random-gzip",
            random_bytes(10 << 20, 4),
            Algorithm::Gzip,
        ),
        (
            "10mib-text-gzip",
            compressible_bytes(10 << 20),
            Algorithm::Gzip,
        ),
    ];
    for (name, data, algorithm) in cases {
        let k = keys(algorithm);
        let key = format!("case/{name}");
        let e = put(store, &key, data.clone(), &k).await;
        assert_eq!(e.plaintext.size, data.len() as u64, "{name}");
        assert_eq!(
            store.head(&key).await.unwrap(),
            Some(e.stored.size),
            "{name}"
        );
        pipeline::check_stored(store, &e)
            .await
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        let back = get(store, &e, k.identities.clone())
            .await
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        assert!(back == data, "{name}: decoded bytes differ");
        if name.contains("text") {
            assert!(
                e.stored.size < data.len() as u64 / 10,
                "{name}: compressed to {}",
                e.stored.size
            );
        }
        // Objects are never overwritten.
        assert!(
            store.create(&key).await.is_err(),
            "{name}: overwrite refused"
        );
    }
}

#[test]
fn inputs_of_every_size_round_trip_through_a_local_folder() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path());
    runtime().block_on(round_trips(&store));
    // No temp files left behind.
    assert_eq!(
        std::fs::read_dir(dir.path().join(".tmp")).unwrap().count(),
        0
    );
}

#[test]
fn inputs_of_every_size_round_trip_through_garage() {
    let garage = Garage::start();
    runtime().block_on(async {
        let store = garage.store("pipeline").await;
        store.healthcheck(true).await.unwrap();
        round_trips(&store).await;
        assert!(
            store.list_pending_uploads().await.unwrap().is_empty(),
            "no multipart upload left"
        );
    });
}

fn damage_local(path: &Path, how: &str) {
    let mut bytes = std::fs::read(path).unwrap();
    match how {
        "flip" => {
            let i = bytes.len() / 2;
            bytes[i] ^= 0x01;
        }
        "append" => bytes.push(0),
        "truncate" => bytes.truncate(bytes.len() - 100),
        _ => unreachable!(),
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn wrong_keys_and_damaged_objects_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path());
    runtime().block_on(async {
        let k = keys(Algorithm::Zstd);
        let data = random_bytes(1 << 20, 9);
        let e = put(&store, "obj/good", data.clone(), &k).await;
        match get(&store, &e, k.other.clone()).await {
            Err(PipelineError::WrongKey { key, .. }) => assert_eq!(key, "obj/good"),
            other => panic!("expected WrongKey, got {other:?}"),
        }
        for how in ["flip", "append", "truncate"] {
            let key = format!("obj/{how}");
            let e = put(&store, &key, data.clone(), &k).await;
            damage_local(&dir.path().join(&key), how);
            let stored = pipeline::check_stored(&store, &e).await;
            assert!(matches!(stored, Err(PipelineError::Corrupt { .. })), "{how}: {stored:?}");
            let decoded = get(&store, &e, k.identities.clone()).await;
            match decoded {
                Err(PipelineError::Corrupt { key: k2, detail }) => {
                    assert_eq!(k2, key);
                    let msg = PipelineError::Corrupt { key: k2.clone(), detail }.to_string();
                    assert!(msg.contains("corrupt") && msg.contains(&key), "{msg}");
                }
                other => panic!("{how}: expected Corrupt, got {other:?}"),
            }
        }
        // A manifest that records less plaintext than the object holds:
        // decoding stops at the recorded size instead of producing more.
        let mut small = e.clone();
        small.plaintext.size = 1000;
        let r = get(&store, &small, k.identities.clone()).await;
        assert!(matches!(r, Err(PipelineError::Corrupt { ref detail, .. }) if detail.contains("more than")), "{r:?}");
    });
}

/// Raw objects (no pipeline) of sizes around the 8 MiB part boundary: the
/// multipart writer's single-part, exact-multiple and remainder paths.
#[test]
fn objects_around_the_part_boundary_round_trip_through_garage() {
    let garage = Garage::start();
    runtime().block_on(async {
        let store = garage.store("boundary").await;
        let part = 8usize << 20;
        for (i, size) in [part - 1, part, part + 1, 2 * part, 2 * part + 3]
            .into_iter()
            .enumerate()
        {
            let data = random_bytes(size, 50 + i as u64);
            let key = format!("raw/{size}");
            let mut w = store.create(&key).await.unwrap();
            // Uneven chunks, like the pipeline's.
            for chunk in data.chunks(1_000_003) {
                w.write(bytes::Bytes::copy_from_slice(chunk)).await.unwrap();
            }
            assert_eq!(w.finish().await.unwrap(), size as u64);
            assert_eq!(store.head(&key).await.unwrap(), Some(size as u64), "{size}");
            assert!(
                store.get_bytes(&key).await.unwrap() == data,
                "{size}: bytes differ"
            );
        }
        assert!(store.list_pending_uploads().await.unwrap().is_empty());
    });
}

#[test]
fn an_aborted_upload_leaves_nothing_in_garage() {
    let garage = Garage::start();
    runtime().block_on(async {
        let store = garage.store("abort").await;
        let mut w = store.create("half").await.unwrap();
        for i in 0..3u64 {
            w.write(random_bytes(8 << 20, 100 + i).into())
                .await
                .unwrap();
        }
        assert_eq!(
            store.list_pending_uploads().await.unwrap().len(),
            1,
            "upload in progress"
        );
        w.abort().await;
        assert!(store.list_pending_uploads().await.unwrap().is_empty());
        assert_eq!(store.head("half").await.unwrap(), None);
    });
}
