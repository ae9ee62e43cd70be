//! The watcher: a valid change is reported as a new tree, an invalid one as a report, and a
//! burst of writes as one reload. These tests use real files and inotify, with a short
//! debounce and bounded waits.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use echelon_config::{LoadOptions, WatchHandle, watch};
use echelon_domain::name::PoolName;
use echelon_domain::spec::RotationStrategy;

use crate::support::{base_with, env, write};

const DEBOUNCE: Duration = Duration::from_millis(80);
const PATIENCE: Duration = Duration::from_secs(10);

use echelon_config::Reload;

fn start(dir: &std::path::Path) -> (WatchHandle, mpsc::Receiver<Reload>) {
    let (tx, rx) = mpsc::channel();
    let handle = watch(
        dir,
        DEBOUNCE,
        Arc::new(env(&[])),
        LoadOptions::default(),
        move |reload| {
            let _ = tx.send(reload);
        },
    )
    .expect("watcher starts");
    (handle, rx)
}

#[test]
fn a_valid_change_is_reported_as_the_new_tree() {
    let dir = base_with(&[]);
    let (handle, reloads) = start(dir.path());
    write(
        dir.path(),
        "llms/pools/main.toml",
        "rotation = \"least_connections\"\n[[instances]]\nmodel = \"mock/small\"\n",
    );
    let config = reloads
        .recv_timeout(PATIENCE)
        .expect("a reload")
        .unwrap_or_else(|report| panic!("{report}"));
    assert_eq!(
        config.topology.pools[&PoolName::new("main")].rotation,
        RotationStrategy::LeastConnections
    );
    handle.stop();
}

#[test]
fn an_invalid_change_is_reported_as_an_error() {
    let dir = base_with(&[]);
    let (handle, reloads) = start(dir.path());
    write(
        dir.path(),
        "llms/wrappers/default.toml",
        "[wrappers.chat]\ntype = \"pool\"\ntarget = \"nope\"\n",
    );
    let report = reloads
        .recv_timeout(PATIENCE)
        .expect("a reload")
        .expect_err("the tree is invalid");
    assert!(
        report.to_string().contains("pool `nope` does not exist"),
        "{report}"
    );
    handle.stop();
}

#[test]
fn a_burst_of_writes_is_one_reload() {
    let dir = base_with(&[]);
    let (handle, reloads) = start(dir.path());
    for weight in 1..=6 {
        write(
            dir.path(),
            "llms/pools/main.toml",
            &format!("[[instances]]\nmodel = \"mock/small\"\nweight = {weight}\n"),
        );
        // Well inside the debounce window, so the burst is one change.
        std::thread::sleep(Duration::from_millis(5));
    }
    let config = reloads
        .recv_timeout(PATIENCE)
        .expect("a reload")
        .unwrap_or_else(|report| panic!("{report}"));
    let pool = &config.topology.pools[&PoolName::new("main")];
    assert_eq!(pool.instances[0].weight, 6, "the reload saw the last write");
    assert!(
        reloads.recv_timeout(DEBOUNCE * 4).is_err(),
        "a second reload for the same burst"
    );
    handle.stop();
}

#[test]
fn files_that_are_not_toml_do_not_trigger_a_reload() {
    let dir = base_with(&[]);
    let (handle, reloads) = start(dir.path());
    write(dir.path(), "llms/pools/.main.toml.swp", "editor scratch");
    write(dir.path(), "notes.md", "not configuration");
    assert!(reloads.recv_timeout(DEBOUNCE * 4).is_err());
    drop(handle);
}
