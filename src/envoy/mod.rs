//! The Envoy side of standalone mode: the bootstrap, and the route and cluster files
//! Envoy watches (file-based xDS) so that a reload needs no Envoy restart.

pub mod admin_client;
pub mod bootstrap;
pub mod resources;
pub mod xds_files;
