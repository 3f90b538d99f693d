//! plugs_media
