{{/* The name of every object: the release name, or release-chart when it lacks the chart's. */}}
{{- define "switchboard.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the pods: stable across upgrades. */}}
{{- define "switchboard.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "switchboard.labels" -}}
{{ include "switchboard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* switchboard.yaml: the ports and shutdown from the values, then the rest of `config`. */}}
{{- define "switchboard.config" -}}
admin:
  address: 0.0.0.0:{{ .Values.ports.admin }}
shutdown:
  delay: {{ .Values.shutdown.delaySeconds }}s
  drain_timeout: {{ .Values.shutdown.drainTimeoutSeconds }}s
listeners:
  - address: 0.0.0.0:{{ .Values.ports.http }}
{{ omit .Values.config "admin" "listeners" "shutdown" | toYaml }}
{{- end -}}
