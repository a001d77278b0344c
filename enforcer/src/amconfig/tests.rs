//! Unit tests of the Alertmanager configuration check.
