//! One direction of a TCP stream: sequence tracking, out-of-order buffering within a bounded window,
//! retransmission/overlap handling (first copy wins, conflicts counted) and gap skipping.
