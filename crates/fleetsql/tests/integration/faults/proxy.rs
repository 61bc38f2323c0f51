//! A fault-injecting TCP proxy for one link between two processes: what
//! `tc netem` would do on a router, which this kernel lacks. Each
//! direction is delayed (a base delay plus uniform jitter, bytes kept in
//! order), a chunk is held back now and then as TCP holds one back while
//! it retransmits a lost segment (the only way loss shows to a process
//! above TCP), the rate is capped, and the link can be cut (nothing
//! forwarded, connections kept open, as a partition looks) and restored.
//! Settings change while connections run. Every task stops when the proxy
//! is dropped.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// What the link does now.
#[derive(Debug, Clone, Default)]
pub(crate) struct LinkFaults {
    /// One-way delay of every chunk.
    pub(crate) delay: Duration,
    /// Added to or taken from `delay`, uniformly.
    pub(crate) jitter: Duration,
    /// Chance that a chunk is held back `retransmit` more: a lost segment.
    pub(crate) loss: f64,
    /// How long a lost segment costs (TCP's minimum RTO is 200 ms).
    pub(crate) retransmit: Duration,
    /// Bytes per second each direction carries; 0: no cap.
    pub(crate) rate: u64,
    /// Nothing is forwarded while set; bytes wait (and back-pressure
    /// fills the sender's window) until it is cleared.
    pub(crate) cut: bool,
}

impl LinkFaults {
    /// The slow cluster link: 200 ms +- 50 ms, 2% loss, 1 Mbit/s.
    pub(crate) fn slow_lossy() -> LinkFaults {
        LinkFaults {
            delay: Duration::from_millis(200),
            jitter: Duration::from_millis(50),
            loss: 0.02,
            retransmit: Duration::from_millis(400),
            rate: 1_000_000 / 8,
            cut: false,
        }
    }
}

#[derive(Debug)]
struct Shared {
    faults: Mutex<LinkFaults>,
    tasks: Mutex<Vec<AbortHandle>>,
    rng: Mutex<StdRng>,
    /// Bytes forwarded, both directions.
    bytes: std::sync::atomic::AtomicU64,
    connections: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
pub(crate) struct FaultProxy {
    pub(crate) addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// A proxy on `listen` (port 0 picks one) to `upstream`.
    pub(crate) async fn start(listen: SocketAddr, upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind(listen).await.expect("bind fault proxy");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            faults: Mutex::new(LinkFaults::default()),
            tasks: Mutex::new(Vec::new()),
            rng: Mutex::new(StdRng::seed_from_u64(20)),
            bytes: Default::default(),
            connections: Default::default(),
        });
        let accept_shared = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let shared = accept_shared.clone();
                let task = tokio::spawn(async move {
                    // A refused upstream closes the client: what a down
                    // process looks like through a router.
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    shared
                        .connections
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = pump(cr, sw, shared.clone());
                    let down = pump(sr, cw, shared.clone());
                    tokio::join!(up, down);
                });
                accept_shared
                    .tasks
                    .lock()
                    .unwrap()
                    .push(task.abort_handle());
            }
        });
        shared.tasks.lock().unwrap().push(accept.abort_handle());
        FaultProxy { addr, shared }
    }

    pub(crate) fn set(&self, faults: LinkFaults) {
        *self.shared.faults.lock().unwrap() = faults;
    }

    pub(crate) fn cut(&self, cut: bool) {
        self.shared.faults.lock().unwrap().cut = cut;
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.shared.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        for task in self.shared.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// One direction: a reader stamps each chunk with when it may leave, a
/// writer sends it then. The channel is bounded, so a slow or cut link
/// back-pressures the sender as a full TCP window does.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shared: Arc<Shared>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, Vec<u8>)>(16);
    let reader_shared = shared.clone();
    let reader = async move {
        let mut last = Instant::now();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let faults = reader_shared.faults.lock().unwrap().clone();
            let mut delay = faults.delay;
            {
                let mut rng = reader_shared.rng.lock().unwrap();
                if !faults.jitter.is_zero() {
                    let j = faults.jitter.as_secs_f64();
                    let offset = rng.random_range(-j..=j);
                    delay = Duration::from_secs_f64((delay.as_secs_f64() + offset).max(0.0));
                }
                if faults.loss > 0.0 && rng.random_bool(faults.loss.min(1.0)) {
                    delay += faults.retransmit;
                }
            }
            // In order: a chunk never overtakes the one before it.
            let at = (Instant::now() + delay).max(last);
            last = at;
            if tx.send((at, buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            loop {
                let cut = shared.faults.lock().unwrap().cut;
                if !cut {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let rate = shared.faults.lock().unwrap().rate;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
            shared
                .bytes
                .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
            if rate > 0 {
                tokio::time::sleep(Duration::from_secs_f64(bytes.len() as f64 / rate as f64)).await;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
