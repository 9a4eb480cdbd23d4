//! A future that is polled only after it asked to be: for the side branches of a `select!`
//! loop (a drain signal, an idle timer) beside a connection that wakes its task many times
//! per call. `select!` polls every branch on every wake-up, and polling a watch receiver or a
//! timer that has not fired costs more than checking a flag.
//!
//! The inner future is polled with a waker of its own, which sets the flag and wakes the
//! task; until that happens, polling the wrapper only keeps the task's waker current. After
//! it returns a result it is polled again the next time (a `poll_fn` over a timer's ticks can
//! be polled for ever).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

pin_project_lite::pin_project! {
    /// See the module doc.
    pub(crate) struct Gated<F> {
        #[pin]
        inner: F,
        flag: Arc<Flag>,
        // The waker the inner future is polled with; made on the first poll.
        waker: Option<Waker>,
    }
}

#[derive(Default)]
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> Gated<F> {
    pub(crate) fn new(inner: F) -> Gated<F> {
        Gated {
            inner,
            flag: Arc::default(),
            waker: None,
        }
    }

    /// The inner future, to change it (a timer's deadline); it is polled on the next poll.
    pub(crate) fn inner(self: Pin<&mut Self>) -> Pin<&mut F> {
        let this = self.project();
        this.flag.woken.store(true, Ordering::Relaxed);
        this.inner
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // Registered before the flag is read: a wake in between is then not lost.
        this.flag.task.register(cx.waker());
        let waker = match this.waker {
            Some(w) => {
                if !this.flag.woken.swap(false, Ordering::AcqRel) {
                    return Poll::Pending;
                }
                w
            }
            None => this.waker.insert(Waker::from(this.flag.clone())),
        };
        let polled = this.inner.poll(&mut Context::from_waker(waker));
        if polled.is_ready() {
            // A future that is polled again after it finished (a `poll_fn` over a timer's
            // ticks) has registered nothing yet for its next result.
            this.flag.woken.store(true, Ordering::Relaxed);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// Counts its polls; ready once `open` is set (and woken).
    struct Door {
        polls: Arc<AtomicUsize>,
        open: Arc<AtomicBool>,
        waiter: Arc<AtomicWaker>,
    }

    impl Future for Door {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            self.waiter.register(cx.waker());
            match self.open.load(Ordering::Acquire) {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }
        }
    }

    #[test]
    fn polls_the_inner_future_only_when_it_was_woken() {
        let polls = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicBool::new(false));
        let waiter = Arc::new(AtomicWaker::new());
        let door = Door {
            polls: polls.clone(),
            open: open.clone(),
            waiter: waiter.clone(),
        };
        let mut gated = Box::pin(Gated::new(door));
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..5 {
            assert!(gated.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1, "polled once, then gated");
        open.store(true, Ordering::Release);
        waiter.wake();
        assert!(gated.as_mut().poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_gated_timer_fires_and_can_be_moved() {
        let start = tokio::time::Instant::now();
        let mut sleep = std::pin::pin!(Gated::new(tokio::time::sleep(Duration::from_secs(600))));
        // Moved earlier after its first poll: the new deadline is the one that fires.
        let first = std::future::poll_fn(|cx| Poll::Ready(sleep.as_mut().poll(cx))).await;
        assert!(first.is_pending());
        sleep
            .as_mut()
            .inner()
            .reset(start + Duration::from_millis(20));
        sleep.as_mut().await;
        assert!(start.elapsed() >= Duration::from_millis(20));
        // A `poll_fn` over an interval's ticks gives every tick, not only the first.
        let mut every = tokio::time::interval(Duration::from_millis(5));
        let mut ticks = std::pin::pin!(Gated::new(std::future::poll_fn(move |cx| {
            every.poll_tick(cx)
        })));
        for _ in 0..3 {
            ticks.as_mut().await;
        }
        // A watch signal through the gate, from another task.
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let waiting =
            tokio::spawn(async move { Gated::new(rx.wait_for(|set| *set)).await.is_ok() });
        tokio::task::yield_now().await;
        let _ = tx.send(true);
        assert!(waiting.await.unwrap_or(false));
    }
}
