import Foundation
/// Reads one object's fields, collecting every problem with its field path.
struct FieldReader {
    let file: String
    var object: String
    var problems: [Diagnostic] = []

    init(file: String, object: String) { self.file = file; self.object = object }

    mutating func error(_ path: String, _ message: String) {
        problems.append(Diagnostic(file: file, object: object, field: path, message: message))
    }

    mutating func string(_ n: KNode?, _ path: @autoclosure () -> String) -> String? {
        guard let n else { return nil }
        switch n.value {
        case .string(let s): return s
        case .null: return nil
        default: error(path(), "expected a string, got \(n.shortDescription)"); return nil
        }
    }

    mutating func int(_ n: KNode?, _ path: @autoclosure () -> String) -> Int? {
        guard let n else { return nil }
        switch n.value {
        case .int(let i): return i
        case .null: return nil
        case .float(let d) where d == d.rounded() && abs(d) < 1e15: return Int(d)
        case .float(let d) where d == d.rounded() && abs(d) >= 1e15:
            error(path(), "\(n.shortDescription) is too large for an integer"); return nil
        default: error(path(), "expected an integer, got \(n.shortDescription)"); return nil
        }
    }

    mutating func bool(_ n: KNode?, _ path: @autoclosure () -> String) -> Bool? {
        guard let n else { return nil }
        switch n.value {
        case .bool(let b): return b
        case .null: return nil
        default: error(path(), "expected true or false, got \(n.shortDescription)"); return nil
        }
    }

    mutating func list(_ n: KNode?, _ path: @autoclosure () -> String) -> [KNode] {
        guard let n else { return [] }
        switch n.value {
        case .list(let l): return l
        case .null: return []
        default: error(path(), "expected a list, got \(n.shortDescription)"); return []
        }
    }

    mutating func map(_ n: KNode?, _ path: @autoclosure () -> String) -> KMap? {
        guard let n else { return nil }
        switch n.value {
        case .map(let m): return m
        case .null: return nil
        default: error(path(), "expected an object, got \(n.shortDescription)"); return nil
        }
    }

    mutating func stringList(_ n: KNode?, _ path: @autoclosure () -> String) -> [String] {
        var out = [String]()
        for (i, item) in list(n, path()).enumerated() {
            if let s = string(item, "\(path())[\(i)]") { out.append(s) }
        }
        return out
    }

    mutating func stringMap(_ n: KNode?, _ path: @autoclosure () -> String) -> [String: String] {
        var out = [String: String]()
        guard let m = map(n, path()) else { return out }
        for (k, v) in m {
            switch v.value {
            case .string(let s): out[k] = s
            case .int(let i): out[k] = String(i)
            case .bool(let b): out[k] = String(b)
            case .null: out[k] = ""
            default: error("\(path()).\(k)", "expected a string, got \(v.shortDescription)")
            }
        }
        return out
    }

    mutating func ip(_ text: String, _ path: @autoclosure () -> String, family: IPFamily? = nil) -> IPAddress? {
        guard let ip = IPAddress(text) else {
            error(path(), "\"\(text)\" is not a valid IP address")
            return nil
        }
        if let family, ip.family != family {
            error(path(), "\(ip) is not an \(family.rawValue) address")
            return nil
        }
        return ip
    }

    mutating func port(_ n: KNode?, _ path: @autoclosure () -> String, required: Bool, allowZero: Bool = false) -> Int? {
        guard let p = int(n, path()) else {
            if required && (n == nil || isNull(n)) { error(path(), "required value is missing") }
            return nil
        }
        if allowZero && p == 0 { return 0 }
        guard (1...65535).contains(p) else {
            error(path(), "\(p) is not a valid port (1-65535)")
            return nil
        }
        return p
    }

    mutating func proto(_ n: KNode?, _ path: @autoclosure () -> String) -> L4Protocol? {
        if isNull(n) { return .tcp }
        guard let s = string(n, path()) else { return nil }
        if s.isEmpty { return .tcp }
        guard let p = L4Protocol(rawValue: s) else {
            error(path(), "unsupported protocol \"\(s)\" (TCP, UDP or SCTP)")
            return nil
        }
        return p
    }

