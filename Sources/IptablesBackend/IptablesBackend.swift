import Foundation
import KubeModel
import KubePlan
import Parallel

/// Options that kube-proxy derives from the host rather than from its configuration.
public struct IptablesOptions: Sendable {
    /// `MASQUERADE --random-fully`: kube-proxy adds it when iptables supports it (1.6.2+),
    /// i.e. on real nodes; its unit tests (and the default here) leave it out.
    public var masqueradeRandomFully = false
    /// nf_conntrack_tcp_be_liberal is set: kube-proxy then installs no INVALID drop rule.
    public var conntrackTCPLiberal = false
    /// The host has nfacct counters: kube-proxy then counts INVALID drops and localhost NodePort
    /// packets (`-m nfacct --nfacct-name …`). Off by default, as in the reference layout.
    public var nfacct = false
    public init(masqueradeRandomFully: Bool = false, conntrackTCPLiberal: Bool = false, nfacct: Bool = false) {
        self.masqueradeRandomFully = masqueradeRandomFully
        self.conntrackTCPLiberal = conntrackTCPLiberal
        self.nfacct = nfacct
    }
}

/// Compiles a plan into exactly the ruleset kube-proxy's iptables mode writes.
public enum IptablesBackend {
    public static let servicesChain = "KUBE-SERVICES"
    public static let externalServicesChain = "KUBE-EXTERNAL-SERVICES"
    public static let nodePortsChain = "KUBE-NODEPORTS"
    public static let postroutingChain = "KUBE-POSTROUTING"
    public static let markMasqChain = "KUBE-MARK-MASQ"
    public static let forwardChain = "KUBE-FORWARD"
    public static let proxyFirewallChain = "KUBE-PROXY-FIREWALL"
    public static let kubeletFirewallChain = "KUBE-FIREWALL"

    /// Chain-name prefixes of per-service chains (for finding stale chains).
    public static let serviceChainPrefixes = ["KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-"]

