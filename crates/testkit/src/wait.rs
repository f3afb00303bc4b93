//! Waiting on state instead of sleeping: block on an event channel until an event answers,
//! with a deadline; percentiles of measured values.

use std::time::{Duration, Instant};

/// Takes events from `events`, in order, until `pick` answers one or `timeout` passes (None).
/// Blocks the calling thread while it waits: nothing polls.
pub fn wait_for_event<E, T>(
    events: &crossbeam_channel::Receiver<E>,
    timeout: Duration,
    mut pick: impl FnMut(&E) -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let event = events.recv_timeout(left).ok()?;
        if let Some(found) = pick(&event) {
            return Some(found);
        }
    }
}

/// [`wait_for_event`] from async code on a multi-threaded tokio runtime: the worker blocks
/// while other tasks move to the runtime's other threads.
pub fn wait_for_event_in_runtime<E, T>(
    events: &crossbeam_channel::Receiver<E>,
    timeout: Duration,
    pick: impl FnMut(&E) -> Option<T>,
) -> Option<T> {
    tokio::task::block_in_place(|| wait_for_event(events, timeout, pick))
}

/// The value at fraction `p` (0 to 1) of `sorted` (ascending), the nearest rank; NaN for none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p.clamp(0.0, 1.0)).round() as usize]
}

/// `values` in ascending order (NaNs last).
pub fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_takes_events_in_order_and_gives_up_at_the_deadline() {
        let (tx, rx) = crossbeam_channel::unbounded();
        for n in 1..=5 {
            tx.send(n).expect("open");
        }
        let mut seen = Vec::new();
        let found = wait_for_event(&rx, Duration::from_secs(1), |n: &i32| {
            seen.push(*n);
            (*n == 3).then_some(*n * 10)
        });
        assert_eq!((found, seen), (Some(30), vec![1, 2, 3]));
        let started = Instant::now();
        assert_eq!(
            wait_for_event(&rx, Duration::from_millis(50), |n: &i32| (*n == 9).then_some(())),
            None
        );
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let values = sorted(vec![5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!(percentile(&values, 0.0), 1.0);
        assert_eq!(percentile(&values, 0.5), 3.0);
        assert_eq!(percentile(&values, 1.0), 5.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
