//! A fault-injecting HTTP/1.1 proxy for the S3 tests: it sits between
//! lifeboat's S3 client and Garage on loopback and parses every request and
//! response, so a fault hits one request on a kept-alive connection (a 503,
//! a reset in the middle of a body, a stall), not the whole connection.
//!
//! The client's connections are kept alive as the client wants; each
//! forwarded request gets its own connection to the upstream, so an idle
//! upstream connection closed by the server never eats a request.

#![allow(dead_code)]

use std::collections::HashSet;
use std::io;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwarded as is.
    Pass,
    /// Answered by the proxy: 503 with an S3 `SlowDown` error, not forwarded.
    SlowDown,
    /// Forwarded; at most the first n bytes of the response (head
    /// included) are relayed, then the client socket is reset (RST).
    ResetAfter(usize),
    /// Forwarded; n bytes of the response are relayed, then a pause.
    StallAfter(usize, Duration),
    /// Read and never answered; the connection stays open until the proxy
    /// is dropped.
    BlackHole,
    /// Held this long, then forwarded.
    Delay(Duration),
}

/// Header names (in lower case) and values, in order.
pub type Headers = Vec<(String, String)>;

/// A request as a rule sees it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The order the proxy received it in, from 0, over all connections.
    pub seq: usize,
    pub method: String,
    /// Path and query.
    pub target: String,
    pub headers: Headers,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// A CompleteMultipartUpload (Garage answers a repeated one with
    /// NoSuchUpload once the first succeeded; AWS S3 answers 200).
    pub fn completes_upload(&self) -> bool {
        self.method == "POST" && self.target.contains("uploadId=")
    }
}

/// A request the proxy saw, what the rule decided and what happened.
#[derive(Debug, Clone)]
pub struct Seen {
    pub seq: usize,
    pub method: String,
    pub target: String,
    pub range: Option<String>,
    pub fault: Fault,
    /// The fault really happened (a reset beyond the response's end did not).
    pub injected: bool,
    /// The final response's status and head length, once it arrived.
    pub status: Option<u16>,
    pub head_len: usize,
}

impl Seen {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// Faults that happened, per kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Requests that got no fault.
    pub passed: usize,
    pub slowdown: usize,
    pub reset: usize,
    pub stall: usize,
    pub black_hole: usize,
    pub delay: usize,
}

type Rule = Arc<dyn Fn(&Request) -> Fault + Send + Sync>;

struct Shared {
    upstream: String,
    rule: RwLock<Rule>,
    log: Mutex<Vec<Seen>>,
}

impl Shared {
    /// Numbers the request and asks the rule, in arrival order.
    fn decide(&self, req: &mut Request) -> Fault {
        let mut log = self.log.lock().unwrap();
        req.seq = log.len();
        let rule = Arc::clone(&self.rule.read().unwrap());
        let fault = rule(req);
        log.push(Seen {
            seq: req.seq,
            method: req.method.clone(),
            target: req.target.clone(),
            range: req.header("range").map(str::to_string),
            fault,
            injected: false,
            status: None,
            head_len: 0,
        });
        fault
    }

    fn note(&self, seq: usize, f: impl FnOnce(&mut Seen)) {
        f(&mut self.log.lock().unwrap()[seq]);
    }
}

/// The proxy, on its own thread and runtime (the tests are synchronous);
/// stopped, with every connection it holds, when dropped.
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy to `upstream` (`http://127.0.0.1:PORT`) that passes
    /// everything until a rule is set.
    pub fn start(upstream: &str) -> FaultProxy {
        let upstream = upstream.trim_start_matches("http://");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            rule: RwLock::new(Arc::new(|_: &Request| Fault::Pass)),
            log: Mutex::new(Vec::new()),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let inner = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener).unwrap();
                    let accept = async {
                        loop {
                            if let Ok((sock, _)) = listener.accept().await {
                                let _ = sock.set_nodelay(true);
                                tokio::spawn(connection(Arc::clone(&inner), sock));
                            }
                        }
                    };
                    tokio::select! {
                        _ = stopped => {}
                        _ = accept => {}
                    }
                });
                // Dropping the runtime closes every connection, held ones too.
            })
            .unwrap();
        FaultProxy {
            port,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The endpoint to give lifeboat instead of the upstream's.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Decides each request from now on.
    pub fn set_rule(&self, rule: impl Fn(&Request) -> Fault + Send + Sync + 'static) {
        *self.shared.rule.write().unwrap() = Arc::new(rule);
    }

    pub fn pass_all(&self) {
        self.set_rule(|_| Fault::Pass);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        self.shared.log.lock().unwrap().clone()
    }

    /// The faults that happened so far.
    pub fn injected(&self) -> Counts {
        count(&self.requests())
    }
}

