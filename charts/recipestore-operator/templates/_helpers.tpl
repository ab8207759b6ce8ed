{{/* Chart name, or nameOverride. */}}
{{- define "recipestore-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every object name: release name + chart name, unless one contains the other. */}}
{{- define "recipestore-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "recipestore-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "recipestore-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels selecting the operator's pods. */}}
{{- define "recipestore-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "recipestore-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Name of the operator's ServiceAccount. */}}
{{- define "recipestore-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "recipestore-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Name of the leader Lease. */}}
{{- define "recipestore-operator.leaseName" -}}
{{- include "recipestore-operator.fullname" . }}
{{- end }}

{{/*
The selector of every RecipeStore node pod (operator/src/topology.rs): each
carries app.kubernetes.io/component=node and app.kubernetes.io/instance=<store
name>; app.kubernetes.io/name is recipestore for shard 0 (every pod of a store
of one shard) and recipestore-shard for the pods of shards 1 and up.
*/}}
{{- define "recipestore-operator.storePodSelector" -}}
matchLabels:
  app.kubernetes.io/component: node
matchExpressions:
  - key: app.kubernetes.io/name
    operator: In
    values: [recipestore, recipestore-shard]
{{- end }}

{{/*
Labels of the pods of a store's backup jobs (operator/src/build/backup.rs),
which call the nodes' peer port.
*/}}
{{- define "recipestore-operator.backupPodLabels" -}}
app.kubernetes.io/name: recipestore-backup
app.kubernetes.io/component: backup
{{- end }}