    public static func build(_ plan: Plan, options: IptablesOptions = IptablesOptions()) -> IptablesRuleset {
        var rs = IptablesRuleset(family: plan.family)
        // Per service port: SVC/SVL/EXT/FW chains and one SEP chain per endpoint.
        rs.nat.reserve(chains: plan.services.reduce(64) { $0 + 4 + $1.reachableEndpoints.count })
        let ipv6 = plan.family == .ipv6
        let mark = "0x" + String(plan.masqueradeMark, radix: 16)

        for c in [servicesChain, externalServicesChain, forwardChain, nodePortsChain, proxyFirewallChain] { rs.filter.declare(c) }
        for c in [servicesChain, nodePortsChain, postroutingChain, markMasqChain] { rs.nat.declare(c) }

        rs.nat.append(postroutingChain, "-m mark ! --mark \(mark)/\(mark) -j RETURN")
        rs.nat.append(postroutingChain, "-j MARK --xor-mark \(mark)")
        rs.nat.append(postroutingChain, "-m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE\(options.masqueradeRandomFully ? " --random-fully" : "")")
        rs.nat.append(markMasqChain, "-j MARK --or-mark \(mark)")

        if !ipv6 && plan.localhostNodePorts {
            rs.filter.declare(kubeletFirewallChain)
            rs.filter.append(kubeletFirewallChain, "-m comment --comment \"block incoming localnet connections\" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP")
        }

        let ifLocal: String?
        let ifNotLocal: String?
        switch plan.localDetector {
        case .none: ifLocal = nil; ifNotLocal = nil
        case .sourceCIDRs(let c): ifLocal = "-s \(c[0])"; ifNotLocal = "! -s \(c[0])"
        case .bridgeInterface(let i): ifLocal = "-i \(i)"; ifNotLocal = "! -i \(i)"
        case .interfaceNamePrefix(let p): ifLocal = "-i \(p)+"; ifNotLocal = "! -i \(p)+"
        }
        let large = plan.largeClusterMode
        let probabilities = ProbabilityTable(upTo: plan.services.reduce(1) { max($0, $1.clusterEndpoints.count, $1.localEndpoints.count) })

        struct Piece { var nat = IptablesText(), filter = IptablesText() }
        // One service port's declarations and rules, in kube-proxy's order.
        func write(_ svc: ServicePortPlan, into rs: inout Piece) {
            let spn = svc.nameString
            let p = svc.proto.lower
            let proto = "-m \(p) -p \(p)"
            let hash = ChainHash.portProto(spn, svc.proto)
            let svcChain = "KUBE-SVC-" + hash
            let svlChain = "KUBE-SVL-" + hash
            let extChain = "KUBE-EXT-" + hash
            let fwChain = "KUBE-FW-" + hash
            let internalChain = svc.internalPolicyLocal ? svlChain : svcChain
            let externalPolicyChain = svc.externalPolicyLocal ? svlChain : svcChain
            let lbChain = svc.usesFirewall ? fwChain : extChain
            let noEpComment = "\"\(spn) has no endpoints\""
            let noLocalComment = "\"\(spn) has no local endpoints\""
            let internalFilter = svc.internalNoEndpoints.map { $0 == .reject ? (noEpComment, "REJECT") : (noLocalComment, "DROP") }
            let externalFilter = svc.externalNoEndpoints.map { $0 == .reject ? (noEpComment, "REJECT") : (noLocalComment, "DROP") }
            let cip = svc.clusterIP.description
            let port = String(svc.port)

            // The service's own chains, declared before any rule names them (a table files a
            // piece's declared chains without looking their names up).
            if svc.usesClusterPolicy { rs.nat.declare(svcChain) }
            if svc.usesLocalPolicy { rs.nat.declare(svlChain) }
            if svc.usesExternalDispatch { rs.nat.declare(extChain) }
            if svc.usesFirewall { rs.nat.declare(fwChain) }

            // Capture the ClusterIP.
            if let (comment, target) = internalFilter {
                rs.filter.append(servicesChain, "-m comment --comment \(comment) \(proto) -d \(cip) --dport \(port) -j \(target)")
            } else {
                rs.nat.append(servicesChain, "-m comment --comment \"\(spn) cluster IP\" \(proto) -d \(cip) --dport \(port) -j \(internalChain)")
            }
            // External IPs.
            for ip in svc.externalIPs {
                if svc.hasEndpoints {
                    rs.nat.append(servicesChain, "-m comment --comment \"\(spn) external IP\" \(proto) -d \(ip) --dport \(port) -j \(extChain)")
                }
                if let (comment, target) = externalFilter {
                    rs.filter.append(externalServicesChain, "-m comment --comment \(comment) \(proto) -d \(ip) --dport \(port) -j \(target)")
                }
            }
            // Load-balancer ingress.
            for ip in svc.loadBalancerIPs {
                if svc.hasEndpoints {
                    rs.nat.append(servicesChain, "-m comment --comment \"\(spn) loadbalancer IP\" \(proto) -d \(ip) --dport \(port) -j \(lbChain)")
                }
                if svc.usesFirewall {
                    rs.filter.append(proxyFirewallChain, "-m comment --comment \"\(spn) traffic not accepted by \(fwChain)\" \(proto) -d \(ip) --dport \(port) -j DROP")
                }
            }
            if let (comment, target) = externalFilter {
                for ip in svc.loadBalancerIPs {
                    rs.filter.append(externalServicesChain, "-m comment --comment \(comment) \(proto) -d \(ip) --dport \(port) -j \(target)")
                }
            }
            // Node port.
            if svc.nodePort != 0 {
                if svc.hasEndpoints {
                    if plan.localhostNodePorts && !ipv6 {
                        // NodePorts on 127.0.0.0/8 (route_localnet), counted when nfacct is available.
                        let counter = options.nfacct ? " -m nfacct --nfacct-name localhost_nps_accepted_pkts" : ""
                        rs.nat.append(nodePortsChain, "-m comment --comment \(spn) \(proto) -d 127.0.0.0/8 --dport \(svc.nodePort)\(counter) -j \(extChain)")
                    }
                    rs.nat.append(nodePortsChain, "-m comment --comment \(spn) \(proto) --dport \(svc.nodePort) -j \(extChain)")
                }
                if let (comment, target) = externalFilter {
                    rs.filter.append(externalServicesChain, "-m comment --comment \(comment) -m addrtype --dst-type LOCAL \(proto) --dport \(svc.nodePort) -j \(target)")
                }
            }
            // Health-check node port.
            if svc.healthCheckNodePort != 0 {
                rs.filter.append(nodePortsChain, "-m comment --comment \"\(spn) health check node port\" -m tcp -p tcp --dport \(svc.healthCheckNodePort) -j ACCEPT")
            }

            // Internal traffic: masquerade off-cluster sources (or everything with masqueradeAll).
            if svc.hasInternalEndpoints {
                let args = "-m comment --comment \"\(spn) cluster IP\" \(proto) -d \(cip) --dport \(port)"
                if plan.masqueradeAll {
                    rs.nat.append(internalChain, "\(args) -j \(markMasqChain)")
                } else if let ifNotLocal {
                    rs.nat.append(internalChain, "\(args) \(ifNotLocal) -j \(markMasqChain)")
                }
            }

            // External destinations.
            if svc.usesExternalDispatch {
                if !svc.externalPolicyLocal {
                    rs.nat.append(extChain, "-m comment --comment \"masquerade traffic for \(spn) external destinations\" -j \(markMasqChain)")
                } else {
                    if let ifLocal {
                        rs.nat.append(extChain, "-m comment --comment \"pod traffic for \(spn) external destinations\" \(ifLocal) -j \(svcChain)")
                    }
                    rs.nat.append(extChain, "-m comment --comment \"masquerade LOCAL traffic for \(spn) external destinations\" -m addrtype --src-type LOCAL -j \(markMasqChain)")
                    rs.nat.append(extChain, "-m comment --comment \"route LOCAL traffic for \(spn) external destinations\" -m addrtype --src-type LOCAL -j \(svcChain)")
                }
                if svc.hasExternalEndpoints {
                    rs.nat.append(extChain, "-j \(externalPolicyChain)")
                }
            }

            // LoadBalancer source ranges.
            if svc.usesFirewall {
                let args = "-m comment --comment \"\(spn) loadbalancer IP\""
                for cidr in svc.sourceRanges { rs.nat.append(fwChain, "\(args) -s \(cidr) -j \(extChain)") }
                if svc.allowFromNode {
                    for ip in svc.loadBalancerIPs { rs.nat.append(fwChain, "\(args) -s \(ip) -j \(extChain)") }
                }
                rs.nat.append(fwChain, "-m comment --comment \"other traffic to \(spn) will be dropped by KUBE-PROXY-FIREWALL\"")
            }

            // IP:PORT and the KUBE-SEP name (a SHA-256) of each endpoint, made once.
            let endpoints = EndpointNames(svc)

            // Policy chains.
            if svc.usesClusterPolicy {
                writeEndpointDispatch(&rs.nat, svcChain, svc, svc.clusterEndpoints, endpoints, large: large, probabilities: probabilities)
            }
            if svc.usesLocalPolicy {
                writeEndpointDispatch(&rs.nat, svlChain, svc, svc.localEndpoints, endpoints, large: large, probabilities: probabilities)
            }

            // Endpoint chains.
            let comment: IptablesArgs = large ? "" : "-m comment --comment \(spn) "
            for (k, ep) in svc.reachableEndpoints.enumerated() {
                let sep = endpoints.chains[k]
                rs.nat.declare(sep)
                rs.nat.append(sep, "\(comment)-s \(ep.ip) -j \(markMasqChain)")
                let recent: IptablesArgs = svc.affinityTimeout != nil ? "-m recent --name \(sep) --set " : ""
                rs.nat.append(sep, "\(comment)\(recent)\(proto) -j DNAT --to-destination \(endpoints.hostPorts[k])")
            }
        }

        // Consecutive runs of service ports are written on every core (eight runs per core, so
        // that uneven services even out) and added in order.
        let pieces = Parallel.mapRuns(count: plan.services.count, minimumCount: 256) { (run: Range<Int>) -> Piece in
            var rs = Piece()
            // Rules of about 130 bytes: two per endpoint chain, one per cluster and local
            // endpoint, a few per service port; about one run per endpoint and a few per port.
            let services = plan.services[run]
            let rules = services.reduce(0) { $0 + 2 * $1.reachableEndpoints.count + $1.clusterEndpoints.count + $1.localEndpoints.count + 8 }
            rs.nat.reserve(bytes: (large ? 70 : 130) * rules, runs: services.reduce(0) { $0 + $1.reachableEndpoints.count + 8 })
            for k in run { write(plan.services[k], into: &rs) }
            return rs
        }
        for piece in pieces {
            rs.nat.add(piece.nat)
            rs.filter.add(piece.filter)
        }

        // The tail call to the node ports chain: must stay the last rule of KUBE-SERVICES.
        let npComment = "-m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\""
        switch plan.nodePorts {
        case .all:
            var dest = "-m addrtype --dst-type LOCAL"
            if ipv6 { dest += " ! -d ::1/128" } else if !plan.localhostNodePorts { dest += " ! -d 127.0.0.0/8" }
            rs.nat.append(servicesChain, "\(npComment) \(dest) -j \(nodePortsChain)")
        case .addresses(let ips):
            for ip in ips { rs.nat.append(servicesChain, "\(npComment) -d \(ip) -j \(nodePortsChain)") }
        }

        if !options.conntrackTCPLiberal {
            let counter = options.nfacct ? " -m nfacct --nfacct-name ct_state_invalid_dropped_pkts" : ""
            rs.filter.append(forwardChain, "-m conntrack --ctstate INVALID\(counter) -j DROP")
        }
        rs.filter.append(forwardChain, "-m comment --comment \"kubernetes forwarding rules\" -m mark --mark \(mark)/\(mark) -j ACCEPT")
        rs.filter.append(forwardChain, "-m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")

        rs.jumps = jumps(localhostFirewall: !ipv6 && plan.localhostNodePorts)
        return rs
    }

