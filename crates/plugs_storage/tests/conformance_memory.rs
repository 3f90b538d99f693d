//! The conformance suite on the in-memory fake.

use std::sync::Arc;

use plugs_storage::MemoryStore;
use plugs_storage::conformance::{Capabilities, Fixture};

async fn setup() -> Option<Fixture> {
    Some(Fixture {
        store: Arc::new(MemoryStore::new()),
        capabilities: Capabilities::new("memory"),
        guard: None,
    })
}

plugs_storage::conformance_tests!(setup);
