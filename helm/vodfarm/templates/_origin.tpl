{{/*
The Deployment of an origin tier: `vodfarm origin` with
VODFARM_ORIGIN_UPSTREAM=store (the origin, reading the object store) or
http://HOST:PORT (the shield, reading the next tier). Both check video
state in PostgreSQL and playback tokens with the signing secret.
Usage: include "vodfarm.originDeployment" (dict "ctx" $ "component" "origin" "values" .Values.origin "upstream" "store")
*/}}
{{- define "vodfarm.originDeployment" -}}
{{- $root := .ctx }}
{{- $c := .values }}
{{- $component := .component }}
{{- $upstream := .upstream }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "vodfarm.componentName" (dict "ctx" $root "component" $component) }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "vodfarm.componentLabels" (dict "ctx" $root "component" $component) | nindent 4 }}
spec:
  replicas: {{ $c.replicas }}
  revisionHistoryLimit: {{ $root.Values.revisionHistoryLimit }}
  {{- with $c.strategy }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "vodfarm.componentSelectorLabels" (dict "ctx" $root "component" $component) | nindent 6 }}
  template:
    metadata:
      annotations:
        # Rolls the pods when the chart-managed Secret changes.
        checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum | quote }}
        {{- with $c.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      labels:
        {{- include "vodfarm.componentLabels" (dict "ctx" $root "component" $component) | nindent 8 }}
        {{- with $c.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with include "vodfarm.serviceAccountName" (dict "ctx" $root "values" $c) }}
      serviceAccountName: {{ . }}
      {{- end }}
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: {{ $c.terminationGracePeriodSeconds }}
      {{- with $root.Values.podSecurityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ $component }}
          image: {{ include "vodfarm.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args:
            - origin
          ports:
            - name: http
              containerPort: {{ $c.containerPort }}
              protocol: TCP
          env:
            - name: VODFARM_ORIGIN_LISTEN
              value: {{ printf "0.0.0.0:%d" (int $c.containerPort) | quote }}
            - name: VODFARM_ORIGIN_UPSTREAM
              value: {{ $upstream | quote }}
            {{- if eq $upstream "store" }}
            {{- include "vodfarm.storeEnv" $root | nindent 12 }}
            {{- end }}
            {{- include "vodfarm.databaseEnv" $root | nindent 12 }}
            {{- include "vodfarm.signingEnv" $root | nindent 12 }}
            - name: VODFARM_ORIGIN_CACHE_SIZE
              value: {{ $c.config.cacheSize | quote }}
            - name: VODFARM_ORIGIN_MAX_OBJECT_SIZE
              value: {{ $c.config.maxObjectSize | quote }}
            - name: VODFARM_ORIGIN_UPSTREAM_TIMEOUT
              value: {{ $c.config.upstreamTimeout | quote }}
            - name: VODFARM_ORIGIN_PLAYLIST_MAX_AGE
              value: {{ $c.config.playlistMaxAge | quote }}
            - name: VODFARM_ORIGIN_PLAYLIST_SWR
              value: {{ $c.config.playlistSwr | quote }}
            - name: VODFARM_ORIGIN_STALE_IF_ERROR
              value: {{ $c.config.staleIfError | quote }}
            - name: VODFARM_ORIGIN_STATE_TTL
              value: {{ $c.config.stateTtl | quote }}
            - name: VODFARM_STALE_STATE_GRACE
              value: {{ $c.config.staleStateGrace | default "10m" | quote }}
            - name: VODFARM_DB_MAX_CONNECTIONS
              value: {{ $c.config.dbMaxConnections | int | toString | quote }}
            {{- include "vodfarm.logEnv" $root | nindent 12 }}
            {{- with $c.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- with $c.livenessProbe }}
          livenessProbe:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $c.readinessProbe }}
          readinessProbe:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $c.lifecycle }}
          lifecycle:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $root.Values.securityContext }}
          securityContext:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $c.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: tmp
          emptyDir: {}
      {{- with $c.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}

{{/*
The shield's upstream: shield.upstream, else this release's origin Service.
*/}}
{{- define "vodfarm.shieldUpstream" -}}
{{- if .Values.shield.upstream }}
{{- .Values.shield.upstream }}
{{- else }}
{{- printf "http://%s:%d" (include "vodfarm.componentName" (dict "ctx" . "component" "origin")) (int .Values.origin.service.port) }}
{{- end }}
{{- end }}
