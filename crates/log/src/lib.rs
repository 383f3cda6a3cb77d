//! rivulet-log
