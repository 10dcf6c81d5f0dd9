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
{{- if or .Values.auth.adminToken .Values.auth.adminTokenKey }}
{{- fail "vodfarm: auth.adminToken and auth.adminTokenKey were renamed auth.operatorToken and auth.operatorTokenKey" }}
{{- end }}
{{- if and .Values.coordinator.enabled (not .Values.auth.existingSecret) (not .Values.auth.operatorToken) }}
{{- fail "vodfarm: the coordinator needs an operator token: set auth.operatorToken (e.g. openssl rand -hex 32), or auth.existingSecret holding it under auth.operatorTokenKey" }}
{{- end }}
{{- if and .Values.auth.operatorToken (eq .Values.auth.operatorToken .Values.auth.workerToken) }}
{{- fail "vodfarm: auth.operatorToken must differ from auth.workerToken (workers must not open the operator routes)" }}
{{- end }}
{{- if and (or .Values.api.enabled .Values.origin.enabled .Values.shield.enabled) (not .Values.auth.existingSecret) (not .Values.auth.signingSecret) }}
{{- fail "vodfarm: api, origin and shield need the playback signing secret: set auth.signingSecret, or auth.existingSecret holding it under auth.signingSecretKey" }}
{{- end }}
{{- if and (or .Values.api.enabled .Values.worker.enabled .Values.origin.enabled) (not .Values.store.url) }}
{{- fail "vodfarm: api, worker and origin need the object store: set store.url (s3://BUCKET[/PREFIX])" }}
{{- end }}
{{- if and (not .Values.store.existingSecret) (ne (empty .Values.store.accessKeyId) (empty .Values.store.secretAccessKey)) }}
{{- fail "vodfarm: set both store.accessKeyId and store.secretAccessKey, or neither" }}
{{- end }}
{{- if and .Values.worker.enabled (not .Values.worker.coordinatorUrl) (not .Values.coordinator.enabled) }}
{{- fail "vodfarm: worker.enabled needs coordinator.enabled, or worker.coordinatorUrl naming a coordinator" }}
{{- end }}
{{- $p := .Values.purger }}
{{- if and $p.enabled (not $p.allowNoCdn) (not $p.purgeUrls) (not $p.fastly.serviceId) (not $p.cloudflare.zoneId) (not $p.cloudfront.distributionId) }}
{{- fail "vodfarm: purger.enabled needs a CDN target: purger.purgeUrls, purger.fastly.serviceId, purger.cloudflare.zoneId or purger.cloudfront.distributionId (or purger.allowNoCdn)" }}
{{- end }}
{{- if and $p.enabled $p.fastly.serviceId (not $p.existingSecret) (not $p.fastly.apiToken) }}
{{- fail "vodfarm: purger.fastly.serviceId needs purger.fastly.apiToken, or purger.existingSecret holding it under purger.fastlyApiTokenKey" }}
{{- end }}
{{- if and $p.enabled $p.cloudflare.zoneId (not $p.existingSecret) (not $p.cloudflare.apiToken) }}
{{- fail "vodfarm: purger.cloudflare.zoneId needs purger.cloudflare.apiToken, or purger.existingSecret holding it under purger.cloudflareApiTokenKey" }}
{{- end }}
{{- if and (or .Values.api.enabled .Values.counts.enabled .Values.recs.enabled) (not .Values.analytics.redis.existingSecret) (not .Values.analytics.redis.url) }}
{{- fail "vodfarm: api, counts and recs need Redis (live view counts, recommendations, the event bus's stream): set analytics.redis.url (redis://HOST:6379), or analytics.redis.existingSecret holding it under analytics.redis.existingSecretKey" }}
{{- end }}
{{- if and .Values.shield.enabled (not .Values.shield.upstream) (not .Values.origin.enabled) }}
{{- fail "vodfarm: shield.enabled needs origin.enabled, or shield.upstream naming another origin (http://HOST:PORT)" }}
{{- end }}
{{- end }}

