//! Tally, version 1, code `b` (see the `tally` fixture).
tally::tally!(1, "b");
