//! The server's clock for token lifetimes and reconnect grace: real time, which a test can
//! move forward ([`Clock::advance`]) so that expiry and grace run in an instant instead of
//! in real seconds. Timers waiting on it ([`Clock::sleep_until`]) wake when it jumps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::time::Instant;

/// Real time plus however far a test moved it. Cheap to clone; clones share the offset.
#[derive(Debug, Clone)]
pub struct Clock {
    ahead: watch::Sender<Duration>,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            ahead: watch::Sender::new(Duration::ZERO),
        }
    }
}

impl Clock {
    /// The machine's clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    fn ahead(&self) -> Duration {
        *self.ahead.borrow()
    }

    /// Now, on this clock.
    pub fn now(&self) -> Instant {
        Instant::now() + self.ahead()
    }

    /// Seconds since the Unix epoch, on this clock.
    pub fn unix_now(&self) -> u64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        real + self.ahead().as_secs()
    }

    /// Moves the clock forward by `by` (whole seconds count for token times): every timer due
    /// by then fires.
    pub fn advance(&self, by: Duration) {
        self.ahead.send_modify(|ahead| *ahead += by);
    }

    /// Waits until `deadline` on this clock (early if the clock is moved past it).
    pub async fn sleep_until(&self, deadline: Instant) {
        let mut jumps = self.ahead.subscribe();
        loop {
            let ahead = *jumps.borrow_and_update();
            let real = deadline.checked_sub(ahead).unwrap_or_else(Instant::now);
            tokio::select! {
                () = tokio::time::sleep_until(real) => return,
                changed = jumps.changed() => {
                    if changed.is_err() {
                        // The clock is gone with its server: real time from here.
                        return tokio::time::sleep_until(real).await;
                    }
                }
            }
        }
    }

    /// Waits `duration` on this clock.
    pub async fn sleep(&self, duration: Duration) {
        self.sleep_until(self.now() + duration).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_timer_fires_when_the_clock_is_moved_past_it() {
        let clock = Clock::system();
        let unix = clock.unix_now();
        let waiting = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep(Duration::from_secs(3600)).await }
        });
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(3601));
        tokio::time::timeout(Duration::from_secs(2), waiting)
            .await
            .expect("the hour passed at once")
            .expect("the timer task");
        assert!(clock.unix_now() >= unix + 3601);
    }
}