{{/*
"true" when the chart must create its own Secret (some secret value is
given inline rather than through an existing Secret), else "".
*/}}
{{- define "vodfarm.createSecret" -}}
{{- if or (not .Values.database.existingSecret) (not .Values.auth.existingSecret) (include "vodfarm.inlineStoreCredentials" .) (include "vodfarm.inlineElasticsearchUrl" .) (include "vodfarm.inlineRedisUrl" .) -}}
true
{{- end }}
{{- end }}

{{/*
"true" when the Elasticsearch URL is given inline (stored in the chart's
Secret: it may hold credentials), else "".
*/}}
{{- define "vodfarm.inlineElasticsearchUrl" -}}
{{- if and (not .Values.search.elasticsearch.existingSecret) .Values.search.elasticsearch.url -}}
true
{{- end }}
{{- end }}

{{/*
Env entries: the search index, shared by the api and the search indexer:
ELASTICSEARCH_URL from a Secret when Elasticsearch is configured (none:
PostgreSQL full text), and the alias.
*/}}
{{- define "vodfarm.searchEnv" -}}
{{- $es := .Values.search.elasticsearch }}
{{- if or $es.existingSecret $es.url }}
- name: ELASTICSEARCH_URL
  valueFrom:
    secretKeyRef:
      name: {{ default (include "vodfarm.fullname" .) $es.existingSecret }}
      key: {{ ternary $es.existingSecretKey "elasticsearch-url" (not (empty $es.existingSecret)) }}
{{- end }}
- name: VODFARM_ELASTICSEARCH_INDEX
  value: {{ $es.index | quote }}
{{- end }}

{{/*
"true" when the object store keys are given inline (stored in the chart's
Secret), else "".
*/}}
{{- define "vodfarm.inlineStoreCredentials" -}}
{{- if and (not .Values.store.existingSecret) .Values.store.accessKeyId -}}
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
Secret and keys holding the worker and operator tokens (separate keys).
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

{{- define "vodfarm.operatorTokenKey" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.operatorTokenKey }}
{{- else -}}
operator-token
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
Env entries of the coordinator: the worker token and the operator token
(required: the coordinator refuses to start without it).
*/}}
{{- define "vodfarm.authEnv" -}}
- name: VODFARM_WORKER_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "vodfarm.authSecretName" . }}
      key: {{ include "vodfarm.workerTokenKey" . }}
- name: VODFARM_OPERATOR_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "vodfarm.authSecretName" . }}
      key: {{ include "vodfarm.operatorTokenKey" . }}
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

{{/*
Env entry: VODFARM_SIGNING_SECRET from its Secret.
*/}}
{{- define "vodfarm.signingEnv" -}}
- name: VODFARM_SIGNING_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "vodfarm.authSecretName" . }}
      key: {{ include "vodfarm.signingSecretKey" . }}
{{- end }}

{{- define "vodfarm.signingSecretKey" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.signingSecretKey }}
{{- else -}}
signing-secret
{{- end }}
{{- end }}

{{/*
Env entries: the object store (VODFARM_STORE and the AWS SDK's variables).
Credentials come from the chart's Secret, an existing Secret, or neither
(the SDK's default chain: IRSA, EKS Pod Identity, instance profile).
*/}}
{{- define "vodfarm.storeEnv" -}}
- name: VODFARM_STORE
  value: {{ .Values.store.url | quote }}
{{- with .Values.store.endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.store.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- if or .Values.store.existingSecret .Values.store.accessKeyId }}
{{- $secret := default (include "vodfarm.fullname" .) .Values.store.existingSecret }}
{{- $idKey := "aws-access-key-id" }}
{{- $secretKey := "aws-secret-access-key" }}
{{- if .Values.store.existingSecret }}
{{- $idKey = .Values.store.accessKeyIdKey }}
{{- $secretKey = .Values.store.secretAccessKeyKey }}
{{- end }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $idKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $secretKey }}
{{- end }}
{{- with .Values.store.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Service account of a role: its own serviceAccountName, else the shared one.
Usage: include "vodfarm.serviceAccountName" (dict "ctx" $ "values" .Values.api)
*/}}
{{- define "vodfarm.serviceAccountName" -}}
{{- default .ctx.Values.serviceAccountName .values.serviceAccountName }}
{{- end }}

