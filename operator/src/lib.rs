//! RecipeStore operator: reconciles `RecipeStore` resources into a StatefulSet
//! of Raft nodes and drives their membership one safe step at a time.

pub mod crd;
pub mod membership;

pub use crd::{RecipeStore, RecipeStoreSpec, RecipeStoreStatus};