    func isNull(_ n: KNode?) -> Bool {
        guard let n else { return true }
        if case .null = n.value { return true }
        return false
    }
}

enum Names {
    /// RFC 1123 label: lowercase alphanumerics and '-', alphanumeric at both ends, at most 63.
    static func isDNSLabel(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard !u.isEmpty, u.count <= 63 else { return false }
        for (i, c) in u.enumerated() {
            let alnum = (c >= 97 && c <= 122) || (c >= 48 && c <= 57)
            if !alnum && !(c == 45 && i != 0 && i != u.count - 1) { return false }
        }
        return true
    }

    /// RFC 1123 subdomain: labels joined by dots, at most 253.
    static func isDNSSubdomain(_ s: String) -> Bool {
        guard !s.isEmpty, s.utf8.count <= 253 else { return false }
        return s.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { isDNSLabel(String($0)) }
    }

    /// IANA service name (a named targetPort or port name): lowercase alnum and '-', <= 15.
    static func isPortName(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard !u.isEmpty, u.count <= 15 else { return false }
        var hasLetter = false
        for (i, c) in u.enumerated() {
            let lower = c >= 97 && c <= 122
            let digit = c >= 48 && c <= 57
            if lower { hasLetter = true }
            if !(lower || digit || c == 45) { return false }
            if c == 45 && (i == 0 || i == u.count - 1 || u[i - 1] == 45) { return false }
        }
        return hasLetter
    }
}

/// Decoders for each supported kind. Each returns the object (or nil) plus its problems.
enum Decoders {
    struct Meta { var name: String; var namespace: String; var labels: [String: String] }

    static func meta(_ root: KNode, kind: String, namespaced: Bool, r: inout FieldReader) -> Meta? {
        let m = r.map(root["metadata"], "metadata")
        let name = r.string(m?["name"], "metadata.name") ?? ""
        var ns = namespaced ? (r.string(m?["namespace"], "metadata.namespace") ?? "") : ""
        if namespaced && ns.isEmpty { ns = "default" }
        r.object = ObjectRef(kind: kind, namespace: ns, name: name.isEmpty ? "<unnamed>" : name, file: r.file).description
        if name.isEmpty {
            r.error("metadata.name", "required value is missing")
            return nil
        }
        if namespaced && !Names.isDNSLabel(ns) {
            r.error("metadata.namespace", "\"\(ns)\" is not a valid namespace name (RFC 1123 label)")
        }
        let labels = r.stringMap(m?["labels"], "metadata.labels")
        return Meta(name: name, namespace: ns, labels: labels)
    }

    // MARK: Service

