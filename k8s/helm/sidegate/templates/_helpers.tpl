{{/* Names, labels and the effective config. */}}

{{- define "sidegate.fullname" -}}
{{- if contains "sidegate" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-sidegate" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The Deployment (and HPA, PDB, NetworkPolicy) name: the gateway's, or the app's in sidecar mode. */}}
{{- define "sidegate.workload" -}}
{{- if eq .Values.mode "sidecar" -}}{{ .Values.sidecar.app.name }}{{- else -}}{{ include "sidegate.fullname" . }}{{- end -}}
{{- end -}}

{{- define "sidegate.selectorLabels" -}}
app.kubernetes.io/name: {{ if eq .Values.mode "sidecar" }}{{ .Values.sidecar.app.name }}{{ else }}sidegate{{ end }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sidegate.labels" -}}
{{ include "sidegate.selectorLabels" . }}
app.kubernetes.io/part-of: sidegate
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "sidegate.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "sidegate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ .Values.serviceAccount.name | default (include "sidegate.fullname" .) }}{{- else -}}{{ .Values.serviceAccount.name | default "default" }}{{- end -}}
{{- end -}}

{{- define "sidegate.providerSecret" -}}
{{- if .Values.providerKeys.createSecret -}}{{ include "sidegate.fullname" . }}-provider-keys{{- else -}}{{ .Values.providerKeys.existingSecret }}{{- end -}}
{{- end -}}

{{/* The Sidegate config as mounted: values' `config` with the mode's listener host. */}}
{{- define "sidegate.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $listener := deepCopy (default (dict) $cfg.listener) -}}
{{- if not (hasKey $listener "host") -}}
{{- $_ := set $listener "host" (ternary "127.0.0.1" "0.0.0.0" (eq .Values.mode "sidecar")) -}}
{{- end -}}
{{- $_ := set $cfg "listener" $listener -}}
{{- $svc := default (dict) $cfg.services -}}
{{- if and (hasKey $svc "extproc_workers") (eq (toString $svc.extproc_workers) "0") -}}
{{- /* auto (0) resolved here, not in the pod: each container sees its own CPU limit, so the
bootstrap's init container, xds and extproc could count differently (Envoy would then send to a
worker that does not exist). The extproc container's limit is the one that matters; the rule is
sidegate/config/cpus.py's (one worker per two CPUs, at least one). */ -}}
{{- $svc = deepCopy $svc -}}
{{- $_ := set $svc "extproc_workers" (include "sidegate.autoWorkers" . | int) -}}
{{- $_ := set $cfg "services" $svc -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* config.services.extproc_workers: 0 (auto) -> a number, from resources.extproc.limits.cpu. */}}
{{- define "sidegate.autoWorkers" -}}
{{- $limit := dig "extproc" "limits" "cpu" "" (default (dict) .Values.resources) -}}
{{- if not $limit -}}
{{- fail "config.services.extproc_workers: 0 (auto) needs resources.extproc.limits.cpu (the chart derives the worker count from it, one per two CPUs); or set a number" -}}
{{- end -}}
{{- $raw := toString $limit -}}
{{- $milli := 0 -}}
{{- if hasSuffix "m" $raw -}}
{{- $milli = atoi (trimSuffix "m" $raw) -}}
{{- else -}}
{{- $milli = mulf (float64 $raw) 1000 | int -}}
{{- end -}}
{{- $cpus := divf $milli 1000 | ceil | int -}}
{{- max 1 (div $cpus 2) -}}
{{- end -}}

{{/*
What a pod must restart for: the config without its routing sections (providers, models,
quota.prices, defaults), which the xDS server applies live. With services.xds off Envoy's bootstrap
holds the routes, so the whole config counts.
*/}}
{{- define "sidegate.configShape" -}}
{{- $cfg := include "sidegate.config" . | fromYaml -}}
{{- if (include "sidegate.xds" .) -}}
{{- $cfg = omit $cfg "providers" "models" "defaults" -}}
{{- if $cfg.quota -}}
{{- $_ := set $cfg "quota" (omit $cfg.quota "prices") -}}
{{- end -}}
{{- end -}}
{{- toJson $cfg -}}
{{- end -}}

{{/* Non-empty when Envoy gets its routes over xDS (services.xds, default true). */}}
{{- define "sidegate.xds" -}}
{{- $svc := default (dict) .Values.config.services -}}
{{- if or (not (hasKey $svc "xds")) $svc.xds -}}true{{- end -}}
{{- end -}}

{{/*
Non-empty when the config runs the separate authz service (services.auth: ext_authz): the pod gets
its container back. The default, `inline`, has extproc check the tenant keys itself.
*/}}
{{- define "sidegate.authz" -}}
{{- $svc := default (dict) .Values.config.services -}}
{{- if eq (toString (default "inline" $svc.auth)) "ext_authz" -}}true{{- end -}}
{{- end -}}

{{/* The front the config selects (sidegate/config/services.py): `front` if set, else `ext_proc` with
auth: ext_authz, else `http`. */}}
{{- define "sidegate.front" -}}
{{- $svc := default (dict) .Values.config.services -}}
{{- if hasKey $svc "front" -}}{{ $svc.front }}{{- else if include "sidegate.authz" . -}}ext_proc{{- else -}}http{{- end -}}
{{- end -}}

{{/* The ports the config names, with Sidegate's defaults (sidegate/config/services.py). */}}
{{- define "sidegate.ports" -}}
{{- $l := default (dict) .Values.config.listener -}}
{{- $s := default (dict) .Values.config.services -}}
listener: {{ $l.port | default 8080 }}
envoyAdmin: {{ $l.admin_port | default 9901 }}
authz: {{ $s.authz_port | default 9001 }}
extproc: {{ $s.extproc_port | default 9002 }}
front: {{ $s.front_port | default 9004 }}
extprocMetrics: {{ $s.metrics_port | default 9464 }}
authzMetrics: {{ $s.authz_metrics_port | default 9465 }}
admin: {{ $s.admin_port | default 9003 }}
xds: {{ $s.xds_port | default 9020 }}
{{- end -}}

{{- define "sidegate.validate" -}}
{{- if not (has .Values.mode (list "gateway" "sidecar")) -}}
{{- fail (printf "mode must be gateway or sidecar, not %q" .Values.mode) -}}
{{- end -}}
{{- if and .Values.autoscaling.hpa.enabled .Values.autoscaling.keda.enabled -}}
{{- fail "autoscaling.hpa and autoscaling.keda are exclusive: KEDA creates its own HPA" -}}
{{- end -}}
{{- if and .Values.admin.enabled (eq .Values.mode "sidecar") -}}
{{- fail "admin.enabled: run the admin API with a gateway-mode release (it is shared, not per app pod)" -}}
{{- end -}}
{{- if and .Values.admin.enabled (not .Values.admin.tokenSecret.name) -}}
{{- fail "admin.enabled needs admin.tokenSecret.name: a Secret holding the admin token" -}}
{{- end -}}
{{- if and .Values.admin.enabled (not .Values.admin.allowedFrom) -}}
{{- fail "admin.allowedFrom must name who may reach the admin API" -}}
{{- end -}}
{{- if and .Values.store.embedded (or .Values.autoscaling.hpa.enabled .Values.autoscaling.keda.enabled (gt (int .Values.replicas) 1)) -}}
{{- fail "store.embedded gives each pod its own store: only with replicas: 1 and no HPA/KEDA (use store.url for more)" -}}
{{- end -}}
{{- if and .Values.autoscaling.keda.enabled (not .Values.envoyMetrics.enabled) -}}
{{- fail "autoscaling.keda scales on Envoy's active requests: it needs envoyMetrics.enabled" -}}
{{- end -}}
{{- if and .Values.autoscaling.hpa.activeRequestsPerPod (not .Values.envoyMetrics.enabled) -}}
{{- fail "autoscaling.hpa.activeRequestsPerPod needs envoyMetrics.enabled" -}}
{{- end -}}
{{- end -}}

{{/* Non-empty when this chart deploys the workload (not when a parent chart's pod includes the containers). */}}
{{- define "sidegate.ownsWorkload" -}}
{{- if or (eq .Values.mode "gateway") .Values.sidecar.app.enabled -}}true{{- end -}}
{{- end -}}
