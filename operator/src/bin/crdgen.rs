//! Prints the RecipeStore CustomResourceDefinition as YAML; with `--write`,
//! writes it to `crds/recipestore.yaml` and, with the chart's templated
//! metadata, to the chart's `templates/crd.yaml` (run from the workspace).
use std::path::Path;

use kube::CustomResourceExt;

/// The chart's CRD up to `spec:`: Helm labels, and the keep annotation.
const CHART_HEADER: &str = r#"{{- if .Values.crds.install }}
{{- /*
Written by `cargo run -p recipestore-operator --bin crdgen -- --write`, with
crds/recipestore.yaml, from the RecipeStore type; e2e/tests/it/chart.rs fails
when the two differ. Templated rather than in the chart's crds/ directory so
that `helm upgrade` updates it too.
*/}}
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: recipestores.recipestore.dev
  labels:
    {{- include "recipestore-operator.labels" . | nindent 4 }}
  {{- if .Values.crds.keep }}
  annotations:
    helm.sh/resource-policy: keep
  {{- end }}
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let crd = serde_yaml::to_string(&recipestore_operator::RecipeStore::crd())?;
    if std::env::args().nth(1).as_deref() != Some("--write") {
        print!("{crd}");
        return Ok(());
    }
    let spec = crd.find("\nspec:").ok_or("the generated CRD has no spec")?;
    std::fs::write(Path::new("crds/recipestore.yaml"), &crd)?;
    std::fs::write(
        Path::new("charts/recipestore-operator/templates/crd.yaml"),
        format!("{CHART_HEADER}{}{{{{- end }}}}\n", &crd[spec + 1..]),
    )?;
    println!("wrote crds/recipestore.yaml and charts/recipestore-operator/templates/crd.yaml");
    Ok(())
}
