//! Supervised background tasks: the health checker, the alert engine and webhook delivery each
//! run as one, started on the current tokio runtime and stopped through their handle.

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A background task with a shutdown handle. Dropping the handle stops the task at its next
/// await point; [`BackgroundTask::shutdown`] stops it and waits for it to end.
#[derive(Debug)]
pub struct BackgroundTask {
    name: &'static str,
    stop: watch::Sender<bool>,
    join: Option<JoinHandle<()>>,
}

impl BackgroundTask {
    /// Spawns `body` on the current tokio runtime; `body` receives a receiver that changes when
    /// the task is asked to stop.
    pub fn spawn<F, Fut>(name: &'static str, body: F) -> Self
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = watch::channel(false);
        let join = tokio::spawn(body(stopped));
        tracing::debug!(task = name, "background task started");
        Self {
            name,
            stop,
            join: Some(join),
        }
    }

    /// Whether the task has ended.
    pub fn is_finished(&self) -> bool {
        self.join.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Asks the task to stop and waits until it has.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(join) = self.join.take()
            && let Err(error) = join.await
            && error.is_panic()
        {
            tracing::error!(task = self.name, "background task panicked");
        }
    }
}

impl Drop for BackgroundTask {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(join) = self.join.take() {
            join.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_the_task_and_waits_for_it() {
        let ended = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ended);
        let task = BackgroundTask::spawn("test", move |mut stop| async move {
            let _ = stop.changed().await;
            flag.store(true, Ordering::SeqCst);
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!task.is_finished());
        task.shutdown().await;
        assert!(
            ended.load(Ordering::SeqCst),
            "the body saw the stop request"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_handle_stops_the_task() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let task = BackgroundTask::spawn("test", move |_stop| async move {
            std::future::pending::<()>().await;
            drop(tx);
        });
        drop(task);
        assert!(
            rx.recv().await.is_none(),
            "the aborted body dropped its sender"
        );
    }
}
