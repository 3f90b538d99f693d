//! The conformance suite through `FaultyStore` with no fault set: the wrapper forwards every
//! behaviour unchanged, over the in-memory store and over the local store (whose sweep has
//! leftovers to remove, so a wrapper that did not forward it would fail).

use std::sync::Arc;

use plugs_storage::conformance::{Capabilities, Fixture, Leftovers};
use plugs_storage::{FaultyStore, LocalFsConfig, LocalFsStore, MemoryStore};

mod over_memory {
    use super::*;

    async fn setup() -> Option<Fixture> {
        let store = FaultyStore::new(Arc::new(MemoryStore::new()));
        Some(Fixture {
            store: Arc::new(store),
            capabilities: Capabilities::new("faulty(memory)"),
            guard: None,
        })
    }

    plugs_storage::conformance_tests!(setup);
}

mod over_local {
    use super::*;

    async fn setup() -> Option<Fixture> {
        let dir = tempfile::tempdir().ok()?;
        let config = LocalFsConfig {
            root: dir.path().to_owned(),
            base_url: "http://127.0.0.1:9/api/v1/objects".to_owned(),
            signing_key: b"test signing key".to_vec(),
        };
        let local = LocalFsStore::new(config).ok()?;
        let mut capabilities = Capabilities::new("faulty(local, no HTTP server)");
        capabilities.leftovers = Some(Leftovers::local_temp_files(dir.path().to_owned()));
        Some(Fixture {
            store: Arc::new(FaultyStore::new(Arc::new(local))),
            capabilities,
            guard: Some(Box::new(dir)),
        })
    }

    plugs_storage::conformance_tests!(setup);
}
