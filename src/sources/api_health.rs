//! Whether the API server is reachable, as the Kubernetes source's HTTP
//! client sees it, and when each watcher retries after a failure.
//!
//! Every watcher backs off on its own (0.1 s doubling to 5 s). After an
//! outage each kind used to wait out its own backoff, so the last one saw the
//! healthy server up to 5 s after the first, and the final state took ~7 s to
//! be served. Three things close that gap without asking a failing server any
//! more often than before:
//! - [`ApiHealth`] sees every response of the client (a tower layer,
//!   [`ApiHealth::layer`]): a 5xx, a 429 or a failed connection marks the
//!   server down; the next other response marks it up and wakes every
//!   watcher waiting out a backoff that began while it was down.
//! - Turns ([`ApiHealth::wait_retry`]): once a watcher's backoff reaches its
//!   5 s cap, it retries on a grid of its own, so the watchers take turns
//!   instead of bunching: while the server is down one of them asks every
//!   5 s / watchers (each still at most once per 5 s), and the first to get
//!   through wakes the rest.
//! - `Retry-After`: a 429 or 503 that carries one (in seconds, as the API
//!   server's priority and fairness sends with its 429s) holds every retry
//!   until then, however short the backoff, capped at [`RETRY_AFTER_MAX`].
//!
//! The layer also counts, per watcher, its watch requests the server
//! answered 2xx ([`ApiHealth::watches_answered`]): a watch that got through
//! is what starts a watcher's backoff over (issue #27). Under watch churn
//! (streams cut every few hundred milliseconds, each re-watch answered at
//! once) the errors never stopped for the 10 s that used to be the only
//! reset, so every backoff sat at its cap and the final state came 2.5-7.5 s
//! after the last fault.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The longest backoff of a watcher (`k8s::QuickBackoff`'s cap).
pub const CAP: Duration = Duration::from_secs(5);

/// The longest `Retry-After` honoured: a larger one (or a misconfigured
/// proxy's) still lets a watcher try once a minute.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);

/// The client layer of [`ApiHealth::layer`]: it passes every request and
/// response through, having looked.
#[derive(Clone)]
pub struct ObserveLayer {
    health: Arc<ApiHealth>,
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Observed<S> {
        Observed {
            inner,
            health: Arc::clone(&self.health),
        }
    }
}

/// A client service whose responses [`ApiHealth`] sees.
#[derive(Clone)]
pub struct Observed<S> {
    inner: S,
    health: Arc<ApiHealth>,
}

/// The future of an [`Observed`] call.
type ObservedFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl<S, Q, B> tower::Service<http::Request<Q>> for Observed<S>
where
    S: tower::Service<http::Request<Q>, Response = http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = ObservedFuture<http::Response<B>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Q>) -> Self::Future {
        let watch = is_watch(req.uri()).then(|| req.uri().path().to_string());
        let health = Arc::clone(&self.health);
        let response = self.inner.call(req);
        Box::pin(async move {
            let r = response.await;
            match &r {
                Ok(resp) => {
                    let status = resp.status();
                    health.response(status.as_u16());
                    if status == 429 || status == 503 {
                        health.retry_after(resp.headers().get(http::header::RETRY_AFTER));
                    }
                    if let Some(path) = watch.filter(|_| status.is_success()) {
                        health.watch_answered(&path);
                    }
                }
                Err(_) => health.set_down(true),
            }
            r
        })
    }
}

/// A watch request: `watch=true` (or `1`) in the query.
fn is_watch(uri: &http::Uri) -> bool {
    uri.query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"))
}

/// One watcher's watch requests answered 2xx.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Answered {
    /// How many so far.
    pub count: u64,
    /// When the latest was answered.
    pub latest: Option<Instant>,
}

/// How long an answered watch must have been up, when it fails, to count as
/// one that got through: longer than a connection reset takes to follow the
/// response headers, far shorter than any watch that delivers anything.
pub const WATCH_UP: Duration = Duration::from_millis(20);

/// One watcher's count of its kind's answered watch requests, as of its last
/// error: tells, at the next error, whether a watch got through in between
/// (the watcher then starts its backoff over).
pub struct WatchProgress {
    path: String,
    answered: u64,
}