    static func service(_ root: KNode, file: String) -> (Service?, [Diagnostic]) {
        var r = FieldReader(file: file, object: "Service")
        guard let meta = meta(root, kind: "Service", namespaced: true, r: &r) else { return (nil, r.problems) }
        if !Names.isDNSLabel(meta.name) {
            r.error("metadata.name", "\"\(meta.name)\" is not a valid Service name (RFC 1123 label)")
        }
        var svc = Service(ref: ObjectRef(kind: "Service", namespace: meta.namespace, name: meta.name, file: file))
        let spec = r.map(root["spec"], "spec")
        if root["spec"] == nil { r.error("spec", "required value is missing") }

        if let t = r.string(spec?["type"], "spec.type"), !t.isEmpty {
            if let type = ServiceType(rawValue: t) { svc.type = type } else {
                r.error("spec.type", "unsupported value \"\(t)\" (ClusterIP, NodePort, LoadBalancer or ExternalName)")
            }
        }

        // Cluster IPs.
        let clusterIP = r.string(spec?["clusterIP"], "spec.clusterIP") ?? ""
        let clusterIPs = r.stringList(spec?["clusterIPs"], "spec.clusterIPs")
        if clusterIP == "None" || clusterIPs.first == "None" {
            svc.headless = true
            if !clusterIPs.isEmpty && clusterIPs != ["None"] {
                r.error("spec.clusterIPs", "a headless service must have clusterIPs [None]")
            }
        } else {
            var ips = [IPAddress]()
            for (i, s) in clusterIPs.enumerated() {
                if let ip = r.ip(s, "spec.clusterIPs[\(i)]") { ips.append(ip) }
            }
            var primary: IPAddress?
            if !clusterIP.isEmpty { primary = r.ip(clusterIP, "spec.clusterIP") }
            if let p = primary {
                if ips.isEmpty { ips = [p] } else if ips[0] != p && clusterIPs.count == ips.count {
                    r.error("spec.clusterIPs[0]", "\(ips[0]) must equal spec.clusterIP \(p)")
                }
            }
            if ips.count > 2 { r.error("spec.clusterIPs", "at most two addresses (one per family) are allowed") }
            if ips.count == 2 && ips[0].family == ips[1].family {
                r.error("spec.clusterIPs", "the two addresses must be of different IP families")
            }
            svc.clusterIPs = ips
        }
        for (i, f) in r.stringList(spec?["ipFamilies"], "spec.ipFamilies").enumerated() where IPFamily(rawValue: f) == nil {
            r.error("spec.ipFamilies[\(i)]", "unsupported value \"\(f)\" (IPv4 or IPv6)")
        }

        // Ports.
        let portNodes = r.list(spec?["ports"], "spec.ports")
        var seenNames = [String: Int]()
        var seenPorts = [String: Int]()
        for (i, pn) in portNodes.enumerated() {
            func path() -> String { "spec.ports[\(i)]" }
            guard let pm = r.map(pn, path()) else { continue }
            let name = r.string(pm["name"], "\(path()).name") ?? ""
            if name.isEmpty && portNodes.count > 1 {
                r.error("\(path()).name", "required when a service has more than one port")
            } else if !name.isEmpty && !Names.isDNSLabel(name) {
                r.error("\(path()).name", "\"\(name)\" is not a valid port name (lowercase RFC 1123 label)")
            }
            if let prev = seenNames[name], !name.isEmpty || portNodes.count > 1 {
                r.error("\(path()).name", "duplicate port name \"\(name)\" (also spec.ports[\(prev)])")
            } else {
                seenNames[name] = i
            }
            let proto = r.proto(pm["protocol"], "\(path()).protocol")
            let port = r.port(pm["port"], "\(path()).port", required: true)
            var nodePort = 0
            if pm["nodePort"] != nil, let np = r.port(pm["nodePort"], "\(path()).nodePort", required: false, allowZero: true) {
                nodePort = np
                if np != 0 && svc.type != .nodePort && svc.type != .loadBalancer {
                    r.error("\(path()).nodePort", "may not be set when spec.type is \(svc.type.rawValue)")
                }
            }
            if let tp = pm["targetPort"] {
                switch tp.value {
                case .int(let v): if !(1...65535).contains(v) { r.error("\(path()).targetPort", "\(v) is not a valid port (1-65535)") }
                case .string(let s):
                    if let v = Int(s) {
                        if !(1...65535).contains(v) { r.error("\(path()).targetPort", "\(v) is not a valid port (1-65535)") }
                    } else if !Names.isPortName(s) {
                        r.error("\(path()).targetPort", "\"\(s)\" is neither a port number nor a valid port name")
                    }
                case .null: break
                default: r.error("\(path()).targetPort", "expected a port number or name, got \(tp.shortDescription)")
                }
            }
            if let proto, let port {
                let key = "\(port)/\(proto.rawValue)"
                if let prev = seenPorts[key] {
                    r.error("\(path()).port", "duplicate port \(port)/\(proto.rawValue) (also spec.ports[\(prev)])")
                } else { seenPorts[key] = i }
                svc.ports.append(ServicePort(name: name, proto: proto, port: port, nodePort: nodePort))
            }
        }
        if portNodes.isEmpty && svc.type != .externalName && !svc.headless && r.isNull(spec?["ports"]) {
            r.error("spec.ports", "a non-headless service needs at least one port")
        }

        for (i, s) in r.stringList(spec?["externalIPs"], "spec.externalIPs").enumerated() {
            if let ip = r.ip(s, "spec.externalIPs[\(i)]") { svc.externalIPs.append(ip) }
        }
        for (i, s) in r.stringList(spec?["loadBalancerSourceRanges"], "spec.loadBalancerSourceRanges").enumerated() {
            if let c = CIDR(s) { svc.loadBalancerSourceRanges.append(c) } else {
                r.error("spec.loadBalancerSourceRanges[\(i)]", "\"\(s)\" is not a valid CIDR")
            }
        }

        // Affinity.
        if let a = r.string(spec?["sessionAffinity"], "spec.sessionAffinity"), !a.isEmpty {
            switch a {
            case "None": break
            case "ClientIP": svc.affinityTimeout = 10800
            default: r.error("spec.sessionAffinity", "unsupported value \"\(a)\" (None or ClientIP)")
            }
        }
        if let cfg = r.map(spec?["sessionAffinityConfig"], "spec.sessionAffinityConfig"),
           let cip = r.map(cfg["clientIP"], "spec.sessionAffinityConfig.clientIP"),
           let t = r.int(cip["timeoutSeconds"], "spec.sessionAffinityConfig.clientIP.timeoutSeconds") {
            if t <= 0 || t > 86400 {
                r.error("spec.sessionAffinityConfig.clientIP.timeoutSeconds", "\(t) is not a valid timeout (1-86400 seconds)")
            } else if svc.affinityTimeout != nil {
                svc.affinityTimeout = t
            }
        }

        // Traffic policies.
        if let p = r.string(spec?["externalTrafficPolicy"], "spec.externalTrafficPolicy"), !p.isEmpty {
            switch p {
            case "Local": svc.externalTrafficPolicy = .local
            case "Cluster", "Global": svc.externalTrafficPolicy = .cluster
            default: r.error("spec.externalTrafficPolicy", "unsupported value \"\(p)\" (Cluster or Local)")
            }
        }
        if let p = r.string(spec?["internalTrafficPolicy"], "spec.internalTrafficPolicy"), !p.isEmpty {
            switch p {
            case "Local": svc.internalTrafficPolicy = .local
            case "Cluster": svc.internalTrafficPolicy = .cluster
            default: r.error("spec.internalTrafficPolicy", "unsupported value \"\(p)\" (Cluster or Local)")
            }
        }
        if spec?["healthCheckNodePort"] != nil,
           let hc = r.port(spec?["healthCheckNodePort"], "spec.healthCheckNodePort", required: false, allowZero: true) {
            svc.healthCheckNodePort = hc
        }

        // Status: load-balancer ingress.
        if let status = r.map(root["status"], "status"),
           let lb = r.map(status["loadBalancer"], "status.loadBalancer") {
            for (i, ing) in r.list(lb["ingress"], "status.loadBalancer.ingress").enumerated() {
                let path = "status.loadBalancer.ingress[\(i)]"
                guard let im = r.map(ing, path) else { continue }
                var proxyMode = false
                if let mode = r.string(im["ipMode"], "\(path).ipMode"), !mode.isEmpty {
                    switch mode {
                    case "VIP": break
                    case "Proxy": proxyMode = true
                    default: r.error("\(path).ipMode", "unsupported value \"\(mode)\" (VIP or Proxy)")
                    }
                }
                if let s = r.string(im["ip"], "\(path).ip"), !s.isEmpty, let ip = r.ip(s, "\(path).ip") {
                    svc.loadBalancerIngress.append(LoadBalancerIngress(ip: ip, proxyMode: proxyMode))
                }
            }
        }
        return (svc, r.problems)
    }

