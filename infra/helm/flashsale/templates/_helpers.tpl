{{/* Names, labels and the pieces every flashsale pod shares. */}}

{{- define "flashsale.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's prefix of every object; a component's name is "<fullname>-<component>". */}}
{{- define "flashsale.fullname" -}}
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

{{- define "flashsale.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* (dict "root" $ "component" "queue-server") */}}
{{- define "flashsale.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flashsale.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "flashsale.labels" -}}
helm.sh/chart: {{ include "flashsale.chart" .root }}
{{ include "flashsale.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: flashsale
{{- end }}

{{- define "flashsale.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "flashsale.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else }}
{{- printf "%s-secrets" (include "flashsale.fullname" .) }}
{{- end }}
{{- end }}

{{/* The Service the gate forwards to. */}}
{{- define "flashsale.shopUrl" -}}
{{- printf "http://%s-shop:%v" (include "flashsale.fullname" .) .Values.shop.service.port }}
{{- end }}

{{/*
The environment of every flashsale process (infra/settings.py reads FLASHSALE_*). Secrets come
from the Secret by reference; the rest is plain configuration. Empty optional settings are left
out, so the platform's defaults apply.
*/}}
{{- define "flashsale.env" -}}
- name: FLASHSALE_DEV
  value: "0"
- name: FLASHSALE_HOST
  value: "0.0.0.0"
{{- range $var := list "FLASHSALE_SECRET_KEYS" "FLASHSALE_ADMIN_KEY" "FLASHSALE_REDIS_URL" "FLASHSALE_DATABASE_URL" }}
- name: {{ $var }}
  valueFrom:
    secretKeyRef:
      name: {{ include "flashsale.secretName" $ }}
      key: {{ $var }}
{{- end }}
{{- /* Every process gets every port: the settings refuse two processes on one port, and the
values say which port each listens on (its containerPort). */}}
- name: FLASHSALE_QUEUE_PORT
  value: {{ .Values.queueServer.port | quote }}
- name: FLASHSALE_GATE_PORT
  value: {{ .Values.tokenGate.port | quote }}
- name: FLASHSALE_SHOP_PORT
  value: {{ .Values.shop.port | quote }}
- name: FLASHSALE_SCHEDULER_PORT
  value: {{ .Values.scheduler.port | quote }}
- name: FLASHSALE_WORKER_PORT
  value: {{ .Values.worker.port | quote }}
- name: FLASHSALE_KAFKA_BOOTSTRAP
  value: {{ required "kafka.bootstrap is required: Kafka's host:port[,host:port...]" .Values.kafka.bootstrap | quote }}
- name: FLASHSALE_SHOP_URL
  value: {{ include "flashsale.shopUrl" . | quote }}
- name: FLASHSALE_LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
{{- /* (name, value): a number's 0 is a value (0 turns a rate limit off), so test the text. */}}
{{- $optional := list
  (list "FLASHSALE_PUBLIC_GATE_URL" .Values.config.publicGateUrl)
  (list "FLASHSALE_PUBLIC_QUEUE_URL" .Values.config.publicQueueUrl)
  (list "FLASHSALE_TRUSTED_PROXIES" .Values.config.trustedProxies)
  (list "FLASHSALE_TRUSTED_USER_HEADER" .Values.config.trustedUserHeader)
  (list "FLASHSALE_JOIN_RATE_PER_IP" .Values.config.joinRatePerIp)
  (list "FLASHSALE_VISITOR_RATE" .Values.config.visitorRate)
  (list "FLASHSALE_RECONCILE_GRACE_S" .Values.config.reconcileGraceS)
  (list "FLASHSALE_WORKER_BATCH" .Values.config.workerBatch)
}}
{{- range $optional }}
{{- $value := toString (index . 1) }}
{{- if and (ne $value "") (ne $value "<nil>") }}
- name: {{ index . 0 }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The read-only root filesystem leaves /tmp for whatever a library writes there. */}}
{{- define "flashsale.tmpVolume" -}}
- name: tmp
  emptyDir: {}
{{- end }}

{{/*
One Deployment of a flashsale process:
(dict "root" $ "component" "queue-server" "module" "queue_server" "values" .Values.queueServer)
A component with a port gets probes on /healthz; one with autoscaling enabled leaves its
replica count to the HPA.
*/}}
{{- define "flashsale.deployment" -}}
{{- $root := .root -}}
{{- $v := .values -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "flashsale.fullname" $root }}-{{ .component }}
  labels:
    {{- include "flashsale.labels" . | nindent 4 }}
spec:
  {{- if not (and $v.autoscaling $v.autoscaling.enabled) }}
  replicas: {{ $v.replicas }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "flashsale.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "flashsale.selectorLabels" . | nindent 8 }}
      annotations:
        {{- if not $root.Values.secrets.existingSecret }}
        # A new secret rolls the pods (they read it only at their start).
        checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
        {{- end }}
        {{- if and $v.port $root.Values.metrics.scrapeAnnotations }}
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ $v.port | quote }}
        prometheus.io/path: /metrics
        {{- end }}
        {{- with $root.Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      # No Service links: a Service named like "flashsale-shop" would otherwise inject
      # FLASHSALE_SHOP_PORT=tcp://..., which the settings read as the shop's port and refuse.
      enableServiceLinks: false
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      # The processes drain for up to 10 s on SIGTERM.
      terminationGracePeriodSeconds: 20
      containers:
        - name: {{ .component }}
          image: {{ include "flashsale.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          # The image's entry point is the `flashsale` CLI; one process is `python -m <module>`.
          command: ["python", "-m", {{ .module | quote }}]
          env:
            {{- include "flashsale.env" $root | nindent 12 }}
          {{- if $v.port }}
          ports:
            - name: http
              containerPort: {{ $v.port }}
              protocol: TCP
          startupProbe:
            httpGet: {path: /healthz, port: http}
            {{- toYaml $root.Values.probes.startup | nindent 12 }}
          readinessProbe:
            httpGet: {path: /healthz, port: http}
            {{- toYaml $root.Values.probes.readiness | nindent 12 }}
          livenessProbe:
            httpGet: {path: /healthz, port: http}
            {{- toYaml $root.Values.probes.liveness | nindent 12 }}
          {{- end }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        {{- include "flashsale.tmpVolume" . | nindent 8 }}
      {{- with $root.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}

{{/* A Service in front of a component's http port. */}}
{{- define "flashsale.service" -}}
{{- $v := .values -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "flashsale.fullname" .root }}-{{ .component }}
  labels:
    {{- include "flashsale.labels" . | nindent 4 }}
spec:
  type: {{ $v.service.type }}
  selector:
    {{- include "flashsale.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ $v.service.port }}
      targetPort: http
      protocol: TCP
{{- end }}