    /// KUBE-SEP-… for one endpoint of one service port.
    public static func endpointChain(_ svc: ServicePortPlan, _ ep: PlannedEndpoint) -> String {
        "KUBE-SEP-" + ChainHash.endpoint(svc.nameString, svc.proto, ep.hostPort)
    }

    /// `IP:PORT` and KUBE-SEP-… of each of a service port's reachable endpoints.
    struct EndpointNames {
        let endpoints: [PlannedEndpoint]
        let hostPorts: [String], chains: [String]
        init(_ svc: ServicePortPlan) {
            endpoints = svc.reachableEndpoints
            hostPorts = endpoints.map(\.hostPort)
            chains = hostPorts.map { "KUBE-SEP-" + ChainHash.endpoint(svc.nameString, svc.proto, $0) }
        }

        /// The IP:PORT and chain of each of `list`. The cluster and local endpoints are among the
        /// reachable ones, in the same order, so one walk finds them (anything else is computed).
        func names(_ svc: ServicePortPlan, _ list: [PlannedEndpoint]) -> [(hostPort: String, chain: String)] {
            var out = [(hostPort: String, chain: String)]()
            out.reserveCapacity(list.count)
            var j = 0
            for ep in list {
                var k = j
                while k < endpoints.count && !(endpoints[k].ip == ep.ip && endpoints[k].port == ep.port) { k += 1 }
                if k < endpoints.count {
                    out.append((hostPorts[k], chains[k])); j = k + 1
                } else {
                    out.append((ep.hostPort, endpointChain(svc, ep)))
                }
            }
            return out
        }
    }

