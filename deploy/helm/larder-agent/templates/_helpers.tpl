{{/*
The chart's name, shortened to Kubernetes' 63-character limit on names.
*/}}
{{- define "larder-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's resource name: the release name, with the chart's name added
unless the release name already contains it.
*/}}
{{- define "larder-agent.fullname" -}}
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
Labels that select this release's pod; they never change after an install.
*/}}
{{- define "larder-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "larder-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of every resource of the chart.
*/}}
{{- define "larder-agent.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "larder-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: data-plane-agent
app.kubernetes.io/part-of: larder
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
The image reference: the tag defaults to the chart's appVersion.
*/}}
{{- define "larder-agent.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The Secret holding the enrollment token, and its key.
*/}}
{{- define "larder-agent.enrollmentSecretName" -}}
{{- if .Values.enrollment.existingSecret }}{{ .Values.enrollment.existingSecret }}{{ else }}{{ include "larder-agent.fullname" . }}-enrollment{{ end }}
{{- end }}

{{- define "larder-agent.enrollmentSecretKey" -}}
{{- if .Values.enrollment.existingSecret }}{{ .Values.enrollment.existingSecretKey }}{{ else }}token{{ end }}
{{- end }}

{{/*
Whether a CA bundle for the control plane is given (inline or as a ConfigMap).
*/}}
{{- define "larder-agent.hasCA" -}}
{{- if or .Values.controlPlane.ca.pem .Values.controlPlane.ca.existingConfigMap }}true{{ end }}
{{- end }}

{{- define "larder-agent.caConfigMapName" -}}
{{- if .Values.controlPlane.ca.existingConfigMap }}{{ .Values.controlPlane.ca.existingConfigMap }}{{ else }}{{ include "larder-agent.fullname" . }}-ca{{ end }}
{{- end }}

{{/*
The feature server's port, read from settings.serving.listen (host:port).
Probes and Services reach the pod's address, so it must not listen on
loopback only.
*/}}
{{- define "larder-agent.servingPort" -}}
{{- $serving := .Values.settings.serving }}
{{- if not (kindIs "map" $serving) }}
{{- fail "settings.serving must be a mapping: the chart's probes and Service use the feature server (GET /readyz, /healthz)" }}
{{- end }}
{{- $listen := toString (default "0.0.0.0:6566" $serving.listen) }}
{{- if or (hasPrefix "127." $listen) (hasPrefix "localhost:" $listen) (hasPrefix "[::1]" $listen) }}
{{- fail (printf "settings.serving.listen is %s: listen on 0.0.0.0 so the probes and the Service reach the feature server" $listen) }}
{{- end }}
{{- regexReplaceAll "^.*:" $listen "" }}
{{- end }}

{{/*
The scheme the feature server speaks, for the probes and the Service's port name.
*/}}
{{- define "larder-agent.scheme" -}}
{{- if .Values.servingTls.enabled }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}

{{/*
The settings file: values.settings without empty mappings; serving.listen
always set (the agent's own default is loopback, which the probes cannot
reach); the serving certificate's paths when servingTls is on.
*/}}
{{- define "larder-agent.settings" -}}
{{- $settings := dict }}
{{- range $key, $value := .Values.settings }}
{{- if or (not (kindIs "map" $value)) $value }}
{{- $_ := set $settings $key $value }}
{{- end }}
{{- end }}
{{- $serving := deepCopy (default dict (get $settings "serving")) }}
{{- if not $serving.listen }}
{{- $_ := set $serving "listen" "0.0.0.0:6566" }}
{{- end }}
{{- if .Values.servingTls.enabled }}
{{- $_ := set $serving "tls_certificate" "/etc/larder/serving-tls/tls.crt" }}
{{- $_ := set $serving "tls_key" "/etc/larder/serving-tls/tls.key" }}
{{- end }}
{{- $_ := set $settings "serving" $serving }}
{{- if eq .Values.onlineStore.kind "redis" }}
{{- $redis := dict "addresses" .Values.onlineStore.redis.addresses "key_prefix" .Values.onlineStore.redis.keyPrefix }}
{{- with .Values.onlineStore.redis.user }}
{{- $_ := set $redis "user" . }}
{{- end }}
{{- if .Values.onlineStore.redis.passwordSecret }}
{{- $_ := set $redis "password_file" "/etc/larder/redis/password" }}
{{- end }}
{{- if .Values.onlineStore.redis.caConfigMap }}
{{- $_ := set $redis "tls_ca_file" "/etc/larder/redis-ca/ca.pem" }}
{{- end }}
{{- $_ := set $settings "online_store" (dict "redis" $redis) }}
{{- end }}
{{- toYaml $settings }}
{{- end }}

{{/*
Environment both containers need: the settings may name ${VARIABLES}, which
enroll checks as well as the agent.
*/}}
{{- define "larder-agent.env" -}}
- name: LARDER_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
{{- with .Values.env }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Mounts both containers need: the data directory, the CA the agent.yaml names,
the serving certificate (enroll checks it is readable), and the operator's extras.
*/}}
{{- define "larder-agent.commonMounts" -}}
- name: data
  mountPath: /var/lib/larder-agent
- name: tmp
  mountPath: /tmp
{{- if include "larder-agent.hasCA" . }}
- name: ca
  mountPath: /etc/larder/ca
  readOnly: true
{{- end }}
{{- if .Values.servingTls.enabled }}
- name: serving-tls
  mountPath: /etc/larder/serving-tls
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The Secret holding the feature server's certificate: the one named, or the
chart's own self-signed one.
*/}}
{{- define "larder-agent.servingTlsSecretName" -}}
{{- .Values.servingTls.secretName | default (printf "%s-serving-tls" (include "larder-agent.fullname" .)) }}
{{- end }}
