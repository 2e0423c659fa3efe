//! lifeboat through a fault-injecting proxy in front of Garage: 503s,
//! resets in the middle of responses, stalls and black holes hit single
//! requests, and every command either survives them with exactly the same
//! data or fails in bounded time, naming the endpoint and the operation.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::fault_proxy::{count, Fault, FaultProxy, Faults, Rng, Seed, Seen};
use crate::harness::{Garage, Lifeboat, MariaDb, PgCluster, Repo};
use crate::mysql::{fixture, lifeboat_for, shop_contents, wait_archived, writes};

/// Points the policy at the proxy instead of Garage, with extra
/// `repository:` settings.
fn through(lb: &Lifeboat, garage: &Garage, proxy: &FaultProxy, settings: &str) {
    let policy = std::fs::read_to_string(&lb.policy).unwrap();
    assert!(policy.contains(&garage.endpoint()), "{policy}");
    let policy = policy
        .replace(&garage.endpoint(), &proxy.endpoint())
        .replace(
            "  region: garage\n",
            &format!("  region: garage\n{settings}"),
        );
    std::fs::write(&lb.policy, policy).unwrap();
}

/// A database `app` whose dump is more than one 8 MiB part, compressed
/// (base64 of hashes: 13 MB that compress by a quarter only).
fn big_db(pg: &PgCluster) {
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql(
        "app",
        "CREATE TABLE t AS SELECT g AS id, \
         replace(encode(sha512(g::text::bytea), 'base64'), E'\\n', '') AS v \
         FROM generate_series(1, 150000) g; \
         CREATE TABLE b AS SELECT g AS id, decode(md5((-g)::text), 'hex') AS bytes \
         FROM generate_series(1, 20000) g",
    );
}

/// The object downloads (GetObject) reset in the middle of their body, and
/// the paths of those that no later ranged GET (206) of the same object
/// resumed. (Other calls' bodies are read whole and retried by the SDK.)
fn body_resets(seen: &[Seen]) -> (usize, Vec<String>) {
    let resets: Vec<&Seen> = seen
        .iter()
        .filter(|s| {
            s.method == "GET"
                && s.target.contains("x-id=GetObject")
                && s.injected
                && s.status == Some(200)
                && matches!(s.fault, Fault::ResetAfter(n) if n > s.head_len)
        })
        .collect();
    let unresumed = resets
        .iter()
        .filter(|r| {
            !seen.iter().any(|s| {
                s.seq > r.seq
                    && s.method == "GET"
                    && s.path() == r.path()
                    && s.range.as_deref().is_some_and(|v| v.starts_with("bytes="))
                    && s.status == Some(206)
            })
        })
        .map(|r| format!("{} (request {})", r.path(), r.seq))
        .collect();
    (resets.len(), unresumed)
}

#[test]
fn backups_restores_and_verify_survive_503_resets_and_stalls() {
    let seed = Seed::pick();
    let garage = Garage::start();
    let proxy = FaultProxy::start(&garage.endpoint());
    let pg = PgCluster::start();
    big_db(&pg);
    let expected = pg.checksums("app");
    let lb = Lifeboat::new(Repo::Garage(&garage, "faults"), &pg, "[app]");
    through(
        &lb,
        &garage,
        &proxy,
        "  parts_in_flight: 2\n  request_timeout: 10s\n",
    );

    // 503s, resets (mostly in response heads) and stalls on random requests.
    proxy.set_rule(Faults::random(seed.get(), 0.1, 0.1, 0.1));
    lb.run(&["backup"]).ok();
    lb.restore(&pg, "r1", &[]).ok();
    assert_eq!(pg.checksums("r1"), expected);
    lb.verify_read_data().ok();
    let seen = proxy.requests();
    let random = count(&seen);
    eprintln!("random faults over {} requests: {random:?}", seen.len());
    assert!(
        random.slowdown > 0 && random.reset > 0 && random.stall > 0,
        "{random:?}"
    );
    let (_, unresumed) = body_resets(&seen);
    assert!(unresumed.is_empty(), "downloads not resumed: {unresumed:?}");

    // Every object download reset 256 KiB into its body: the downloads go
    // on with ranged GETs and the data is the same.
    let from = seen.len();
    proxy.set_rule(|r| {
        if r.method == "GET" && r.path().contains("/data/") && r.header("range").is_none() {
            Fault::ResetAfter(256 << 10)
        } else {
            Fault::Pass
        }
    });
    lb.restore(&pg, "r2", &[]).ok();
    assert_eq!(pg.checksums("r2"), expected);
    lb.verify_read_data().ok();
    let seen = &proxy.requests()[from..];
    let (resets, unresumed) = body_resets(seen);
    // The dump at least, once by restore and once by verify.
    assert!(resets >= 2, "{resets} body resets: {seen:#?}");
    assert!(unresumed.is_empty(), "downloads not resumed: {unresumed:?}");
}