    static func writeEndpointDispatch<Sink: IptablesSink>(_ nat: inout Sink, _ chain: String, _ svc: ServicePortPlan,
                                      _ endpoints: [PlannedEndpoint], _ names: EndpointNames, large: Bool,
                                      probabilities: ProbabilityTable) {
        let spn = svc.nameString
        let named = names.names(svc, endpoints)
        if let timeout = svc.affinityTimeout {
            for (hostPort, sep) in named {
                let comment: IptablesArgs = large ? "" : "-m comment --comment \"\(spn) -> \(hostPort)\" "
                nat.append(chain, "\(comment)-m recent --name \(sep) --rcheck --seconds \(timeout) --reap -j \(sep)")
            }
        }
        let n = endpoints.count
        for (i, (hostPort, sep)) in named.enumerated() {
            let comment: IptablesArgs = large ? "" : "-m comment --comment \"\(spn) -> \(hostPort)\" "
            let statistic: IptablesArgs = i < n - 1 ? "-m statistic --mode random --probability \(probabilities.get(n - i)) " : ""
            nat.append(chain, "\(comment)\(statistic)-j \(sep)")
        }
    }

    /// kube-proxy's jump rules, in its list order (iptablesJumpChains, then kubelet's KUBE-FIREWALL jumps).
    public static func jumps(localhostFirewall: Bool) -> [IptablesJump] {
        let new = "-m conntrack --ctstate NEW"
        var j: [IptablesJump] = [
            IptablesJump(table: "filter", sourceChain: "INPUT", targetChain: externalServicesChain, comment: "kubernetes externally-visible service portals", extraArgs: new),
            IptablesJump(table: "filter", sourceChain: "FORWARD", targetChain: externalServicesChain, comment: "kubernetes externally-visible service portals", extraArgs: new),
            IptablesJump(table: "filter", sourceChain: "INPUT", targetChain: nodePortsChain, comment: "kubernetes health check service ports", extraArgs: ""),
            IptablesJump(table: "filter", sourceChain: "FORWARD", targetChain: servicesChain, comment: "kubernetes service portals", extraArgs: new),
            IptablesJump(table: "filter", sourceChain: "OUTPUT", targetChain: servicesChain, comment: "kubernetes service portals", extraArgs: new),
            IptablesJump(table: "filter", sourceChain: "FORWARD", targetChain: forwardChain, comment: "kubernetes forwarding rules", extraArgs: ""),
            IptablesJump(table: "filter", sourceChain: "INPUT", targetChain: proxyFirewallChain, comment: "kubernetes load balancer firewall", extraArgs: new),
            IptablesJump(table: "filter", sourceChain: "OUTPUT", targetChain: proxyFirewallChain, comment: "kubernetes load balancer firewall", extraArgs: new),
            IptablesJump(table: "filter", sourceChain: "FORWARD", targetChain: proxyFirewallChain, comment: "kubernetes load balancer firewall", extraArgs: new),
            IptablesJump(table: "nat", sourceChain: "OUTPUT", targetChain: servicesChain, comment: "kubernetes service portals", extraArgs: ""),
            IptablesJump(table: "nat", sourceChain: "PREROUTING", targetChain: servicesChain, comment: "kubernetes service portals", extraArgs: ""),
            IptablesJump(table: "nat", sourceChain: "POSTROUTING", targetChain: postroutingChain, comment: "kubernetes postrouting rules", extraArgs: ""),
        ]
        if localhostFirewall {
            j.append(IptablesJump(table: "filter", sourceChain: "INPUT", targetChain: kubeletFirewallChain, comment: "", extraArgs: ""))
            j.append(IptablesJump(table: "filter", sourceChain: "OUTPUT", targetChain: kubeletFirewallChain, comment: "", extraArgs: ""))
        }
        return j
    }
}

/// `%0.10f` of 1/n, computed once for every n up to the largest endpoint count.
struct ProbabilityTable: Sendable {
    private let strings: [String]
    init(upTo n: Int) { strings = (0...max(1, n)).map { $0 == 0 ? "" : Self.format($0) } }
    static func format(_ n: Int) -> String { String(format: "%0.10f", 1.0 / Double(n)) }
    func get(_ n: Int) -> String { n > 0 && n < strings.count ? strings[n] : Self.format(n) }
}
