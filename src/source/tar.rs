//! Watches a tar stream as it passes through, keeping copies of a few small
//! named members: the base backup's `backup_label` and `backup_manifest`
//! are read from `pg_basebackup`'s output without staging the archive.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

const BLOCK: usize = 512;
/// A member larger than this is not kept (a backup_manifest of a
/// million-file cluster is about 150 MiB).
const KEEP_LIMIT: usize = 512 << 20;

#[derive(Default)]
pub struct TarMembers {
    wanted: Vec<String>,
    header: Vec<u8>,
    remaining: u64,
    padding: u64,
    capture: Option<(String, Vec<u8>)>,
    /// The kept members, by name.
    pub files: HashMap<String, Vec<u8>>,
    /// Every member's name, in order (for error messages and checks).
    pub names: Vec<String>,
}

impl TarMembers {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = (self.remaining.min(data.len() as u64)) as usize;
                if let Some((_, buf)) = &mut self.capture {
                    if buf.len() + n <= KEEP_LIMIT {
                        buf.extend_from_slice(&data[..n]);
                    }
                }
                self.remaining -= n as u64;
                data = &data[n..];
                if self.remaining == 0 {
                    if let Some((name, buf)) = self.capture.take() {
                        self.files.insert(name, buf);
                    }
                }
            } else if self.padding > 0 {
                let n = (self.padding.min(data.len() as u64)) as usize;
                self.padding -= n as u64;
                data = &data[n..];
            } else {
                let n = (BLOCK - self.header.len()).min(data.len());
                self.header.extend_from_slice(&data[..n]);
                data = &data[n..];
                if self.header.len() == BLOCK {
                    let header = std::mem::take(&mut self.header);
                    self.parse_header(&header);
                }
            }
        }
    }

    fn parse_header(&mut self, h: &[u8]) {
        if h.iter().all(|&b| b == 0) {
            return; // end-of-archive blocks
        }
        let cstr = |b: &[u8]| {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            String::from_utf8_lossy(&b[..end]).into_owned()
        };
        let mut name = cstr(&h[..100]);
        if &h[257..262] == b"ustar" {
            let prefix = cstr(&h[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        let size = if h[124] & 0x80 != 0 {
            // GNU base-256 for sizes beyond 8 GiB.
            h[125..136]
                .iter()
                .fold(0u64, |acc, &b| (acc << 8) | b as u64)
        } else {
            let field = cstr(&h[124..136]);
            u64::from_str_radix(field.trim(), 8).unwrap_or(0)
        };
        let typeflag = h[156];
        self.remaining = size;
        self.padding = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        if matches!(typeflag, b'0' | 0) && self.wanted.contains(&name) {
            if size == 0 {
                self.files.insert(name.clone(), Vec::new());
            } else {
                self.capture = Some((name.clone(), Vec::with_capacity(size.min(1 << 20) as usize)));
            }
        }
        self.names.push(name);
    }
}

/// An `AsyncRead` that passes bytes through unchanged and feeds them to a
/// [`TarMembers`] shared with the caller.
pub struct TarWatch<R> {
    inner: R,
    members: Arc<Mutex<TarMembers>>,
}

impl<R> TarWatch<R> {
    pub fn new(inner: R, wanted: &[&str]) -> (Self, Arc<Mutex<TarMembers>>) {
        let members = Arc::new(Mutex::new(TarMembers {
            wanted: wanted.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }));
        (
            TarWatch {
                inner,
                members: Arc::clone(&members),
            },
            members,
        )
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for TarWatch<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            this.members
                .lock()
                .expect("poisoned")
                .feed(&buf.filled()[before..]);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, size: usize) -> Vec<u8> {
        let mut h = vec![0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let s = format!("{size:011o}");
        h[124..135].copy_from_slice(s.as_bytes());
        h[156] = b'0';
        h[257..262].copy_from_slice(b"ustar");
        h
    }

    fn member(name: &str, body: &[u8]) -> Vec<u8> {
        let mut out = header(name, body.len());
        out.extend_from_slice(body);
        out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
        out
    }

    #[test]
    fn wanted_members_are_kept_whatever_the_read_sizes() {
        let mut tar = member("PG_VERSION", b"15\n");
        tar.extend(member("backup_label", b"START WAL LOCATION: 0/2000028\n"));
        tar.extend(member("base/1/1259", &vec![7u8; 5000]));
        tar.extend(member(
            "backup_manifest",
            b"{\"PostgreSQL-Backup-Manifest-Version\": 1}",
        ));
        tar.extend(vec![0u8; 2 * BLOCK]);
        for step in [1, 7, 511, 512, 513, 4096, tar.len()] {
            let mut m = TarMembers {
                wanted: vec!["backup_label".into(), "backup_manifest".into()],
                ..Default::default()
            };
            for chunk in tar.chunks(step) {
                m.feed(chunk);
            }
            assert_eq!(
                m.names,
                [
                    "PG_VERSION",
                    "backup_label",
                    "base/1/1259",
                    "backup_manifest"
                ]
            );
            assert_eq!(m.files["backup_label"], b"START WAL LOCATION: 0/2000028\n");
            assert_eq!(
                m.files["backup_manifest"],
                b"{\"PostgreSQL-Backup-Manifest-Version\": 1}"
            );
        }
    }
}
