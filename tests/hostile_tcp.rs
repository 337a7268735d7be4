//! Abusive TCP clients against the real server over real loopback sockets
//! (issue 7, "Overload"): stalled and never-reading clients, pipelining, and
//! the connection bound up to 10,000 idle connections. After every case the
//! server must still answer a normal query correctly.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use support::dns::{framed, message, read_framed};
use support::fixtures::{POD, SRV, assert_still_answers, start};
use support::packets::header;
use support::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Waits (bounded) until the server closes `c`: true on EOF or reset.
async fn closed_within(c: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, c.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

const IDLE: Duration = Duration::from_millis(500);

#[tokio::test]
async fn stalled_tcp_clients_are_closed_after_the_idle_timeout() {
    within(Duration::from_secs(60), async {
        let s = start(|c| c.dns.tcp_idle_timeout_ms = IDLE.as_millis() as u64).await;
        // Before the connections: their idle timers start after this.
        let started = Instant::now();
        // A length prefix larger than what follows, then silence.
        let mut partial = TcpStream::connect(s.dns).await.unwrap();
        partial.write_all(&[0, 100]).await.unwrap();
        partial.write_all(&header(1, 0, 0, 0)[..10]).await.unwrap();
        // One byte, then silence.
        let mut one_byte = TcpStream::connect(s.dns).await.unwrap();
        one_byte.write_all(&[0]).await.unwrap();
        // Connected, then silence.
        let mut silent = TcpStream::connect(s.dns).await.unwrap();
        // Meanwhile everyone else is served.
        assert_still_answers(&s, "three stalled TCP clients").await;
        for (what, c) in [
            ("length prefix larger than the data", &mut partial),
            ("one byte", &mut one_byte),
            ("nothing", &mut silent),
        ] {
            assert!(
                closed_within(c, Duration::from_secs(10)).await,
                "client that sent {what} still open after 10 s (idle timeout {IDLE:?})"
            );
        }
        // They were closed by the timeout, not before it (loose lower bound).
        assert!(
            started.elapsed() >= IDLE / 2,
            "closed after {:?}",
            started.elapsed()
        );
        assert_still_answers(&s, "stalled TCP clients").await;
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn pipelined_queries_are_answered_in_order() {
    within(Duration::from_secs(60), async {
        let s = start(|_| {}).await;
        let mut c = TcpStream::connect(s.dns).await.unwrap();
        let names = [
            POD,
            "web-1.nginx.default.svc.cluster.local",
            "nope.cluster.local",
            SRV,
        ];
        let mut batch = Vec::new();
        let mut sent = Vec::new();
        for i in 0..200u16 {
            let name = names[i as usize % names.len()];
            let mut m = message(name, RecordType::A, None);
            m.metadata.id = 1000 + i;
            let bytes = m.to_vec().unwrap();
            batch.extend_from_slice(&framed(&bytes));
            sent.push((1000 + i, name));
        }
        c.write_all(&batch).await.unwrap();
        for (id, name) in sent {
            let reply = read_framed(&mut c).await.expect("a reply per query");
            let m = Message::from_vec(&reply).unwrap();
            assert_eq!(m.metadata.id, id, "answered in order");
            assert_eq!(m.queries[0].name().to_ascii(), format!("{name}."));
        }
        assert_still_answers(&s, "200 pipelined queries").await;
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_client_that_never_reads_is_closed_when_writes_time_out() {
    within(Duration::from_secs(60), async {
        let s = start(|c| c.dns.tcp_idle_timeout_ms = IDLE.as_millis() as u64).await;
        let c = TcpStream::connect(s.dns).await.unwrap();
        let (mut rd, mut wr) = c.into_split();
        // 1,000 pipelined queries per write, at most 1,000 writes (about 55 MB
        // of queries, far more replies than loopback socket buffers hold).
        let query = message(SRV, RecordType::SRV, None).to_vec().unwrap();
        let mut chunk = Vec::new();
        for _ in 0..1000 {
            chunk.extend_from_slice(&framed(&query));
        }
        let writer = tokio::spawn(async move {
            for i in 0..1000 {
                if wr.write_all(&chunk).await.is_err() {
                    return Some(i);
                }
            }
            None
        });
        let writes = tokio::time::timeout(Duration::from_secs(30), writer)
            .await
            .expect("the server never closed the connection")
            .unwrap();
        assert!(
            writes.is_some(),
            "every write succeeded: nothing pushed back"
        );
        // What the server had sent before closing can still be read; then EOF or reset.
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0usize;
        for _ in 0..100_000 {
            match tokio::time::timeout(Duration::from_secs(5), rd.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => total += n,
                Err(_) => panic!("connection still open after its writes timed out"),
            }
        }
        assert!(total < 64 << 20, "{total} bytes buffered for one client");
        assert_still_answers(&s, "a client that never reads").await;
        s.stop().await;
    })
    .await;
}

/// Opens `n` idle connections in order; returns their write halves (kept
/// open) and a channel on which reader tasks report `(index, Event)`.
async fn open_idle(
    server: SocketAddr,
    n: usize,
) -> (
    Vec<tokio::net::tcp::OwnedWriteHalf>,
    mpsc::UnboundedReceiver<(usize, bool)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut writers = Vec::with_capacity(n);
    for i in 0..n {
        let c = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(server))
            .await
            .expect("connect within 10 s")
            .expect("connect");
        let (mut rd, wr) = c.into_split();
        writers.push(wr);
        let tx = tx.clone();
        tokio::spawn(async move {
            // `true`: the server closed it; `false`: data arrived (it was served).
            let mut buf = [0u8; 512];
            for _ in 0..1000 {
                match tokio::time::timeout(Duration::from_secs(120), rd.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => {
                        let _ = tx.send((i, true));
                        return;
                    }
                    Ok(Ok(_)) => {
                        let _ = tx.send((i, false));
                    }
                    Err(_) => return,
                }
            }
        });
    }
    (writers, rx)
}

/// Collects close reports until `want` connections are closed (bounded).
async fn wait_closed(
    rx: &mut mpsc::UnboundedReceiver<(usize, bool)>,
    closed: &mut BTreeSet<usize>,
    served: &mut BTreeSet<usize>,
    want: usize,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while closed.len() < want {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((i, true))) => {
                closed.insert(i);
            }
            Ok(Some((i, false))) => {
                served.insert(i);
            }
            _ => panic!(
                "only {} of {want} connections closed within 30 s",
                closed.len()
            ),
        }
    }
}

/// `n` idle clients against a bound of `max`: the oldest `n - max` are closed
/// to make room, in order, the newest `max` stay open and are served, and a
/// newcomer still gets in (closing the next oldest).
async fn connection_bound(n: usize, max: usize) {
    let s = start(|c| {
        c.dns.tcp_max_connections = max;
        c.dns.tcp_idle_timeout_ms = 60_000;
    })
    .await;
    let (mut writers, mut rx) = open_idle(s.dns, n).await;
    let (mut closed, mut served) = (BTreeSet::new(), BTreeSet::new());
    wait_closed(&mut rx, &mut closed, &mut served, n - max).await;
    assert_eq!(
        closed,
        (0..n - max).collect::<BTreeSet<_>>(),
        "the oldest connections are the ones closed"
    );
    // The newest is open and served.
    let query = message(POD, RecordType::A, None).to_vec().unwrap();
    writers[n - 1].write_all(&framed(&query)).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !served.contains(&(n - 1)) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((i, true))) => {
                closed.insert(i);
            }
            Ok(Some((i, false))) => {
                served.insert(i);
            }
            _ => panic!("the newest connection was not served"),
        }
    }
    assert_eq!(
        closed.len(),
        n - max,
        "no other connection was closed meanwhile"
    );
    // A newcomer is served and the next oldest makes room for it.
    assert_still_answers(&s, "the connection bound").await;
    wait_closed(&mut rx, &mut closed, &mut served, n - max + 1).await;
    assert!(
        closed.contains(&(n - max)),
        "{:?}",
        closed.iter().rev().take(3).collect::<Vec<_>>()
    );
    drop(writers);
    s.stop().await;
}

#[tokio::test]
async fn idle_connections_beyond_the_bound_close_the_oldest() {
    within(Duration::from_secs(90), connection_bound(300, 64)).await;
}

/// The soft limit on open files, from /proc (Linux).
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Raises the open-file limit to at least `need`, or fails the test saying
/// why: the soft limit goes up towards the hard one (allowed to anyone), and
/// the hard one too where the process may (CAP_SYS_RESOURCE).
fn ensure_open_file_limit(need: u64) {
    let _ = rlimit::increase_nofile_limit(need);
    if open_file_limit().is_some_and(|l| l >= need) {
        return;
    }
    let raised = rlimit::setrlimit(rlimit::Resource::NOFILE, need, need);
    let limit = open_file_limit();
    assert!(
        limit.is_some_and(|l| l >= need),
        "this test needs {need} open files and the limit is {limit:?} (raising the \
         hard limit: {raised:?}); raise it first (ulimit -Hn {need}, as root)"
    );
}

#[tokio::test]
async fn ten_thousand_idle_connections_against_the_default_bound() {
    // Client and server share this process: 10,000 client sockets plus at most
    // 1,024 server ones (and a margin for the rest of the test binary).
    let (n, max) = (10_000, 1024);
    ensure_open_file_limit((n + max + 1024) as u64);
    within(Duration::from_secs(120), connection_bound(n, max)).await;
}