    // MARK: EndpointSlice

    static func endpointSlice(_ root: KNode, file: String) -> (EndpointSlice?, [Diagnostic]) {
        var r = FieldReader(file: file, object: "EndpointSlice")
        guard let meta = meta(root, kind: "EndpointSlice", namespaced: true, r: &r) else { return (nil, r.problems) }
        let ref = ObjectRef(kind: "EndpointSlice", namespace: meta.namespace, name: meta.name, file: file)
        let svcName = meta.labels["kubernetes.io/service-name"] ?? ""
        var family: IPFamily?
        let at = r.string(root["addressType"], "addressType") ?? ""
        switch at {
        case "IPv4": family = .ipv4
        case "IPv6": family = .ipv6
        case "FQDN": family = nil
        case "": r.error("addressType", "required value is missing")
        default: r.error("addressType", "unsupported value \"\(at)\" (IPv4, IPv6 or FQDN)")
        }
        var slice = EndpointSlice(ref: ref, serviceName: svcName, family: family)
        var seen = Set<String>()
        for (i, pn) in r.list(root["ports"], "ports").enumerated() {
            func path() -> String { "ports[\(i)]" }
            guard let pm = r.map(pn, path()) else { continue }
            let name = r.string(pm["name"], "\(path()).name") ?? ""
            if !name.isEmpty && !Names.isDNSLabel(name) {
                r.error("\(path()).name", "\"\(name)\" is not a valid port name (lowercase RFC 1123 label)")
            }
            if !seen.insert(name).inserted { r.error("\(path()).name", "duplicate port name \"\(name)\"") }
            let proto = r.proto(pm["protocol"], "\(path()).protocol")
            let port = r.port(pm["port"], "\(path()).port", required: false)
            if let proto { slice.ports.append(EndpointPort(name: name, port: port, proto: proto)) }
        }
        for (i, en) in r.list(root["endpoints"], "endpoints").enumerated() {
            func path() -> String { "endpoints[\(i)]" }
            guard let em = r.map(en, path()) else { continue }
            let addrs = r.stringList(em["addresses"], "\(path()).addresses")
            if addrs.isEmpty { r.error("\(path()).addresses", "at least one address is required") }
            if addrs.count > 100 { r.error("\(path()).addresses", "at most 100 addresses are allowed") }
            var first: IPAddress?
            if family != nil {
                for (j, a) in addrs.enumerated() {
                    let ip = r.ip(a, "\(path()).addresses[\(j)]", family: family)
                    if j == 0 { first = ip }
                }
            }
            let cond = r.map(em["conditions"], "\(path()).conditions")
            let ready = r.bool(cond?["ready"], "\(path()).conditions.ready") ?? true
            let serving = r.bool(cond?["serving"], "\(path()).conditions.serving")
            let terminating = r.bool(cond?["terminating"], "\(path()).conditions.terminating") ?? false
            var nodeName = r.string(em["nodeName"], "\(path()).nodeName")
            if nodeName?.isEmpty == true { nodeName = nil }
            let zone = r.string(em["zone"], "\(path()).zone")
            var zoneHints = [String](), nodeHints = [String]()
            if let hints = r.map(em["hints"], "\(path()).hints") {
                for (j, z) in r.list(hints["forZones"], "\(path()).hints.forZones").enumerated() {
                    if let zm = r.map(z, "\(path()).hints.forZones[\(j)]"),
                       let n = r.string(zm["name"], "\(path()).hints.forZones[\(j)].name") { zoneHints.append(n) }
                }
                for (j, z) in r.list(hints["forNodes"], "\(path()).hints.forNodes").enumerated() {
                    if let zm = r.map(z, "\(path()).hints.forNodes[\(j)]"),
                       let n = r.string(zm["name"], "\(path()).hints.forNodes[\(j)].name") { nodeHints.append(n) }
                }
            }
            if let first {
                slice.endpoints.append(Endpoint(address: first, ready: ready, serving: serving, terminating: terminating,
                                                nodeName: nodeName, zone: zone, zoneHints: zoneHints, nodeHints: nodeHints))
            }
        }
        return (slice, r.problems)
    }

