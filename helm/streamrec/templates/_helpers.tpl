{{/* Names and labels shared by every template. */}}
{{- define "streamrec.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "streamrec.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "streamrec.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "streamrec.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "streamrec.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "streamrec.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component ("stream" or "inference"). */}}
{{- define "streamrec.selector" -}}
app.kubernetes.io/name: {{ include "streamrec.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "streamrec.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "streamrec.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "streamrec.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Probes on /health: a generous startup probe (model loading, table recovery), then liveness and readiness. */}}
{{- define "streamrec.probes" -}}
startupProbe:
  httpGet: {path: /health, port: http}
  periodSeconds: {{ .root.Values.probes.periodSeconds }}
  failureThreshold: {{ div .root.Values.probes.startupSeconds .root.Values.probes.periodSeconds }}
livenessProbe:
  httpGet: {path: /health, port: http}
  periodSeconds: {{ .root.Values.probes.periodSeconds }}
  timeoutSeconds: 5
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /health, port: http}
  periodSeconds: {{ .root.Values.probes.periodSeconds }}
  timeoutSeconds: 5
  failureThreshold: 2
{{- end -}}

{{- define "streamrec.validate" -}}
{{- if not .Values.kafka.bootstrapServers -}}
{{- fail "kafka.bootstrapServers is required: the address of your Kafka cluster" -}}
{{- end -}}
{{- if gt (int .Values.streamWorker.replicas) (int .Values.kafka.partitions) -}}
{{- fail (printf "streamWorker.replicas (%d) exceeds kafka.partitions (%d): the extra workers would get no partition" (int .Values.streamWorker.replicas) (int .Values.kafka.partitions)) -}}
{{- end -}}
{{- end -}}
