//! Admin overrides shared by replicas (`server.overrides_store = "postgres://…"`). The document
//! lives in one row with the time it was changed. A `PATCH` applies at once on the replica that
//! took it and is handed to this module's thread, which stores it (retrying while the database
//! is down, and never blocking the admin request on it); every `overrides_sync_ms` the thread
//! reads the row back and, when it is newer than what this replica knows, rebuilds the routes
//! with it. Two changes made at once on two replicas: the later one wins (last writer wins on
//! the whole document).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::state::AppState;
use crate::control::Overrides;
use crate::shadow::PostgresStore;

/// This replica's side of the shared overrides.
pub struct SharedOverrides {
    /// Changes taken here, on their way to the database.
    outbox: Mutex<Option<Sender<(String, i64)>>>,
    /// `changed_ms` of the overrides this replica serves.
    known_ms: AtomicI64,
    store: Mutex<Option<PostgresStore>>,
    every: Duration,
}

impl SharedOverrides {
    /// Connects and reads the stored overrides (at start-up: a database that is down stops the
    /// start, as the shadow store's does).
    pub fn open(url: &str, every: Duration) -> Result<(Self, Overrides), String> {
        let mut store =
            PostgresStore::open(url).map_err(|e| format!("server.overrides_store: {e}"))?;
        let stored = store
            .overrides()
            .map_err(|e| format!("server.overrides_store: {e}"))?;
        let (overrides, known) = match stored {
            Some((document, ms)) => (
                Overrides::from_json(&document).map_err(|e| e.to_string())?,
                ms,
            ),
            None => (Overrides::default(), 0),
        };
        Ok((
            Self {
                outbox: Mutex::new(None),
                known_ms: AtomicI64::new(known),
                store: Mutex::new(Some(store)),
                every,
            },
            overrides,
        ))
    }

    /// Hands a change made here to the database (in the background).
    pub fn publish(&self, overrides: &Overrides) {
        let now = crate::shadow::now_ms().max(self.known_ms.load(Ordering::Acquire) + 1);
        self.known_ms.store(now, Ordering::Release);
        if let Some(outbox) = self
            .outbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = outbox.send((overrides.to_json(), now));
        }
    }

    /// Whether a stored change is newer than what this replica serves; if so it is now known.
    fn is_news(&self, changed_ms: i64) -> bool {
        self.known_ms.fetch_max(changed_ms, Ordering::AcqRel) < changed_ms
    }
}

/// The overrides as stored — in the shared database (with this replica's side of it) or in
/// the file — read at start-up and by `condenser routes` / `report`.
pub fn load(
    server: &crate::config::ServerSettings,
) -> Result<(Option<SharedOverrides>, Overrides), String> {
    match &server.overrides_store {
        Some(url) => SharedOverrides::open(url, server.overrides_sync)
            .map(|(shared, overrides)| (Some(shared), overrides)),
        None => Overrides::load(&server.overrides_file)
            .map(|overrides| (None, overrides))
            .map_err(|e| e.to_string()),
    }
}

/// The overrides as stored (`load` without this replica's side).
pub fn stored_overrides(server: &crate::config::ServerSettings) -> Result<Overrides, String> {
    load(server).map(|(_, overrides)| overrides)
}

/// Starts the thread that stores this replica's changes and follows the others'.
pub fn start(state: &Arc<AppState>) {
    let Some(shared) = state.shared_overrides.as_ref() else {
        return;
    };
    let Some(store) = shared
        .store
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    else {
        return;
    };
    let (outbox, inbox) = std::sync::mpsc::channel();
    *shared.outbox.lock().unwrap_or_else(|e| e.into_inner()) = Some(outbox);
    let weak = Arc::downgrade(state);
    let every = shared.every;
    let spawned = std::thread::Builder::new()
        .name("overrides-sync".into())
        .spawn(move || run(store, &inbox, &weak, every));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "shared overrides: cannot start; changes stay on this replica");
    }
}

fn run(
    mut store: PostgresStore,
    inbox: &Receiver<(String, i64)>,
    state: &Weak<AppState>,
    every: Duration,
) {
    let mut unsent: Option<(String, i64)> = None;
    loop {
        match inbox.recv_timeout(every) {
            Ok(change) => unsent = Some(change),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if let Some((document, changed_ms)) = &unsent {
            match store.save_overrides(document, *changed_ms) {
                Ok(()) => unsent = None,
                Err(e) => {
                    tracing::warn!(error = %e, "shared overrides: cannot store a change; retrying");
                    continue;
                }
            }
        }
        let Some(state) = state.upgrade() else {
            return;
        };
        let Some(shared) = state.shared_overrides.as_ref() else {
            return;
        };
        match store.overrides() {
            Ok(Some((document, changed_ms))) if shared.is_news(changed_ms) => {
                match Overrides::from_json(&document) {
                    Ok(overrides) => state.adopt_overrides(overrides),
                    Err(e) => tracing::error!(error = %e, "shared overrides: unreadable document"),
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "shared overrides: cannot read; retrying"),
        }
    }
}
