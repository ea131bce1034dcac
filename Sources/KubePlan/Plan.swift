import KubeModel
import Parallel

/// One endpoint of one service port, as the proxy sees it.
public struct PlannedEndpoint: Sendable, Hashable {
    public var ip: IPAddress
    public var port: Int
    public var isLocal: Bool
    public var ready: Bool
    public var serving: Bool
    public var terminating: Bool
    public var zoneHints: [String]
    public var nodeHints: [String]

    public init(ip: IPAddress, port: Int, isLocal: Bool, ready: Bool, serving: Bool, terminating: Bool,
                zoneHints: [String] = [], nodeHints: [String] = []) {
        self.ip = ip; self.port = port; self.isLocal = isLocal; self.ready = ready; self.serving = serving
        self.terminating = terminating; self.zoneHints = zoneHints; self.nodeHints = nodeHints
    }

    /// `IP:PORT`, or `[IP]:PORT` for IPv6 (Go's net.JoinHostPort).
    public var hostPort: String {
        if ip.family == .ipv4, (0...65535).contains(port) { return ip.withIPv4Text(port: port) { String(decoding: $0, as: UTF8.self) } }
        return ip.family == .ipv4 ? "\(ip):\(port)" : "[\(ip)]:\(port)"
    }

    /// Endpoints in the order of their `hostPort` text (kube-proxy's order), those with the
    /// same address and port merged into one: `keep(kept, next)` in input order. The key is
    /// built without the text when every address is IPv4 (the text of 100,000 endpoints, and
    /// a dictionary keyed by it, were most of planning 10,000 services).
    static func sortedByHostPort(_ eps: [PlannedEndpoint],
                                 keep: (PlannedEndpoint, PlannedEndpoint) -> PlannedEndpoint) -> [PlannedEndpoint] {
        guard eps.count > 1 else { return eps }
        if eps.allSatisfy({ $0.ip.family == .ipv4 }) {
            return merged(eps, keys: eps.map { HostPortKey(v4: $0.ip.v4, port: $0.port) }, keep: keep)
        }
        return merged(eps, keys: eps.map(\.hostPort), keep: keep)
    }

    private static func merged<K: Comparable>(_ eps: [PlannedEndpoint], keys: [K],
                                              keep: (PlannedEndpoint, PlannedEndpoint) -> PlannedEndpoint) -> [PlannedEndpoint] {
        let order = eps.indices.sorted { keys[$0] != keys[$1] ? keys[$0] < keys[$1] : $0 < $1 }
        var out = [PlannedEndpoint]()
        out.reserveCapacity(eps.count)
        for (n, i) in order.enumerated() {
            if n > 0 && keys[order[n - 1]] == keys[i] { out[out.count - 1] = keep(out[out.count - 1], eps[i]) } else { out.append(eps[i]) }
        }
        return out
    }
}

/// The text `a.b.c.d:port` as one big-endian integer per 8 bytes, so that comparing keys is
/// comparing the texts byte by byte (at most 21 bytes; a shorter text is padded with zeros,
/// which sort before every character, as a prefix sorts first).
struct HostPortKey: Comparable {
    var w0: UInt64 = 0, w1: UInt64 = 0, w2: UInt64 = 0
    private var n: UInt64 = 0

    init(v4: UInt32, port: Int) {
        for k in 0..<4 {
            if k > 0 { put(UInt8(ascii: ".")) }
            let o = UInt8(truncatingIfNeeded: v4 >> (24 - 8 * UInt32(k)))
            if o >= 100 { put(0x30 + o / 100) }
            if o >= 10 { put(0x30 + o / 10 % 10) }
            put(0x30 + o % 10)
        }
        put(UInt8(ascii: ":"))
        // Digits of the port, last first, then written in order (constant divisors only).
        var p = UInt32(truncatingIfNeeded: port), digits: UInt64 = 0, count = 0
        repeat { digits = digits << 8 | UInt64(0x30 + p % 10); p /= 10; count += 1 } while p > 0 && count < 8
        for _ in 0..<count { put(UInt8(truncatingIfNeeded: digits)); digits >>= 8 }
    }

