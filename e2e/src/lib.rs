//! Shared helpers of the end-to-end suites: the Docker cluster. Ports,
//! binaries and polling come from recipestore-testkit.

pub mod docker;
