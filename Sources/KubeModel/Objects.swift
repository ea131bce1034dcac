/// Where an object came from, for error messages.
public struct ObjectRef: Sendable, Hashable, CustomStringConvertible {
    public var kind: String
    public var namespace: String
    public var name: String
    public var file: String
    public init(kind: String, namespace: String, name: String, file: String) {
        self.kind = kind; self.namespace = namespace; self.name = name; self.file = file
    }
    /// `Service shop/web`, or `Node worker-1` for cluster-scoped kinds.
    public var description: String {
        namespace.isEmpty ? "\(kind) \(name)" : "\(kind) \(namespace)/\(name)"
    }
}

public enum L4Protocol: String, Sendable, Hashable, CaseIterable, Comparable {
    case tcp = "TCP", udp = "UDP", sctp = "SCTP"
    public var lower: String {
        switch self { case .tcp: "tcp"; case .udp: "udp"; case .sctp: "sctp" }
    }
    public var number: UInt8 {
        switch self { case .tcp: 6; case .udp: 17; case .sctp: 132 }
    }
    public static func < (a: L4Protocol, b: L4Protocol) -> Bool { a.number < b.number }
}

public enum ServiceType: String, Sendable, Hashable {
    case clusterIP = "ClusterIP", nodePort = "NodePort", loadBalancer = "LoadBalancer", externalName = "ExternalName"
}

public enum TrafficPolicy: String, Sendable, Hashable {
    case cluster = "Cluster", local = "Local"
}

public struct ServicePort: Sendable, Hashable {
    public var name: String
    public var proto: L4Protocol
    public var port: Int
    public var nodePort: Int
    public init(name: String, proto: L4Protocol, port: Int, nodePort: Int = 0) {
        self.name = name; self.proto = proto; self.port = port; self.nodePort = nodePort
    }
}

public struct LoadBalancerIngress: Sendable, Hashable {
    public var ip: IPAddress
    /// `ipMode: Proxy` ingress is not captured by the proxy (the LB rewrites the destination).
    public var proxyMode: Bool
    public init(ip: IPAddress, proxyMode: Bool = false) { self.ip = ip; self.proxyMode = proxyMode }
}

public struct Service: Sendable {
    public var ref: ObjectRef
    public var namespace: String { ref.namespace }
    public var name: String { ref.name }
    public var type: ServiceType = .clusterIP
    /// Empty for headless (`None`) or unallocated services.
    public var clusterIPs: [IPAddress] = []
    public var headless = false
    public var ports: [ServicePort] = []
    public var externalIPs: [IPAddress] = []
    public var loadBalancerIngress: [LoadBalancerIngress] = []
    public var loadBalancerSourceRanges: [CIDR] = []
    /// ClientIP affinity timeout in seconds; nil when affinity is None.
    public var affinityTimeout: Int?
    public var externalTrafficPolicy: TrafficPolicy = .cluster
    public var internalTrafficPolicy: TrafficPolicy = .cluster
    public var healthCheckNodePort = 0
    public init(ref: ObjectRef) { self.ref = ref }
}

public struct EndpointPort: Sendable, Hashable {
    public var name: String
    public var port: Int?
    public var proto: L4Protocol
    public init(name: String, port: Int?, proto: L4Protocol) { self.name = name; self.port = port; self.proto = proto }
}

public struct Endpoint: Sendable, Hashable {
    public var address: IPAddress
    public var ready: Bool
    public var serving: Bool
    public var terminating: Bool
    public var nodeName: String?
    public var zone: String?
    public var zoneHints: [String]
    public var nodeHints: [String]
    public init(address: IPAddress, ready: Bool = true, serving: Bool? = nil, terminating: Bool = false,
                nodeName: String? = nil, zone: String? = nil, zoneHints: [String] = [], nodeHints: [String] = []) {
        self.address = address; self.ready = ready; self.serving = serving ?? ready
        self.terminating = terminating; self.nodeName = nodeName; self.zone = zone
        self.zoneHints = zoneHints; self.nodeHints = nodeHints
    }
}

/// discovery.k8s.io/v1 EndpointSlice (and v1 Endpoints, converted to the same shape).
public struct EndpointSlice: Sendable, Equatable {
    public var ref: ObjectRef
    public var serviceName: String
    /// nil for FQDN slices, which the proxy ignores.
    public var family: IPFamily?
    public var ports: [EndpointPort] = []
    public var endpoints: [Endpoint] = []
    /// True when converted from a v1 Endpoints object.
    public var fromLegacyEndpoints = false
    public init(ref: ObjectRef, serviceName: String, family: IPFamily?) {
        self.ref = ref; self.serviceName = serviceName; self.family = family
    }
}

public struct NodeAddress: Sendable, Hashable {
    public var type: String
    public var address: IPAddress
}

public struct KubeNode: Sendable {
    public var ref: ObjectRef
    public var name: String { ref.name }
    public var labels: [String: String] = [:]
    public var addresses: [NodeAddress] = []
    public var podCIDRs: [CIDR] = []
    public init(ref: ObjectRef) { self.ref = ref }
}

public enum DetectLocalMode: String, Sendable, Hashable {
    case clusterCIDR = "ClusterCIDR", nodeCIDR = "NodeCIDR", bridgeInterface = "BridgeInterface",
         interfaceNamePrefix = "InterfaceNamePrefix"
}

/// The subset of kubeproxy.config.k8s.io/v1alpha1 KubeProxyConfiguration that shapes the rules.
public struct ProxyConfiguration: Sendable {
    public var hostnameOverride: String?
    public var clusterCIDRs: [CIDR] = []
    /// CIDR strings, or the special value "primary".
    public var nodePortAddresses: [String] = []
    public var masqueradeBit = 14
    public var masqueradeAll = false
    public var localhostNodePorts = true
    public var ipvsScheduler = "rr"
    public var mode = ""
    public var detectLocalMode: DetectLocalMode = .clusterCIDR
    public var bridgeInterface = ""
    public var interfaceNamePrefix = ""
    public init() {}
}

/// Everything loaded from the input manifests.
public struct Cluster: Sendable {
    public var services: [Service] = []
    public var slices: [EndpointSlice] = []
    /// v1 Endpoints, converted; used only for services that have no EndpointSlice.
    public var legacyEndpoints: [EndpointSlice] = []
    public var nodes: [KubeNode] = []
    public init() {}
}
