//! Alerts (SPEC §17): filled in below.
