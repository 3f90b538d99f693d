//! plugs_persistence
