//! A child fed from a watch channel: an in-process producer (or a test)
//! publishes whole generations and parents long-poll them as they would a
//! remote tier.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use fleetsql_model::Generation;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::{Child, FetchRequest, Result};

/// The newest generation published with [`WatchChild::publish`], served
/// whole (it is not restricted to the requested tables), with a long poll
/// that ends as soon as a newer one is published.
#[derive(Debug)]
pub struct WatchChild {
    name: String,
    current: watch::Sender<Arc<Generation>>,
    asked: Mutex<BTreeSet<String>>,
    last_request: watch::Sender<BTreeSet<String>>,
}

impl WatchChild {
    pub fn new(name: &str, first: Arc<Generation>) -> Arc<WatchChild> {
        Arc::new(WatchChild {
            name: name.to_string(),
            current: watch::Sender::new(first),
            asked: Mutex::new(BTreeSet::new()),
            last_request: watch::Sender::new(BTreeSet::new()),
        })
    }

    /// Makes `generation` the newest; waiting parents get it at once.
    pub fn publish(&self, generation: Arc<Generation>) {
        self.current.send_replace(generation);
    }

    /// Every table any parent has asked for so far.
    pub fn asked(&self) -> BTreeSet<String> {
        self.asked.lock().clone()
    }

    /// The tables of the latest request, as they change.
    pub fn requests(&self) -> watch::Receiver<BTreeSet<String>> {
        self.last_request.subscribe()
    }
}

#[async_trait]
impl Child for WatchChild {
    fn name(&self) -> &str {
        &self.name
    }

    async fn fetch(&self, request: &FetchRequest) -> Result<Arc<Generation>> {
        self.asked.lock().extend(request.tables.iter().cloned());
        self.last_request.send_replace(request.tables.clone());
        let mut receiver = self.current.subscribe();
        let since = request.since_generation.unwrap_or(0);
        if let Some(wait) = request.wait {
            // Nothing newer within the wait: answer the current one, as a
            // tier's long poll does.
            let _ = tokio::time::timeout(wait, receiver.wait_for(|g| g.meta.id > since)).await;
        }
        let generation = receiver.borrow().clone();
        Ok(generation)
    }
}
