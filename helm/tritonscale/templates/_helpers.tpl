{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "tritonscale.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: release name + chart name, unless the release name already contains it.
*/}}
{{- define "tritonscale.fullname" -}}
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
chart label value: name-version.
*/}}
{{- define "tritonscale.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels (stable across upgrades: never add to these).
*/}}
{{- define "tritonscale.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tritonscale.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
Common labels on every resource.
*/}}
{{- define "tritonscale.labels" -}}
helm.sh/chart: {{ include "tritonscale.chart" . }}
{{ include "tritonscale.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: tritonscale
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Name of shard N's Deployment (and PodDisruptionBudget): the full name when the
operator is not sharded (shards: 1), else "<fullname>-shard-N". Called with
(list $root N).
*/}}
{{- define "tritonscale.shardName" -}}
{{- $root := index . 0 }}
{{- if gt (int $root.Values.shards) 1 }}
{{- printf "%s-shard-%d" (include "tritonscale.fullname" $root | trunc 55 | trimSuffix "-") (int (index . 1)) }}
{{- else }}
{{- include "tritonscale.fullname" $root }}
{{- end }}
{{- end }}

{{/*
Kopf peering name of shard N: peering.name, with "-shard-N" when sharded (each
shard elects its own active replica). Called with (list $root N).
*/}}
{{- define "tritonscale.peeringName" -}}
{{- $root := index . 0 }}
{{- if gt (int $root.Values.shards) 1 }}
{{- printf "%s-shard-%d" $root.Values.peering.name (int (index . 1)) }}
{{- else }}
{{- $root.Values.peering.name }}
{{- end }}
{{- end }}

{{/*
ServiceAccount name.
*/}}
{{- define "tritonscale.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tritonscale.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Operator image reference: registry/repository:tag or @digest.
*/}}
{{- define "tritonscale.image" -}}
{{- $repo := .Values.image.repository }}
{{- if .Values.image.registry }}
{{- $repo = printf "%s/%s" (trimSuffix "/" .Values.image.registry) .Values.image.repository }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
"true" when the operator watches every namespace (no watchNamespaces given).
*/}}
{{- define "tritonscale.clusterWide" -}}
{{- if not .Values.watchNamespaces }}true{{ end }}
{{- end }}

{{/*
Cross-value rules the JSON schema cannot express readably; included by the
Deployment so `helm template`/`install` fail with a clear message.
*/}}
{{- define "tritonscale.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.peering.enabled) }}
{{- fail "replicaCount > 1 requires peering.enabled=true: without Kopf peering every replica would reconcile the same ScaledModels at once" }}
{{- end }}
{{- if ne (len .Values.watchNamespaces) (len (uniq .Values.watchNamespaces)) }}
{{- fail "watchNamespaces must not list a namespace twice" }}
{{- end }}
{{- if not (include "tritonscale.prometheusAllowlist" .) }}
{{- fail "prometheus.url or prometheus.allowedUrls must be set: the operator queries only allowed Prometheus URLs (use [\"*\"] to allow any)" }}
{{- end }}
{{- end }}

{{/*
The Prometheus base URLs ScaledModels may query, comma separated
(TRITONSCALE_ALLOWED_PROMETHEUS_URLS): prometheus.allowedUrls, else prometheus.url.
*/}}
{{- define "tritonscale.prometheusAllowlist" -}}
{{- $urls := .Values.prometheus.allowedUrls | default (compact (list .Values.prometheus.url)) -}}
{{- join "," $urls -}}
{{- end }}

{{/*
The namespaced rules the operator needs (for ScaledModels, their Triton
Deployments/Services, pod readiness, Events). Shared by the ClusterRole of a
cluster-wide install and the per-namespace Roles of a namespaced one.
*/}}
{{- define "tritonscale.namespacedRules" -}}
# ScaledModels: watch them, patch Kopf's annotations/finalizers on them.
- apiGroups: ["tritonscale.io"]
  resources: ["scaledmodels"]
  verbs: ["get", "list", "watch", "patch", "update"]
# Write status (placements, conditions, last decision).
- apiGroups: ["tritonscale.io"]
  resources: ["scaledmodels/status"]
  verbs: ["get", "patch", "update"]
# Owned objects carry blockOwnerDeletion=true; with the
# OwnerReferencesPermissionEnforcement admission plugin that needs this.
- apiGroups: ["tritonscale.io"]
  resources: ["scaledmodels/finalizers"]
  verbs: ["update"]
# The Triton Deployments (server-side apply = create + patch).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# The model's Service.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# spec.cascade: the router's and the threshold's ConfigMaps (server-side apply; read
# before writing so a ConfigMap the operator did not create is never taken over).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "patch", "delete"]
# spec.routing.mode gateway: weighted Gateway API routes (server-side apply). Harmless
# without the Gateway API CRDs: RBAC names resources, it does not need them to exist.
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes", "grpcroutes"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# Triton pods: readiness and (direct-scrape signal source) their IPs.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# Events explaining every plan change (core/v1 and events.k8s.io/v1).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
