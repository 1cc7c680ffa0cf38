{{/*
What the operator does with the Kubernetes API, in one place: rendered into a ClusterRole when it watches every
namespace, or into a Role in each watched namespace. Keep in step with docs/rbac.md.
*/}}
{{- define "matrixrtc-operator.rules" -}}
# MatrixRTCTransports are watched, and their status is written with server-side apply.
- apiGroups: ["matrixrtc.dev"]
  resources: ["matrixrtctransports"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["matrixrtc.dev"]
  resources: ["matrixrtctransports/status"]
  verbs: ["patch"]
# Children carry an ownerReference with blockOwnerDeletion, which the OwnerReferencesPermissionEnforcement
# admission plugin only allows to whoever may update the owner's finalizers.
- apiGroups: ["matrixrtc.dev"]
  resources: ["matrixrtctransports/finalizers"]
  verbs: ["update"]
# The objects built for each MatrixRTCTransport: applied server-side (create + patch), watched, and deleted when
# no longer wanted.
- apiGroups: [""]
  resources: ["configmaps", "secrets", "serviceaccounts", "services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Kinds of other projects, made only when a transport asks for them; without their CRDs the operator
# sees a 404 and skips them, so these rules are harmless where they are not installed.
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["cert-manager.io"]
  resources: ["certificates"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Events that explain what the operator did or why it could not; each one is new, never patched.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/*
The Lease used for leader election, in the release namespace only: read, created when missing, renewed with
patches.
*/}}
{{- define "matrixrtc-operator.leaderElectionRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "patch"]
{{- end }}
