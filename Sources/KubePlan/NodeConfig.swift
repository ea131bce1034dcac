import KubeModel

/// Which node addresses accept NodePort traffic.
public enum NodePortSelection: Sendable, Hashable {
    /// Every local address (`-m addrtype --dst-type LOCAL`, `fib daddr type local`).
    case all
    /// Only these node addresses.
    case addresses([IPAddress])
}

/// How "traffic from a local pod" is recognised (KubeProxyConfiguration detectLocalMode).
public enum LocalDetector: Sendable, Hashable {
    case none
    case sourceCIDRs([CIDR])
    case bridgeInterface(String)
    case interfaceNamePrefix(String)

    public var isImplemented: Bool { if case .none = self { return false }; return true }
}

/// Everything about this node and the proxy configuration that shapes the rules.
public struct NodeConfig: Sendable {
    public var nodeName: String
    /// The node's own addresses (from --node-ip, or the Node object's InternalIP/ExternalIP).
    public var nodeIPs: [IPAddress]
    public var labels: [String: String]
    public var podCIDRs: [CIDR]
    public var proxy: ProxyConfiguration

    public init(nodeName: String, nodeIPs: [IPAddress] = [], labels: [String: String] = [:],
                podCIDRs: [CIDR] = [], proxy: ProxyConfiguration = ProxyConfiguration()) {
        self.nodeName = nodeName; self.nodeIPs = nodeIPs; self.labels = labels
        self.podCIDRs = podCIDRs; self.proxy = proxy
    }

    public var zone: String { labels["topology.kubernetes.io/zone"] ?? "" }

    public func primaryIP(_ family: IPFamily) -> IPAddress? { nodeIPs.first { $0.family == family } }

    /// Resolves the node: --node-name, else hostnameOverride, else the only Node in the input.
    /// Node IPs: --node-ip flags, else the Node object's InternalIP addresses (ExternalIP if none).
    public static func resolve(proxy: ProxyConfiguration, nodeName flagName: String?, nodeIPs flagIPs: [IPAddress],
                               cluster: Cluster) -> (NodeConfig, [Diagnostic]) {
        var notes = [Diagnostic]()
        var name = flagName ?? proxy.hostnameOverride ?? ""
        if name.isEmpty {
            if cluster.nodes.count == 1 {
                name = cluster.nodes[0].name
            } else if !cluster.nodes.isEmpty {
                notes.append(Diagnostic(.warning, file: "<input>", message:
                    "several Node objects and no --node-name or hostnameOverride: no endpoint counts as local"))
            }
        }
        let node = cluster.nodes.first { $0.name == name }
        if !name.isEmpty && node == nil && !cluster.nodes.isEmpty {
            notes.append(Diagnostic(.warning, file: "<input>", message: "node \"\(name)\" is not among the Node objects in the input"))
        }
        var ips = flagIPs
        if ips.isEmpty, let node {
            ips = node.addresses.filter { $0.type == "InternalIP" }.map(\.address)
            if ips.isEmpty { ips = node.addresses.filter { $0.type == "ExternalIP" }.map(\.address) }
        }
        var seen = Set<IPAddress>()
        ips = ips.filter { seen.insert($0).inserted }
        return (NodeConfig(nodeName: name, nodeIPs: ips, labels: node?.labels ?? [:], podCIDRs: node?.podCIDRs ?? [], proxy: proxy), notes)
    }

    /// kube-proxy's local-traffic detector for one family.
    public func localDetector(_ family: IPFamily) -> LocalDetector {
        switch proxy.detectLocalMode {
        case .clusterCIDR:
            let c = proxy.clusterCIDRs.filter { $0.family == family }
            return c.isEmpty ? .none : .sourceCIDRs([c[0]])
        case .nodeCIDR:
            let c = podCIDRs.filter { $0.family == family }
            return c.isEmpty ? .none : .sourceCIDRs([c[0]])
        case .bridgeInterface:
            return .bridgeInterface(proxy.bridgeInterface)
        case .interfaceNamePrefix:
            return .interfaceNamePrefix(proxy.interfaceNamePrefix)
        }
    }

    /// NodePort destinations for one family, plus whether localhost NodePorts are in effect.
    public func nodePortSelection(_ family: IPFamily) -> (NodePortSelection, localhost: Bool) {
        var cidrs = [CIDR]()
        if proxy.nodePortAddresses == ["primary"] {
            if let ip = primaryIP(family) { cidrs = [CIDR(network: ip, prefixLength: family.bits)] }
        } else {
            cidrs = proxy.nodePortAddresses.compactMap { CIDR($0) }.filter { $0.family == family }
        }
        let loopback4 = IPAddress(v4: 0x7f00_0001)
        if cidrs.isEmpty || cidrs.contains(where: { $0.prefixLength == 0 }) {
            // Matches everything, loopback included.
            return (.all, family == .ipv4 && proxy.localhostNodePorts)
        }
        let containsLoopback = family == .ipv4 && cidrs.contains { $0.address.isLoopback || $0.contains(loopback4) }
        let localhost = containsLoopback && proxy.localhostNodePorts
        // Candidate addresses: the node's own, plus the loopback interface's.
        var candidates = nodeIPs.filter { $0.family == family }
        candidates.append(family == .ipv4 ? loopback4 : IPAddress(v6: 0, 1))
        var selected = [IPAddress]()
        for ip in Set(candidates).sorted() where cidrs.contains(where: { $0.contains(ip) }) {
            if ip.isLoopback && (family == .ipv6 || !localhost) { continue }
            selected.append(ip)
        }
        return (.addresses(selected), localhost)
    }
}
