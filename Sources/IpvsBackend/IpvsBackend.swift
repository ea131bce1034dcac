import IptablesBackend
import IpvsModel
import KubeModel
import KubePlan
import Parallel

/// Host-derived options (as for the iptables backend).
public struct IpvsOptions: Sendable {
    /// `MASQUERADE --random-fully` (kube-proxy adds it when iptables supports it).
    public var masqueradeRandomFully = false
    public init(masqueradeRandomFully: Bool = false) { self.masqueradeRandomFully = masqueradeRandomFully }
}

/// Everything IPVS mode programs for one IP family.
public struct IpvsFamilyConfig: Sendable {
    public var family: IPFamily
    /// Virtual servers with their real servers, sorted by key.
    public var services: [IpvsVirtualServer]
    /// Addresses bound to the dummy interface (ClusterIPs, external and LB IPs that are not node addresses), sorted.
    public var boundAddresses: [IPAddress]
    /// Node addresses that carry NodePort virtual servers.
    public var nodeAddresses: [IPAddress]
    /// kube-proxy's ipsets, in its order, entries sorted.
    public var ipsets: [Ipset]
    /// The fixed iptables rules of IPVS mode (reusing the iptables backend's ruleset value).
    public var iptables: IptablesRuleset
}

/// The whole IPVS-mode configuration: one value per family, plus the dummy interface.
public struct IpvsConfig: Sendable {
    public var dummyInterface: String
    public var families: [IpvsFamilyConfig]

    public init(dummyInterface: String = IpvsBackend.dummyInterface, families: [IpvsFamilyConfig]) {
        self.dummyInterface = dummyInterface; self.families = families
    }

    public var services: [IpvsVirtualServer] { families.flatMap(\.services) }
    public var boundAddresses: [IPAddress] { families.flatMap(\.boundAddresses) }
    public var nodeAddresses: [IPAddress] { families.flatMap(\.nodeAddresses) }
    public var ipsets: [Ipset] { families.flatMap(\.ipsets) }

    /// The three sections, each extractable on its own (see docs/ipvs.md).
    public enum Section: String, Sendable, CaseIterable {
        case ipvsadm, ipset, iptables
    }

    public static func separator(_ section: Section, family: IPFamily = .ipv4) -> String {
        switch section {
        case .ipvsadm: return "# --- ipvsadm -R ---"
        case .ipset: return "# --- ipset restore ---"
        case .iptables: return family == .ipv4 ? "# --- iptables-restore ---" : "# --- ip6tables-restore ---"
        }
    }

    /// One section's text alone (no separator), ready for its tool.
    public func render(_ section: Section, withJumps: Bool = false) -> String {
        switch section {
        case .ipvsadm: return IpvsText.ipvsadm(services)
        case .ipset: return IpvsText.ipsetRestore(ipsets)
        case .iptables: return families.map { $0.iptables.render(withJumps: withJumps) }.joined()
        }
    }

    /// All sections, each under its separator line: ipvsadm, ipset, then iptables per family.
    public func render(withJumps: Bool = false) -> String {
        var out = IpvsConfig.separator(.ipvsadm) + "\n"
        out += render(.ipvsadm)
        out += IpvsConfig.separator(.ipset) + "\n"
        out += render(.ipset)
        for f in families {
            out += IpvsConfig.separator(.iptables, family: f.family) + "\n"
            out += f.iptables.render(withJumps: withJumps)
        }
        return out
    }
}

/// Compiles plans into kube-proxy's IPVS mode (pkg/proxy/ipvs/proxier.go): virtual servers,
/// the addresses of the dummy interface, the ipsets and the fixed iptables rules.
public enum IpvsBackend {
    public static let dummyInterface = "kube-ipvs0"

    // Chains (kube-proxy's IPVS mode names).
    public static let servicesChain = "KUBE-SERVICES"
    public static let proxyFirewallChain = "KUBE-PROXY-FIREWALL"
    public static let sourceRangesFirewallChain = "KUBE-SOURCE-RANGES-FIREWALL"
    public static let postroutingChain = "KUBE-POSTROUTING"
    public static let markMasqChain = "KUBE-MARK-MASQ"
    public static let nodePortChain = "KUBE-NODE-PORT"
    public static let forwardChain = "KUBE-FORWARD"
    public static let loadBalancerChain = "KUBE-LOAD-BALANCER"
    public static let ipvsFilterChain = "KUBE-IPVS-FILTER"
    public static let ipvsOutFilterChain = "KUBE-IPVS-OUT-FILTER"

