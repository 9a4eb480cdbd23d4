//! JSON ⇄ protobuf transcoding with descriptors (in progress).