/// The faults that happened among these requests.
pub fn count(seen: &[Seen]) -> Counts {
    let mut c = Counts::default();
    for s in seen {
        match (s.fault, s.injected) {
            (Fault::SlowDown, true) => c.slowdown += 1,
            (Fault::ResetAfter(_), true) => c.reset += 1,
            (Fault::StallAfter(..), true) => c.stall += 1,
            (Fault::BlackHole, true) => c.black_hole += 1,
            (Fault::Delay(_), true) => c.delay += 1,
            _ => c.passed += 1,
        }
    }
    c
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let seen = self.requests();
            eprintln!("fault proxy: {} requests; the faulted ones:", seen.len());
            for s in seen.iter().filter(|s| s.fault != Fault::Pass) {
                eprintln!(
                    "  #{} {} {} range={:?}: {:?} injected={} status={:?}",
                    s.seq, s.method, s.target, s.range, s.fault, s.injected, s.status
                );
            }
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A seeded source of numbers (splitmix64): the same seed, the same faults
/// for the same sequence of requests.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }
}

/// The seed of a test's faults: `LIFEBOAT_FAULT_SEED`, or one from the
/// clock. Printed at once (the test harness shows it when the test fails)
/// and again if the test panics.
pub struct Seed(u64);

impl Seed {
    pub fn pick() -> Seed {
        let seed = match std::env::var("LIFEBOAT_FAULT_SEED") {
            Ok(s) => s
                .trim()
                .parse()
                .expect("LIFEBOAT_FAULT_SEED must be a number"),
            Err(_) => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64,
        };
        eprintln!("fault seed {seed} (rerun with LIFEBOAT_FAULT_SEED={seed})");
        Seed(seed)
    }

    pub fn get(&self) -> u64 {
        self.0
    }
}

impl Drop for Seed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "failed with fault seed {0}: LIFEBOAT_FAULT_SEED={0}",
                self.0
            );
        }
    }
}

/// Rules for common fault patterns.
pub struct Faults;

impl Faults {
    /// Faults a seeded fraction of requests: in every 10 requests in a row,
    /// `round(p * 10)` get each kind, at random places. A request that was
    /// just faulted (same method and target) passes when retried, so the
    /// client's retries succeed. Stalls (up to 1.2 s) land in the response
    /// head, resets mostly there too, sometimes in the body.
    pub fn random(
        seed: u64,
        p_slowdown: f64,
        p_reset: f64,
        p_stall: f64,
    ) -> impl Fn(&Request) -> Fault + Send + Sync + 'static {
        const WINDOW: usize = 10;
        let kinds = [(p_slowdown, 1u8), (p_reset, 2), (p_stall, 3)];
        let state = Mutex::new((Rng::new(seed), Vec::<u8>::new(), HashSet::<String>::new()));
        move |req| {
            let (rng, bag, just_faulted) = &mut *state.lock().unwrap();
            let key = format!("{} {}", req.method, req.target);
            if just_faulted.remove(&key) {
                return Fault::Pass;
            }
            if bag.is_empty() {
                for (p, kind) in kinds {
                    bag.extend(std::iter::repeat_n(
                        kind,
                        (p * WINDOW as f64).round() as usize,
                    ));
                }
                bag.resize(bag.len().max(WINDOW), 0);
                for i in (1..bag.len()).rev() {
                    let j = rng.range(0, i as u64 + 1) as usize;
                    bag.swap(i, j);
                }
            }
            let fault = match bag.pop().unwrap() {
                1 => Fault::SlowDown,
                2 if rng.range(0, 4) > 0 => Fault::ResetAfter(rng.range(0, 160) as usize),
                2 => Fault::ResetAfter(rng.range(160, 128 << 10) as usize),
                3 => Fault::StallAfter(
                    rng.range(0, 160) as usize,
                    Duration::from_millis(rng.range(200, 1200)),
                ),
                _ => return Fault::Pass,
            };
            just_faulted.insert(key);
            fault
        }
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    header(headers, name)
        .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// How a body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

fn framing(headers: &[(String, String)], otherwise: Framing) -> io::Result<Framing> {
    if has_token(headers, "transfer-encoding", "chunked") {
        return Ok(Framing::Chunked);
    }
    match header(headers, "content-length") {
        Some(n) => Ok(Framing::Length(
            n.parse().map_err(|_| bad("bad content-length"))?,
        )),
        None => Ok(otherwise),
    }
}

/// A message head (start line and headers, up to the empty line), or None
/// at a clean end of the connection.
async fn read_head(src: &mut BufReader<TcpStream>) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let n = src.read_until(b'\n', &mut head).await?;
        if n == 0 {
            return match head.is_empty() {
                true => Ok(None),
                false => Err(io::ErrorKind::UnexpectedEof.into()),
            };
        }
        if head == b"\r\n" {
            head.clear(); // blank lines between messages are allowed
        } else if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            return Ok(Some(head));
        } else if head.len() > 64 << 10 {
            return Err(bad("message head over 64 KiB"));
        }
    }
}