impl WatchProgress {
    /// At an error of this kind's watcher (`gone`: the stream said 410
    /// Gone): whether a watch got through since the previous error. Every
    /// watch answered but the latest ended without an error (a clean end,
    /// then the next watch); the latest counts once it has stayed up
    /// [`WATCH_UP`] and unless its stream said only 410 Gone. A server that
    /// answers every watch and then cuts it at once, or says 410 in it, is
    /// failing, and the watcher backs off as before.
    pub fn got_through(&mut self, health: &ApiHealth, gone: bool) -> bool {
        let now = health.watches_answered(&self.path);
        let new = now.count - self.answered;
        self.answered = now.count;
        let latest_up = now.latest.is_some_and(|t| t.elapsed() >= WATCH_UP);
        new > 1 || (new == 1 && latest_up && !gone)
    }
}

/// The API server's reachability and the watchers' retry schedule.
pub struct ApiHealth {
    /// Transitions so far: even while the server is up (or not yet asked),
    /// odd while it is down.
    state: watch::Sender<u64>,
    /// Where every watcher's retry grid starts.
    start: Instant,
    /// Watchers sharing the schedule (at least 1).
    watchers: AtomicUsize,
    /// Watchers that have [`ApiHealth::join`]ed so far.
    joined: AtomicUsize,
    /// No retry before this: the latest `Retry-After` the server sent.
    not_before: Mutex<Option<Instant>>,
    /// Watch requests answered 2xx so far, and when the latest was, by the
    /// collection path of the watcher that made them (only paths
    /// [`ApiHealth::watch_path`] registered).
    answered: Mutex<HashMap<String, Answered>>,
}

impl ApiHealth {
    /// A server not known to be down.
    pub fn new() -> Arc<Self> {
        Arc::new(ApiHealth {
            state: watch::Sender::new(0),
            start: Instant::now(),
            watchers: AtomicUsize::new(1),
            joined: AtomicUsize::new(0),
            not_before: Mutex::new(None),
            answered: Mutex::new(HashMap::new()),
        })
    }

    /// A layer for kube's `ClientBuilder` that reports every response (or
    /// failure to get one) to `health`.
    pub fn layer(health: &Arc<Self>) -> ObserveLayer {
        ObserveLayer {
            health: Arc::clone(health),
        }
    }

    /// Counts, from now on, the watch requests to `path` (a collection's URL
    /// path, as `kube::Api::resource_url` gives it) answered 2xx.
    pub fn watch_path(&self, path: &str) {
        self.answered_map().entry(path.to_string()).or_default();
    }

    /// Registers `path` (see [`ApiHealth::watch_path`]) and starts a
    /// watcher's [`WatchProgress`] at the watches answered so far.
    pub fn watch_progress(&self, path: &str) -> WatchProgress {
        self.watch_path(path);
        WatchProgress {
            path: path.to_string(),
            answered: self.watches_answered(path).count,
        }
    }

    /// Watch requests to `path` answered 2xx so far (none for a path never
    /// registered with [`ApiHealth::watch_path`]).
    pub fn watches_answered(&self, path: &str) -> Answered {
        self.answered_map().get(path).copied().unwrap_or_default()
    }

    fn watch_answered(&self, path: &str) {
        if let Some(a) = self.answered_map().get_mut(path) {
            a.count += 1;
            a.latest = Some(Instant::now());
        }
    }

