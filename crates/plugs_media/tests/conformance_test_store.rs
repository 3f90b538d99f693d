//! The storage conformance suite through `TestStore`, the fault-injecting wrapper the service's
//! tests run on, with no fault set. Every fault test here trusts that the wrapper changes nothing
//! but the faults it is told to inject; this holds it to the same contract as the stores.

mod common;

use std::sync::Arc;

use plugs_domain::ManualClock;
use plugs_storage::conformance::{Capabilities, Fixture};

async fn setup() -> Option<Fixture> {
    let store = common::TestStore::new(Arc::new(ManualClock::default()));
    Some(Fixture {
        store: Arc::new(store),
        capabilities: Capabilities::new("test-store(memory)"),
        guard: None,
    })
}

plugs_storage::conformance_tests!(setup);
