#!/usr/bin/env python3
"""Synthetic clusters for the benchmarks: N services x M endpoints, as `kubectl get -o json` prints them.

    gen.py N M OUT.json [--change endpoint|add|remove] [--kube-proxy-nft OUT.nft] [--target POD_IP]

The mix, by service index i (deterministic):
  i % 10 == 0  LoadBalancer (ingress IP, loadBalancerSourceRanges), eTP=Local every other one
  i % 10 == 1,2  NodePort
  i % 10 == 3  ClusterIP with ClientIP affinity
  i % 10 == 4  ClusterIP with two ports (TCP 80 + UDP 53)
  i % 10 == 5  dual-stack ClusterIP (IPv4 + IPv6, one slice per family)
  otherwise    ClusterIP
Endpoints are ready; one in ten is on this node ("node-a"). --change writes the same cluster with one
endpoint replaced, one service added or one removed (for the incremental benchmarks). --target adds
a service zz-bench/target (ClusterIP 10.95.255.254:80) whose single endpoint is POD_IP:8080, for the
latency benchmark. --kube-proxy-nft writes kube-proxy's own nftables layout for the IPv4 ClusterIP
and NodePort part of the same cluster (per-service chains dispatching with an anonymous
`numgen random mod M vmap { ... }`, per-endpoint chains, the service-ips / service-nodeports verdict
maps), following pkg/proxy/nftables/proxier.go: the comparison users care about.
"""
import hashlib, base64, json, sys

def v4(n):
    return "%d.%d.%d.%d" % (n >> 24 & 255, n >> 16 & 255, n >> 8 & 255, n & 255)

def svc_ip(i):
    return v4((10 << 24) | (96 << 16) + 10 + i)           # 10.96.0.10 ...

def svc_ip6(i):
    return "fd00:10:96::%x" % (10 + i)

def ep_ip(i, j):
    return v4((10 << 24) | (128 << 16) + i * 16 + j + 1)   # 10.128.0.1 ...

def lb_ip(i):
    return v4((203 << 24) | (0 << 16) + 1 + i)

