//! plugs_test_support
