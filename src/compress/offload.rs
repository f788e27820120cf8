//! CPU-bound work a request needs before it can go on — token counts and compression plans of
//! large requests — run on tokio's blocking pool, never on a pingora I/O thread (where a 30 MB
//! request's count once stalled every other connection of that thread for seconds), and at most
//! one task per core at once: a burst of huge requests queues here instead of filling the
//! blocking pool that compressors and the store also use.

use std::sync::{Arc, OnceLock};

use tokio::sync::Semaphore;

/// Below this many bytes of text, counting inline costs less than the hop to another thread
/// (BPE is ~100 µs per 4 KiB).
pub const INLINE_BYTES: usize = 16 * 1024;

fn permits() -> &'static Arc<Semaphore> {
    static PERMITS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    PERMITS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Arc::new(Semaphore::new(cores))
    })
}

/// Runs `work` on the blocking pool once a place is free; `None` if it panicked.
pub async fn run<T, F>(work: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    // The semaphore is never closed: acquiring fails only if it were.
    let _place = permits().clone().acquire_owned().await.ok()?;
    tokio::task::spawn_blocking(work).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_than_one_task_per_core_runs_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (running, peak) = (running.clone(), peak.clone());
                tokio::spawn(run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                }))
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.ok(), Some(Some(())));
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        assert!(peak.load(Ordering::SeqCst) <= cores);
        assert_eq!(run(|| panic!("boom")).await, None::<()>);
    }
}
