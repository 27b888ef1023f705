//! Tally, version 1, code `wide` (see the `tally` fixture).
tally::tally!(1, "wide", wide);