    // MARK: v1 Endpoints

    static func endpoints(_ root: KNode, file: String) -> ([EndpointSlice], [Diagnostic]) {
        var r = FieldReader(file: file, object: "Endpoints")
        guard let meta = meta(root, kind: "Endpoints", namespaced: true, r: &r) else { return ([], r.problems) }
        let ref = ObjectRef(kind: "Endpoints", namespace: meta.namespace, name: meta.name, file: file)
        // One slice per (subset, family).
        var out = [EndpointSlice]()
        for (i, sn) in r.list(root["subsets"], "subsets").enumerated() {
            let path = "subsets[\(i)]"
            guard let sm = r.map(sn, path) else { continue }
            var ports = [EndpointPort]()
            for (j, pn) in r.list(sm["ports"], "\(path).ports").enumerated() {
                let pp = "\(path).ports[\(j)]"
                guard let pm = r.map(pn, pp) else { continue }
                let name = r.string(pm["name"], "\(pp).name") ?? ""
                let proto = r.proto(pm["protocol"], "\(pp).protocol")
                let port = r.port(pm["port"], "\(pp).port", required: true)
                if let proto, let port { ports.append(EndpointPort(name: name, port: port, proto: proto)) }
            }
            var byFamily = [IPFamily: EndpointSlice]()
            for (key, ready) in [("addresses", true), ("notReadyAddresses", false)] {
                for (j, an) in r.list(sm[key], "\(path).\(key)").enumerated() {
                    let ap = "\(path).\(key)[\(j)]"
                    guard let am = r.map(an, ap) else { continue }
                    guard let s = r.string(am["ip"], "\(ap).ip") else {
                        r.error("\(ap).ip", "required value is missing"); continue
                    }
                    guard let ip = r.ip(s, "\(ap).ip") else { continue }
                    var nodeName = r.string(am["nodeName"], "\(ap).nodeName")
                    if nodeName?.isEmpty == true { nodeName = nil }
                    var slice = byFamily[ip.family] ?? EndpointSlice(ref: ref, serviceName: meta.name, family: ip.family)
                    slice.ports = ports
                    slice.fromLegacyEndpoints = true
                    slice.endpoints.append(Endpoint(address: ip, ready: ready, serving: ready, terminating: false, nodeName: nodeName))
                    byFamily[ip.family] = slice
                }
            }
            out.append(contentsOf: byFamily.keys.sorted().compactMap { byFamily[$0] })
        }
        return (out, r.problems)
    }