    fn answered_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Answered>> {
        // A panic while holding it left a consistent map: keep going.
        self.answered.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a response with HTTP `status`: a 5xx or 429 says the server is
    /// down (or shedding load), anything else that it answers.
    pub fn response(&self, status: u16) {
        self.set_down(status >= 500 || status == 429);
    }

    /// Holds every retry until `Retry-After` (delay-seconds; an HTTP date,
    /// which the API server does not send, is ignored) has passed.
    pub fn retry_after(&self, value: Option<&http::HeaderValue>) {
        let Some(secs) = value
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
        else {
            return;
        };
        let until = Instant::now() + Duration::from_secs(secs).min(RETRY_AFTER_MAX);
        let mut not_before = self.not_before.lock().unwrap_or_else(|e| e.into_inner());
        *not_before = Some(not_before.map_or(until, |t| t.max(until)));
    }

    /// True while the server is known to be down.
    pub fn is_down(&self) -> bool {
        *self.state.borrow() % 2 == 1
    }

    fn set_down(&self, down: bool) {
        if self.is_down() == down {
            return;
        }
        self.state.send_if_modified(|n| {
            let flip = (*n % 2 == 1) != down;
            if flip {
                *n += 1;
            }
            flip
        });
    }

    /// Sets how many watchers share the retry schedule.
    pub fn set_watchers(&self, n: usize) {
        self.watchers.store(n.max(1), Ordering::Relaxed);
    }

    /// A watcher's place in the schedule: 0, 1, 2, … in the order asked.
    pub fn join(&self) -> usize {
        self.joined.fetch_add(1, Ordering::Relaxed)
    }

    /// When watcher `place` retries after waiting `backoff`: at once past
    /// it, unless the backoff has reached [`CAP`]; then at the first point of
    /// the watcher's own grid (period `CAP`, offset `place` × `CAP` /
    /// watchers from the schedule's start) at least `CAP` / 2 away. So every
    /// watcher at its cap tries once per `CAP`, never sooner than half of it
    /// (as the jittered backoff would), and the watchers take turns: one
    /// try every `CAP` / watchers.
    fn slot(&self, place: usize, backoff: Duration) -> Instant {
        let now = Instant::now();
        if backoff < CAP / 2 {
            return now + backoff;
        }
        let watchers = self.watchers.load(Ordering::Relaxed).max(1);
        let offset = CAP.mul_f64((place % watchers) as f64 / watchers as f64);
        let earliest = (now + CAP / 2).duration_since(self.start);
        let periods = earliest
            .saturating_sub(offset)
            .as_nanos()
            .div_ceil(CAP.as_nanos());
        self.start + offset + CAP * u32::try_from(periods).unwrap_or(u32::MAX)
    }

    /// Waits before a watcher's retry after a failure: until its slot (see
    /// the module docs), or, if the server is down now, until it is seen up
    /// again, whichever comes first. False when `stop` fired instead.
    pub async fn wait_retry(
        &self,
        place: usize,
        backoff: Duration,
        stop: &CancellationToken,
    ) -> bool {
        let slot = self.slot(place, backoff);
        let mut rx = self.state.subscribe();
        let down = *rx.borrow_and_update() % 2 == 1;
        let back_up = async {
            if !down {
                return std::future::pending().await;
            }
            // Err only if the sender is gone, which `self` outlives.
            let _ = rx.wait_for(|n| n % 2 == 0).await;
        };
        let woke = tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep_until(slot) => true,
            _ = back_up => true,
        };
        // Whatever woke it, not before the server's Retry-After.
        let not_before = *self.not_before.lock().unwrap_or_else(|e| e.into_inner());
        match not_before.filter(|t| woke && *t > Instant::now()) {
            Some(t) => tokio::select! {
                _ = stop.cancelled() => false,
                _ = tokio::time::sleep_until(t) => true,
            },
            None => woke,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Watcher 0's `wait_retry(backoff)` as a task.
    fn spawn_wait(
        h: &Arc<ApiHealth>,
        backoff: Duration,
        stop: &CancellationToken,
    ) -> tokio::task::JoinHandle<bool> {
        let (h, stop) = (Arc::clone(h), stop.clone());
        tokio::spawn(async move { h.wait_retry(0, backoff, &stop).await })
    }

    #[tokio::test]
    async fn the_layer_counts_each_watchers_answered_watches() {
        use tower::{Layer, Service, ServiceExt};
        let h = ApiHealth::new();
        h.watch_path("/api/v1/services");
        // 500 for a request whose query says `fail`, else 200.
        let mut client =
            ApiHealth::layer(&h).layer(tower::service_fn(|req: http::Request<()>| async move {
                let fail = req.uri().query().is_some_and(|q| q.contains("fail"));
                let status = if fail { 500 } else { 200 };
                let resp = http::Response::builder().status(status).body(());
                Ok::<_, std::convert::Infallible>(resp.expect("a valid response"))
            }));
        let mut send = async |uri: &str| {
            let req = http::Request::get(uri).body(()).expect("a valid request");
            let ready = client.ready().await.expect("always ready");
            ready.call(req).await.expect("infallible").status().as_u16()
        };
        let services = || h.watches_answered("/api/v1/services").count;
        assert_eq!(send("/api/v1/services?limit=250").await, 200);
        assert_eq!(services(), 0, "a list is no watch");
        assert_eq!(send("/api/v1/services?&watch=true&fail").await, 500);
        assert!(h.is_down());
        assert_eq!(services(), 0, "a watch refused is no watch answered");
        assert_eq!(
            send("/api/v1/services?&watch=true&resourceVersion=7").await,
            200
        );
        assert!(!h.is_down());
        assert_eq!(services(), 1);
        assert_eq!(send("/api/v1/namespaces/a/services?watch=1").await, 200);
        assert_eq!(send("/api/v1/pods?&watch=true").await, 200);
        assert_eq!(services(), 1, "other paths count apart");
        assert_eq!(
            h.watches_answered("/api/v1/pods"),
            Answered::default(),
            "not registered"
        );
    }

    #[test]
    fn responses_flip_the_state_only_on_a_change() {
        let h = ApiHealth::new();
        assert!(!h.is_down());
        h.response(200);
        assert_eq!(*h.state.borrow(), 0, "up stays up");
        h.response(503);
        assert!(h.is_down());
        h.response(500);
        h.response(429);
        assert_eq!(*h.state.borrow(), 1, "down stays down");
        h.response(403);
        assert!(!h.is_down(), "a 403 is an answer: the server is up");
        assert_eq!(*h.state.borrow(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn watchers_at_their_cap_take_turns() {
        let h = ApiHealth::new();
        h.set_watchers(4);
        let places: Vec<usize> = (0..4).map(|_| h.join()).collect();
        assert_eq!(places, [0, 1, 2, 3]);
        let t0 = h.start;
        let ms = |at: Instant| (at - t0).as_millis();
        let five = Duration::from_secs(5);
        // Each on its own grid, at least 2.5 s away: one try every 1.25 s.
        let first: Vec<u128> = places.iter().map(|p| ms(h.slot(*p, five))).collect();
        assert_eq!(first, [5000, 6250, 2500, 3750]);
        // Watcher 2 tried at 2.5 s and failed: its next turn is 5 s later.
        tokio::time::advance(Duration::from_millis(2510)).await;
        assert_eq!(ms(h.slot(2, five)), 7500);
        // Below half the cap the backoff is waited as it is.
        let short = Duration::from_millis(800);
        assert_eq!(h.slot(1, short) - Instant::now(), short);
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_seen_up_again_ends_the_waits_begun_while_it_was_down() {
        let h = ApiHealth::new();
        let stop = CancellationToken::new();
        h.response(503);
        let t0 = Instant::now();
        let waiter = spawn_wait(&h, Duration::from_secs(5), &stop);
        tokio::time::sleep(Duration::from_millis(700)).await;
        h.response(200);
        assert!(waiter.await.unwrap());
        assert_eq!((Instant::now() - t0).as_millis(), 700);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_holds_every_retry_until_then() {
        let h = ApiHealth::new();
        let stop = CancellationToken::new();
        h.response(429);
        h.retry_after(Some(&http::HeaderValue::from_static("3")));
        h.retry_after(Some(&http::HeaderValue::from_static("1"))); // the later one stays
        h.retry_after(Some(&http::HeaderValue::from_static(
            "Wed, 21 Oct 2015 07:28:00 GMT",
        )));
        let t0 = Instant::now();
        assert!(h.wait_retry(0, Duration::from_millis(100), &stop).await);
        assert_eq!((Instant::now() - t0).as_millis(), 3000);
        // Seen up again: the wait still ends no sooner than Retry-After.
        h.retry_after(Some(&http::HeaderValue::from_static("2")));
        let waiter = spawn_wait(&h, Duration::from_secs(5), &stop);
        tokio::time::sleep(Duration::from_millis(500)).await;
        h.response(200);
        assert!(waiter.await.unwrap());
        assert_eq!((Instant::now() - t0).as_millis(), 5000);
        // Capped: a day's Retry-After holds a minute.
        h.retry_after(Some(&http::HeaderValue::from_static("86400")));
        let t1 = Instant::now();
        assert!(h.wait_retry(0, Duration::from_millis(100), &stop).await);
        assert_eq!(Instant::now() - t1, RETRY_AFTER_MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_begun_while_up_takes_its_whole_backoff() {
        // A 403 or a closed watch: the server answers, so nothing cuts the
        // backoff short (it would retry a refused request in a loop).
        let h = ApiHealth::new();
        let stop = CancellationToken::new();
        let t0 = Instant::now();
        let waiter = spawn_wait(&h, Duration::from_secs(2), &stop);
        tokio::time::sleep(Duration::from_millis(100)).await;
        h.response(503);
        h.response(200);
        assert!(waiter.await.unwrap());
        assert_eq!((Instant::now() - t0).as_millis(), 2000);
        let stopped = spawn_wait(&h, Duration::from_secs(2), &stop);
        stop.cancel();
        assert!(!stopped.await.unwrap());
    }
}
