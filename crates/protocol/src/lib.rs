//! rivulet-protocol