    @inline(__always) private mutating func put(_ b: UInt8) {
        let v = UInt64(b) << (56 - 8 * (n & 7))
        switch n >> 3 {
        case 0: w0 |= v
        case 1: w1 |= v
        default: w2 |= v
        }
        n += 1
    }

    static func < (a: HostPortKey, b: HostPortKey) -> Bool { (a.w0, a.w1, a.w2) < (b.w0, b.w1, b.w2) }
    static func == (a: HostPortKey, b: HostPortKey) -> Bool { (a.w0, a.w1, a.w2) == (b.w0, b.w1, b.w2) }
}

/// What happens to traffic that has no usable endpoint.
public enum NoEndpointAction: Sendable, Hashable {
    /// The service has no endpoints at all: `"SPN has no endpoints"`, REJECT.
    case reject
    /// Local policy and no local endpoint: `"SPN has no local endpoints"`, DROP.
    case drop
}

/// Which endpoint set a kind of traffic uses.
public enum PolicyTarget: Sendable, Hashable { case cluster, local }

/// One service port in one IP family, with every Kubernetes rule of behaviour decided.
public struct ServicePortPlan: Sendable {
    public var name: ServicePortName
    public var nameString: String { name.description }
    public var proto: L4Protocol
    public var clusterIP: IPAddress
    public var port: Int
    public var nodePort: Int
    public var externalIPs: [IPAddress]
    /// LoadBalancer ingress IPs of this family (ipMode Proxy left out).
    public var loadBalancerIPs: [IPAddress]
    public var sourceRanges: [CIDR]
    public var healthCheckNodePort: Int
    /// ClientIP affinity timeout in seconds, nil when affinity is off.
    public var affinityTimeout: Int?
    public var internalPolicyLocal: Bool
    public var externalPolicyLocal: Bool

    /// Endpoints for Cluster policy (ready, topology-filtered, else serving+terminating).
    public var clusterEndpoints: [PlannedEndpoint]
    /// Endpoints on this node for Local policy (ready, else serving+terminating).
    public var localEndpoints: [PlannedEndpoint]
    /// Every endpoint some rule may DNAT to (sorted by hostPort).
    public var reachableEndpoints: [PlannedEndpoint]
    /// True if the service has any usable endpoint anywhere in the cluster.
    public var hasEndpoints: Bool

    // MARK: derived decisions

    public var externallyAccessible: Bool { nodePort != 0 || !loadBalancerIPs.isEmpty || !externalIPs.isEmpty }
    /// Cluster endpoints are needed by Cluster policies, and by eTP=Local too (short-circuit of pod and host traffic).
    public var usesClusterEndpoints: Bool { !internalPolicyLocal || externallyAccessible }
    public var usesLocalEndpoints: Bool { internalPolicyLocal || (externallyAccessible && externalPolicyLocal) }

    /// Internal (ClusterIP) traffic has somewhere to go.
    public var hasInternalEndpoints: Bool { internalPolicyLocal ? (hasEndpoints && !localEndpoints.isEmpty) : hasEndpoints }
    /// External (NodePort, externalIP, LB) traffic from outside has somewhere to go.
    public var hasExternalEndpoints: Bool { externalPolicyLocal ? (hasEndpoints && !localEndpoints.isEmpty) : hasEndpoints }
    public var internalTarget: PolicyTarget { internalPolicyLocal ? .local : .cluster }
    public var externalTarget: PolicyTarget { externalPolicyLocal ? .local : .cluster }

    /// What to do with ClusterIP traffic when there is no internal endpoint.
    public var internalNoEndpoints: NoEndpointAction? {
        if !hasEndpoints { return .reject }
        return hasInternalEndpoints ? nil : .drop
    }
    /// What to do with external traffic when there is no external endpoint.
    public var externalNoEndpoints: NoEndpointAction? {
        if !hasEndpoints { return .reject }
        return hasExternalEndpoints ? nil : .drop
    }

