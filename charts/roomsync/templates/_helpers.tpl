{{/* The chart name, or nameOverride. */}}
{{- define "roomsync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The resource name prefix: fullnameOverride, or release-chart (the release alone when it
already holds the chart name). */}}
{{- define "roomsync.fullname" -}}
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

{{/* Labels of every resource. */}}
{{- define "roomsync.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "roomsync.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: roomsync
{{- with .Values.additionalLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select the manager's pods. */}}
{{- define "roomsync.selectorLabels" -}}
app.kubernetes.io/name: {{ include "roomsync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: manager
{{- end }}

{{- define "roomsync.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "roomsync.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "roomsync.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The claim holding the SQLite database. */}}
{{- define "roomsync.claimName" -}}
{{- default (printf "%s-data" (include "roomsync.fullname" .)) .Values.store.sqlite.persistence.existingClaim }}
{{- end }}

{{/* Checks the schema cannot express across values. */}}
{{- define "roomsync.validate" -}}
{{- if and (eq .Values.store.type "sqlite") (gt (int .Values.replicaCount) 1) }}
{{- fail "replicaCount must be 1 with store.type sqlite: one writer on one volume; use store.type postgres for more replicas" }}
{{- end }}
{{- if and (eq .Values.store.type "postgres") (not .Values.store.postgres.existingSecret) }}
{{- fail "store.postgres.existingSecret is required with store.type postgres: the Secret holding the PostgreSQL URL" }}
{{- end }}
{{- end }}