    // MARK: Node

    static func node(_ root: KNode, file: String) -> (KubeNode?, [Diagnostic]) {
        var r = FieldReader(file: file, object: "Node")
        guard let meta = meta(root, kind: "Node", namespaced: false, r: &r) else { return (nil, r.problems) }
        if !Names.isDNSSubdomain(meta.name) {
            r.error("metadata.name", "\"\(meta.name)\" is not a valid Node name (RFC 1123 subdomain)")
        }
        var node = KubeNode(ref: ObjectRef(kind: "Node", namespace: "", name: meta.name, file: file))
        node.labels = meta.labels
        let spec = r.map(root["spec"], "spec")
        var cidrs = r.stringList(spec?["podCIDRs"], "spec.podCIDRs")
        if cidrs.isEmpty, let one = r.string(spec?["podCIDR"], "spec.podCIDR"), !one.isEmpty { cidrs = [one] }
        for (i, c) in cidrs.enumerated() {
            if let cidr = CIDR(c) { node.podCIDRs.append(cidr) } else { r.error("spec.podCIDRs[\(i)]", "\"\(c)\" is not a valid CIDR") }
        }
        let status = r.map(root["status"], "status")
        for (i, an) in r.list(status?["addresses"], "status.addresses").enumerated() {
            let path = "status.addresses[\(i)]"
            guard let am = r.map(an, path) else { continue }
            let type = r.string(am["type"], "\(path).type") ?? ""
            guard type == "InternalIP" || type == "ExternalIP" else { continue }
            if let s = r.string(am["address"], "\(path).address"), let ip = r.ip(s, "\(path).address") {
                node.addresses.append(NodeAddress(type: type, address: ip))
            }
        }
        return (node, r.problems)
    }

    // MARK: KubeProxyConfiguration

