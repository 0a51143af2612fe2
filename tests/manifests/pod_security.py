"""The Pod Security Standards' "restricted" profile, checked on a pod spec.

The namespaces in manifests/ enforce it (``pod-security.kubernetes.io/enforce:
restricted``), so a pod spec that breaks a rule would be rejected by the API server. These
are the profile's rules as the Kubernetes documentation lists them (baseline plus
restricted), for the fields a manifest can set.
"""

from __future__ import annotations

__all__ = ["restricted_violations"]

_ALLOWED_VOLUME_SOURCES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                           "projected", "secret"}
_SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                 "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                 "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                 "net.ipv4.tcp_keepalive_probes"}
_SECCOMP_OK = {"RuntimeDefault", "Localhost"}


def _containers(spec: dict) -> list[tuple[str, dict]]:
    return [(f"{key}[{c.get('name')}]", c) for key in ("initContainers", "containers", "ephemeralContainers")
            for c in spec.get(key) or []]


def restricted_violations(spec: dict) -> list[str]:
    """Every rule of the restricted profile ``spec`` (a PodSpec) breaks; empty when none."""
    problems: list[str] = []
    pod_sc = spec.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            problems.append(f"spec.{field} must not be true")
    for volume in spec.get("volumes") or []:
        sources = set(volume) - {"name"}
        if not sources <= _ALLOWED_VOLUME_SOURCES:
            problems.append(f"volume {volume.get('name')}: {', '.join(sorted(sources - _ALLOWED_VOLUME_SOURCES))} is not allowed")
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl.get("name") not in _SAFE_SYSCTLS:
            problems.append(f"sysctl {sysctl.get('name')} is not allowed")
    if (pod_sc.get("seLinuxOptions") or {}).keys() & {"user", "role"}:
        problems.append("securityContext.seLinuxOptions may not set user or role")
    if pod_sc.get("runAsUser") == 0:
        problems.append("securityContext.runAsUser must not be 0")
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        problems.append("securityContext.windowsOptions.hostProcess must not be true")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in _SECCOMP_OK:
        problems.append(f"securityContext.seccompProfile.type {pod_seccomp} is not allowed")
    for where, container in _containers(spec):
        sc = container.get("securityContext") or {}
        if sc.get("privileged"):
            problems.append(f"{where}: privileged must not be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: securityContext.allowPrivilegeEscalation must be false")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{where}: securityContext.capabilities.drop must include ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{where}: securityContext.capabilities.add may hold NET_BIND_SERVICE only")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            problems.append(f"{where}: runAsNonRoot must be true (in the container's or the pod's securityContext)")
        if sc.get("runAsUser") == 0:
            problems.append(f"{where}: securityContext.runAsUser must not be 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in _SECCOMP_OK:
            problems.append(f"{where}: seccompProfile.type must be RuntimeDefault or Localhost (container or pod), got {seccomp}")
        if sc.get("procMount", "Default") != "Default":
            problems.append(f"{where}: securityContext.procMount must be Default")
        if (sc.get("seLinuxOptions") or {}).keys() & {"user", "role"}:
            problems.append(f"{where}: securityContext.seLinuxOptions may not set user or role")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            problems.append(f"{where}: securityContext.windowsOptions.hostProcess must not be true")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"{where}: hostPort {port['hostPort']} is not allowed")
    return problems
