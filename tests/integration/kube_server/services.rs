//! Services: cluster IP and node port allocation (service CIDR
//! 10.96.0.0/12, node ports 30000-32767), the registry's defaulting, and
//! the checks of requested IPs and ports.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use rand::Rng;
use serde_json::{json, Map, Value};

use super::errors::*;
use super::http::*;
use super::store::*;
use super::types::*;

impl State {
    fn used_cluster_ips(&self, except: &Key) -> HashSet<String> {
        let mut used = HashSet::new();
        for (k, svc) in self.scan("", "services", None, None) {
            if k == except {
                continue;
            }
            if let Some(ip) = svc.pointer("/spec/clusterIP").and_then(Value::as_str) {
                used.insert(ip.to_string());
            }
            for ip in svc
                .pointer("/spec/clusterIPs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(ip) = ip.as_str() {
                    used.insert(ip.to_string());
                }
            }
        }
        used.remove("None");
        used.remove("");
        used
    }

    fn used_node_ports(&self, except: &Key) -> HashSet<i64> {
        let mut used = HashSet::new();
        for (k, svc) in self.scan("", "services", None, None) {
            if k == except {
                continue;
            }
            for p in svc
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(np) = p.get("nodePort").and_then(Value::as_i64) {
                    used.insert(np);
                }
            }
            if let Some(np) = svc
                .pointer("/spec/healthCheckNodePort")
                .and_then(Value::as_i64)
            {
                used.insert(np);
            }
        }
        used
    }

    /// A free cluster IP right now (for seeding).
    pub(super) fn free_cluster_ip(&self) -> String {
        alloc_cluster_ip(&self.used_cluster_ips(&namespace_key("")))
    }

    /// A free node port right now, other than `also_taken` (for seeding).
    pub(super) fn free_node_port(&self, also_taken: &[i64]) -> i64 {
        let mut used = self.used_node_ports(&namespace_key(""));
        used.extend(also_taken.iter().copied());
        alloc_node_port(&used)
    }

    /// The Service registry's defaulting and allocation: cluster IP (unless
    /// headless or ExternalName), node ports for NodePort/LoadBalancer,
    /// health check node port for `externalTrafficPolicy: Local` load
    /// balancers. With `check`, requested IPs and ports must be in range and
    /// free (422 otherwise); the cluster IP never changes once set.
    pub(super) fn service_defaults(
        &self,
        obj: &mut Value,
        existing: Option<&Value>,
        check: bool,
        rt: &ResourceType,
        key: &Key,
    ) -> Result<(), Reply> {
        let name = key.3.as_str();
        let used_ips = self.used_cluster_ips(key);
        let mut used_ports = self.used_node_ports(key);
        let old_spec = existing
            .and_then(|e| e.get("spec"))
            .cloned()
            .unwrap_or_else(|| json!({}));
        let root = obj
            .as_object_mut()
            .ok_or_else(|| bad_request("the request body must be a JSON object"))?;
        let spec = root.entry("spec").or_insert_with(|| json!({}));
        if spec.is_null() {
            *spec = json!({});
        }
        let Some(spec) = spec.as_object_mut() else {
            return Err(bad_request("spec must be an object"));
        };
        let svc_type = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        spec.insert("type".into(), json!(svc_type));
        if svc_type != "ExternalName" {
            service_cluster_ip(spec, &old_spec, &used_ips, check, rt, name)?;
        }
        spec.entry("sessionAffinity")
            .or_insert_with(|| json!("None"));
        let node_ports = svc_type == "NodePort" || svc_type == "LoadBalancer";
        if node_ports {
            spec.entry("externalTrafficPolicy")
                .or_insert_with(|| json!("Cluster"));
        }
        if svc_type == "LoadBalancer" {
            spec.entry("allocateLoadBalancerNodePorts")
                .or_insert_with(|| json!(true));
        }
        service_ports(
            spec,
            &old_spec,
            &mut used_ports,
            node_ports,
            check,
            rt,
            name,
        )?;
        let local_lb = svc_type == "LoadBalancer"
            && spec.get("externalTrafficPolicy").and_then(Value::as_str) == Some("Local");
        if local_lb
            && spec
                .get("healthCheckNodePort")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                == 0
        {
            let np = old_spec
                .get("healthCheckNodePort")
                .and_then(Value::as_i64)
                .unwrap_or_else(|| alloc_node_port(&used_ports));
            spec.insert("healthCheckNodePort".into(), json!(np));
        }
        Ok(())
    }
}

