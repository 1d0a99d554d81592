//! The human-readable summary printed by `trustwatch analyze`.