/// The start line's words and the headers.
fn parse_head(head: &[u8]) -> io::Result<(Vec<String>, Headers)> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.lines();
    let start = lines.next().ok_or_else(|| bad("empty head"))?;
    let words = start.splitn(3, ' ').map(str::to_string).collect();
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((words, headers))
}

/// Writes to the client (or to the upstream, or nowhere) and applies a
/// response fault once its byte count is reached.
struct Relay<'a> {
    out: Option<&'a mut TcpStream>,
    fault: Fault,
    sent: usize,
    log: Option<(&'a Shared, usize)>,
}

impl<'a> Relay<'a> {
    fn plain(out: &'a mut TcpStream) -> Relay<'a> {
        Relay {
            out: Some(out),
            fault: Fault::Pass,
            sent: 0,
            log: None,
        }
    }

    fn discard() -> Relay<'a> {
        Relay {
            out: None,
            fault: Fault::Pass,
            sent: 0,
            log: None,
        }
    }

    async fn send(&mut self, mut data: &[u8]) -> io::Result<()> {
        let Some(out) = self.out.as_deref_mut() else {
            return Ok(());
        };
        if let Fault::ResetAfter(n) | Fault::StallAfter(n, _) = self.fault {
            if self.sent + data.len() >= n {
                let (before, after) = data.split_at(n - self.sent);
                out.write_all(before).await?;
                out.flush().await?;
                self.sent += before.len();
                data = after;
                if let Some((shared, seq)) = self.log {
                    shared.note(seq, |s| s.injected = true);
                }
                match std::mem::replace(&mut self.fault, Fault::Pass) {
                    Fault::StallAfter(_, pause) => tokio::time::sleep(pause).await,
                    _ => {
                        // Closed with SO_LINGER 0: the client gets a RST.
                        out.set_zero_linger()?;
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "injected reset",
                        ));
                    }
                }
            }
        }
        out.write_all(data).await?;
        self.sent += data.len();
        Ok(())
    }
}

/// Copies exactly `n` bytes.
async fn copy_exact(
    src: &mut BufReader<TcpStream>,
    mut n: u64,
    dst: &mut Relay<'_>,
) -> io::Result<()> {
    while n > 0 {
        let buf = src.fill_buf().await?;
        if buf.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let k = buf.len().min(n as usize);
        dst.send(&buf[..k]).await?;
        src.consume(k);
        n -= k as u64;
    }
    Ok(())
}

async fn copy_line(src: &mut BufReader<TcpStream>, dst: &mut Relay<'_>) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    if src.read_until(b'\n', &mut line).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    dst.send(&line).await?;
    Ok(line)
}

/// Copies one body as it is on the wire (chunk framing and trailers too).
async fn copy_body(
    src: &mut BufReader<TcpStream>,
    framing: Framing,
    dst: &mut Relay<'_>,
) -> io::Result<()> {
    match framing {
        Framing::Empty => Ok(()),
        Framing::Length(n) => copy_exact(src, n, dst).await,
        Framing::UntilClose => loop {
            let buf = src.fill_buf().await?;
            if buf.is_empty() {
                return Ok(());
            }
            let k = buf.len();
            dst.send(buf).await?;
            src.consume(k);
        },
        Framing::Chunked => loop {
            let line = copy_line(src, dst).await?;
            let text = String::from_utf8_lossy(&line);
            let size = text.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size, 16).map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !matches!(&copy_line(src, dst).await?[..], b"\r\n" | b"\n") {}
                return Ok(());
            }
            copy_exact(src, size + 2, dst).await?;
        },
    }
}

