{{/*
Helpers of the sluice chart. The sidecar helpers take the chart's root
context (`include "sluice.initContainers" .`), so a chart that depends on
this one can put the sidecar into its own pod template.
*/}}

{{- define "sluice.fullname" -}}
{{- printf "%s-sluice" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sluice.labels" -}}
app.kubernetes.io/name: sluice
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "sluice.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}

{{/* The sidecar's uid: 0 (with two capabilities) for identity required. */}}
{{- define "sluice.uid" -}}
{{- if eq .Values.sluice.identity "required" -}}0{{- else -}}{{ .Values.sluice.uid }}{{- end -}}
{{- end -}}

{{/* Pod-level settings: one process namespace when identity is required. */}}
{{- define "sluice.podSecurity" -}}
shareProcessNamespace: {{ eq .Values.sluice.identity "required" }}
securityContext:
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* securityContext of sluice-ca and the sidecar (same uid: the CA key is 0600). */}}
{{- define "sluice.securityContext" -}}
runAsUser: {{ include "sluice.uid" . }}
runAsNonRoot: {{ ne .Values.sluice.identity "required" }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* The three init containers: the fence, the CA, and sluice (a native sidecar). */}}
{{- define "sluice.initContainers" -}}
{{- $s := .Values.sluice -}}
- name: sluice-init
  image: {{ include "sluice.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    - sidecar-init
    - --workload-uid={{ .Values.workloadUid }}
    - --proxy-port={{ $s.proxyPort }}
    - --dns-port={{ $s.dnsPort }}
    - --transparent-port={{ $s.transparentPort }}
    - --synthetic-v4={{ $s.syntheticV4 }}
    - --synthetic-v6={{ $s.syntheticV6 }}
    {{- range $s.allowLoopbackPorts }}
    - --allow-loopback-port={{ . }}
    {{- end }}
  securityContext:
    runAsUser: 0
    runAsNonRoot: false
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    capabilities:
      drop: ["ALL"]
      add: ["NET_ADMIN", "NET_RAW"]
  resources:
    requests: { cpu: 10m, memory: 16Mi }
    limits: { memory: 64Mi }
- name: sluice-ca
  image: {{ include "sluice.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["ca", "init", "--state-dir", "/var/lib/sluice", "--export", "/etc/sluice/trust"]
  securityContext:
    {{- include "sluice.securityContext" . | nindent 4 }}
  resources:
    requests: { cpu: 10m, memory: 16Mi }
    limits: { memory: 64Mi }
  volumeMounts:
    - { name: sluice-state, mountPath: /var/lib/sluice }
    - { name: sluice-trust, mountPath: /etc/sluice/trust }
- name: sluice
  image: {{ include "sluice.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  restartPolicy: Always
  args:
    - serve
    - --policy=/etc/sluice/policy/policy.yaml
    - --listen=127.0.0.1:{{ $s.proxyPort }}
    - --dns-listen=127.0.0.1:{{ $s.dnsPort }}
    - --transparent-listen=127.0.0.1:{{ $s.transparentPort }}
    - --transparent={{ $s.transparent }}
    - --synthetic-v4={{ $s.syntheticV4 }}
    - --synthetic-v6={{ $s.syntheticV6 }}
    - --state-dir=/var/lib/sluice
    - --audit-log=-
    - --log-format=json
    - --metrics=0.0.0.0:{{ $s.metricsPort }}
    - --identity={{ $s.identity }}
    {{- range $s.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  {{- if .Values.store.existingSecret }}
  env:
    - name: SLUICE_STORE
      valueFrom:
        secretKeyRef:
          name: {{ .Values.store.existingSecret }}
          key: {{ .Values.store.key }}
  {{- end }}
  ports:
    - { name: metrics, containerPort: {{ $s.metricsPort }}, protocol: TCP }
  startupProbe:
    httpGet: { path: /readyz, port: metrics }
    periodSeconds: 1
    failureThreshold: 60
  readinessProbe:
    httpGet: { path: /readyz, port: metrics }
    periodSeconds: 5
  livenessProbe:
    httpGet: { path: /healthz, port: metrics }
    periodSeconds: 10
    failureThreshold: 3
  securityContext:
    {{- include "sluice.securityContext" . | nindent 4 }}
    {{- if eq $s.identity "required" }}
      add: ["SYS_PTRACE", "DAC_READ_SEARCH"]
    {{- end }}
  resources:
    {{- toYaml $s.resources | nindent 4 }}
  volumeMounts:
    - { name: sluice-policy, mountPath: /etc/sluice/policy, readOnly: true }
    - { name: sluice-state, mountPath: /var/lib/sluice }
{{- end -}}

{{/* The workload's environment: what `sluice run` gives CMD. */}}
{{- define "sluice.workloadEnv" -}}
{{- $proxy := printf "http://127.0.0.1:%v" .Values.sluice.proxyPort -}}
{{- range list "HTTP_PROXY" "HTTPS_PROXY" "ALL_PROXY" "http_proxy" "https_proxy" "all_proxy" "grpc_proxy" }}
- { name: {{ . }}, value: {{ $proxy | quote }} }
{{- end }}
- { name: NO_PROXY, value: "127.0.0.1,localhost,::1" }
- { name: no_proxy, value: "127.0.0.1,localhost,::1" }
- { name: NODE_USE_ENV_PROXY, value: "1" }
{{- range list "SSL_CERT_FILE" "REQUESTS_CA_BUNDLE" "CURL_CA_BUNDLE" "GIT_SSL_CAINFO" "NODE_EXTRA_CA_CERTS" "NPM_CONFIG_CAFILE" "DENO_CERT" "PIP_CERT" "CARGO_HTTP_CAINFO" "AWS_CA_BUNDLE" "BUNDLE_SSL_CA_CERT" "HEX_CACERTS_PATH" "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH" "NIX_SSL_CERT_FILE" }}
- { name: {{ . }}, value: /etc/sluice/trust/ca-bundle.pem }
{{- end }}
- { name: SSL_CERT_DIR, value: /etc/sluice/trust/certs }
- name: JAVA_TOOL_OPTIONS
  value: >-
    -Dhttp.proxyHost=127.0.0.1 -Dhttp.proxyPort={{ .Values.sluice.proxyPort }}
    -Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort={{ .Values.sluice.proxyPort }}
    -Dhttp.nonProxyHosts=localhost|127.0.0.1|[::1]
    -Djavax.net.ssl.trustStore=/etc/sluice/trust/java-cacerts.jks
    -Djavax.net.ssl.trustStoreType=JKS
    -Djavax.net.ssl.trustStorePassword=changeit
{{- end -}}

{{/* The workload's securityContext: its uid, which the fence matches. */}}
{{- define "sluice.workloadSecurityContext" -}}
runAsUser: {{ .Values.workloadUid }}
runAsGroup: {{ .Values.workloadUid }}
runAsNonRoot: true
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
{{- end -}}

{{- define "sluice.workloadVolumeMounts" -}}
- { name: sluice-trust, mountPath: /etc/sluice/trust, readOnly: true }
{{- end -}}

{{- define "sluice.volumes" -}}
- name: sluice-policy
  configMap:
    name: {{ include "sluice.fullname" . }}-policy
- name: sluice-state
  emptyDir: {}
- name: sluice-trust
  emptyDir: {}
{{- end -}}