def cluster(n, m, change=None, target=None):
    items = []
    services = list(range(n))
    if change == "add":
        services.append(n)
    if change == "remove":
        services = services[1:]
    node_port = 30000
    for i in services:
        kind = i % 10
        ports = [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]
        spec = {"type": "ClusterIP", "clusterIP": svc_ip(i), "clusterIPs": [svc_ip(i)], "ipFamilies": ["IPv4"], "ports": ports}
        status = {}
        if kind in (0, 1, 2):
            spec["type"] = "LoadBalancer" if kind == 0 else "NodePort"
            ports[0]["nodePort"] = node_port + i
            if kind == 0:
                spec["loadBalancerSourceRanges"] = ["192.0.2.0/24", "198.51.100.%d/32" % (i % 250)]
                status = {"loadBalancer": {"ingress": [{"ip": lb_ip(i)}]}}
                if i % 20 == 0:
                    spec["externalTrafficPolicy"] = "Local"
                    spec["healthCheckNodePort"] = 60000 + i // 20 % 5000
        if kind == 3:
            spec["sessionAffinity"] = "ClientIP"
            spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": 10800}}
        if kind == 4:
            ports.append({"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353})
        if kind == 5:
            spec["clusterIPs"] = [svc_ip(i), svc_ip6(i)]
            spec["ipFamilies"] = ["IPv4", "IPv6"]
            spec["ipFamilyPolicy"] = "RequireDualStack"
        ns = "ns-%d" % (i // 100)
        name = "svc-%d" % i
        items.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
                      "spec": spec, "status": status})
        eps = []
        for j in range(m):
            ip = ep_ip(i, j)
            if change == "endpoint" and i == 0 and j == 0:
                ip = v4((10 << 24) | (127 << 16) | 1)
            eps.append({"addresses": [ip], "conditions": {"ready": True, "serving": True, "terminating": False},
                        "nodeName": "node-a" if j == 0 else "node-%d" % (1 + j % 50)})
        slice_ports = [{"name": p["name"], "port": p["targetPort"], "protocol": p["protocol"]} for p in ports]
        items.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                      "metadata": {"name": name + "-abcde", "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
                      "ports": slice_ports, "endpoints": eps})
        if kind == 5:
            eps6 = [{"addresses": ["fd00:128::%x:%x" % (i, j + 1)], "conditions": {"ready": True},
                     "nodeName": e["nodeName"]} for j, e in enumerate(eps)]
            items.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv6",
                          "metadata": {"name": name + "-v6", "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
                          "ports": slice_ports, "endpoints": eps6})
    if target:
        items.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "target", "namespace": "zz-bench"},
                      "spec": {"clusterIP": "10.95.255.254", "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}})
        items.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                      "metadata": {"name": "target-1", "namespace": "zz-bench", "labels": {"kubernetes.io/service-name": "target"}},
                      "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                      "endpoints": [{"addresses": [target], "conditions": {"ready": True}, "nodeName": "node-a"}]})
    items.append({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a", "labels": {"topology.kubernetes.io/zone": "z1"}},
                  "status": {"addresses": [{"type": "InternalIP", "address": "192.168.50.1"}]}})
    return {"apiVersion": "v1", "kind": "List", "items": items}

def kp_hash(s):
    return base64.b32encode(hashlib.sha256(s.encode()).digest()).decode()[:8]

def kube_proxy_nft(doc):
    """kube-proxy's nftables-mode layout (IPv4 ClusterIPs and NodePorts) for the same cluster."""
    svcs = {}
    for it in doc["items"]:
        if it["kind"] == "Service":
            svcs[(it["metadata"]["namespace"], it["metadata"]["name"])] = it
    out = """table ip kube-proxy {
  chain mark-for-masquerade {
    meta mark set meta mark or 0x4000
  }
  chain masquerading {
    type nat hook postrouting priority srcnat
    meta mark & 0x4000 == 0 return
    meta mark set meta mark xor 0x4000
    masquerade fully-random
  }
  map service-ips {
    type ipv4_addr . inet_proto . inet_service : verdict
    comment "ClusterIP, ExternalIP and LoadBalancer IP traffic"
  }
  map service-nodeports {
    type inet_proto . inet_service : verdict
    comment "NodePort traffic"
  }
  chain nodeports {
    ip daddr 192.168.50.1 meta l4proto . th dport vmap @service-nodeports
  }
  chain services {
    ip daddr . meta l4proto . th dport vmap @service-ips
    fib daddr type local jump nodeports
  }
  chain nat-prerouting {
    type nat hook prerouting priority dstnat
    jump services
  }
  chain nat-output {
    type nat hook output priority -100
    jump services
  }
}""".split("\n")
    elements_ip, elements_np = [], []
    for it in doc["items"]:
        if it["kind"] != "EndpointSlice" or it["addressType"] != "IPv4":
            continue
        ns = it["metadata"]["namespace"]
        svc = svcs[(ns, it["metadata"]["labels"]["kubernetes.io/service-name"])]
        for sp, p in zip(svc["spec"]["ports"], it["ports"]):
            proto = sp["protocol"].lower()
            spn = "%s/%s/%s/%s" % (ns, svc["metadata"]["name"], proto, sp["name"])
            chain = "service-%s-%s" % (kp_hash(spn), spn)
            eps = []
            for e in it["endpoints"]:
                ip = e["addresses"][0]
                ep_chain = "endpoint-%s-%s__%s/%d" % (kp_hash(spn + ip), spn, ip, p["port"])
                eps.append(ep_chain)
                out.append("add chain ip kube-proxy %s" % ep_chain)
                out.append("add rule ip kube-proxy %s ip saddr %s jump mark-for-masquerade" % (ep_chain, ip))
                out.append("add rule ip kube-proxy %s meta l4proto %s dnat to %s:%d" % (ep_chain, proto, ip, p["port"]))
            out.append("add chain ip kube-proxy %s" % chain)
            out.append("add rule ip kube-proxy %s ip daddr %s %s dport %d ip saddr != 10.0.0.0/8 jump mark-for-masquerade"
                       % (chain, svc["spec"]["clusterIP"], proto, sp["port"]))
            vm = ", ".join("%d : goto %s" % (k, c) for k, c in enumerate(eps))
            out.append("add rule ip kube-proxy %s numgen random mod %d vmap { %s }" % (chain, len(eps), vm))
            elements_ip.append("%s . %s . %d : goto %s" % (svc["spec"]["clusterIP"], proto, sp["port"], chain))
            if "nodePort" in sp:
                elements_np.append("%s . %d : goto %s" % (proto, sp["nodePort"], chain))
    for i in range(0, len(elements_ip), 1000):
        out.append("add element ip kube-proxy service-ips { %s }" % ", ".join(elements_ip[i:i + 1000]))
    for i in range(0, len(elements_np), 1000):
        out.append("add element ip kube-proxy service-nodeports { %s }" % ", ".join(elements_np[i:i + 1000]))
    return "\n".join(out) + "\n"

def main():
    args = sys.argv[1:]
    n, m, path = int(args[0]), int(args[1]), args[2]
    opts = dict(zip(args[3::2], args[4::2]))
    doc = cluster(n, m, change=opts.get("--change"), target=opts.get("--target"))
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    if "--kube-proxy-nft" in opts:
        with open(opts["--kube-proxy-nft"], "w") as f:
            f.write(kube_proxy_nft(doc))

if __name__ == "__main__":
    main()