/// The 503 SlowDown answer S3 gives when throttling.
fn slow_down(req: &Request, close: bool) -> Vec<u8> {
    let resource = req.path().replace('&', "&amp;").replace('<', "&lt;");
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
         <Message>Please reduce your request rate.</Message><Resource>{resource}</Resource>\
         <RequestId>fault-{}</RequestId></Error>",
        req.seq
    );
    let mut out = format!(
        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         x-amz-request-id: fault-{}\r\n{}\r\n",
        body.len(),
        req.seq,
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes();
    if req.method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

async fn connection(shared: Arc<Shared>, sock: TcpStream) {
    let mut client = BufReader::new(sock);
    // Any error ends the connection (after a reset fault: with a RST).
    let _ = serve(&shared, &mut client).await;
}

/// Serves the requests of one client connection, one after the other.
async fn serve(shared: &Shared, client: &mut BufReader<TcpStream>) -> io::Result<()> {
    while let Some(head) = read_head(client).await? {
        let (words, headers) = parse_head(&head)?;
        let [method, target, version] = &words[..] else {
            return Err(bad("bad request line"));
        };
        let mut req = Request {
            seq: 0,
            method: method.clone(),
            target: target.clone(),
            headers,
        };
        let body = framing(&req.headers, Framing::Empty)?;
        // With `Expect: 100-continue` the client holds its body back until
        // it hears 100 Continue.
        let waits = has_token(&req.headers, "expect", "100-continue");
        let mut close = has_token(&req.headers, "connection", "close")
            || (version == "HTTP/1.0" && !has_token(&req.headers, "connection", "keep-alive"));
        let fault = shared.decide(&mut req);
        let seq = req.seq;
        match fault {
            Fault::SlowDown | Fault::BlackHole => {
                if !waits {
                    copy_body(client, body, &mut Relay::discard()).await?;
                }
                shared.note(seq, |s| s.injected = true);
                if fault == Fault::BlackHole {
                    return std::future::pending().await;
                }
                // A body never asked for would be taken for the next request.
                close |= waits;
                client.get_mut().write_all(&slow_down(&req, close)).await?;
                shared.note(seq, |s| s.status = Some(503));
            }
            Fault::Delay(pause) => {
                shared.note(seq, |s| s.injected = true);
                tokio::time::sleep(pause).await;
                close |= !forward(shared, &req, &head, body, waits, Fault::Pass, client).await?;
            }
            _ => close |= !forward(shared, &req, &head, body, waits, fault, client).await?,
        }
        if close {
            break;
        }
    }
    Ok(())
}

/// Forwards one request on a new upstream connection and relays the
/// response with `fault`; says whether the client connection can be reused.
async fn forward(
    shared: &Shared,
    req: &Request,
    head: &[u8],
    body: Framing,
    waits: bool,
    fault: Fault,
    client: &mut BufReader<TcpStream>,
) -> io::Result<bool> {
    let mut up = BufReader::new(TcpStream::connect(&shared.upstream).await?);
    up.get_mut().write_all(head).await?;
    let mut body_sent = !waits;
    if !waits {
        copy_body(client, body, &mut Relay::plain(up.get_mut())).await?;
    }
    let (status, rhead, rheaders) = loop {
        let rhead = read_head(&mut up)
            .await?
            .ok_or_else(|| bad("upstream closed without answering"))?;
        let (words, rheaders) = parse_head(&rhead)?;
        let status: u16 = words
            .get(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad status line"))?;
        if !(100..200).contains(&status) {
            break (status, rhead, rheaders);
        }
        // An interim response (100 Continue): relayed, then the body.
        client.get_mut().write_all(&rhead).await?;
        if status == 100 && !body_sent {
            copy_body(client, body, &mut Relay::plain(up.get_mut())).await?;
            body_sent = true;
        }
    };
    shared.note(req.seq, |s| {
        s.status = Some(status);
        s.head_len = rhead.len();
    });
    let response = if req.method == "HEAD" || status == 204 || status == 304 {
        Framing::Empty
    } else {
        framing(&rheaders, Framing::UntilClose)?
    };
    let mut relay = Relay {
        out: Some(client.get_mut()),
        fault,
        sent: 0,
        log: Some((shared, req.seq)),
    };
    relay.send(&rhead).await?;
    copy_body(&mut up, response, &mut relay).await?;
    Ok(
        body_sent
            && response != Framing::UntilClose
            && !has_token(&rheaders, "connection", "close"),
    )
}
