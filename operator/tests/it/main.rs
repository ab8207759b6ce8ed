//! Integration tests of the operator crate, in one binary so the workspace links few test executables.

mod api_server;
mod crd;
mod local_nodes;
mod running;
