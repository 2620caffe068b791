{{/* Names and labels. */}}
{{- define "flagroll.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "flagroll.fullname" -}}
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

{{- define "flagroll.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flagroll.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "flagroll.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "flagroll.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: {{ .Values.mode }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "flagroll.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "flagroll.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "flagroll.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The flag store: `file` in sidecar mode, `configmap` by default otherwise. */}}
{{- define "flagroll.storeType" -}}
{{- if .Values.flagStore.type }}
{{- .Values.flagStore.type }}
{{- else if eq .Values.mode "sidecar" }}
{{- "file" }}
{{- else }}
{{- "configmap" }}
{{- end }}
{{- end }}

{{- define "flagroll.storeNamespace" -}}
{{- default .Release.Namespace .Values.flagStore.namespace }}
{{- end }}

{{- define "flagroll.leaseName" -}}
{{- default (include "flagroll.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "flagroll.policiesConfigMap" -}}
{{- default (printf "%s-policies" (include "flagroll.fullname" .)) .Values.policies.existingConfigMap }}
{{- end }}

{{/* Does the pod talk to the Kubernetes API (a Kubernetes store or a Lease)? */}}
{{- define "flagroll.needsApi" -}}
{{- if or (ne (include "flagroll.storeType" .) "file") (and (eq .Values.mode "deployment") .Values.leaderElection.enabled) }}true{{ end }}
{{- end }}

{{- define "flagroll.listens" -}}
{{- if ne .Values.mode "cronjob" }}true{{ end }}
{{- end }}

{{/* The environment variable holding the value of the i-th of prometheus.headers. */}}
{{- define "flagroll.headerVariable" -}}PROMETHEUS_HEADER_{{ . }}{{- end }}

{{- define "flagroll.promAuthDir" -}}/etc/flagroll/prometheus{{- end }}
{{- define "flagroll.policiesDir" -}}/etc/flagroll/policies{{- end }}

{{/* `flagroll run` arguments, one per list item. */}}
{{- define "flagroll.args" -}}
- --log-format={{ .Values.logFormat }}
- --log-level={{ .Values.logLevel }}
- run
- --policies={{ include "flagroll.policiesDir" . }}
- --prometheus={{ required "prometheus.url is required" .Values.prometheus.url }}
- --query-timeout={{ .Values.prometheus.queryTimeout }}
- --max-concurrent-queries={{ .Values.prometheus.maxConcurrentQueries }}
{{- with .Values.prometheus.auth }}
{{- if .bearerTokenKey }}
- --prometheus-bearer-token-file={{ include "flagroll.promAuthDir" $ }}/{{ .bearerTokenKey }}
{{- end }}
{{- if .username }}
- --prometheus-username={{ .username }}
{{- end }}
{{- if .passwordKey }}
- --prometheus-password-file={{ include "flagroll.promAuthDir" $ }}/{{ .passwordKey }}
{{- end }}
{{- if .caKey }}
- --prometheus-ca-file={{ include "flagroll.promAuthDir" $ }}/{{ .caKey }}
{{- end }}
{{- end }}
{{- range $i, $header := .Values.prometheus.headers }}
- {{ printf "--prometheus-header=%s=env:%s" $header.name (include "flagroll.headerVariable" $i) | quote }}
{{- end }}
{{- if .Values.prometheus.insecureSkipVerify }}
- --prometheus-insecure-skip-verify
{{- end }}
{{- $store := include "flagroll.storeType" . }}
{{- if eq $store "file" }}
- --flags={{ .Values.sidecar.mountPath }}/{{ .Values.sidecar.flagFile }}
{{- else }}
- --flag-store={{ $store }}
- --flag-object={{ include "flagroll.storeNamespace" . }}/{{ required "flagStore.name is required with a configmap or featureflag store" .Values.flagStore.name }}
{{- if eq $store "configmap" }}
- --configmap-key={{ .Values.flagStore.configMapKey }}
{{- end }}
{{- end }}
{{- with .Values.decisionLog }}
- --decision-log={{ . }}
{{- end }}
{{- with .Values.decisionLogRotation }}
- --decision-log-max-bytes={{ int .maxMiB }}Mi
- --decision-log-keep={{ int .keep }}
{{- end }}
- --decision-log-heartbeat={{ .Values.decisionLogHeartbeat }}
{{- if include "flagroll.listens" . }}
- --listen=0.0.0.0:{{ .Values.listen.port }}
{{- end }}
- --shutdown-timeout={{ .Values.shutdownTimeout }}
{{- with .Values.verifyServing }}
{{- if .ofrepUrl }}
- --verify-ofrep={{ .ofrepUrl }}
- --verify-timeout={{ .timeout }}
- --verify-sample={{ .sample }}
{{- if not .share }}
- --no-verify-share
{{- end }}
{{- end }}
{{- end }}
{{- if and (eq .Values.mode "deployment") .Values.leaderElection.enabled }}
- --leader-election-lease={{ .Release.Namespace }}/{{ include "flagroll.leaseName" . }}
{{- end }}
{{- if eq .Values.mode "cronjob" }}
- --once
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/* The flagroll container, shared by every mode. */}}
{{- define "flagroll.container" -}}
- name: flagroll
  image: {{ include "flagroll.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    {{- include "flagroll.args" . | nindent 4 }}
  env:
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    {{- range $i, $header := .Values.prometheus.headers }}
    - name: {{ include "flagroll.headerVariable" $i }}
      {{- if $header.secretKeyRef }}
      valueFrom:
        secretKeyRef:
          name: {{ $header.secretKeyRef.name | quote }}
          key: {{ $header.secretKeyRef.key | quote }}
      {{- else }}
      value: {{ $header.value | quote }}
      {{- end }}
    {{- end }}
    {{- with .Values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- if include "flagroll.listens" . }}
  ports:
    - name: http-metrics
      containerPort: {{ .Values.listen.port }}
      protocol: TCP
  {{- with .Values.probes.liveness }}
  {{- if .enabled }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: http-metrics
    initialDelaySeconds: {{ .initialDelaySeconds }}
    periodSeconds: {{ .periodSeconds }}
    timeoutSeconds: {{ .timeoutSeconds }}
    failureThreshold: {{ .failureThreshold }}
  {{- end }}
  {{- end }}
  {{- with .Values.probes.readiness }}
  {{- if .enabled }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: http-metrics
    initialDelaySeconds: {{ .initialDelaySeconds }}
    periodSeconds: {{ .periodSeconds }}
    timeoutSeconds: {{ .timeoutSeconds }}
    failureThreshold: {{ .failureThreshold }}
  {{- end }}
  {{- end }}
  {{- end }}
  {{- with .Values.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: policies
      mountPath: {{ include "flagroll.policiesDir" . }}
      readOnly: true
    - name: tmp
      mountPath: /tmp
    {{- if .Values.prometheus.auth.existingSecret }}
    - name: prometheus-auth
      mountPath: {{ include "flagroll.promAuthDir" . }}
      readOnly: true
    {{- end }}
    {{- if eq (include "flagroll.storeType" .) "file" }}
    - name: flags
      mountPath: {{ .Values.sidecar.mountPath }}
    {{- end }}
{{- end }}

{{/* Seeds an empty flag document in the shared volume: flagd refuses to start on a missing file. */}}
{{- define "flagroll.initContainer" -}}
- name: flagroll-seed-flags
  image: {{ include "flagroll.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command:
    - sh
    - -c
    - '[ -e "$FLAG_FILE" ] || printf ''{"flags": {}}\n'' > "$FLAG_FILE"'
  env:
    - name: FLAG_FILE
      value: {{ printf "%s/%s" .Values.sidecar.mountPath .Values.sidecar.flagFile | quote }}
  resources:
    requests:
      cpu: 10m
      memory: 16Mi
    limits:
      memory: 32Mi
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: flags
      mountPath: {{ .Values.sidecar.mountPath }}
{{- end }}

{{/* The volumes the flagroll container mounts. */}}
{{- define "flagroll.volumes" -}}
- name: policies
  configMap:
    name: {{ include "flagroll.policiesConfigMap" . }}
- name: tmp
  emptyDir:
    sizeLimit: 16Mi
{{- if .Values.prometheus.auth.existingSecret }}
- name: prometheus-auth
  secret:
    secretName: {{ .Values.prometheus.auth.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- if eq (include "flagroll.storeType" .) "file" }}
- name: flags
  {{- if .Values.sidecar.flagVolume }}
  {{- toYaml .Values.sidecar.flagVolume | nindent 2 }}
  {{- else if gt (int .Values.decisionLogRotation.maxMiB) 0 }}
  {{- /* keep generations, the live file, one more (a rotation in progress, records past the limit), the flag file */}}
  emptyDir:
    sizeLimit: {{ add (mul (int .Values.decisionLogRotation.maxMiB) (add (int .Values.decisionLogRotation.keep) 2)) 64 }}Mi
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- end }}
{{- end }}

{{/* The flagd container of sidecar mode, reading the flag file flagroll writes. */}}
{{- define "flagroll.flagdContainer" -}}
- name: flagd
  image: {{ printf "%s:%s" .Values.sidecar.flagd.image.repository .Values.sidecar.flagd.image.tag | quote }}
  imagePullPolicy: {{ .Values.sidecar.flagd.image.pullPolicy }}
  args:
    - start
    - --port={{ .Values.sidecar.flagd.ports.evaluation }}
    - --management-port={{ .Values.sidecar.flagd.ports.management }}
    - --ofrep-port={{ .Values.sidecar.flagd.ports.ofrep }}
    {{- range .Values.sidecar.flagd.extraUris }}
    - --uri={{ . }}
    {{- end }}
    {{- /* Last: flagd lets a later source win a duplicated flag key, and flagroll's flags must win. */}}
    - --uri=file:{{ .Values.sidecar.mountPath }}/{{ .Values.sidecar.flagFile }}
    {{- range .Values.sidecar.flagd.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  ports:
    - name: grpc-flagd
      containerPort: {{ .Values.sidecar.flagd.ports.evaluation }}
      protocol: TCP
    - name: http-flagd-mgmt
      containerPort: {{ .Values.sidecar.flagd.ports.management }}
      protocol: TCP
    - name: http-ofrep
      containerPort: {{ .Values.sidecar.flagd.ports.ofrep }}
      protocol: TCP
  livenessProbe:
    httpGet:
      path: /healthz
      port: http-flagd-mgmt
    periodSeconds: 10
  readinessProbe:
    httpGet:
      path: /readyz
      port: http-flagd-mgmt
    periodSeconds: 10
  {{- with .Values.sidecar.flagd.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: flags
      mountPath: {{ .Values.sidecar.mountPath }}
      readOnly: true
{{- end }}

{{/* Pod-level settings shared by every mode. */}}
{{- define "flagroll.podSpecCommon" -}}
serviceAccountName: {{ include "flagroll.serviceAccountName" . }}
automountServiceAccountToken: {{ include "flagroll.needsApi" . | eq "true" }}
terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "flagroll.podMetadata" -}}
labels:
  {{- include "flagroll.selectorLabels" . | nindent 2 }}
  {{- with .Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .Values.podAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The RBAC rule of the flag store: the named object only. */}}
{{- define "flagroll.storeRule" -}}
{{- if eq (include "flagroll.storeType" .) "featureflag" }}
- apiGroups: ["core.openfeature.dev"]
  resources: ["featureflags"]
{{- else }}
- apiGroups: [""]
  resources: ["configmaps"]
{{- end }}
  resourceNames: [{{ .Values.flagStore.name | quote }}]
  verbs: ["get", "update"]
{{- end }}
