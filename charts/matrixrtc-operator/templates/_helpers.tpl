{{/*
Names, labels and image references shared by every template.
*/}}

{{- define "matrixrtc-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Object name prefix. Truncated to 47 characters so that the longest suffix we append ("-leader-election",
16 characters) still fits the 63-character limit of object names.
*/}}
{{- define "matrixrtc-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 47 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 47 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 47 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "matrixrtc-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "matrixrtc-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "matrixrtc-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "matrixrtc-operator.labels" -}}
helm.sh/chart: {{ include "matrixrtc-operator.chart" . }}
{{ include "matrixrtc-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: matrixrtc-operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "matrixrtc-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "matrixrtc-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Whether the operator elects a leader: always with more than one replica, optionally with one.
Returns "true" or "" so that it can be used directly in `if`.
*/}}
{{- define "matrixrtc-operator.leaderElection" -}}
{{- if or (gt (int .Values.replicaCount) 1) .Values.leaderElection.enabled }}true{{ end }}
{{- end }}

{{- define "matrixrtc-operator.leaseName" -}}
{{- default (printf "%s-leader" (include "matrixrtc-operator.fullname" .)) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
An image reference from {repository, tag, digest}: "repository@digest" when a digest is set, otherwise
"repository:tag" with the tag defaulting to the chart's appVersion.
Call with (dict "image" <values> "defaultTag" <tag>).
*/}}
{{- define "matrixrtc-operator.imageRef" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .defaultTag .image.tag) }}
{{- end }}
{{- end }}

{{- define "matrixrtc-operator.image" -}}
{{- include "matrixrtc-operator.imageRef" (dict "image" .Values.image "defaultTag" .Chart.AppVersion) }}
{{- end }}

{{- define "matrixrtc-operator.authImage" -}}
{{- include "matrixrtc-operator.imageRef" (dict "image" .Values.operands.authImage "defaultTag" .Chart.AppVersion) }}
{{- end }}

{{/* LiveKit is released on its own, so its tag cannot default to our appVersion. */}}
{{- define "matrixrtc-operator.livekitImage" -}}
{{- $image := .Values.operands.livekitImage }}
{{- if not (or $image.tag $image.digest) }}
{{- fail "operands.livekitImage needs a tag or a digest" }}
{{- end }}
{{- include "matrixrtc-operator.imageRef" (dict "image" $image "defaultTag" "") }}
{{- end }}