    public var usesClusterPolicy: Bool { !clusterEndpoints.isEmpty && usesClusterEndpoints }
    public var usesLocalPolicy: Bool { !localEndpoints.isEmpty && usesLocalEndpoints }
    /// The external-destinations dispatch (KUBE-EXT) exists even without external endpoints,
    /// for the short-circuit of pod and host traffic.
    public var usesExternalDispatch: Bool { hasEndpoints && externallyAccessible }
    /// LoadBalancer source ranges are enforced.
    public var usesFirewall: Bool { hasEndpoints && !loadBalancerIPs.isEmpty && !sourceRanges.isEmpty }
    /// A source range contains the node's own IP, so LB-VIP-sourced traffic from the node is allowed.
    public var allowFromNode: Bool

    public func endpoints(for target: PolicyTarget) -> [PlannedEndpoint] {
        target == .cluster ? clusterEndpoints : localEndpoints
    }
}

/// The backend-neutral plan for one IP family.
public struct Plan: Sendable {
    public var family: IPFamily
    public var nodeName: String
    public var services: [ServicePortPlan]
    public var masqueradeBit: Int
    public var masqueradeMark: UInt32 { 1 << UInt32(masqueradeBit) }
    public var masqueradeAll: Bool
    public var localDetector: LocalDetector
    public var nodePorts: NodePortSelection
    /// IPv4 only: NodePorts answer on 127.0.0.0/8 (and KUBE-FIREWALL guards route_localnet).
    public var localhostNodePorts: Bool
    public var primaryNodeIP: IPAddress?
    /// Sum of endpoints over all service ports (kube-proxy's large-cluster switch counts these).
    public var totalEndpoints: Int
    /// Above 1000 endpoints kube-proxy drops per-endpoint comments.
    public var largeClusterMode: Bool { totalEndpoints > 1000 }
    public var ipvsScheduler: String
    /// The node's own addresses of this family (--node-ip, or the Node object's), in the order given.
    public var nodeIPs: [IPAddress] = []
    /// Every ClusterIP of this family that has at least one service port (for unknown-port rejects).
    public var clusterIPs: [IPAddress] {
        Array(Set(services.map(\.clusterIP))).sorted()
    }
}

