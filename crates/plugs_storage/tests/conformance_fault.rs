//! The conformance suite through `FaultyStore` with no fault set: the wrapper forwards every
//! behaviour unchanged.

use std::sync::Arc;

use plugs_storage::conformance::{Capabilities, Fixture};
use plugs_storage::{FaultyStore, MemoryStore};

async fn setup() -> Option<Fixture> {
    let store = FaultyStore::new(Arc::new(MemoryStore::new()));
    Some(Fixture {
        store: Arc::new(store),
        capabilities: Capabilities::new("faulty(memory)"),
        guard: None,
    })
}

plugs_storage::conformance_tests!(setup);