/// Waits for each child, killing all and failing if one runs past `limit`.
fn wait_all(children: &mut [std::process::Child], limit: Duration, logs: impl Fn() -> String) {
    let deadline = Instant::now() + limit;
    for child in children.iter_mut() {
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                for c in children.iter_mut() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                panic!("lifeboat hung for {limit:?}: {}", logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn a_black_hole_fails_within_a_bound_and_names_the_endpoint() {
    let garage = Garage::start();
    let pg = PgCluster::start();
    big_db(&pg);
    // Each call: 5 attempts of 1 s (parts: 1 s and their bytes at 64 MiB/s).
    let settings = "  request_timeout: 1s\n  min_throughput: 64MiB\n";
    // `list`: every request black-holed.
    let all = FaultProxy::start(&garage.endpoint());
    all.set_rule(|_| Fault::BlackHole);
    let lister = Lifeboat::new(Repo::Garage(&garage, "hole"), &pg, "[app]");
    through(&lister, &garage, &all, settings);
    // `backup`: everything from the dump's first part (UploadPart) on.
    let proxy = FaultProxy::start(&garage.endpoint());
    let lb = Lifeboat::new(Repo::Garage(&garage, "hole"), &pg, "[app]");
    through(&lb, &garage, &proxy, settings);
    let mut policy = std::fs::read_to_string(&lb.policy).unwrap();
    policy.push_str("retention:\n  keep_last: 3\n");
    std::fs::write(&lb.policy, policy).unwrap();
    let holed = AtomicBool::new(false);
    proxy.set_rule(move |r| {
        if r.method == "PUT" && r.target.contains("partNumber=") {
            holed.store(true, Ordering::SeqCst);
        }
        match holed.load(Ordering::SeqCst) {
            true => Fault::BlackHole,
            false => Fault::Pass,
        }
    });

    let began = Instant::now();
    let mut children = [
        lister.spawn(&["list"], "hole.log"),
        lb.spawn(&["backup"], "hole.log"),
    ];
    wait_all(&mut children, Duration::from_secs(120), || {
        format!(
            "list: {}\nbackup: {}",
            lister.log("hole.log"),
            lb.log("hole.log")
        )
    });
    eprintln!(
        "both failed after {:?}\nbackup: {}",
        began.elapsed(),
        lb.log("hole.log")
    );
    for (child, (runner, proxy, operation)) in children.iter_mut().zip([
        (&lister, &all, "HeadBucket on bucket lifeboat-test"),
        (&lb, &proxy, "UploadPart on object data/test/main-db/"),
    ]) {
        let log = runner.log("hole.log");
        assert_eq!(child.wait().unwrap().code(), Some(1), "{log}");
        let named = format!(
            "S3 endpoint {} did not answer {operation}",
            proxy.endpoint()
        );
        assert!(
            log.contains(&named) && log.contains("repository.request_timeout"),
            "expected '{named}' in: {log}"
        );
        assert!(proxy.injected().black_hole > 0);
    }

    // The faults gone: nothing was listed, prune aborts the upload whose
    // abort was black-holed, and the next backup works.
    proxy.pass_all();
    assert!(lb.backup_ids().is_empty());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(garage.store("hole"));
    let pending = rt.block_on(store.list_pending_uploads()).unwrap();
    assert!(
        !pending.is_empty(),
        "the black-holed backup left its upload"
    );
    let pruned = lb.run(&["prune", "--grace", "0s"]);
    pruned.ok();
    let pending = rt.block_on(store.list_pending_uploads()).unwrap();
    assert!(pending.is_empty(), "{pending:?}\n{}", pruned.stdout);
    lb.run(&["backup"]).ok();
    assert_eq!(lb.backup_ids().len(), 1);
}

/// A policy with a PostgreSQL source for WAL only, through the proxy, and
/// its `pg_wal` folder.
fn wal_lifeboat(garage: &Garage, proxy: &FaultProxy) -> (Lifeboat, std::path::PathBuf) {
    let lb = Lifeboat::with_source(
        Repo::Garage(garage, "wal"),
        "  - name: main-db\n    postgres:\n      host: 127.0.0.1\n      port: 1\n      user: postgres\n",
        &[],
    );
    through(&lb, garage, proxy, "  request_timeout: 10s\n");
    let wal = lb.dir.path().join("pg_wal");
    std::fs::create_dir(&wal).unwrap();
    (lb, wal)
}

/// 16 MiB of seeded random bytes (they do not compress: three parts).
fn segment(rng: &mut Rng) -> Vec<u8> {
    let mut data = vec![0u8; 16 << 20];
    for chunk in data.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes()[..chunk.len()]);
    }
    data
}

#[test]
fn wal_push_and_fetch_survive_503s_and_resets_byte_for_byte() {
    let seed = Seed::pick();
    let garage = Garage::start();
    let proxy = FaultProxy::start(&garage.endpoint());
    let (lb, wal) = wal_lifeboat(&garage, &proxy);
    let mut rng = Rng::new(seed.get());
    let segments: Vec<(String, Vec<u8>)> = (1..=3u32)
        .map(|i| (format!("0000000100000000{i:08X}"), segment(&mut rng)))
        .collect();

    proxy.set_rule(Faults::random(seed.get(), 0.2, 0.2, 0.0));
    for (name, data) in &segments {
        let path = wal.join(name);
        std::fs::write(&path, data).unwrap();
        let pushed = lb.run(&["wal-push", &path.display().to_string()]);
        pushed.ok();
        assert!(pushed.stderr.contains("archived"), "{}", pushed.stderr);
    }
    let pushing = proxy.injected();
    assert!(pushing.slowdown > 0 && pushing.reset > 0, "{pushing:?}");

    // Random faults again, and each segment's download reset in its body.
    let from = proxy.requests().len();
    let random = Faults::random(seed.get() ^ 0x5eed, 0.2, 0.2, 0.0);
    let body_at = rng.range(64 << 10, 15 << 20) as usize;
    proxy.set_rule(move |r| {
        if r.method == "GET" && r.path().contains("/main-db/") && r.header("range").is_none() {
            Fault::ResetAfter(body_at)
        } else {
            random(r)
        }
    });
    let identity = lb.identity.display().to_string();
    for (name, data) in &segments {
        let out = wal.join(format!("{name}.fetched"));
        let out_arg = out.display().to_string();
        lb.run(&[
            "wal-fetch",
            "--identity",
            &identity,
            "--prefetch",
            "0",
            name,
            &out_arg,
        ])
        .ok();
        assert!(
            std::fs::read(&out).unwrap() == *data,
            "{name}: fetched bytes differ"
        );
    }
    let seen = &proxy.requests()[from..];
    let (resets, unresumed) = body_resets(seen);
    assert!(resets >= segments.len(), "{resets} body resets: {seen:#?}");
    assert!(unresumed.is_empty(), "downloads not resumed: {unresumed:?}");
    assert!(count(seen).slowdown > 0, "{:?}", count(seen));
}

/// The answer to a CompleteMultipartUpload lost after the server completed
/// the upload: the SDK repeats the request and Garage answers NoSuchUpload
/// (AWS S3 answers 200 again). The object is there, whole: the push worked.
#[test]
fn a_lost_answer_to_a_completed_multipart_upload_does_not_fail_the_push() {
    let garage = Garage::start();
    let proxy = FaultProxy::start(&garage.endpoint());
    let (lb, wal) = wal_lifeboat(&garage, &proxy);
    let first = AtomicBool::new(true);
    proxy.set_rule(move |r| {
        if r.completes_upload() && first.swap(false, Ordering::SeqCst) {
            Fault::ResetAfter(0)
        } else {
            Fault::Pass
        }
    });
    let data = segment(&mut Rng::new(7));
    let path = wal.join("000000010000000000000001");
    std::fs::write(&path, &data).unwrap();
    lb.run(&["wal-push", &path.display().to_string()]).ok();
    assert_eq!(proxy.injected().reset, 1);
    let out = wal.join("fetched");
    let identity = lb.identity.display().to_string();
    lb.run(&[
        "wal-fetch",
        "--identity",
        &identity,
        "000000010000000000000001",
        &out.display().to_string(),
    ])
    .ok();
    assert!(std::fs::read(&out).unwrap() == data, "fetched bytes differ");
}

/// Every table's rows, by checksum, and the shop's summary.
fn mariadb_contents(m: &MariaDb) -> String {
    let sums = m.sql(
        "",
        "CHECKSUM TABLE shop.customers, shop.orders, shop.audit, crm.contacts, crm.legacy EXTENDED",
    );
    format!("{}\n{sums}", shop_contents(m))
}

/// Waits until the archiver's log holds `needle`, failing after `limit`
/// or when the archiver exits.
fn wait_logged(lb: &Lifeboat, archiver: &mut std::process::Child, needle: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !lb.log("archiver.log").contains(needle) {
        assert!(
            archiver.try_wait().unwrap().is_none(),
            "the archiver exited: {}",
            lb.log("archiver.log")
        );
        assert!(
            Instant::now() < deadline,
            "no '{needle}' after {limit:?}: {}",
            lb.log("archiver.log")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The binlog archiver through random 503s, resets and stalls, then an
/// endpoint that stops answering: it never hangs, names the endpoint, keeps
/// running, and catches up once the endpoint answers again. A restore to the
/// end whose every download is reset mid-body equals the server exactly.
#[test]
fn binlog_archiving_and_replay_survive_faults_and_an_endpoint_that_stops_answering() {
    let seed = Seed::pick();
    let garage = Garage::start();
    let proxy = FaultProxy::start(&garage.endpoint());
    let m = MariaDb::start();
    fixture(&m);
    let lb = lifeboat_for(Repo::Garage(&garage, "binfaults"), &m, None);
    through(&lb, &garage, &proxy, "  request_timeout: 2s\n");
    lb.run(&["backup", "--source", "business-db"]).ok();

    proxy.set_rule(Faults::random(seed.get(), 0.1, 0.1, 0.1));
    let mut archiver = lb.spawn(
        &[
            "binlog-archive",
            "--source",
            "business-db",
            "--interval",
            "1s",
        ],
        "archiver.log",
    );
    writes(&m, 5);
    m.sql("", "FLUSH BINARY LOGS");
    writes(&m, 5);
    m.sql("", "FLUSH BINARY LOGS");
    writes(&m, 5);
    wait_archived(&garage, "binfaults", &lb, &m, "archiver.log");
    let random = proxy.injected();
    eprintln!("random faults while archiving: {random:?}");
    assert!(
        random.slowdown + random.reset + random.stall > 0,
        "{random:?}"
    );

    // The endpoint stops answering while the server rotates: every upload
    // fails within its deadlines, naming the endpoint; the archiver stays up.
    proxy.set_rule(|_| Fault::BlackHole);
    writes(&m, 5);
    m.sql("", "FLUSH BINARY LOGS");
    writes(&m, 3);
    let named = format!("S3 endpoint {} did not answer", proxy.endpoint());
    wait_logged(&lb, &mut archiver, &named, Duration::from_secs(120));
    wait_logged(
        &lb,
        &mut archiver,
        "binlog archiving interrupted",
        Duration::from_secs(5),
    );
    assert!(proxy.injected().black_hole > 0);

    // It answers again: the archiver catches up with no gap.
    proxy.pass_all();
    writes(&m, 2);
    wait_archived(&garage, "binfaults", &lb, &m, "archiver.log");
    let latest = mariadb_contents(&m);
    Command::new("kill")
        .arg("-TERM")
        .arg(archiver.id().to_string())
        .status()
        .unwrap();
    let status = archiver.wait().unwrap();
    assert!(status.success(), "{status}: {}", lb.log("archiver.log"));
    let gaps = lb.run(&["binlog-verify", "--source", "business-db"]);
    gaps.ok();
    assert!(gaps.stdout.contains("Gaps: none"), "{}", gaps.stdout);

    // Replay to the end, every download reset 4 KiB into its response and
    // random 503s besides: the copy equals the server.
    let from = proxy.requests().len();
    let random = Faults::random(seed.get() ^ 0xb1, 0.1, 0.0, 0.0);
    proxy.set_rule(move |r| {
        if r.method == "GET" && r.target.contains("x-id=GetObject") && r.header("range").is_none() {
            Fault::ResetAfter(4 << 10)
        } else {
            random(r)
        }
    });
    let copy = MariaDb::start();
    let identity = lb.identity.display().to_string();
    let to = format!("mysql://root@127.0.0.1:{}/", copy.port);
    let r = lb.run_env(
        &[
            "restore",
            "--source",
            "business-db",
            "--identity",
            &identity,
            "--to",
            &to,
            "--until",
            "latest",
        ],
        &[("MYSQL_PWD", &copy.password)],
    );
    r.ok();
    assert!(r.stdout.contains("replayed"), "{}", r.stdout);
    assert_eq!(mariadb_contents(&copy), latest, "{}", r.stderr);
    let seen = &proxy.requests()[from..];
    let (resets, unresumed) = body_resets(seen);
    // The dump and binlog files (four at least, with the dump).
    assert!(resets >= 4, "{resets} body resets: {seen:#?}");
    assert!(unresumed.is_empty(), "downloads not resumed: {unresumed:?}");
}

/// A scripted upstream for the proxy's own test: answers by path, keeps
/// connections open.
fn scripted_upstream() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || answer(conn));
        }
    });
    format!("http://{addr}")
}

