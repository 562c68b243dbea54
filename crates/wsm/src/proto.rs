//! The code generated from `schemas/websocketmanager.proto` (`virtufin.WebSocketManager`): the API
//! serves it, and the cluster's peer client calls it.
#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("virtufin");

/// The schema's encoded `FileDescriptorSet`: served by reflection, read by `/v1/invoke`.
pub(crate) const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/websocketmanager.bin"));

/// The fully qualified service name, as reflection and `/v1/invoke` know it.
pub(crate) const SERVICE_NAME: &str = "virtufin.WebSocketManager";
