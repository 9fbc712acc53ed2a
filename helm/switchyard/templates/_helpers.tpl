{{/* The chart's name, and the release's prefix for every object it makes. */}}
{{- define "switchyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "switchyard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "switchyard.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "switchyard.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Labels of every object; pass (dict "root" $ "component" "router"). */}}
{{- define "switchyard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: switchyard
{{ include "switchyard.selectorLabels" . }}
{{- end }}

{{- define "switchyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchyard.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* An image reference; pass (dict "root" $ "image" .Values.router.image). */}}
{{- define "switchyard.image" -}}
{{- $registry := default .image.registry .root.Values.global.imageRegistry -}}
{{- $tag := default .root.Chart.AppVersion .image.tag -}}
{{- if $registry }}{{ printf "%s/%s:%s" $registry .image.repository $tag }}{{ else }}{{ printf "%s:%s" .image.repository $tag }}{{ end -}}
{{- end }}

{{- define "switchyard.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets }}
imagePullSecrets:
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "switchyard.routerServiceAccount" -}}
{{- if .Values.router.serviceAccount.create }}{{ default (printf "%s-router" (include "switchyard.fullname" .)) .Values.router.serviceAccount.name }}{{ else }}{{ default "default" .Values.router.serviceAccount.name }}{{ end -}}
{{- end }}

{{- define "switchyard.operatorServiceAccount" -}}
{{- if .Values.operator.serviceAccount.create }}{{ default (printf "%s-operator" (include "switchyard.fullname" .)) .Values.operator.serviceAccount.name }}{{ else }}{{ default "default" .Values.operator.serviceAccount.name }}{{ end -}}
{{- end }}

{{/* The Secret and key holding the database URL, or nothing (SQLite). */}}
{{- define "switchyard.databaseSecret" -}}
{{- if .Values.database.existingSecret }}{{ .Values.database.existingSecret }}{{ else if .Values.postgresql.enabled }}{{ include "switchyard.fullname" . }}-database{{ end -}}
{{- end }}

{{- define "switchyard.databaseSecretKey" -}}
{{- if .Values.database.existingSecret }}{{ .Values.database.existingSecretKey }}{{ else }}url{{ end -}}
{{- end }}

{{/* The bundled Redis's password: the values', else the Secret's (kept across upgrades),
else a new one. */}}
{{- define "switchyard.redisPassword" -}}
{{- $password := .Values.redis.password -}}
{{- if not $password -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (printf "%s-redis" (include "switchyard.fullname" .)) -}}
{{- if and $existing $existing.data (hasKey $existing.data "password") -}}
{{- $password = index $existing.data "password" | b64dec -}}
{{- else -}}
{{- $password = randAlphaNum 32 -}}
{{- end -}}
{{- end -}}
{{- $password -}}
{{- end }}

{{/* The hardened security context of Switchyard's own containers. */}}
{{- define "switchyard.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The namespaces the operator watches, as a JSON list: none (every namespace), or
this release's and those of watchNamespaces, each once. */}}
{{- define "switchyard.watchedNamespaces" -}}
{{- if .Values.watchNamespaces }}{{ prepend .Values.watchNamespaces .Release.Namespace | uniq | toJson }}{{ else }}[]{{ end -}}
{{- end }}
