//! `trustwatch live` end to end (being written).
