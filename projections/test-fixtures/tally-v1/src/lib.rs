//! Tally, version 1, code `a` (see the `tally` fixture).
tally::tally!(1, "a");