public enum Planner {
    /// Builds the plan for one family. Deterministic: services sorted by service port name.
    public static func plan(cluster: Cluster, node: NodeConfig, family: IPFamily) -> Plan {
        // Endpoint slices by service (indices: slices, then v1 Endpoints after them), this family
        // only; v1 Endpoints only where no slice exists. Copied out and sorted per service below.
        struct Found { var anySlice = false; var indices: [Int] = [] }
        var slicesByService = [ServiceKey: Found]()
        let sliceCount = cluster.slices.count
        for (i, s) in cluster.slices.enumerated() {
            Self.update(&slicesByService[ServiceKey(namespace: s.ref.namespace, name: s.serviceName), default: Found()]) { f in
                f.anySlice = true
                if s.family == family { f.indices.append(i) }
            }
        }
        for (i, s) in cluster.legacyEndpoints.enumerated() where s.family == family {
            Self.update(&slicesByService[ServiceKey(namespace: s.ref.namespace, name: s.serviceName), default: Found()]) { f in
                if !f.anySlice { f.indices.append(sliceCount + i) }
            }
        }

        let zone = node.zone
        let primary = node.primaryIP(family)
        // Each Service is planned on its own (in parallel); the ports come back in input order.
        let perService = Parallel.map(count: cluster.services.count, minimumPerTask: 256) { (i: Int) -> (ports: [ServicePortPlan], endpoints: Int) in
            let svc = cluster.services[i]
            if svc.type == .externalName || svc.headless { return ([], 0) }
            guard let clusterIP = svc.clusterIPs.first(where: { $0.family == family }) else { return ([], 0) }
            let slices = (slicesByService[ServiceKey(namespace: svc.namespace, name: svc.name)]?.indices ?? [])
                .map { $0 < sliceCount ? cluster.slices[$0] : cluster.legacyEndpoints[$0 - sliceCount] }
                .sorted { $0.ref.name < $1.ref.name }
            let externalIPs = svc.externalIPs.filter { $0.family == family }
            let lbIPs = svc.loadBalancerIngress.filter { $0.ip.family == family && !$0.proxyMode }.map(\.ip)
            let ranges = svc.loadBalancerSourceRanges.filter { $0.family == family }
            let externallyAccessibleService = svc.type == .loadBalancer || svc.type == .nodePort ||
                (svc.type == .clusterIP && !svc.externalIPs.isEmpty)
            let eLocal = externallyAccessibleService && svc.externalTrafficPolicy == .local
            let iLocal = svc.internalTrafficPolicy == .local
            let hcPort = (svc.type == .loadBalancer && svc.externalTrafficPolicy == .local) ? svc.healthCheckNodePort : 0
            var endpointCount = 0
            let ports = svc.ports.map { sp in
                let spn = ServicePortName(namespace: svc.namespace, name: svc.name, port: sp.name)
                let all = endpoints(for: sp, slices: slices, nodeName: node.nodeName)
                var plan = ServicePortPlan(
                    name: spn, proto: sp.proto, clusterIP: clusterIP, port: sp.port, nodePort: sp.nodePort,
                    externalIPs: externalIPs, loadBalancerIPs: lbIPs, sourceRanges: ranges,
                    healthCheckNodePort: hcPort, affinityTimeout: svc.affinityTimeout,
                    internalPolicyLocal: iLocal, externalPolicyLocal: eLocal,
                    clusterEndpoints: [], localEndpoints: [], reachableEndpoints: [], hasEndpoints: false,
                    allowFromNode: primary.map { ip in ranges.contains { $0.contains(ip) } } ?? false)
                endpointCount += all.count
                categorize(&plan, all, nodeName: node.nodeName, zone: zone)
                return plan
            }
            return (ports, endpointCount)
        }
        var out = [ServicePortPlan]()
        out.reserveCapacity(perService.reduce(0) { $0 + $1.ports.count })
        var total = 0
        for s in perService {
            total += s.endpoints
            out.append(contentsOf: s.ports)
        }
        sortByName(&out)
        let (nodePorts, localhost) = node.nodePortSelection(family)
        return Plan(family: family, nodeName: node.nodeName, services: out, masqueradeBit: node.proxy.masqueradeBit,
                    masqueradeAll: node.proxy.masqueradeAll, localDetector: node.localDetector(family),
                    nodePorts: nodePorts, localhostNodePorts: localhost, primaryNodeIP: primary,
                    totalEndpoints: total, ipvsScheduler: node.proxy.ipvsScheduler,
                    nodeIPs: node.nodeIPs.filter { $0.family == family })
    }

    /// A Service's namespace and name, hashed as they are (not joined into a new String).
    struct ServiceKey: Hashable {
        let namespace: String
        let name: String
    }

    private static func update<T>(_ value: inout T, _ body: (inout T) -> Void) { body(&value) }

    /// Service ports by name.
    static func sortByName(_ ports: inout [ServicePortPlan]) {
        permute(&ports, by: orderOf(names: ports.map(\.name.description)))
    }

    /// The indices of `names` in String order. ASCII names (Kubernetes names are) are ordered by
    /// their first 16 bytes as two big-endian words, then as Strings: String order, without a
    /// String comparison per step.
    static func orderOf(names: [String]) -> [Int] {
        guard names.allSatisfy({ $0.utf8.allSatisfy { $0 < 0x80 } }) else {
            return names.indices.sorted { names[$0] != names[$1] ? names[$0] < names[$1] : $0 < $1 }
        }
        let keys = names.indices.map { i -> (UInt64, UInt64, Int) in
            var w: (UInt64, UInt64) = (0, 0)
            withUnsafeMutableBytes(of: &w) { raw in
                for (k, b) in names[i].utf8.prefix(16).enumerated() { raw[k] = b }
            }
            return (UInt64(bigEndian: w.0), UInt64(bigEndian: w.1), i)
        }
        return keys.sorted { a, b in
            if a.0 != b.0 { return a.0 < b.0 }
            if a.1 != b.1 { return a.1 < b.1 }
            if names[a.2] != names[b.2] { return names[a.2] < names[b.2] }
            return a.2 < b.2
        }.map(\.2)
    }