{{/*
A role's ClusterIP/LoadBalancer Service on its "http" container port.
Usage: include "vodfarm.service" (dict "ctx" $ "component" "api" "values" .Values.api)
*/}}
{{- define "vodfarm.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "vodfarm.componentName" (dict "ctx" .ctx "component" .component) }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "vodfarm.componentLabels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
  {{- with .values.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ .values.service.type }}
  ports:
    - name: http
      port: {{ .values.service.port }}
      targetPort: http
      protocol: TCP
  selector:
    {{- include "vodfarm.componentSelectorLabels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
{{- end }}

{{/*
A role's PodDisruptionBudget (minAvailable and/or maxUnavailable as set in
its podDisruptionBudget values; the caller decides whether to render it).
Usage: include "vodfarm.pdb" (dict "ctx" $ "component" "api" "values" .Values.api)
*/}}
{{- define "vodfarm.pdb" -}}
{{- $p := .values.podDisruptionBudget }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "vodfarm.componentName" (dict "ctx" .ctx "component" .component) }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "vodfarm.componentLabels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
spec:
  {{- if hasKey $p "minAvailable" }}
  minAvailable: {{ $p.minAvailable }}
  {{- end }}
  {{- if hasKey $p "maxUnavailable" }}
  maxUnavailable: {{ $p.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "vodfarm.componentSelectorLabels" (dict "ctx" .ctx "component" .component) | nindent 6 }}
{{- end }}

{{/*
Where webhook URLs may point (api and webhook sender agree).
*/}}
{{- define "vodfarm.webhookDestinationEnv" -}}
- name: VODFARM_WEBHOOK_ALLOW_HTTP
  value: {{ .Values.webhookDestinations.allowHttp | toString | quote }}
- name: VODFARM_WEBHOOK_ALLOW_PRIVATE
  value: {{ .Values.webhookDestinations.allowPrivate | toString | quote }}
{{- end }}

{{/*
"true" when the Redis URL is given inline (stored in the chart's Secret:
it may hold a password), else "".
*/}}
{{- define "vodfarm.inlineRedisUrl" -}}
{{- if and (not .Values.analytics.redis.existingSecret) .Values.analytics.redis.url -}}
true
{{- end }}
{{- end }}

{{/*
Env entries of the analytics users (api, counts, recs): Redis, the event
bus (Kafka when brokers are given) and the watch store (Scylla when nodes
are given).
*/}}
{{- define "vodfarm.analyticsEnv" -}}
{{- $a := .Values.analytics }}
{{- if or $a.redis.existingSecret $a.redis.url }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ default (include "vodfarm.fullname" .) $a.redis.existingSecret }}
      key: {{ ternary $a.redis.existingSecretKey "redis-url" (not (empty $a.redis.existingSecret)) }}
{{- end }}
- name: VODFARM_REDIS_PREFIX
  value: {{ $a.redis.prefix | quote }}
{{- with $a.kafka.brokers }}
- name: KAFKA_BROKERS
  value: {{ . | quote }}
{{- end }}
- name: VODFARM_KAFKA_TOPIC
  value: {{ $a.kafka.topic | quote }}
- name: VODFARM_KAFKA_PARTITIONS
  value: {{ $a.kafka.partitions | int | toString | quote }}
- name: VODFARM_KAFKA_REPLICATION
  value: {{ $a.kafka.replication | int | toString | quote }}
- name: VODFARM_KAFKA_RECORD_BYTES
  value: {{ $a.kafka.recordBytes | int | toString | quote }}
{{- with $a.scylla.nodes }}
- name: SCYLLA_NODES
  value: {{ . | quote }}
{{- end }}
- name: VODFARM_SCYLLA_KEYSPACE
  value: {{ $a.scylla.keyspace | quote }}
{{- end }}