const CHUNKED_UP: &str = "4\r\nwiki\r\n5;x=y\r\npedia\r\n0\r\n\r\n";
const CHUNKED_DOWN: &str = "5\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\n";

fn read_head(r: &mut impl BufRead) -> String {
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") && r.read_line(&mut head).unwrap_or(0) > 0 {}
    head
}

fn answer(conn: TcpStream) {
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    let body = |r: &mut BufReader<TcpStream>, n: usize| {
        let mut b = vec![0; n];
        r.read_exact(&mut b).unwrap();
        String::from_utf8(b).unwrap()
    };
    loop {
        let head = read_head(&mut r);
        let path = head.split([' ', '?']).nth(1).unwrap_or("").to_string();
        let reply = match path.as_str() {
            "" => return,
            "/length" => "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_string(),
            "/head" => "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".into(),
            "/304" => "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n".into(),
            "/chunked-up" => {
                assert_eq!(body(&mut r, CHUNKED_UP.len()), CHUNKED_UP);
                "HTTP/1.1 204 No Content\r\n\r\n".into()
            }
            "/chunked-down" => {
                format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{CHUNKED_DOWN}")
            }
            "/continue" => {
                w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").unwrap();
                assert_eq!(body(&mut r, 3), "abc");
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".into()
            }
            "/until-close" => {
                let _ = w.write_all(b"HTTP/1.1 200 OK\r\n\r\nall of it");
                return;
            }
            "/big" => format!(
                "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n{}",
                "x".repeat(100_000)
            ),
            _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".into(),
        };
        if w.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// One client connection to the proxy.
struct Client {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Client {
    fn connect(proxy: &FaultProxy) -> Client {
        let c = TcpStream::connect(proxy.endpoint().trim_start_matches("http://")).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client {
            w: c.try_clone().unwrap(),
            r: BufReader::new(c),
        }
    }

    /// Sends `request` and expects exactly `response`.
    fn ask(&mut self, request: &str, response: &str) {
        self.w.write_all(request.as_bytes()).unwrap();
        self.expect(response);
    }

    fn expect(&mut self, response: &str) {
        let mut got = vec![0; response.len()];
        self.r.read_exact(&mut got).unwrap();
        assert_eq!(String::from_utf8_lossy(&got), response);
    }

    /// What the connection gives until it ends (or fails).
    fn rest(&mut self) -> (Vec<u8>, std::io::Result<usize>) {
        let mut got = Vec::new();
        let end = self.r.read_to_end(&mut got);
        (got, end)
    }
}

#[test]
fn the_proxy_keeps_http_framing_and_faults_single_requests() {
    let proxy = FaultProxy::start(&scripted_upstream());
    proxy.set_rule(|r| match r.target.split_once('?').map(|(_, q)| q) {
        Some("slow") => Fault::SlowDown,
        Some("reset") => Fault::ResetAfter(50),
        Some("stall") => Fault::StallAfter(20, Duration::from_millis(300)),
        Some("hole") => Fault::BlackHole,
        Some("late") => Fault::Delay(Duration::from_millis(300)),
        _ => Fault::Pass,
    });
    let ok5 = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    // Many requests on one kept-alive connection.
    let mut c = Client::connect(&proxy);
    c.ask("GET /length HTTP/1.1\r\nHost: x\r\n\r\n", ok5);
    c.ask(
        "HEAD /head HTTP/1.1\r\nHost: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
    );
    c.ask(
        "GET /304 HTTP/1.1\r\nHost: x\r\n\r\n",
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n",
    );
    c.ask(
        &format!("PUT /chunked-up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{CHUNKED_UP}"),
        "HTTP/1.1 204 No Content\r\n\r\n",
    );
    c.ask(
        "GET /chunked-down HTTP/1.1\r\n\r\n",
        &format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{CHUNKED_DOWN}"),
    );
    c.ask(
        "PUT /continue HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        "HTTP/1.1 100 Continue\r\n\r\n",
    );
    c.ask("abc", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    // A 503 answered by the proxy; the request's body is consumed, so the
    // connection goes on.
    c.w.write_all(b"PUT /length?slow HTTP/1.1\r\nContent-Length: 4\r\n\r\ndata")
        .unwrap();
    let head = read_head(&mut c.r);
    assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    let mut body = vec![0; len];
    c.r.read_exact(&mut body).unwrap();
    assert!(String::from_utf8_lossy(&body).contains("<Code>SlowDown</Code>"));
    for fault in ["stall", "late"] {
        let began = Instant::now();
        c.ask(&format!("GET /length?{fault} HTTP/1.1\r\n\r\n"), ok5);
        assert!(began.elapsed() >= Duration::from_millis(300), "{fault}");
    }
    // A reset in the body: at most 50 bytes, then ECONNRESET.
    c.w.write_all(b"GET /big?reset HTTP/1.1\r\n\r\n").unwrap();
    let (got, end) = c.rest();
    assert!(got.len() <= 50, "{}", got.len());
    assert_eq!(end.unwrap_err().kind(), std::io::ErrorKind::ConnectionReset);

    // `Connection: close`, and a body that ends with the connection.
    let mut c = Client::connect(&proxy);
    c.ask("GET /length HTTP/1.1\r\nConnection: close\r\n\r\n", ok5);
    assert_eq!(c.rest().0, b"");
    let mut c = Client::connect(&proxy);
    c.w.write_all(b"GET /until-close HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(c.rest().0, b"HTTP/1.1 200 OK\r\n\r\nall of it");

    // A black hole holds the connection until the proxy goes.
    let mut c = Client::connect(&proxy);
    c.w.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    c.w.write_all(b"GET /length?hole HTTP/1.1\r\n\r\n").unwrap();
    let (got, end) = c.rest();
    assert!(got.is_empty());
    assert!(matches!(
        end.unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ));
    let counts = proxy.injected();
    assert_eq!(
        (
            counts.slowdown,
            counts.reset,
            counts.stall,
            counts.delay,
            counts.black_hole
        ),
        (1, 1, 1, 1, 1),
        "{counts:?}"
    );
    assert_eq!(proxy.requests().len(), 13);
    drop(proxy);
    assert!(matches!(c.rest(), (got, Ok(0)) if got.is_empty()));
}
