{{/*
The Sidegate containers, as named templates a parent chart can include in its own pod spec (named
templates are global to a chart and its dependencies; pass this chart's context, .Subcharts.sidegate,
so they read this chart's values). With `sidegate: {mode: sidecar, sidecar: {app: {enabled: false}}}`
in the parent's values:

  spec:
    serviceAccountName: {{ include "sidegate.serviceAccountName" .Subcharts.sidegate }}
    securityContext: {{- include "sidegate.podSecurityContext" .Subcharts.sidegate | nindent 6 }}
    initContainers:
      {{- include "sidegate.initContainers" .Subcharts.sidegate | nindent 6 }}
    containers:
      - ...your app: call http://localhost:8080/v1 ...
    volumes:
      {{- include "sidegate.volumes" .Subcharts.sidegate | nindent 6 }}
 In gateway mode Envoy is the main container
(`sidegate.envoy`) and the rest stay native sidecars, as in k8s/base/deployment.yaml.
*/}}

{{- define "sidegate.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
{{- end -}}

{{- define "sidegate.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "sidegate.storeEnv" -}}
{{- if .Values.store.embedded }}
- {name: SIDEGATE_REDIS_URL, value: "redis://127.0.0.1:{{ .Values.store.embeddedPort }}/0"}
{{- else if .Values.store.existingSecret }}
- name: SIDEGATE_REDIS_URL
  valueFrom:
    secretKeyRef: {name: {{ .Values.store.existingSecret }}, key: {{ .Values.store.urlKey }}}
{{- else if .Values.store.url }}
- {name: SIDEGATE_REDIS_URL, value: {{ .Values.store.url | quote }}}
{{- end }}
{{- end -}}

{{/* Provider keys by the variable names the config declares (providers.*.api_key_env). */}}
{{- define "sidegate.providerEnv" -}}
{{- $secret := include "sidegate.providerSecret" . -}}
{{- $keys := .Values.providerKeys.keys -}}
{{- if not $keys -}}
{{- $keys = dict -}}
{{- range $name, $p := .Values.config.providers -}}
{{- if $p.api_key_env -}}{{- $_ := set $keys $p.api_key_env $p.api_key_env -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- range $var, $key := $keys }}
- name: {{ $var }}
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ $key }}}
{{- end }}
{{- end -}}

{{- define "sidegate.grpcProbes" -}}
{{- $cmd := list "sidegate-probe" "check" .name "--port" (toString .port) -}}
startupProbe:
  exec: {command: {{ toJson $cmd }}}
  timeoutSeconds: 5
  periodSeconds: 1
  failureThreshold: {{ .startup }}
readinessProbe:
  exec: {command: {{ toJson $cmd }}}
  periodSeconds: 5
  timeoutSeconds: 5
livenessProbe:
  exec: {command: {{ toJson $cmd }}}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
{{- end -}}

{{/* Envoy: the main container in gateway mode, a native sidecar (restartPolicy: Always) in sidecar mode. */}}
{{- define "sidegate.envoy" -}}
{{- $p := include "sidegate.ports" . | fromYaml -}}
- name: envoy
  image: {{ include "sidegate.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- if eq .Values.mode "sidecar" }}
  restartPolicy: Always
  {{- end }}
  command: [envoy]
  # The bootstrap the `envoy-bootstrap` init container rendered from the mounted config. With
  # services.xds it only points at this pod's xDS server: routes and clusters come over ADS.
  args: [-c, /run/sidegate-envoy/envoy.yaml, --drain-time-s, {{ .Values.drainSeconds | quote }}, --log-level, warning]
  env:
    # Direct and try lanes: Envoy injects the provider key itself (%ENVIRONMENT(...)% and the try
    # lane's Lua filter in its config): the same variables as extproc's.
    {{- include "sidegate.providerEnv" . | trim | nindent 4 }}
  ports:
    - {name: http, containerPort: {{ $p.listener }}}
  # Envoy's admin listens on 127.0.0.1 only: the probes run `sidegate-probe` in the container
  # (an HTTP GET of admin /ready on loopback).
  startupProbe:
    exec: {command: [sidegate-probe, check, envoy, --port, {{ $p.envoyAdmin | quote }}]}
    periodSeconds: 1
    timeoutSeconds: 3
    failureThreshold: 30
  readinessProbe:
    exec: {command: [sidegate-probe, check, envoy, --port, {{ $p.envoyAdmin | quote }}]}
    periodSeconds: 5
    timeoutSeconds: 3
  livenessProbe:
    exec: {command: [sidegate-probe, check, envoy, --port, {{ $p.envoyAdmin | quote }}]}
    periodSeconds: 15
    timeoutSeconds: 3
    failureThreshold: 4
  lifecycle:
    preStop:
      exec: {command: [sidegate-probe, drain, --port, {{ $p.envoyAdmin | quote }}, --seconds, {{ .Values.drainSeconds | quote }}]}
  resources: {{- toYaml .Values.resources.envoy | nindent 4 }}
  securityContext: {{- include "sidegate.securityContext" . | nindent 4 }}
  volumeMounts:
    - {name: config, mountPath: /etc/sidegate, readOnly: true}
    - {name: internal, mountPath: /run/sidegate, readOnly: true}
    - {name: envoy-bootstrap, mountPath: /run/sidegate-envoy, readOnly: true}
    - {name: tmp, mountPath: /tmp}
{{- end -}}

{{- define "sidegate.initContainers" -}}
{{- $p := include "sidegate.ports" . | fromYaml -}}
{{- $image := include "sidegate.image" . -}}
# A new internal token per pod (Envoy presents it to extproc, and authz if any, on every call), on
# the `internal` volume only Envoy and the services mount.
- name: internal-token
  image: {{ $image }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: [internal-token, -o, /run/sidegate/internal-token.yaml, --keep]
  resources: {{- toYaml .Values.resources.small | nindent 4 }}
  securityContext: {{- include "sidegate.securityContext" . | nindent 4 }}
  volumeMounts:
    - {name: internal, mountPath: /run/sidegate}
# Envoy's bootstrap, rendered from the mounted config at pod start (Helm cannot run the renderer,
# and a bootstrap rendered here can never drift from the config).
- name: envoy-bootstrap
  image: {{ $image }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: [render, -c, /etc/sidegate/sidegate.yaml, -o, /run/sidegate-envoy/envoy.yaml]
  resources: {{- toYaml .Values.resources.small | nindent 4 }}
  securityContext: {{- include "sidegate.securityContext" . | nindent 4 }}
  volumeMounts:
    - {name: config, mountPath: /etc/sidegate, readOnly: true}
    - {name: envoy-bootstrap, mountPath: /run/sidegate-envoy}
{{- if .Values.store.embedded }}
# The embedded store: Valkey on the pod's loopback, append-only file on an emptyDir (kept across the
# container's restarts, not the pod's), as `sidegate up` runs it (sidegate/store/valkey.py).
{{- $connect := list "python" "-c" "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 2).close()" (toString .Values.store.embeddedPort) }}
- name: store
  image: {{ $image }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  restartPolicy: Always
  command: [python, -c, "import os, sys; from pathlib import Path; from sidegate.store.valkey import embedded_valkey_cmd; cmd = embedded_valkey_cmd(int(sys.argv[1]), Path(sys.argv[2])); os.execv(cmd[0], cmd)", {{ .Values.store.embeddedPort | quote }}, /var/lib/sidegate/store]
  startupProbe:
    exec: {command: {{ toJson $connect }}}
    periodSeconds: 1
    timeoutSeconds: 3
    failureThreshold: 30
  livenessProbe:
    exec: {command: {{ toJson $connect }}}
    periodSeconds: 10
    timeoutSeconds: 3
  resources: {{- toYaml .Values.resources.store | nindent 4 }}
  securityContext: {{- include "sidegate.securityContext" . | nindent 4 }}
  volumeMounts:
    - {name: store-data, mountPath: /var/lib/sidegate/store}
{{- end }}
{{- /* authz only with services.auth: ext_authz (the gRPC front); by default extproc checks the keys */}}
{{- range $name := ternary (list "authz" "extproc") (list "extproc") (not (empty (include "sidegate.authz" .))) }}
- name: {{ $name }}
  image: {{ $image }}
  imagePullPolicy: {{ $.Values.image.pullPolicy }}
  restartPolicy: Always
  args: [serve, {{ $name }}, -c, /etc/sidegate/sidegate.yaml]
  env:
    {{- include "sidegate.storeEnv" $ | trim | nindent 4 }}
    {{- if eq $name "extproc" }}
    {{- if $.Values.store.qdrantUrl }}
    - {name: SIDEGATE_QDRANT_URL, value: {{ $.Values.store.qdrantUrl | quote }}}
    {{- end }}
    - {name: SIDEGATE_DRAIN_S, value: {{ $.Values.extprocDrainSeconds | quote }}}
    # Provider keys: the variable names are the config's providers.*.api_key_env.
    {{- include "sidegate.providerEnv" $ | trim | nindent 4 }}
    {{- end }}
  ports:
    - {name: grpc-{{ $name }}, containerPort: {{ get $p $name }}}
    {{- if and (eq $name "extproc") (eq (include "sidegate.front" $) "http") }}
    - {name: http-front, containerPort: {{ $p.front }}}   # loopback only, like grpc-extproc
    {{- end }}
    - {name: {{ $name }}-metrics, containerPort: {{ get $p (printf "%sMetrics" $name) }}}
  {{- include "sidegate.grpcProbes" (dict "name" $name "port" (get $p $name) "startup" (ternary 120 60 (eq $name "extproc"))) | nindent 2 }}
  resources: {{- toYaml (get $.Values.resources $name) | nindent 4 }}
  securityContext: {{- include "sidegate.securityContext" $ | nindent 4 }}
  volumeMounts:
    - {name: config, mountPath: /etc/sidegate, readOnly: true}
    - {name: internal, mountPath: /run/sidegate, readOnly: true}
    - {name: tmp, mountPath: /tmp}
    {{- if eq $name "extproc" }}
    - {name: ledger-spill, mountPath: /var/lib/sidegate/spill}
    {{- end }}
{{- end }}
{{- if include "sidegate.xds" . }}
# This pod's xDS server (loopback): serves Envoy its listener, routes and clusters from the store's
# routing version, and re-reads the mounted config every second, seeding a changed routing document
# into the store (a ConfigMap edit applies without a pod roll). The config is a directory mount,
# never subPath: subPath mounts are not updated by the kubelet.
- name: xds
  image: {{ $image }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  restartPolicy: Always
  args: [serve, xds, -c, /etc/sidegate/sidegate.yaml]
  env:
    {{- include "sidegate.storeEnv" . | trim | nindent 4 }}
  ports:
    - {name: grpc-xds, containerPort: {{ $p.xds }}}
  # It binds the pod's loopback, which a kubelet tcpSocket/grpc probe (from the node) cannot reach:
  # connect from inside the container instead.
  {{- $connect := list "python" "-c" "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 2).close()" (toString $p.xds) }}
  startupProbe:
    exec: {command: {{ toJson $connect }}}
    periodSeconds: 1
    timeoutSeconds: 3
    failureThreshold: 60
  livenessProbe:
    exec: {command: {{ toJson $connect }}}
    periodSeconds: 10
    timeoutSeconds: 3
    failureThreshold: 3
  resources: {{- toYaml .Values.resources.xds | nindent 4 }}
  securityContext: {{- include "sidegate.securityContext" . | nindent 4 }}
  volumeMounts:
    - {name: config, mountPath: /etc/sidegate, readOnly: true}
    - {name: internal, mountPath: /run/sidegate, readOnly: true}
    - {name: tmp, mountPath: /tmp}
{{- end }}
{{- if .Values.envoyMetrics.enabled }}
# Only GET /stats/prometheus of Envoy's loopback admin, on the pod IP (for Prometheus, then KEDA or
# a custom-metrics HPA): a second Envoy, no hot restart (the pod shares one IPC namespace).
- name: envoy-metrics
  image: {{ $image }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  restartPolicy: Always
  command: [envoy]
  args: [-c, /etc/sidegate/envoy-metrics.yaml, --disable-hot-restart, --log-level, warning]
  ports:
    - {name: envoy-metrics, containerPort: {{ .Values.envoyMetrics.port }}}
  livenessProbe:
    tcpSocket: {port: {{ .Values.envoyMetrics.port }}}
    periodSeconds: 15
  resources: {{- toYaml .Values.resources.small | nindent 4 }}
  securityContext: {{- include "sidegate.securityContext" . | nindent 4 }}
  volumeMounts:
    - {name: config, mountPath: /etc/sidegate, readOnly: true}
    - {name: tmp, mountPath: /tmp}
{{- end }}
{{- if eq .Values.mode "sidecar" }}
{{ include "sidegate.envoy" . }}
{{- end }}
{{- end -}}

{{- define "sidegate.volumes" -}}
# A directory mount of the ConfigMap (no subPath anywhere): the kubelet swaps its `..data` symlink
# when the ConfigMap changes, and the xDS server picks the new file up.
- name: config
  configMap: {name: {{ include "sidegate.fullname" . }}-config}
- name: envoy-bootstrap
  emptyDir: {medium: Memory, sizeLimit: 4Mi}
- name: tmp
  emptyDir: {sizeLimit: 64Mi}
- name: internal
  emptyDir: {medium: Memory, sizeLimit: 1Mi}
- name: ledger-spill
  emptyDir: {sizeLimit: {{ .Values.ledgerSpillSizeLimit }}}
{{- if .Values.store.embedded }}
- name: store-data
  emptyDir: {sizeLimit: 1Gi}
{{- end }}
{{- end -}}
