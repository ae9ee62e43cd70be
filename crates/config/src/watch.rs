//! Hot reload support: a file watcher on the configuration tree that, after each burst of
//! changes has settled for the debounce time, loads and validates the tree and hands the result
//! to a callback. Swapping the new tree in (atomically, keeping live state) is the application's
//! job; this module never holds a tree of its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};

use crate::{ConfigReport, Env, LoadOptions, LoadedConfig, load_with};

/// Why watching could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The platform watcher failed (no inotify instances left, the folder vanished, …).
    #[error("cannot watch `{path}`: {source}")]
    Notify {
        /// The folder.
        path: PathBuf,
        /// The watcher's error.
        #[source]
        source: notify::Error,
    },
    /// The reload thread could not be started.
    #[error("cannot start the configuration watcher thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// A running watcher. Dropping it (or calling [`WatchHandle::stop`]) stops watching and joins
/// the reload thread; a reload in progress finishes first.
#[derive(Debug)]
pub struct WatchHandle {
    watcher: Option<RecommendedWatcher>,
    thread: Option<JoinHandle<()>>,
}

impl WatchHandle {
    /// Stops watching and waits for the reload thread to end.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // Dropping the watcher drops the event sender, which ends the thread's receive loop.
        self.watcher.take();
        if let Some(thread) = self.thread.take() {
            // A panic in the callback has already been reported by the panic hook.
            let _ = thread.join();
        }
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The outcome of one reload.
pub type Reload = Result<LoadedConfig, ConfigReport>;

/// Watches `dir` recursively. After a change, once no further change has arrived for `debounce`,
/// the tree is loaded with `env` and `options` and the result is passed to `on_reload` on the
/// watcher's own thread. Only changes to `.toml` files and to folders count (editor swap files
/// do not).
///
/// # Errors
///
/// [`WatchError`] when the platform watcher or the thread cannot start.
pub fn watch<F>(
    dir: &Path,
    debounce: Duration,
    env: Arc<dyn Env + Send + Sync>,
    options: LoadOptions,
    mut on_reload: F,
) -> Result<WatchHandle, WatchError>
where
    F: FnMut(Reload) + Send + 'static,
{
    let (events_tx, events_rx) = mpsc::channel::<notify::Result<notify::Event>>();
    let mut watcher =
        notify::recommended_watcher(events_tx).map_err(|source| WatchError::Notify {
            path: dir.to_path_buf(),
            source,
        })?;
    watcher
        .watch(dir, RecursiveMode::Recursive)
        .map_err(|source| WatchError::Notify {
            path: dir.to_path_buf(),
            source,
        })?;
    let root = dir.to_path_buf();
    let thread = std::thread::Builder::new()
        .name("echelon-config-watch".to_owned())
        .spawn(move || {
            let mut pending: Option<Instant> = None;
            loop {
                let event = match pending {
                    None => events_rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                    Some(deadline) => {
                        events_rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                    }
                };
                match event {
                    Ok(Ok(event)) => {
                        if is_relevant(&event) {
                            pending = Some(Instant::now() + debounce);
                        }
                    }
                    // A watcher error (an overflowed queue) may hide changes: reload to be sure.
                    Ok(Err(_)) => pending = Some(Instant::now() + debounce),
                    Err(RecvTimeoutError::Timeout) => {
                        pending = None;
                        on_reload(load_with(&root, env.as_ref(), &options));
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        })
        .map_err(WatchError::Thread)?;
    Ok(WatchHandle {
        watcher: Some(watcher),
        thread: Some(thread),
    })
}

fn is_relevant(event: &notify::Event) -> bool {
    if event.kind.is_access() {
        return false;
    }
    event.paths.iter().any(|path| {
        match path.extension() {
            Some(ext) => ext == "toml",
            // Folders (created, removed, renamed) and extension-less names.
            None => true,
        }
    })
}
