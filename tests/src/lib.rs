//! End-to-end tests live in `tests/tests/`; what several of them share
//! and is more than a helper lives here.

pub mod mock_venue;
