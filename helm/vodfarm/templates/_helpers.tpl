{{/*
Chart name, truncated to the 63 characters a DNS label allows.
*/}}
{{- define "vodfarm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified release name: <release>-<chart> unless the release name
already contains the chart name.
*/}}
{{- define "vodfarm.fullname" -}}
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
Name of a role's objects: <fullname>-<component>.
Usage: include "vodfarm.componentName" (dict "ctx" $ "component" "coordinator")
*/}}
{{- define "vodfarm.componentName" -}}
{{- printf "%s-%s" (include "vodfarm.fullname" .ctx) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Chart label value.
*/}}
{{- define "vodfarm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels common to every object.
*/}}
{{- define "vodfarm.labels" -}}
helm.sh/chart: {{ include "vodfarm.chart" . }}
{{ include "vodfarm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vodfarm
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels of the release.
*/}}
{{- define "vodfarm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vodfarm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of one role's objects.
Usage: include "vodfarm.componentLabels" (dict "ctx" $ "component" "coordinator")
*/}}
{{- define "vodfarm.componentLabels" -}}
{{ include "vodfarm.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Selector labels of one role (stable across upgrades: never add to them).
Usage: include "vodfarm.componentSelectorLabels" (dict "ctx" $ "component" "coordinator")
*/}}
{{- define "vodfarm.componentSelectorLabels" -}}
{{ include "vodfarm.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
The image reference: repository@digest, or repository:tag (tag defaults to
the chart's appVersion).
*/}}
{{- define "vodfarm.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
{{- end }}

{{/*
Fails the render when required settings are missing. Renders nothing.
*/}}
{{- define "vodfarm.validate" -}}
{{- if and (not .Values.database.existingSecret) (not .Values.database.url) }}
{{- fail "vodfarm: set database.url, or database.existingSecret (and database.existingSecretKey) naming a Secret that holds the PostgreSQL URL" }}
{{- end }}
{{- if and (not .Values.auth.existingSecret) (not .Values.auth.workerToken) }}
{{- fail "vodfarm: set auth.workerToken, or auth.existingSecret naming a Secret that holds it under auth.workerTokenKey" }}
{{- end }}
{{- end }}

{{/*
"true" when the chart must create its own Secret (some secret value is
given inline rather than through an existing Secret), else "".
*/}}
{{- define "vodfarm.createSecret" -}}
{{- if or (not .Values.database.existingSecret) (not .Values.auth.existingSecret) -}}
true
{{- end }}
{{- end }}

{{/*
Secret and key holding DATABASE_URL.
*/}}
{{- define "vodfarm.databaseSecretName" -}}
{{- default (include "vodfarm.fullname" .) .Values.database.existingSecret }}
{{- end }}

{{- define "vodfarm.databaseSecretKey" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecretKey }}
{{- else -}}
database-url
{{- end }}
{{- end }}

{{/*
Secret and keys holding the worker and admin tokens.
*/}}
{{- define "vodfarm.authSecretName" -}}
{{- default (include "vodfarm.fullname" .) .Values.auth.existingSecret }}
{{- end }}

{{- define "vodfarm.workerTokenKey" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.workerTokenKey }}
{{- else -}}
worker-token
{{- end }}
{{- end }}

{{- define "vodfarm.adminTokenKey" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.adminTokenKey }}
{{- else -}}
admin-token
{{- end }}
{{- end }}

{{/*
"true" when an admin token may be available to the pods, else "".
*/}}
{{- define "vodfarm.hasAdminToken" -}}
{{- if or .Values.auth.existingSecret .Values.auth.adminToken -}}
true
{{- end }}
{{- end }}

{{/*
Env entry: DATABASE_URL from its Secret.
*/}}
{{- define "vodfarm.databaseEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "vodfarm.databaseSecretName" . }}
      key: {{ include "vodfarm.databaseSecretKey" . }}
{{- end }}

{{/*
Env entries: the worker token, and the admin token when there is one (the
admin key is optional in an existing Secret).
*/}}
{{- define "vodfarm.authEnv" -}}
- name: VODFARM_WORKER_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "vodfarm.authSecretName" . }}
      key: {{ include "vodfarm.workerTokenKey" . }}
{{- if include "vodfarm.hasAdminToken" . }}
- name: VODFARM_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "vodfarm.authSecretName" . }}
      key: {{ include "vodfarm.adminTokenKey" . }}
      optional: true
{{- end }}
{{- end }}

{{/*
Env entries: logging, shared by every role.
*/}}
{{- define "vodfarm.logEnv" -}}
- name: VODFARM_LOG_FORMAT
  value: {{ .Values.log.format | quote }}
- name: RUST_LOG
  value: {{ .Values.log.level | quote }}
{{- end }}
