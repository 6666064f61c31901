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

{{/* Kafka security: which protocols use SASL and TLS, the non-secret settings, the secrets and the TLS files. */}}
{{- define "streamrec.kafkaSasl" -}}
{{- if has .Values.kafka.security.protocol (list "SASL_PLAINTEXT" "SASL_SSL") -}}true{{- end -}}
{{- end -}}

{{- define "streamrec.kafkaTls" -}}
{{- if has .Values.kafka.security.protocol (list "SSL" "SASL_SSL") -}}true{{- end -}}
{{- end -}}

{{- define "streamrec.kafkaTlsDir" -}}/etc/streamrec/kafka-tls{{- end -}}

{{- define "streamrec.kafkaSecurityConfig" -}}
{{- $security := .Values.kafka.security -}}
STREAMREC_KAFKA_SECURITY_PROTOCOL: {{ $security.protocol | quote }}
{{- if include "streamrec.kafkaSasl" . }}
STREAMREC_KAFKA_SASL_MECHANISM: {{ $security.saslMechanism | quote }}
{{- end }}
{{- if include "streamrec.kafkaTls" . }}
STREAMREC_KAFKA_SSL_CHECK_HOSTNAME: {{ $security.tls.checkHostname | quote }}
{{- if $security.tls.secretName }}
{{- range $setting, $key := dict "CAFILE" $security.tls.caFile "CERTFILE" $security.tls.certFile "KEYFILE" $security.tls.keyFile }}
{{- if $key }}
STREAMREC_KAFKA_SSL_{{ $setting }}: {{ printf "%s/%s" (include "streamrec.kafkaTlsDir" $) $key | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Env entries (a list, possibly empty) with the SASL credentials and the key password, from Secrets. */}}
{{- define "streamrec.kafkaSecretEnv" -}}
{{- $security := .Values.kafka.security -}}
{{- if include "streamrec.kafkaSasl" . }}
- name: STREAMREC_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $security.saslSecret.name }}
      key: {{ $security.saslSecret.usernameKey }}
- name: STREAMREC_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $security.saslSecret.name }}
      key: {{ $security.saslSecret.passwordKey }}
{{- end }}
{{- if and (include "streamrec.kafkaTls" .) $security.tls.secretName $security.tls.keyPasswordKey }}
- name: STREAMREC_KAFKA_SSL_KEY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $security.tls.secretName }}
      key: {{ $security.tls.keyPasswordKey }}
{{- end }}
{{- end -}}

{{- define "streamrec.kafkaTlsMounted" -}}
{{- if and (include "streamrec.kafkaTls" .) .Values.kafka.security.tls.secretName -}}true{{- end -}}
{{- end -}}

{{- define "streamrec.validate" -}}
{{- if not .Values.kafka.bootstrapServers -}}
{{- fail "kafka.bootstrapServers is required: the address of your Kafka cluster" -}}
{{- end -}}
{{- $protocol := .Values.kafka.security.protocol -}}
{{- if not (has $protocol (list "PLAINTEXT" "SSL" "SASL_PLAINTEXT" "SASL_SSL")) -}}
{{- fail (printf "kafka.security.protocol=%s: use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL" $protocol) -}}
{{- end -}}
{{- if and (include "streamrec.kafkaSasl" .) (not .Values.kafka.security.saslSecret.name) -}}
{{- fail (printf "kafka.security.protocol=%s needs kafka.security.saslSecret.name: a Secret with the SASL user name and password" $protocol) -}}
{{- end -}}
{{- if and .Values.keda.enabled (ne $protocol "PLAINTEXT") (not .Values.keda.authenticationRef) -}}
{{- fail (printf "keda.authenticationRef is required with kafka.security.protocol=%s: a KEDA TriggerAuthentication with the Kafka credentials" $protocol) -}}
{{- end -}}
{{- if gt (int .Values.streamWorker.replicas) (int .Values.kafka.partitions) -}}
{{- fail (printf "streamWorker.replicas (%d) exceeds kafka.partitions (%d): the extra workers would get no partition" (int .Values.streamWorker.replicas) (int .Values.kafka.partitions)) -}}
{{- end -}}
{{- end -}}