    /// Our chains per table (kube-proxy's iptablesChains / iptablesCleanupChains).
    public static let natChains = [servicesChain, postroutingChain, nodePortChain, loadBalancerChain, markMasqChain]
    public static let filterChains = [forwardChain, nodePortChain, proxyFirewallChain, sourceRangesFirewallChain,
                                      ipvsFilterChain, ipvsOutFilterChain]

    // ipsets (kube-proxy's ipsetInfo, in its order).
    public enum SetName: String, CaseIterable, Sendable {
        case loopBack = "KUBE-LOOP-BACK"
        case clusterIP = "KUBE-CLUSTER-IP"
        case externalIP = "KUBE-EXTERNAL-IP"
        case externalIPLocal = "KUBE-EXTERNAL-IP-LOCAL"
        case loadBalancer = "KUBE-LOAD-BALANCER"
        case loadBalancerFW = "KUBE-LOAD-BALANCER-FW"
        case loadBalancerLocal = "KUBE-LOAD-BALANCER-LOCAL"
        case loadBalancerSourceIP = "KUBE-LOAD-BALANCER-SOURCE-IP"
        case loadBalancerSourceCIDR = "KUBE-LOAD-BALANCER-SOURCE-CIDR"
        case nodePortTCP = "KUBE-NODE-PORT-TCP"
        case nodePortLocalTCP = "KUBE-NODE-PORT-LOCAL-TCP"
        case nodePortUDP = "KUBE-NODE-PORT-UDP"
        case nodePortLocalUDP = "KUBE-NODE-PORT-LOCAL-UDP"
        case nodePortSCTP = "KUBE-NODE-PORT-SCTP-HASH"
        case nodePortLocalSCTP = "KUBE-NODE-PORT-LOCAL-SCTP-HASH"
        case healthCheckNodePort = "KUBE-HEALTH-CHECK-NODE-PORT"
        case ipvsIPs = "KUBE-IPVS-IPS"

        public var type: IpsetType {
            switch self {
            case .loopBack, .loadBalancerSourceIP: .hashIPPortIP
            case .loadBalancerSourceCIDR: .hashIPPortNet
            case .nodePortTCP, .nodePortLocalTCP, .nodePortUDP, .nodePortLocalUDP, .healthCheckNodePort: .bitmapPort
            case .ipvsIPs: .hashIP
            default: .hashIPPort
            }
        }

        public var comment: String {
            switch self {
            case .loopBack: "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose"
            case .clusterIP: "Kubernetes service cluster ip + port for masquerade purpose"
            case .externalIP: "Kubernetes service external ip + port for masquerade and filter purpose"
            case .externalIPLocal: "Kubernetes service external ip + port with externalTrafficPolicy=local"
            case .loadBalancer: "Kubernetes service lb portal"
            case .loadBalancerFW: "Kubernetes service load balancer ip + port for load balancer with sourceRange"
            case .loadBalancerLocal: "Kubernetes service load balancer ip + port with externalTrafficPolicy=local"
            case .loadBalancerSourceIP: "Kubernetes service load balancer ip + port + source IP for packet filter purpose"
            case .loadBalancerSourceCIDR: "Kubernetes service load balancer ip + port + source cidr for packet filter purpose"
            case .nodePortTCP: "Kubernetes nodeport TCP port for masquerade purpose"
            case .nodePortLocalTCP: "Kubernetes nodeport TCP port with externalTrafficPolicy=local"
            case .nodePortUDP: "Kubernetes nodeport UDP port for masquerade purpose"
            case .nodePortLocalUDP: "Kubernetes nodeport UDP port with externalTrafficPolicy=local"
            case .nodePortSCTP: "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'"
            case .nodePortLocalSCTP: "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'"
            case .healthCheckNodePort: "Kubernetes health check node port"
            case .ipvsIPs: "Addresses on the ipvs interface"
            }
        }

