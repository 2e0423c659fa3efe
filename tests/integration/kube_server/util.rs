//! Small helpers: time stamps, ids, random names, base64 and fake key
//! material (PEM blocks, service account tokens).

use rand::Rng;
use serde_json::json;

pub(super) const DAY: i64 = 86_400;

/// RFC 3339 UTC with seconds, as creationTimestamp.
pub(super) fn now_ts() -> String {
    ago(0)
}

pub(super) fn ago(secs: i64) -> String {
    (chrono::Utc::now() - chrono::TimeDelta::seconds(secs))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// MicroTime, as Lease times.
pub(super) fn ago_micro(secs: i64) -> String {
    (chrono::Utc::now() - chrono::TimeDelta::seconds(secs))
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// A random UUID (version 4 layout), like metadata.uid.
pub(super) fn new_uid() -> String {
    let b: [u8; 16] = rand::thread_rng().gen();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let variant = ['8', '9', 'a', 'b'][(b[8] & 3) as usize];
    format!(
        "{}-{}-4{}-{}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        variant,
        &h[17..20],
        &h[20..32]
    )
}

pub(super) fn random_hex(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from_digit(rng.gen_range(0..16u32), 16).unwrap_or('0'))
        .collect()
}

/// The alphabet of generateName suffixes (no vowels, no confusable digits).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

pub(super) fn random_suffix(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| NAME_ALPHABET[rng.gen_range(0..NAME_ALPHABET.len())] as char)
        .collect()
}

pub(super) fn random_text(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| rng.sample(rand::distributions::Alphanumeric) as char)
        .collect()
}

pub(super) fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Deterministic pseudo-random bytes (splitmix64 seeded by `seed`).
fn pseudo_bytes(seed: &str, len: usize) -> Vec<u8> {
    let mut x = fnv64(seed.as_bytes());
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub(super) fn fake_hex(seed: &str, len: usize) -> String {
    let h: String = pseudo_bytes(seed, len.div_ceil(2))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    h[..len].to_string()
}

/// Standard base64 with padding (Secret data).
pub(super) fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// A PEM block with deterministic fake content (not a usable key).
pub(super) fn fake_pem(label: &str, seed: &str) -> String {
    let body = b64(&pseudo_bytes(seed, 480));
    let mut s = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        s.push_str(&String::from_utf8_lossy(line));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

/// A JWT-shaped service account token (fake signature).
pub(super) fn fake_jwt(ns: &str, sa: &str) -> String {
    let url = |s: String| s.trim_end_matches('=').replace('+', "-").replace('/', "_");
    let header = url(b64(br#"{"alg":"RS256","kid":"lifeboat-test"}"#));
    let claims = json!({
        "iss": "kubernetes/serviceaccount",
        "kubernetes.io/serviceaccount/namespace": ns,
        "kubernetes.io/serviceaccount/secret.name": format!("{sa}-token-x7k2p"),
        "kubernetes.io/serviceaccount/service-account.name": sa,
        "sub": format!("system:serviceaccount:{ns}:{sa}")
    });
    let payload = url(b64(claims.to_string().as_bytes()));
    let signature = url(b64(&pseudo_bytes(&format!("{ns}/{sa}"), 256)));
    format!("{header}.{payload}.{signature}")
}