    /// `a[k] = old a[order[k]]`, by swapping along the permutation's cycles: elements are moved,
    /// never copied (a copy of a service port plan retains a dozen arrays and strings).
    static func permute<T>(_ a: inout [T], by order: [Int]) {
        var done = [Bool](repeating: false, count: a.count)
        for start in a.indices where !done[start] {
            var k = start
            while true {
                done[k] = true
                let next = order[k]
                if next == start { break }
                a.swapAt(k, next)
                k = next
            }
        }
    }

    /// All endpoints of one service port, deduplicated by IP:PORT (a ready copy wins), sorted by IP:PORT.
    static func endpoints(for sp: ServicePort, slices: [EndpointSlice], nodeName: String) -> [PlannedEndpoint] {
        var found = [PlannedEndpoint]()
        for slice in slices {
            for p in slice.ports where p.name == sp.name && p.proto == sp.proto {
                guard let port = p.port else { continue }
                for e in slice.endpoints {
                    found.append(PlannedEndpoint(ip: e.address, port: port, isLocal: !nodeName.isEmpty && e.nodeName == nodeName,
                                                 ready: e.ready, serving: e.serving, terminating: e.terminating,
                                                 zoneHints: e.zoneHints, nodeHints: e.nodeHints))
                }
            }
        }
        return PlannedEndpoint.sortedByHostPort(found) { kept, next in kept.ready && !next.ready ? kept : next }
    }

    /// kube-proxy's CategorizeEndpoints: cluster, local and reachable sets, with topology and
    /// the serving-terminating fallback.
    static func categorize(_ plan: inout ServicePortPlan, _ all: [PlannedEndpoint], nodeName: String, zone: String) {
        var cluster = [PlannedEndpoint]()
        var useTopology = false
        var hasAny = false
        if plan.usesClusterEndpoints {
            let mode = topologyMode(all, nodeName: nodeName, zone: zone)
            useTopology = mode != .none
            cluster = all.filter { ep in
                guard ep.ready else { return false }
                switch mode {
                case .none: return true
                case .node: return ep.nodeHints.contains(nodeName)
                case .zone: return ep.zoneHints.contains(zone)
                }
            }
            if cluster.isEmpty { cluster = all.filter { $0.serving && $0.terminating } }
            hasAny = !cluster.isEmpty
        }
        plan.clusterEndpoints = cluster
        guard plan.usesLocalEndpoints else {
            plan.reachableEndpoints = cluster
            plan.hasEndpoints = hasAny
            return
        }
        var localReady = false, localTerminating = false
        for ep in all {
            if ep.ready {
                hasAny = true
                if ep.isLocal { localReady = true }
            } else if ep.serving && ep.terminating {
                hasAny = true
                if ep.isLocal { localTerminating = true }
            }
        }
        var local = [PlannedEndpoint]()
        var usedTerminating = false
        if localReady {
            local = all.filter { $0.isLocal && $0.ready }
        } else if localTerminating {
            usedTerminating = true
            local = all.filter { $0.isLocal && $0.serving && $0.terminating }
        }
        plan.localEndpoints = local
        plan.hasEndpoints = hasAny
        if !plan.usesClusterEndpoints {
            plan.reachableEndpoints = local
        } else if !useTopology && !usedTerminating {
            plan.reachableEndpoints = cluster
        } else {
            plan.reachableEndpoints = PlannedEndpoint.sortedByHostPort(cluster + local) { _, next in next }
        }
    }

    enum TopologyMode { case none, node, zone }

    /// Hints are used only when every ready endpoint has them and one matches this node (name, else zone).
    static func topologyMode(_ all: [PlannedEndpoint], nodeName: String, zone: String) -> TopologyMode {
        var forNode = false, allNodeHints = true, forZone = false, allZoneHints = true, anyReady = false
        for ep in all where ep.ready {
            anyReady = true
            if ep.nodeHints.isEmpty { allNodeHints = false } else if ep.nodeHints.contains(nodeName) { forNode = true }
            if ep.zoneHints.isEmpty { allZoneHints = false } else if ep.zoneHints.contains(zone) { forZone = true }
        }
        guard anyReady else { return .none }
        if allNodeHints && forNode && !nodeName.isEmpty { return .node }
        if allZoneHints && forZone && !zone.isEmpty { return .zone }
        return .none
    }
}
