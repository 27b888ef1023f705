//! Tally, version 2, code `v2` (see the `tally` fixture).
tally::tally!(2, "v2");
