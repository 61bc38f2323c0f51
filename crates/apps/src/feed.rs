//! The persistent queries' view of the fleet: a [`GenerationHook`] that
//! turns each generation's rows into events.

use std::collections::BTreeSet;
use std::sync::Arc;

use fleetsql_model::Generation;
use fleetsql_model::json::batches_to_objects;
use fleetsql_pqa::PqaService;
use fleetsql_sqlnode::GenerationHook;
use parking_lot::Mutex;

/// Feeds each new generation to the persistent-query engine: the rows of
/// every table some registered statement reads become events of the stream
/// named after the table. Tables nobody's statement reads are neither
/// requested nor converted.
#[derive(Debug)]
pub struct PersistentQueryFeed {
    pqa: PqaService,
    /// The generation fed last: one that comes back with more tables (a
    /// table requested after it was made) must not be fed twice.
    last_fed: Mutex<Option<(String, u64)>>,
}

impl PersistentQueryFeed {
    pub fn new(pqa: PqaService) -> PersistentQueryFeed {
        PersistentQueryFeed {
            pqa,
            last_fed: Mutex::new(None),
        }
    }

    fn listened(&self) -> BTreeSet<String> {
        self.pqa.listened_streams().into_iter().collect()
    }
}

impl GenerationHook for PersistentQueryFeed {
    fn name(&self) -> &str {
        "persistent-queries"
    }

    fn wanted_tables(&self) -> BTreeSet<String> {
        self.listened()
    }

    fn on_generation(&self, generation: &Arc<Generation>) {
        let this = (generation.meta.producer.clone(), generation.meta.id);
        {
            let mut last_fed = self.last_fed.lock();
            if last_fed.as_ref() == Some(&this) {
                return;
            }
            *last_fed = Some(this);
        }
        for stream in self.listened() {
            let Some(table) = generation.table(&stream) else {
                continue;
            };
            let events = match batches_to_objects(table.batches()) {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(table = %stream, error = %e, "rows could not be turned into events");
                    continue;
                }
            };
            let result = self.pqa.push_events(&stream, events.iter());
            tracing::debug!(table = %stream, ?result, "generation fed to persistent queries");
        }
    }
}
