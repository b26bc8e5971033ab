{{/*
The chart's name, shortened to Kubernetes' 63-character limit on names.
*/}}
{{- define "larder-control.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's resource name: the release name, with the chart's name added
unless the release name already contains it.
*/}}
{{- define "larder-control.fullname" -}}
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

{{/*
Labels that select this release's pods; they never change after an install.
*/}}
{{- define "larder-control.selectorLabels" -}}
app.kubernetes.io/name: {{ include "larder-control.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of every resource of the chart.
*/}}
{{- define "larder-control.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "larder-control.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: control-plane
app.kubernetes.io/part-of: larder
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
The image reference: the tag defaults to the chart's appVersion.
*/}}
{{- define "larder-control.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The Secret holding the database URL and the bootstrap token: the operator's, or the chart's.
*/}}
{{- define "larder-control.secretName" -}}
{{- default (include "larder-control.fullname" .) .Values.existingSecret.name }}
{{- end }}

{{- define "larder-control.databaseUrlKey" -}}
{{- if .Values.existingSecret.name }}{{ .Values.existingSecret.databaseUrlKey }}{{ else }}database-url{{ end }}
{{- end }}

{{- define "larder-control.bootstrapTokenKey" -}}
{{- if .Values.existingSecret.name }}{{ .Values.existingSecret.bootstrapTokenKey }}{{ else }}bootstrap-token{{ end }}
{{- end }}

{{/*
The scheme the server speaks, for probes and the Service's port name.
*/}}
{{- define "larder-control.scheme" -}}
{{- if .Values.tls.enabled }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}

{{/*
Environment both containers need: the database and the log level.
*/}}
{{- define "larder-control.databaseEnv" -}}
- name: LARDER_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "larder-control.secretName" . }}
      key: {{ include "larder-control.databaseUrlKey" . }}
- name: LARDER_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
{{- end }}