        /// The set's name in a family: IPv6 sets are `KUBE-6-…`, cut to ipset's 31 characters.
        public func name(_ family: IPFamily) -> String {
            guard family == .ipv6 else { return rawValue }
            let n = "KUBE-6-" + rawValue.dropFirst("KUBE-".count)
            return String(n.prefix(31))
        }
    }

    /// Every ipset name we may own, both families (for cleanup).
    public static var allSetNames: [String] {
        SetName.allCases.map { $0.name(.ipv4) } + SetName.allCases.map { $0.name(.ipv6) }
    }

    public static func build(_ plans: [Plan], options: IpvsOptions = IpvsOptions()) -> IpvsConfig {
        IpvsConfig(families: plans.map { buildFamily($0, options: options) })
    }

    /// `%#08x` of the mark, as kube-proxy's IPVS mode writes it (`0x004000`).
    static func markText(_ mark: UInt32) -> String {
        let hex = String(mark, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 6 - hex.count)) + hex
    }

    public static func buildFamily(_ plan: Plan, options: IpvsOptions = IpvsOptions()) -> IpvsFamilyConfig {
        let family = plan.family
        let scheduler = plan.ipvsScheduler.isEmpty ? "rr" : plan.ipvsScheduler
        var entries = [SetName: Set<String>]()
        var services = [IpvsServiceKey: IpvsVirtualServer]()
        var bound = Set<IPAddress>()
        var lbNoNodeAccess = [(ip: IPAddress, proto: String, port: Int)]()
        let nodeIPSet = Set(plan.nodeIPs)

        // NodePort virtual servers go on these node addresses (never loopback, as kube-proxy).
        let nodeAddresses: [IPAddress]
        switch plan.nodePorts {
        case .all: nodeAddresses = plan.nodeIPs.filter { !$0.isLoopback }
        case .addresses(let ips): nodeAddresses = ips.filter { !$0.isLoopback }
        }

        // What one service port contributes, built on its own (in parallel) and merged in order.
        struct Piece {
            var entries: [(SetName, String)] = []
            var servers: [IpvsVirtualServer] = []
            var bound: [IPAddress] = []
            var lbNoNodeAccess: [(ip: IPAddress, proto: String, port: Int)] = []
        }
        let pieces = Parallel.map(count: plan.services.count, minimumPerTask: 256) { (k: Int) -> Piece in
            let svc = plan.services[k]
            var piece = Piece()
            let p = svc.proto.lower
            let spn = svc.nameString
            var flags: UInt32 = 0
            var timeout: UInt32 = 0
            if let t = svc.affinityTimeout { flags |= IpvsFlags.persistent; timeout = UInt32(t) }
            if scheduler == "mh" { flags |= IpvsFlags.sched2 }

            // Real servers: the policy's endpoints; Local without local endpoints falls back to
            // the cluster endpoints (kube-proxy #97081: pods on this node can still connect).
            func realServers(local: Bool) -> [IpvsRealServer] {
                let eps = local ? (svc.localEndpoints.isEmpty ? svc.clusterEndpoints : svc.localEndpoints) : svc.clusterEndpoints
                return eps.map { IpvsRealServer(address: $0.ip, port: $0.port) }
            }
            func add(_ ip: IPAddress, _ port: Int, local: Bool) {
                let key = IpvsServiceKey(proto: svc.proto, address: ip, port: port)
                piece.servers.append(IpvsVirtualServer(key: key, scheduler: scheduler, flags: flags, timeout: timeout,
                                                       destinations: realServers(local: local), comment: spn))
            }
            func insert(_ set: SetName, _ entry: String) { piece.entries.append((set, entry)) }

            // Hairpin: a local endpoint reaching itself through the service.
            for ep in Set(svc.clusterEndpoints + svc.localEndpoints + svc.reachableEndpoints) where ep.isLocal {
                insert(.loopBack, "\(ep.ip),\(p):\(ep.port),\(ep.ip)")
            }

            // ClusterIP.
            insert(.clusterIP, "\(svc.clusterIP),\(p):\(svc.port)")
            add(svc.clusterIP, svc.port, local: svc.internalPolicyLocal)
            piece.bound.append(svc.clusterIP)

            // External IPs.
            for ip in svc.externalIPs {
                insert(svc.externalPolicyLocal ? .externalIPLocal : .externalIP, "\(ip),\(p):\(svc.port)")
                add(ip, svc.port, local: svc.externalPolicyLocal)
                if !nodeIPSet.contains(ip) { piece.bound.append(ip) }
            }

            // Load-balancer ingress.
            for ip in svc.loadBalancerIPs {
                let entry = "\(ip),\(p):\(svc.port)"
                insert(.loadBalancer, entry)
                if svc.externalPolicyLocal { insert(.loadBalancerLocal, entry) }
                if !svc.sourceRanges.isEmpty {
                    insert(.loadBalancerFW, entry)
                    for cidr in svc.sourceRanges.flatMap(storable) {
                        insert(.loadBalancerSourceCIDR, "\(entry),\(cidr)")
                    }
                    if svc.allowFromNode {
                        insert(.loadBalancerSourceIP, "\(entry),\(ip)")
                    } else {
                        piece.lbNoNodeAccess.append((ip, p, svc.port))
                    }
                }
                add(ip, svc.port, local: svc.externalPolicyLocal)
                if !nodeIPSet.contains(ip) { piece.bound.append(ip) }
            }

            // Node port.
            if svc.nodePort != 0 {
                // kube-proxy skips the rest of the service (health check port included) without node addresses.
                if nodeAddresses.isEmpty { return piece }
                let (set, localSet): (SetName, SetName)
                var npEntries: [String]
                switch svc.proto {
                case .tcp: (set, localSet) = (.nodePortTCP, .nodePortLocalTCP); npEntries = [String(svc.nodePort)]
                case .udp: (set, localSet) = (.nodePortUDP, .nodePortLocalUDP); npEntries = [String(svc.nodePort)]
                case .sctp:
                    (set, localSet) = (.nodePortSCTP, .nodePortLocalSCTP)
                    npEntries = nodeAddresses.map { "\($0),sctp:\(svc.nodePort)" }
                }
                for e in npEntries { insert(set, e) }
                if svc.externalPolicyLocal { for e in npEntries { insert(localSet, e) } }
                for ip in nodeAddresses { add(ip, svc.nodePort, local: svc.externalPolicyLocal) }
            }

            if svc.healthCheckNodePort != 0 {
                insert(.healthCheckNodePort, String(svc.healthCheckNodePort))
            }
            return piece
        }
        for piece in pieces {
            for (set, entry) in piece.entries { entries[set, default: []].insert(entry) }
            // Two service ports claiming one address:port (invalid input): the first by name wins.
            for server in piece.servers where services[server.key] == nil { services[server.key] = server }
            bound.formUnion(piece.bound)
            lbNoNodeAccess += piece.lbNoNodeAccess
        }
        entries[.ipvsIPs] = Set(bound.map { $0.description })

        let ipsets = SetName.allCases.map { n in
            Ipset(name: n.name(family), type: n.type, family: family, comment: n.comment,
                  entries: sortedEntries(entries[n] ?? [], n.type))
        }
        var byName = [SetName: Ipset]()
        for (n, s) in zip(SetName.allCases, ipsets) { byName[n] = s }
        let iptables = rules(plan, sets: byName, lbNoNodeAccess: lbNoNodeAccess, options: options)
        return IpvsFamilyConfig(family: family, services: services.values.sorted { $0.key < $1.key },
                                boundAddresses: bound.sorted(), nodeAddresses: nodeAddresses,
                                ipsets: ipsets, iptables: iptables)
    }

    /// ipset cannot store a zero-length prefix: `0.0.0.0/0` becomes its two halves `/1`
    /// (kube-proxy's add fails there and then drops everyone; allowing all is what was asked for).
    static func storable(_ c: CIDR) -> [CIDR] {
        guard c.prefixLength == 0 else { return [c] }
        if c.family == .ipv4 { return [CIDR(network: IPAddress(v4: 0), prefixLength: 1), CIDR(network: IPAddress(v4: 0x8000_0000), prefixLength: 1)] }
        return [CIDR(network: IPAddress(v6: 0, 0), prefixLength: 1), CIDR(network: IPAddress(v6: 0x8000_0000_0000_0000, 0), prefixLength: 1)]
    }

    /// Entries in a stable order: numerically for port bitmaps, else as text.
    static func sortedEntries(_ s: Set<String>, _ type: IpsetType) -> [String] {
        type == .bitmapPort ? s.sorted { (Int($0) ?? 0) < (Int($1) ?? 0) } : s.sorted()
    }

    /// kube-proxy's writeIptablesRules.
    static func rules(_ plan: Plan, sets: [SetName: Ipset], lbNoNodeAccess: [(ip: IPAddress, proto: String, port: Int)],
                      options: IpvsOptions) -> IptablesRuleset {
        var rs = IptablesRuleset(family: plan.family)
        for c in natChains { rs.nat.declare(c) }
        for c in filterChains { rs.filter.declare(c) }
        let mark = markText(plan.masqueradeMark)
        func name(_ n: SetName) -> String { sets[n]!.name }
        func isEmpty(_ n: SetName) -> Bool { sets[n]!.entries.isEmpty }
        func comment(_ n: SetName) -> String { "-m comment --comment \"\(n.comment)\"" }

        rs.nat.append(servicesChain, "-s \(plan.family == .ipv4 ? "127.0.0.0/8" : "::1/128") -j RETURN")

        // ipsetWithIptablesChain: (set, table, from, to, match, protocol).
        let tails: [(SetName, String, String, String, String, String)] = [
            (.loopBack, "nat", postroutingChain, "MASQUERADE", "dst,dst,src", ""),
            (.loadBalancer, "nat", servicesChain, loadBalancerChain, "dst,dst", ""),
            (.loadBalancerLocal, "nat", loadBalancerChain, "RETURN", "dst,dst", ""),
            (.nodePortLocalTCP, "nat", nodePortChain, "RETURN", "dst", "tcp"),
            (.nodePortTCP, "nat", nodePortChain, markMasqChain, "dst", "tcp"),
            (.nodePortLocalUDP, "nat", nodePortChain, "RETURN", "dst", "udp"),
            (.nodePortUDP, "nat", nodePortChain, markMasqChain, "dst", "udp"),
            (.nodePortLocalSCTP, "nat", nodePortChain, "RETURN", "dst,dst", "sctp"),
            (.nodePortSCTP, "nat", nodePortChain, markMasqChain, "dst,dst", "sctp"),
            (.loadBalancerFW, "filter", proxyFirewallChain, sourceRangesFirewallChain, "dst,dst", ""),
            (.loadBalancerSourceCIDR, "filter", sourceRangesFirewallChain, "RETURN", "dst,dst,src", ""),
            (.loadBalancerSourceIP, "filter", sourceRangesFirewallChain, "RETURN", "dst,dst,src", ""),
        ]
        for (set, table, from, to, match, proto) in tails where !isEmpty(set) {
            let p = proto.isEmpty ? "" : "-p \(proto) "
            let rule: IptablesArgs = "\(p)\(comment(set)) -m set --match-set \(name(set)) \(match) -j \(to)"
            if table == "nat" { rs.nat.append(from, rule) } else { rs.filter.append(from, rule) }
        }

        if !isEmpty(.clusterIP) {
            let args = "\(comment(.clusterIP)) -m set --match-set \(name(.clusterIP))"
            if plan.masqueradeAll {
                rs.nat.append(servicesChain, "\(args) dst,dst -j \(markMasqChain)")
            } else if let notLocal = ifNotLocal(plan.localDetector) {
                rs.nat.append(servicesChain, "\(args) dst,dst \(notLocal) -j \(markMasqChain)")
            } else {
                // Masquerade node-originated traffic whose source is a VIP on the dummy interface.
                rs.nat.append(servicesChain, "\(args) src,dst -j \(markMasqChain)")
            }
        }

        func externalIPRules(_ args: String) {
            rs.nat.append(servicesChain, "\(args) -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT")
            rs.nat.append(servicesChain, "\(args) -m addrtype --dst-type LOCAL -j ACCEPT")
        }
        if !isEmpty(.externalIP) {
            let args = "\(comment(.externalIP)) -m set --match-set \(name(.externalIP)) dst,dst"
            rs.nat.append(servicesChain, "\(args) -j \(markMasqChain)")
            externalIPRules(args)
        }
        if !isEmpty(.externalIPLocal) {
            externalIPRules("\(comment(.externalIPLocal)) -m set --match-set \(name(.externalIPLocal)) dst,dst")
        }

        rs.nat.append(servicesChain, "-m addrtype --dst-type LOCAL -j \(nodePortChain)")
        rs.nat.append(loadBalancerChain, "-j \(markMasqChain)")
        rs.filter.append(sourceRangesFirewallChain, "-j DROP")
        for e in lbNoNodeAccess {
            rs.filter.append(ipvsOutFilterChain, "-s \(e.ip) -m ipvs --vaddr \(e.ip) --vproto \(e.proto) --vport \(e.port) -j DROP")
        }
        // Accept traffic to IPVS virtual servers (must stay at the end of KUBE-SERVICES).
        for set in [SetName.clusterIP, .loadBalancer] where !isEmpty(set) {
            rs.nat.append(servicesChain, "-m set --match-set \(name(set)) dst,dst -j ACCEPT")
        }
        rs.filter.append(forwardChain, "-m comment --comment \"kubernetes forwarding rules\" -m mark --mark \(mark)/\(mark) -j ACCEPT")
        rs.filter.append(forwardChain, "-m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
        rs.filter.append(nodePortChain, "\(comment(.healthCheckNodePort)) -m set --match-set \(name(.healthCheckNodePort)) dst -j ACCEPT")

        // No access to host ports through the VIPs on the dummy interface (kubernetes #72236).
        for (set, match) in [(SetName.loadBalancer, "dst,dst"), (.clusterIP, "dst,dst"), (.externalIP, "dst,dst"),
                             (.externalIPLocal, "dst,dst"), (.healthCheckNodePort, "dst")] {
            rs.filter.append(ipvsFilterChain, "-m set --match-set \(name(set)) \(match) -j RETURN")
        }
        rs.filter.append(ipvsFilterChain, "-m conntrack --ctstate NEW -m set --match-set \(name(.ipvsIPs)) dst -j REJECT")

        rs.nat.append(postroutingChain, "-m mark ! --mark \(mark)/\(mark) -j RETURN")
        rs.nat.append(postroutingChain, "-j MARK --xor-mark \(mark)")
        rs.nat.append(postroutingChain, "-m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE\(options.masqueradeRandomFully ? " --random-fully" : "")")
        rs.nat.append(markMasqChain, "-j MARK --or-mark \(mark)")

        rs.jumps = jumps
        return rs
    }

    static func ifNotLocal(_ d: LocalDetector) -> String? {
        switch d {
        case .none: nil
        case .sourceCIDRs(let c): "! -s \(c[0])"
        case .bridgeInterface(let i): "! -i \(i)"
        case .interfaceNamePrefix(let p): "! -i \(p)+"
        }
    }

    /// kube-proxy's iptablesJumpChain (each prepended to the built-in chain).
    public static let jumps: [IptablesJump] = [
        IptablesJump(table: "nat", sourceChain: "OUTPUT", targetChain: servicesChain, comment: "kubernetes service portals", extraArgs: ""),
        IptablesJump(table: "nat", sourceChain: "PREROUTING", targetChain: servicesChain, comment: "kubernetes service portals", extraArgs: ""),
        IptablesJump(table: "nat", sourceChain: "POSTROUTING", targetChain: postroutingChain, comment: "kubernetes postrouting rules", extraArgs: ""),
        IptablesJump(table: "filter", sourceChain: "FORWARD", targetChain: forwardChain, comment: "kubernetes forwarding rules", extraArgs: ""),
        IptablesJump(table: "filter", sourceChain: "INPUT", targetChain: nodePortChain, comment: "kubernetes health check rules", extraArgs: ""),
        IptablesJump(table: "filter", sourceChain: "INPUT", targetChain: proxyFirewallChain, comment: "kube-proxy firewall rules", extraArgs: ""),
        IptablesJump(table: "filter", sourceChain: "FORWARD", targetChain: proxyFirewallChain, comment: "kube-proxy firewall rules", extraArgs: ""),
        IptablesJump(table: "filter", sourceChain: "INPUT", targetChain: ipvsFilterChain, comment: "kubernetes ipvs access filter", extraArgs: ""),
        IptablesJump(table: "filter", sourceChain: "OUTPUT", targetChain: ipvsOutFilterChain, comment: "kubernetes ipvs access filter", extraArgs: ""),
    ]
}
