//! Prints the RecipeStore CustomResourceDefinition as YAML.
use kube::CustomResourceExt;

fn main() -> Result<(), serde_yaml::Error> {
    print!(
        "{}",
        serde_yaml::to_string(&recipestore_operator::RecipeStore::crd())?
    );
    Ok(())
}