    static func proxyConfiguration(_ root: KNode, file: String) -> (ProxyConfiguration, [Diagnostic]) {
        var r = FieldReader(file: file, object: "KubeProxyConfiguration")
        var c = ProxyConfiguration()
        guard r.map(root, "") != nil else {
            return (c, [Diagnostic(file: file, object: "KubeProxyConfiguration", message: "expected an object, got \(root.shortDescription)")])
        }
        let kind = r.string(root["kind"], "kind") ?? ""
        if kind != "KubeProxyConfiguration" {
            r.error("kind", "expected KubeProxyConfiguration, got \"\(kind)\"")
        }
        let api = r.string(root["apiVersion"], "apiVersion") ?? ""
        if !api.hasPrefix("kubeproxy.config.k8s.io/") {
            r.error("apiVersion", "expected kubeproxy.config.k8s.io/v1alpha1, got \"\(api)\"")
        }
        if let h = r.string(root["hostnameOverride"], "hostnameOverride"), !h.isEmpty { c.hostnameOverride = h.lowercased() }
        if let cc = r.string(root["clusterCIDR"], "clusterCIDR") {
            for part in cc.split(separator: ",") {
                let t = part.trimmingSpaces()
                if t.isEmpty { continue }
                if let cidr = CIDR(t) { c.clusterCIDRs.append(cidr) } else { r.error("clusterCIDR", "\"\(t)\" is not a valid CIDR") }
            }
        }
        let npa = r.stringList(root["nodePortAddresses"], "nodePortAddresses")
        for (i, s) in npa.enumerated() where s != "primary" && CIDR(s) == nil {
            r.error("nodePortAddresses[\(i)]", "\"\(s)\" is not a valid CIDR or \"primary\"")
        }
        if npa.contains("primary") && npa.count > 1 {
            r.error("nodePortAddresses", "\"primary\" cannot be combined with CIDRs")
        }
        c.nodePortAddresses = npa
        if let ipt = r.map(root["iptables"], "iptables") {
            if let bit = r.int(ipt["masqueradeBit"], "iptables.masqueradeBit") {
                if (0...31).contains(bit) { c.masqueradeBit = bit } else { r.error("iptables.masqueradeBit", "\(bit) must be in the range 0-31") }
            }
            if let m = r.bool(ipt["masqueradeAll"], "iptables.masqueradeAll") { c.masqueradeAll = m }
            if let l = r.bool(ipt["localhostNodePorts"], "iptables.localhostNodePorts") { c.localhostNodePorts = l }
        }
        if let linux = r.map(root["linux"], "linux"), let m = r.bool(linux["masqueradeAll"], "linux.masqueradeAll") {
            c.masqueradeAll = c.masqueradeAll || m
        }
        if let ipvs = r.map(root["ipvs"], "ipvs"), let s = r.string(ipvs["scheduler"], "ipvs.scheduler"), !s.isEmpty {
            let known = ["rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh", "fo", "ovf", "twos"]
            if known.contains(s) { c.ipvsScheduler = s } else { r.error("ipvs.scheduler", "unknown IPVS scheduler \"\(s)\"") }
        }
        if let m = r.string(root["mode"], "mode") {
            if ["", "iptables", "ipvs", "nftables"].contains(m) { c.mode = m } else {
                r.error("mode", "unsupported value \"\(m)\" (iptables, ipvs or nftables)")
            }
        }
        if let d = r.string(root["detectLocalMode"], "detectLocalMode"), !d.isEmpty {
            if let mode = DetectLocalMode(rawValue: d) { c.detectLocalMode = mode } else {
                r.error("detectLocalMode", "unsupported value \"\(d)\" (ClusterCIDR, NodeCIDR, BridgeInterface or InterfaceNamePrefix)")
            }
        }
        if let dl = r.map(root["detectLocal"], "detectLocal") {
            c.bridgeInterface = r.string(dl["bridgeInterface"], "detectLocal.bridgeInterface") ?? ""
            c.interfaceNamePrefix = r.string(dl["interfaceNamePrefix"], "detectLocal.interfaceNamePrefix") ?? ""
        }
        if c.detectLocalMode == .bridgeInterface && c.bridgeInterface.isEmpty {
            r.error("detectLocal.bridgeInterface", "required when detectLocalMode is BridgeInterface")
        }
        if c.detectLocalMode == .interfaceNamePrefix && c.interfaceNamePrefix.isEmpty {
            r.error("detectLocal.interfaceNamePrefix", "required when detectLocalMode is InterfaceNamePrefix")
        }
        return (c, r.problems)
    }
}