/// A Service's cluster IP: kept once set, else the requested one (checked
/// with `check`) or a free one; and the IP family defaults.
fn service_cluster_ip(
    spec: &mut Map<String, Value>,
    old_spec: &Value,
    used_ips: &HashSet<String>,
    check: bool,
    rt: &ResourceType,
    name: &str,
) -> Result<(), Reply> {
    let old_ip = old_spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let given = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let ip = match (old_ip, given) {
        (Some(old), Some(new)) if old != new => {
            return Err(invalid(
                rt,
                name,
                "spec.clusterIPs[0]",
                "FieldValueInvalid",
                &format!("Invalid value: []string{{\"{new}\"}}: may not change once set"),
            ))
        }
        (Some(old), _) => old,
        (None, None) => alloc_cluster_ip(used_ips),
        (None, Some(ip)) => {
            if check && ip != "None" {
                check_cluster_ip(rt, name, &ip, used_ips)?;
            }
            ip
        }
    };
    spec.insert("clusterIP".into(), json!(ip));
    spec.insert("clusterIPs".into(), json!([ip]));
    spec.entry("ipFamilies").or_insert_with(|| json!(["IPv4"]));
    spec.entry("ipFamilyPolicy")
        .or_insert_with(|| json!("SingleStack"));
    spec.entry("internalTrafficPolicy")
        .or_insert_with(|| json!("Cluster"));
    Ok(())
}

/// The defaults of a Service's ports (protocol, targetPort) and, with
/// `node_ports`, their node ports: kept across updates, else the requested
/// ones (checked with `check`) or free ones, each added to `used_ports`.
fn service_ports(
    spec: &mut Map<String, Value>,
    old_spec: &Value,
    used_ports: &mut HashSet<i64>,
    node_ports: bool,
    check: bool,
    rt: &ResourceType,
    name: &str,
) -> Result<(), Reply> {
    // (port, nodePort) pairs the Service had: kept across updates.
    let old_ports: Vec<(i64, i64)> = old_spec
        .get("ports")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .filter_map(|p| Some((p.get("port")?.as_i64()?, p.get("nodePort")?.as_i64()?)))
                .collect()
        })
        .unwrap_or_default();
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for (i, p) in ports.iter_mut().enumerate() {
            let Some(p) = p.as_object_mut() else {
                continue;
            };
            p.entry("protocol").or_insert_with(|| json!("TCP"));
            if !p.contains_key("targetPort") {
                if let Some(port) = p.get("port").cloned() {
                    p.insert("targetPort".into(), port);
                }
            }
            if !node_ports {
                continue;
            }
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            match p
                .get("nodePort")
                .and_then(Value::as_i64)
                .filter(|n| *n != 0)
            {
                Some(np) => {
                    let kept = old_ports.iter().any(|(_, o)| *o == np);
                    if check && !kept {
                        check_node_port(rt, name, i, np, used_ports)?;
                    }
                    used_ports.insert(np);
                }
                None => {
                    let np = old_ports
                        .iter()
                        .find(|(op, _)| *op == port)
                        .map(|(_, np)| *np)
                        .unwrap_or_else(|| alloc_node_port(used_ports));
                    used_ports.insert(np);
                    p.insert("nodePort".into(), json!(np));
                }
            }
        }
    }
    Ok(())
}

fn alloc_cluster_ip(used: &HashSet<String>) -> String {
    let mut rng = rand::thread_rng();
    loop {
        let ip = format!(
            "10.96.{}.{}",
            rng.gen_range(0..=255u32),
            rng.gen_range(1..=254u32)
        );
        // 10.96.0.1 is the kubernetes Service, 10.96.0.10 the cluster DNS.
        if ip != "10.96.0.1" && ip != "10.96.0.10" && !used.contains(&ip) {
            return ip;
        }
    }
}

fn alloc_node_port(used: &HashSet<i64>) -> i64 {
    let mut rng = rand::thread_rng();
    loop {
        let port = rng.gen_range(30000..=32767i64);
        if !used.contains(&port) {
            return port;
        }
    }
}

/// The service IP allocator's checks (service CIDR 10.96.0.0/12).
fn check_cluster_ip(
    rt: &ResourceType,
    name: &str,
    ip: &str,
    used: &HashSet<String>,
) -> Result<(), Reply> {
    let Ok(addr) = ip.parse::<Ipv4Addr>() else {
        return Err(invalid(
            rt,
            name,
            "spec.clusterIPs[0]",
            "FieldValueInvalid",
            &format!("Invalid value: \"{ip}\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"),
        ));
    };
    if u32::from(addr) & 0xFFF0_0000 != 0x0A60_0000 {
        return Err(invalid(
            rt,
            name,
            "spec.clusterIPs",
            "FieldValueInvalid",
            &format!(
                "Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is 10.96.0.0/12"
            ),
        ));
    }
    if used.contains(ip) {
        return Err(invalid(
            rt,
            name,
            "spec.clusterIPs",
            "FieldValueInvalid",
            &format!("Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: provided IP is already allocated"),
        ));
    }
    Ok(())
}

fn check_node_port(
    rt: &ResourceType,
    name: &str,
    index: usize,
    port: i64,
    used: &HashSet<i64>,
) -> Result<(), Reply> {
    let field = format!("spec.ports[{index}].nodePort");
    if !(30000..=32767).contains(&port) {
        return Err(invalid(
            rt,
            name,
            &field,
            "FieldValueInvalid",
            &format!(
                "Invalid value: {port}: provided port is not in the valid range. The range of valid ports is 30000-32767"
            ),
        ));
    }
    if used.contains(&port) {
        return Err(invalid(
            rt,
            name,
            &field,
            "FieldValueInvalid",
            &format!("Invalid value: {port}: provided port is already allocated"),
        ));
    }
    Ok(())
}
