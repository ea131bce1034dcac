import KubeModel

/// A stable 64-bit hash of plan values, the same in every run (unlike `Hasher`): a backend
/// fingerprints each table with the plan values it is built from, and `apply` skips a table
/// whose fingerprint equals the one saved with the last commit.
///
/// `ServicePortPlan.fingerprint`, `PlannedEndpoint.feed` and `Plan.feedSettings` must cover
/// every stored property that can change a table; `FingerprintTests` fails when one is added.
public struct PlanHasher: Sendable {
    public private(set) var state: UInt64 = 0x6a09_e667_f3bc_c908

    public init() {}

    public var value: UInt64 { state ^ (state >> 31) }

    @inline(__always) public mutating func u64(_ v: UInt64) {
        state = (state ^ v) &* 0x9e37_79b9_7f4a_7c15
        state ^= state >> 29
    }

    public mutating func int(_ v: Int) { u64(UInt64(bitPattern: Int64(v))) }
    public mutating func bool(_ v: Bool) { u64(v ? 0x1_0001 : 0x1_0000) }

    public mutating func string(_ s: String) {
        var s = s
        s.withUTF8 { raw(UnsafeRawBufferPointer($0)) }
    }

    public mutating func bytes(_ b: [UInt8]) {
        b.withUnsafeBytes { raw($0) }
    }

    /// The length, then the bytes eight at a time (the last word zero-padded).
    mutating func raw(_ b: UnsafeRawBufferPointer) {
        int(b.count)
        var i = 0
        while i + 8 <= b.count {
            u64(UInt64(littleEndian: b.loadUnaligned(fromByteOffset: i, as: UInt64.self)))
            i += 8
        }
        var w: UInt64 = 0, shift: UInt64 = 0
        while i < b.count { w |= UInt64(b[i]) << shift; shift += 8; i += 1 }
        u64(w)
    }

    public mutating func ip(_ a: IPAddress) {
        u64(a.family == .ipv4 ? 4 : 6); u64(a.hi); u64(a.lo)
    }

    public mutating func ips(_ a: [IPAddress]) {
        int(a.count)
        for x in a { ip(x) }
    }

    public mutating func strings(_ a: [String]) {
        int(a.count)
        for x in a { string(x) }
    }

    public mutating func cidrs(_ a: [CIDR]) {
        int(a.count)
        for c in a { ip(c.address); int(c.prefixLength) }
    }
}

extension PlannedEndpoint {
    /// Every stored property.
    public func feed(_ h: inout PlanHasher) {
        h.ip(ip); h.int(port); h.bool(isLocal); h.bool(ready); h.bool(serving); h.bool(terminating)
        h.strings(zoneHints); h.strings(nodeHints)
    }
}

extension ServicePortPlan {
    /// A hash of every stored property.
    public var fingerprint: UInt64 { hash(endpointAddresses: true) }

    /// The same without the endpoints themselves: of each endpoint list, only whether it is
    /// empty. For a table that holds no endpoint (the sharded layout's main table), so that an
    /// endpoint change leaves its fingerprint alone.
    public var fingerprintWithoutEndpoints: UInt64 { hash(endpointAddresses: false) }

    private func hash(endpointAddresses: Bool) -> UInt64 {
        var h = PlanHasher()
        h.string(name.namespace); h.string(name.name); h.string(name.port)
        h.u64(UInt64(proto.number)); h.ip(clusterIP); h.int(port); h.int(nodePort)
        h.ips(externalIPs); h.ips(loadBalancerIPs); h.cidrs(sourceRanges); h.int(healthCheckNodePort)
        h.int(affinityTimeout ?? -1); h.bool(internalPolicyLocal); h.bool(externalPolicyLocal)
        for list in [clusterEndpoints, localEndpoints, reachableEndpoints] {
            if endpointAddresses {
                h.int(list.count)
                for ep in list { ep.feed(&h) }
            } else {
                h.bool(list.isEmpty)
            }
        }
        h.bool(hasEndpoints); h.bool(allowFromNode)
        return h.value
    }
}

extension Plan {
    /// The stored properties other than `services`, except `totalEndpoints` and
    /// `ipvsScheduler` (IPVS and iptables only: they must not make every table differ when one
    /// endpoint does).
    public func feedSettings(_ h: inout PlanHasher) {
        h.u64(family == .ipv4 ? 4 : 6); h.string(nodeName); h.int(masqueradeBit); h.bool(masqueradeAll)
        switch localDetector {
        case .none: h.u64(0)
        case .sourceCIDRs(let c): h.u64(1); h.cidrs(c)
        case .bridgeInterface(let s): h.u64(2); h.string(s)
        case .interfaceNamePrefix(let s): h.u64(3); h.string(s)
        }
        switch nodePorts {
        case .all: h.u64(0)
        case .addresses(let a): h.u64(1); h.ips(a)
        }
        h.bool(localhostNodePorts)
        if let p = primaryNodeIP { h.u64(1); h.ip(p) } else { h.u64(0) }
        h.ips(nodeIPs)
    }
}
