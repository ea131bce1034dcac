import KubeModel
import KubePlan
import NftModel
import Parallel

/// Compiles plans into kuberules' own nftables layout: one table per family (`ip`/`ip6`,
/// named `kuberules` by default), O(1) dispatch through verdict maps, and endpoint selection
/// by one DNAT rule per service chain that looks a random slot up in an endpoint map shared by
/// a bucket of service ports (`endpointSlots`), so that a full load binds no anonymous set and
/// creates no per-endpoint chain or rule (ClientIP affinity: one timeout map per table, filled
/// after the DNAT by one rule per policy chain; `addAffinity`). See docs/nftables.md.
public enum NftBackend {
    public static let defaultTable = "kuberules"

    /// Most shards `--nft-shards` accepts.
    public static let maxShards = 64

    /// One table per family; with `shards` > 1, each family's services are split over that many
    /// extra tables (see `buildFamily`).
    /// With a `fingerprintSalt` (something that changes with the kuberules build, so that a new
    /// backend never trusts an old fingerprint), each table also gets a fingerprint of the plan
    /// values it is built from (`NftRuleset.fingerprints`).
    public static func build(_ plans: [Plan], table: String = defaultTable, shards: Int = 1, fingerprintSalt: UInt64? = nil) -> NftRuleset {
        var r = NftRuleset()
        r.shardTablePrefix = shardPrefix(table)
        for p in plans {
            let (tables, prints, objectPrints) = buildFamily(p, name: table, shards: shards, salt: fingerprintSalt)
            r.tables += tables
            for (t, f) in zip(tables, prints) { r.fingerprints[t.id] = f }
            for (t, o) in zip(tables, objectPrints) { r.objectFingerprints[t.id] = o }
        }
        return r
    }

    /// `TABLE-services-`: shard k of a table is named this prefix and k in two digits.
    public static func shardPrefix(_ table: String) -> String { table + "-services-" }

    public static func shardName(_ table: String, _ k: Int) -> String {
        shardPrefix(table) + (k < 10 ? "0" : "") + String(k)
    }

    /// The shard of a service port, from the first two characters of its name hash (base32).
    static func shard(ofSuffix sfx: String, _ shards: Int) -> Int {
        guard shards > 1 else { return 0 }
        return hashValue(sfx, at: 0) % shards
    }

    /// The base32 characters `at` and `at + 1` of a name hash as a number (0..<1024).
    static func hashValue(_ sfx: String, at: Int) -> Int {
        var v = 0
        for c in sfx.utf8.dropFirst(at).prefix(2) { v = v * 32 + Int(c >= 97 ? c - 97 : c >= 65 ? c - 65 : c - 50 + 26) }
        return v
    }


    /// The readable per-service-port name `ns/name/proto/port` and its 8-character hash prefix,
    /// as kube-proxy's nftables mode names its chains.
    static func suffix(_ svc: ServicePortPlan) -> String {
        let readable = readableName(svc)
        return ChainHash.base32SHA256(readable, count: 8) + "-" + readable
    }

    /// `ns/name/proto/port`.
    static func readableName(_ svc: ServicePortPlan) -> String {
        "\(svc.name.namespace)/\(svc.name.name)/\(svc.proto.lower)/\(svc.name.port)"
    }

    static func value(_ ip: IPAddress) -> NftValue {
        ip.family == .ipv4 ? NftValue(type: .ipv4Addr, bytes: NftBytes(network: ip.v4))
            : NftValue(type: .ipv6Addr, bytes: NftBytes(network: ip.hi, ip.lo))
    }

    static func proto(_ p: L4Protocol) -> NftL4Proto {
        switch p { case .tcp: .tcp; case .udp: .udp; case .sctp: .sctp }
    }

    static func dport(_ p: L4Protocol) -> NftField {
        switch p { case .tcp: .tcpDport; case .udp: .udpDport; case .sctp: .sctpDport }
    }

    static func comment(_ s: String) -> String {
        s.utf8.count <= 120 ? s : String(decoding: Array(s.utf8.prefix(120)), as: UTF8.self)
    }

    /// The family's table `name`; with `shards` > 1 also `shards` tables `name-services-NN`
    /// that take over service dispatch: each holds the dispatch maps, service chains and
    /// affinity objects of the service ports hashed to it, with its own NAT base chains. The
    /// kernel validates a whole table's chain graph on every commit that adds a jump, goto or
    /// DNAT rule, so a rule change (a service added, an endpoint count changed) then costs one
    /// shard's validation, not all services' (an endpoint replaced is an element change: none).
    /// The NodePort dispatch runs at priority dstnat+1, after every shard's service-IP
    /// dispatch, so a service IP still wins over a node port on the same address and port
    /// as in one table. Each shard marks the hairpin traffic of its own endpoints at
    /// srcnat-1, so an endpoint change leaves the main table alone.
    ///
    /// Returns the family's tables and, with a salt, their fingerprints (aligned; the table's first):
    /// the salt, the table name, the shard count and the plan's settings, then the
    /// fingerprints of the service ports it holds (all of them for the main table). With a
    /// salt, also fingerprints of single chains and sets (`NftObjectFingerprints`), each from
    /// the same start: a service port's chains get its fingerprint without endpoint addresses
    /// plus its endpoint counts, bucket and slots (with ClientIP affinity its whole fingerprint:
    /// its affinity key hashes the endpoints); an endpoint map those of its service ports; a
    /// hairpin set its addresses; `affinity-endpoints` those of its affinity service ports and
    /// the `affinity` map the base alone (it holds no element of ours); in one table the
    /// dispatch, no-endpoint, cluster-IP, firewall and affinity dispatch sets that of every
    /// service port without its endpoints (only whether there are any). Other chains and sets
    /// have none.
    static func buildFamily(_ plan: Plan, name: String, shards: Int, salt: UInt64?) -> (tables: [NftTable], fingerprints: [UInt64], objectFingerprints: [NftObjectFingerprints]) {
        let shards = max(1, min(shards, maxShards))
        // What every fingerprint starts from: the build, the table, the shard count, the settings.
        let base: PlanHasher? = salt.map { salt in
            var base = PlanHasher()
            base.u64(salt); base.string(name); base.int(shards)
            plan.feedSettings(&base)
            return base
        }
        let family: NftFamily = plan.family == .ipv4 ? .ip : .ip6
        let addr: NftDataType = plan.family == .ipv4 ? .ipv4Addr : .ipv6Addr
        let daddr = NftField.daddr(family), saddr = NftField.saddr(family)
        let mark = plan.masqueradeMark
        var t = NftTable(family: family, name: name, comment: "Kubernetes services on node \(plan.nodeName.isEmpty ? "(unnamed)" : plan.nodeName), managed by kuberules")

        var serviceIPs = [NftElement](), nodePorts = [NftElement]()
        var noEndpointServices = [NftElement](), noEndpointNodePorts = [NftElement]()
        var firewallIPs = [NftElement](), firewallAllow = [NftElement]()
        var clusterIPs = Set<IPAddress>(), hairpin = [IPAddress]()
        var serviceChains = [NftChain]()
        var affinity = AffinityParts()

        let reject = NftVerdict.goto("reject-chain")
        let ifLocal: NftStatement?, ifNotLocal: NftStatement?
        switch plan.localDetector {
        case .none: ifLocal = nil; ifNotLocal = nil
        case .sourceCIDRs(let c):
            ifLocal = .matchPrefix(saddr, c[0].description, .eq); ifNotLocal = .matchPrefix(saddr, c[0].description, .neq)
        case .bridgeInterface(let i):
            ifLocal = .match(.iifname, .eq, .ifname(i)); ifNotLocal = .match(.iifname, .neq, .ifname(i))
        case .interfaceNamePrefix(let p):
            // `iifname "p*"`: nft compares only the prefix bytes.
            let bytes = NftBytes(p.utf8)
            ifLocal = .raw([.meta(key: .iifname, dreg: .r1), .cmp(op: .eq, sreg: .r1, data: bytes)])
            ifNotLocal = .raw([.meta(key: .iifname, dreg: .r1), .cmp(op: .neq, sreg: .r1, data: bytes)])
        }

        // Each service port's chains and set elements are independent: built on every core,
        // merged in plan order.
        let sharded = shards > 1
        let suffixes = Parallel.map(count: plan.services.count, minimumPerTask: 512) { suffix(plan.services[$0]) }
        let slots = endpointSlots(plan, suffixes: suffixes, shards: shards)
        let pieces = Parallel.map(count: plan.services.count, minimumPerTask: 256) { (i: Int) -> ServicePieces in
            let svc = plan.services[i]
            var pc = ServicePieces()
            let sfx = suffixes[i]
            pc.shard = shard(ofSuffix: sfx, shards)
            pc.bucket = slots[i].bucket
            if let base {
                pc.fingerprint = svc.fingerprint
                pc.withoutEndpoints = svc.fingerprintWithoutEndpoints
                // The sharded main table holds no endpoint: only whether there are any.
                pc.mainFingerprint = sharded ? pc.withoutEndpoints : pc.fingerprint
                // The port's endpoint-map elements: also where its endpoints sit in its
                // bucket's map.
                var h = base
                h.string("service port"); h.u64(pc.fingerprint)
                h.int(slots[i].bucket); h.u64(UInt64(slots[i].cluster)); h.u64(UInt64(slots[i].local))
                pc.objectFingerprint = h.value
                // Its chains depend on endpoints only with ClientIP affinity (the key); otherwise
                // they hold endpoint counts and slots, so an endpoint replaced leaves them alone.
                var c = base
                c.string("service port chains"); c.u64(pc.withoutEndpoints)
                c.int(svc.clusterEndpoints.count); c.int(svc.localEndpoints.count); c.int(svc.reachableEndpoints.count)
                c.u64(svc.affinityTimeout != nil ? pc.fingerprint : 0)
                c.int(slots[i].bucket); c.u64(UInt64(slots[i].cluster)); c.u64(UInt64(slots[i].local))
                pc.chainFingerprint = c.value
            }
            let svcChain = "service-" + sfx, localChain = "local-" + sfx, extChain = "external-" + sfx
            let internalChain = svc.internalPolicyLocal ? localChain : svcChain
            let p = proto(svc.proto), port = UInt16(svc.port)
            let key = { (ip: IPAddress) in [value(ip), NftValue.proto(p), NftValue.port(port)] }
            let spn = comment(svc.nameString)
            pc.clusterIP = svc.clusterIP

            // Dispatch: ClusterIP, external IPs, LB IPs, node port.
            if svc.hasInternalEndpoints {
                pc.serviceIPs.append(.verdict(key(svc.clusterIP), .goto(internalChain), comment: spn))
            } else if let a = svc.internalNoEndpoints {
                pc.noEndpointServices.append(.verdict(key(svc.clusterIP), a == .reject ? reject : .drop, comment: spn))
            }
            for ip in svc.externalIPs + svc.loadBalancerIPs {
                if svc.hasEndpoints { pc.serviceIPs.append(.verdict(key(ip), .goto(extChain), comment: spn)) }
                if let a = svc.externalNoEndpoints {
                    pc.noEndpointServices.append(.verdict(key(ip), a == .reject ? reject : .drop, comment: spn))
                }
            }
            if svc.usesFirewall {
                for ip in svc.loadBalancerIPs {
                    pc.firewallIPs.append(.element(value(ip), .proto(p), .port(port), comment: spn))
                    var sources = svc.sourceRanges
                    if svc.allowFromNode { sources += svc.loadBalancerIPs.map { CIDR(network: $0, prefixLength: $0.family.bits) } }
                    for c in disjoint(sources) {
                        pc.firewallAllow.append(.interval([.value(value(ip)), .value(.proto(p)), .value(.port(port)), .prefix(c.description)]))
                    }
                }
            }
            if svc.nodePort != 0 {
                let npKey = [NftValue.proto(p), NftValue.port(UInt16(svc.nodePort))]
                if svc.hasEndpoints { pc.nodePorts.append(.verdict(npKey, .goto(extChain), comment: spn)) }
                if let a = svc.externalNoEndpoints {
                    pc.noEndpointNodePorts.append(.verdict(npKey, a == .reject ? reject : .drop, comment: spn))
                }
            }

            // Internal traffic: masquerade off-cluster sources (everything with masqueradeAll).
            var internalMasq = [NftRule]()
            if svc.hasInternalEndpoints {
                let m = [NftStatement.match(daddr, .eq, value(svc.clusterIP)), .match(dport(svc.proto), .eq, .port(port))]
                if plan.masqueradeAll {
                    internalMasq.append(NftRule(statements: m + [.jump("mark-for-masquerade")]))
                } else if let ifNotLocal {
                    internalMasq.append(NftRule(statements: m + [ifNotLocal, .jump("mark-for-masquerade")]))
                }
            }

            // External destinations (and, with affinity, their recording).
            let localSrc = NftStatement.match(.fib(.saddr, .addrType), .eq, .fibAddrType(.local))
            if svc.usesExternalDispatch {
                var rules = [NftRule]()
                if !svc.externalPolicyLocal {
                    rules.append(NftRule(.jump("mark-for-masquerade"), comment: "masquerade traffic for external destinations"))
                } else {
                    if let ifLocal { rules.append(NftRule(ifLocal, .goto(svcChain), comment: "short-circuit pod traffic")) }
                    rules.append(NftRule(localSrc, .jump("mark-for-masquerade"), comment: "masquerade local traffic"))
                    rules.append(NftRule(localSrc, .goto(svcChain), comment: "short-circuit local traffic"))
                }
                if svc.hasExternalEndpoints {
                    rules.append(NftRule(.goto(svc.externalPolicyLocal ? localChain : svcChain)))
                } else if sharded {
                    // In one table the filter hook drops this traffic; with shards, the node-port
                    // dispatch of another shard (dstnat+1) would otherwise still see it.
                    rules.append(NftRule(.drop, comment: "no local endpoints"))
                }
                pc.serviceChains.append(NftChain(name: extChain, rules: rules))
            }

            // ClientIP affinity: each policy chain's key in the table's `affinity` map (hashing
            // the chain's own endpoints; a SHA-256 each).
            let affinityOn = svc.affinityTimeout != nil
            let clusterKey = affinityOn && svc.usesClusterPolicy ? affinityKey(svc, "cluster", svc.clusterEndpoints) : nil
            let localKey = affinityOn && svc.usesLocalPolicy ? affinityKey(svc, "local", svc.localEndpoints) : nil

            // Policy chains: endpoint selection.
            for (chain, target, eps) in [(svcChain, PolicyTarget.cluster, svc.clusterEndpoints), (localChain, .local, svc.localEndpoints)] {
                let used = target == .cluster ? svc.usesClusterPolicy : svc.usesLocalPolicy
                guard used else { continue }
                var rules = chain == internalChain ? internalMasq : []
                for ep in eps { pc.hairpin.append(ep.ip) }
                // Endpoint choice: a random slot of this chain's range in its bucket's endpoint
                // map, which holds the endpoint address and port (see `endpointSlots`).
                let first = target == .cluster ? slots[i].cluster : slots[i].local
                let uniform = NftRule(.dnatFromMap([.numgenRandom(mod: UInt32(eps.count), offset: first)],
                                                   map: endpointMapName(slots[i].bucket), family: family, withPort: true, l4proto: p),
                                      comment: affinityOn ? "new client" : nil)
                for (k, ep) in eps.enumerated() {
                    pc.endpointSlots.append(.mapping([.integer(first + UInt32(k))], to: [value(ep.ip), .port(UInt16(ep.port))]))
                }
                if let key = target == .cluster ? clusterKey : localKey {
                    // ClientIP affinity: a known client goes straight to the endpoint recorded
                    // for it under this chain's key; a new one takes the uniform choice, and a
                    // record chain (below) notes where it went once the DNAT is done.
                    rules.append(NftRule(.dnatFromMap([saddr] + key.fields, map: "affinity", family: family, withPort: true, l4proto: p),
                                         comment: "known client"))
                    for ep in eps { pc.affinityEndpoints.append(NftElement(key: key.values + [value(ep.ip), .port(UInt16(ep.port))])) }
                }
                rules.append(uniform)
                pc.serviceChains.append(NftChain(name: chain, comment: spn, rules: rules))
            }
            if let timeout = svc.affinityTimeout, clusterKey != nil || localKey != nil {
                // Recording a new client after the DNAT, reached from `affinity-record` by the
                // connection's original destination, under the key of the policy chain that
                // chose its endpoint: `affinity-…` for the cluster chain's, `affinity-local-…`
                // for the local chain's, and for external traffic with eTP=Local
                // `affinity-external-…`, which picks between them as `external-…` does. Each
                // records only an endpoint of its key (`affinity-endpoints`): an endpoint chosen
                // by rules that an endpoint change has just replaced is not recorded under the
                // new key, nor is the endpoint of another service whose port equals a node port.
                let endpoint: [NftField] = [daddr, .thDport]
                let recordCluster = "affinity-" + sfx, recordLocal = "affinity-local-" + sfx
                for (name, key) in [(recordCluster, clusterKey), (recordLocal, localKey)] {
                    guard let key else { continue }
                    pc.serviceChains.append(NftChain(name: name, comment: spn, rules: [
                        NftRule(.lookup(key.fields + endpoint, set: "affinity-endpoints"),
                                .dynset(.update, set: "affinity", key: [saddr] + key.fields, data: endpoint, timeoutMs: UInt64(timeout) * 1000)),
                    ]))
                }
                let cluster = clusterKey != nil ? recordCluster : nil, local = localKey != nil ? recordLocal : nil
                let internalRecord = svc.internalPolicyLocal ? local : cluster
                var externalRecord = svc.externalPolicyLocal ? nil : cluster
                if svc.externalPolicyLocal && svc.usesExternalDispatch {
                    var rules = [NftRule]()
                    if let cluster {
                        if let ifLocal { rules.append(NftRule(ifLocal, .goto(cluster))) }
                        rules.append(NftRule(localSrc, .goto(cluster)))
                    }
                    if let local { rules.append(NftRule(.goto(local))) }
                    let name = "affinity-external-" + sfx
                    pc.serviceChains.append(NftChain(name: name, comment: spn, rules: rules))
                    externalRecord = name
                }
                // The same addresses and node port as the dispatch above.
                if svc.hasInternalEndpoints, let r = internalRecord {
                    pc.affinityServices.append(.verdict(key(svc.clusterIP), .goto(r), comment: spn))
                }
                if svc.hasEndpoints, let r = externalRecord {
                    for ip in svc.externalIPs + svc.loadBalancerIPs { pc.affinityServices.append(.verdict(key(ip), .goto(r), comment: spn)) }
                    if svc.nodePort != 0 {
                        pc.affinityNodePorts.append(.verdict([.proto(p), .port(UInt16(svc.nodePort))], .goto(r), comment: spn))
                    }
                }
                pc.affinityProtocol = p
            }
            return pc
        }
        // Freeing a hundred thousand elements' pieces is no part of the result.
        defer { Parallel.releaseInBackground(pieces) }
        var serviceIPShard = [Int](), nodePortShard = [Int]()
        var shardChains = [[NftChain]](repeating: [], count: shards), shardAffinity = [AffinityParts](repeating: AffinityParts(), count: shards)
        var shardHairpin = [[IPAddress]](repeating: [], count: shards)
        let buckets = endpointBucketCount(shards)
        // The service ports of each endpoint map, whose elements are gathered on every core.
        var endpointMapPieces = [[Int]](repeating: [], count: shards * buckets)
        for (i, pc) in pieces.enumerated() {
            if !pc.endpointSlots.isEmpty { endpointMapPieces[pc.shard * buckets + pc.bucket].append(i) }
            serviceIPs += pc.serviceIPs; nodePorts += pc.nodePorts
            noEndpointServices += pc.noEndpointServices; noEndpointNodePorts += pc.noEndpointNodePorts
            firewallIPs += pc.firewallIPs; firewallAllow += pc.firewallAllow
            if let ip = pc.clusterIP { clusterIPs.insert(ip) }
            if sharded {
                serviceIPShard += repeatElement(pc.shard, count: pc.serviceIPs.count)
                nodePortShard += repeatElement(pc.shard, count: pc.nodePorts.count)
                shardChains[pc.shard] += pc.serviceChains; shardAffinity[pc.shard].add(pc)
                shardHairpin[pc.shard] += pc.hairpin
            } else {
                serviceChains += pc.serviceChains; affinity.add(pc)
                hairpin += pc.hairpin
            }
        }

        // Two services claiming the same address and port (invalid, but possible in input):
        // the first by service port name wins, as a set holds each key once.
        let serviceIPOrder = uniqueOrder(serviceIPs), nodePortOrder = uniqueOrder(nodePorts)
        // Dispatch keys lost to a service port of another shard: part of the losing shard's
        // fingerprint, as its content depends on them (the winner may go away).
        var lostKeys = [[UInt8]](repeating: [], count: shards)
        if sharded {
            for (elements, order, shardOf) in [(serviceIPs, serviceIPOrder, serviceIPShard), (nodePorts, nodePortOrder, nodePortShard)] {
                var kept = [Bool](repeating: false, count: elements.count)
                for i in order { kept[i] = true }
                for (i, e) in elements.enumerated() where !kept[i] {
                    for v in e.key.start { lostKeys[shardOf[i]] += v.bytes }
                    lostKeys[shardOf[i]].append(0xff)
                }
            }
        }
        serviceIPs = serviceIPOrder.map { serviceIPs[$0] }; nodePorts = nodePortOrder.map { nodePorts[$0] }
        noEndpointServices = unique(noEndpointServices); noEndpointNodePorts = unique(noEndpointNodePorts)
        firewallIPs = unique(firewallIPs); firewallAllow = unique(firewallAllow)

        // Shared sets and maps.
        if !sharded {
            t.add(NftSet.vmap("service-ips", .types([addr, .inetProto, .inetService]), comment: "ClusterIP, external IP and LoadBalancer IP dispatch", elements: serviceIPs))
            t.add(NftSet.vmap("service-nodeports", .types([.inetProto, .inetService]), comment: "NodePort dispatch", elements: nodePorts))
        }
        t.add(NftSet.vmap("no-endpoint-services", .types([addr, .inetProto, .inetService]), comment: "service IPs without usable endpoints", elements: noEndpointServices))
        t.add(NftSet.vmap("no-endpoint-nodeports", .types([.inetProto, .inetService]), comment: "node ports without usable endpoints", elements: noEndpointNodePorts))
        t.add(NftSet.set("cluster-ips", .types([addr]), comment: "active ClusterIPs", elements: clusterIPs.sorted().map { .element(value($0)) }))
        t.add(NftSet.set("firewall-ips", .types([addr, .inetProto, .inetService]), comment: "LoadBalancer IPs with source ranges", elements: firewallIPs))
        t.add(NftSet.set("firewall-allow", .types([addr, .inetProto, .inetService, addr]), flags: .interval, comment: "allowed sources per LoadBalancer IP", elements: firewallAllow))
        func hairpinObjects(_ ips: [IPAddress]) -> Hairpin {
            hairpinParts(sortedUnique(ips), family: family, fingerprintBase: base)
        }
        var tableEndpointMaps = [NftSet]()
        var tableHairpin = Hairpin()
        if !sharded {
            // The hairpin sets (sorting every endpoint address) beside the endpoint maps.
            let (maps, h) = Parallel.both({ endpointMapSets(shard: 0) }, { hairpinObjects(hairpin) })
            tableHairpin = h
            for s in h.sets { t.add(s) }
            tableEndpointMaps = try! maps.get()  // endpointMapSets does not throw
        }

        var nodePortMatch: NftStatement
        var nodePortIPs: NftSet?
        switch plan.nodePorts {
        case .all:
            nodePortMatch = .fibDaddrType(.local)
        case .addresses(let ips):
            nodePortIPs = NftSet.set("nodeport-ips", .types([addr]), comment: "node addresses that accept NodePorts", elements: ips.map { .element(value($0)) })
            t.add(nodePortIPs!)
            nodePortMatch = .lookup([daddr], set: "nodeport-ips")
        }
        // The endpoint maps of a table: one per non-empty bucket, elements in slot order.
        func endpointMapSets(shard k: Int) -> [NftSet] {
            Parallel.map(count: buckets, minimumPerTask: 16) { (b: Int) -> NftSet? in
                let elements = endpointMapPieces[k * buckets + b].flatMap { pieces[$0].endpointSlots }
                guard !elements.isEmpty else { return nil }
                // Slot order: sort (slot, index) pairs, then move each element once.
                var order = elements.indices.map { UInt64(slotOf(elements[$0])) << 32 | UInt64($0) }
                order.sort()
                return NftSet.map(endpointMapName(b), .typeof([.numgenRandom(mod: 1)]), .typeof([daddr, .thDport]),
                                  comment: "endpoints: slot -> address . port",
                                  elements: order.map { elements[Int($0 & 0xffff_ffff)] })
            }.compactMap { $0 }
        }
        for m in tableEndpointMaps { t.add(m) }

        // Fixed chains.
        let loopback = plan.family == .ipv4 ? "127.0.0.0/8" : "::1/128"
        var nodePortRule = [nodePortMatch]
        if case .all = plan.nodePorts { nodePortRule.append(.matchPrefix(daddr, loopback, .neq)) }
        let serviceIPRule = NftRule(.vmap([daddr, .l4proto, .thDport], map: "service-ips"))
        let nodePortDispatch = NftRule(statements: nodePortRule + [.vmap([.l4proto, .thDport], map: "service-nodeports")])
        if !sharded {
            t.add(.base("nat-prerouting", type: .nat, hook: .prerouting, priority: -100, rules: [NftRule(.jump("services"))]))
            t.add(.base("nat-output", type: .nat, hook: .output, priority: -100, rules: [NftRule(.jump("services"))]))
        }
        t.add(.base("nat-postrouting", type: .nat, hook: .postrouting, priority: 100, rules: [NftRule(.jump("masquerading"))]))
        let firewall = NftRule(.lookup([daddr, .l4proto, .thDport], set: "firewall-ips"),
                               .lookup([daddr, .l4proto, .thDport, saddr], set: "firewall-allow", invert: true, intervalConcat: true),
                               .drop, comment: "loadBalancerSourceRanges")
        t.add(.base("filter-prerouting", type: .filter, hook: .prerouting, priority: -110, rules: [firewall]))
        t.add(.base("filter-output-firewall", type: .filter, hook: .output, priority: -110, rules: [firewall]))
        let checks = [
            NftRule(.ctState(.new), .jump("service-endpoints-check")),
            NftRule(.ctState(.new), .jump("nodeport-endpoints-check")),
        ]
        let clusterCheck = NftRule(.ctState(.new), .jump("cluster-ips-check"))
        t.add(.base("filter-input", type: .filter, hook: .input, priority: 0, rules: checks))
        t.add(.base("filter-forward", type: .filter, hook: .forward, priority: 0, rules: checks + [clusterCheck]))
        t.add(.base("filter-output", type: .filter, hook: .output, priority: 0, rules: checks + [clusterCheck]))
        t.add(NftChain(name: "service-endpoints-check", rules: [NftRule(.vmap([daddr, .l4proto, .thDport], map: "no-endpoint-services"))]))
        t.add(NftChain(name: "nodeport-endpoints-check", rules: [NftRule(statements: nodePortRule + [.vmap([.l4proto, .thDport], map: "no-endpoint-nodeports")])]))
        t.add(NftChain(name: "cluster-ips-check", rules: [NftRule(.lookup([daddr], set: "cluster-ips"), .reject(for: family), comment: "unknown port of a ClusterIP")]))
        t.add(NftChain(name: "reject-chain", rules: [NftRule(.reject(for: family))]))
        if !sharded { t.add(NftChain(name: "services", rules: [serviceIPRule, nodePortDispatch])) }
        let markForMasquerade = NftChain(name: "mark-for-masquerade", rules: [NftRule(.setMark(.or(mark)))])
        t.add(markForMasquerade)
        for c in tableHairpin.chains { t.add(c) }
        t.add(NftChain(name: "masquerading", rules: (sharded ? [] : [tableHairpin.rule]) + [
            NftRule(.matchBits(.mark, mask: mark, .eq, 0), .return),
            NftRule(.setMark(.xor(mark))),
            NftRule(.masquerade(fullyRandom: true)),
        ]))
        var prints = [UInt64]()
        // Object fingerprints: the shared sets' (every service port without its endpoints) and
        // each endpoint map's (its service ports').
        var sharedPrint: UInt64 = 0
        func endpointMapPrint(_ k: Int, _ b: Int) -> UInt64 {
            var h = base!
            h.string("endpoint map"); h.int(k); h.int(b)
            for i in endpointMapPieces[k * buckets + b] { h.u64(pieces[i].objectFingerprint) }
            return h.value
        }
        if let base {
            var shared = base
            shared.string("shared sets")
            for pc in pieces { shared.u64(pc.withoutEndpoints) }
            sharedPrint = shared.value
            var main = base
            main.string("main")
            var perShard = (0..<shards).map { k -> PlanHasher in
                var h = base
                h.string("shard"); h.int(k)
                return h
            }
            for pc in pieces {
                main.u64(pc.mainFingerprint)
                perShard[pc.shard].u64(pc.fingerprint)
            }
            for k in 0..<shards where !lostKeys[k].isEmpty {
                perShard[k].string("lost")
                perShard[k].bytes(lostKeys[k])
            }
            prints = [main.value] + (sharded ? perShard.map(\.value) : [])
        }
        /// A table's object fingerprints: none for its first `fixed` chains, then those of the
        /// chains of `ports` in order; for sets, `setPrints` by name.
        func objectPrints(_ t: NftTable, fixed: Int, ports: [Int], setPrints: [String: UInt64]) -> NftObjectFingerprints {
            var o = NftObjectFingerprints()
            o.chainNames = t.chains.map(\.name)
            o.chains = [UInt64](repeating: 0, count: fixed)
            o.chains.reserveCapacity(t.chains.count)
            for i in ports { o.chains += repeatElement(pieces[i].chainFingerprint, count: pieces[i].serviceChains.count) }
            o.setNames = t.sets.map(\.name)
            o.sets = o.setNames.map { setPrints[$0] ?? 0 }
            return o
        }
        // The service ports of each shard, in plan order (one pass, not one per shard).
        var portsOfShard = [[Int]](repeating: [], count: shards)
        for i in pieces.indices { portsOfShard[pieces[i].shard].append(i) }
        func portSetPrints(shard k: Int, hairpin: Hairpin) -> [String: UInt64] {
            var m = hairpin.prints
            // The affinity map holds no element of ours (its declaration: the base); the
            // endpoints of each key: those of the table's affinity service ports.
            var a = base!, e = base!
            a.string("affinity map")
            e.string("affinity endpoints")
            for i in portsOfShard[k] where pieces[i].affinityProtocol != nil { e.u64(pieces[i].fingerprint) }
            m["affinity"] = a.value
            m["affinity-endpoints"] = e.value
            for b in 0..<buckets where !endpointMapPieces[k * buckets + b].isEmpty { m[endpointMapName(b)] = endpointMapPrint(k, b) }
            return m
        }
        let sharedSets = ["service-ips", "service-nodeports", "no-endpoint-services", "no-endpoint-nodeports",
                          "cluster-ips", "firewall-ips", "firewall-allow", "nodeport-ips",
                          "affinity-services", "affinity-nodeports"]
        guard sharded else {
            addAffinity(&t, affinity, family: family, shards: shards)
            let fixed = t.chains.count
            t.chains += serviceChains
            let table = sized(t)
            guard base != nil else { return ([table], prints, []) }
            var setPrints = portSetPrints(shard: 0, hairpin: tableHairpin)
            for n in sharedSets { setPrints[n] = sharedPrint }
            return ([table], prints, [objectPrints(table, fixed: fixed, ports: portsOfShard[0], setPrints: setPrints)])
        }

        // Shards: the dispatch maps' elements split by the shard of the service port they
        // lead to (after the table-wide de-duplication above).
        var shardServiceIPs = [[NftElement]](repeating: [], count: shards), shardNodePorts = shardServiceIPs
        for (e, i) in zip(serviceIPs, serviceIPOrder) { shardServiceIPs[serviceIPShard[i]].append(e) }
        for (e, i) in zip(nodePorts, nodePortOrder) { shardNodePorts[nodePortShard[i]].append(e) }
        var tables = [t]
        var tablePrints = [NftObjectFingerprints]()
        if base != nil {
            var setPrints: [String: UInt64] = [:]
            for n in sharedSets { setPrints[n] = sharedPrint }
            tablePrints.append(objectPrints(t, fixed: t.chains.count, ports: [], setPrints: setPrints))
        }
        for k in 0..<shards {
            var s = NftTable(family: family, name: shardName(name, k), comment: t.comment.map { $0 + "; services shard \(k) of \(shards)" })
            s.add(NftSet.vmap("service-ips", .types([addr, .inetProto, .inetService]), comment: "ClusterIP, external IP and LoadBalancer IP dispatch", elements: shardServiceIPs[k]))
            s.add(NftSet.vmap("service-nodeports", .types([.inetProto, .inetService]), comment: "NodePort dispatch", elements: shardNodePorts[k]))
            if let nodePortIPs { s.add(nodePortIPs) }
            for m in endpointMapSets(shard: k) { s.add(m) }
            // The hairpin mark for this shard's endpoints, set before the main table's
            // masquerading chain (srcnat) reads it.
            let shardHairpinObjects = hairpinObjects(shardHairpin[k])
            for h in shardHairpinObjects.sets { s.add(h) }
            s.add(.base("hairpin-postrouting", type: .nat, hook: .postrouting, priority: 99, rules: [shardHairpinObjects.rule]))
            for c in shardHairpinObjects.chains { s.add(c) }
            s.add(.base("nat-prerouting", type: .nat, hook: .prerouting, priority: -100, rules: [NftRule(.jump("services"))]))
            s.add(.base("nat-output", type: .nat, hook: .output, priority: -100, rules: [NftRule(.jump("services"))]))
            s.add(.base("nodeports-prerouting", type: .nat, hook: .prerouting, priority: -99, rules: [NftRule(.jump("nodeports"))]))
            s.add(.base("nodeports-output", type: .nat, hook: .output, priority: -99, rules: [NftRule(.jump("nodeports"))]))
            s.add(NftChain(name: "services", rules: [serviceIPRule]))
            s.add(NftChain(name: "nodeports", rules: [nodePortDispatch]))
            s.add(markForMasquerade)
            addAffinity(&s, shardAffinity[k], family: family, shards: shards)
            let fixed = s.chains.count
            for c in shardChains[k] { s.add(c) }
            s = sized(s)
            if base != nil {
                // The shard's dispatch maps also depend on keys lost to other shards: digested.
                var setPrints = portSetPrints(shard: k, hairpin: shardHairpinObjects)
                setPrints["nodeport-ips"] = sharedPrint
                tablePrints.append(objectPrints(s, fixed: fixed, ports: portsOfShard[k], setPrints: setPrints))
            }
            tables.append(s)
        }
        tables[0] = sized(tables[0])
        return (tables, prints, tablePrints)
    }

    /// The ClientIP-affinity objects of a table's service ports.
    struct AffinityParts {
        var services = [NftElement](), nodePorts = [NftElement](), endpoints = [NftElement]()
        var protocols = Set<NftL4Proto>()

        mutating func add(_ pc: ServicePieces) {
            guard let p = pc.affinityProtocol else { return }
            services += pc.affinityServices; nodePorts += pc.affinityNodePorts; endpoints += pc.affinityEndpoints
            protocols.insert(p)
        }
    }

    /// Clients an `affinity` map holds: 262,144 per table, split over the shards (divided by the
    /// power of two at or above their count; at least 65,536 each). Fixed, so that a service
    /// added or removed never recreates the map. (The kernel sizes the map's hash table for this
    /// many when it creates it, 4 MB, and shrinks it once entries expire. kube-proxy's nftables
    /// mode holds 65,535 clients per endpoint; its iptables mode, through xt_recent, 100.)
    static func affinityMapSize(shards: Int) -> UInt32 {
        var p = 1
        while p < shards { p <<= 1 }
        return UInt32(max(65_536, 262_144 / p))
    }

    /// A table's ClientIP affinity, when it holds service ports with it: one `affinity` map
    /// (client . policy chain key -> endpoint address . port, entries expiring as each port's
    /// `timeoutSeconds` says), the endpoints of each key (`affinity-endpoints`), and the
    /// recording after the DNAT: base chains at dstnat+1 that send a new DNATed connection to
    /// `affinity-record`, which finds the port's record chain by the connection's original
    /// destination (address, protocol, port; or protocol and node port). That chain records the
    /// client with the endpoint the DNAT chose, and each later connection refreshes it, as
    /// kube-proxy's `recent` lists do.
    static func addAffinity(_ t: inout NftTable, _ parts: AffinityParts, family: NftFamily, shards: Int) {
        guard !parts.protocols.isEmpty else { return }
        let addr: NftDataType = family == .ip ? .ipv4Addr : .ipv6Addr
        let saddr = NftField.saddr(family), daddr = NftField.daddr(family)
        let origDaddr = NftField.ct(family == .ip ? .dstIP : .dstIP6, .original), origPort = NftField.ct(.protoDst, .original)
        t.add(NftSet.map("affinity", .typeof([saddr, .numgenRandom(mod: 1), .numgenRandom(mod: 1)]), .typeof([daddr, .thDport]),
                         flags: [.dynamic, .timeout], size: affinityMapSize(shards: shards),
                         comment: "ClientIP affinity: client . policy chain key -> endpoint"))
        t.add(NftSet.set("affinity-endpoints", .typeof([.numgenRandom(mod: 1), .numgenRandom(mod: 1), daddr, .thDport]),
                         comment: "ClientIP affinity: the endpoints of each key", elements: unique(parts.endpoints)))
        let services = unique(parts.services), nodePorts = unique(parts.nodePorts)
        if !services.isEmpty {
            t.add(NftSet.vmap("affinity-services", .types([addr, .inetProto, .inetService]), comment: "ClientIP affinity by original destination", elements: services))
        }
        if !nodePorts.isEmpty {
            t.add(NftSet.vmap("affinity-nodeports", .types([.inetProto, .inetService]), comment: "ClientIP affinity by original node port", elements: nodePorts))
        }
        var rules = [NftRule]()
        // nft types `ct original proto-dst` only after a protocol match: one rule per protocol.
        for p in parts.protocols.sorted(by: { $0.number < $1.number }) {
            if !services.isEmpty { rules.append(NftRule(.l4protoIs(p), .vmap([origDaddr, .l4proto, origPort], map: "affinity-services"))) }
            if !nodePorts.isEmpty { rules.append(NftRule(.l4protoIs(p), .vmap([.l4proto, origPort], map: "affinity-nodeports"))) }
        }
        t.add(NftChain(name: "affinity-record", rules: rules))
        let record = NftRule(.ctState(.new), .ctStatus(.dnat), .jump("affinity-record"))
        t.add(.base("affinity-prerouting", type: .filter, hook: .prerouting, priority: -99, rules: [record]))
        t.add(.base("affinity-output", type: .filter, hook: .output, priority: -99, rules: [record]))
    }

    /// The `size` of a large hash set: twice the power of two at or above its element count, for
    /// sets of at least 4,096 elements (none below, nor for interval or dynamic sets). Without a
    /// size the kernel starts a resizable hash table small and grows it while a full apply
    /// inserts 100,000 elements (a sixth of that batch at 10,000 services); with one it sizes
    /// the table once. The size is also a limit, so it always leaves room for as many again. It
    /// changes when the count crosses a power of two; the kernel's set is kept while it still
    /// has room (`NftSet.canStand`), else recreated in the same atomic batch.
    static func sizeHint(_ set: NftSet) -> UInt32? {
        let n = set.elements.count
        guard n >= 4096, !set.flags.contains(.interval), !set.flags.contains(.dynamic) else { return set.size }
        var p = 4096
        while p < n { p <<= 1 }
        return UInt32(p * 2)
    }

    static func sized(_ t: NftTable) -> NftTable {
        var t = t
        for i in t.sets.indices { t.sets[i].size = sizeHint(t.sets[i]) }
        return t
    }

    /// What one service port contributes to the table.
    struct ServicePieces: Sendable {
        var serviceIPs = [NftElement](), nodePorts = [NftElement]()
        var noEndpointServices = [NftElement](), noEndpointNodePorts = [NftElement]()
        var firewallIPs = [NftElement](), firewallAllow = [NftElement]()
        var clusterIP: IPAddress?
        var shard = 0, bucket = 0
        var fingerprint: UInt64 = 0, mainFingerprint: UInt64 = 0
        /// `fingerprintWithoutEndpoints`, and the fingerprints of the port's endpoint-map
        /// elements and of its chains.
        var withoutEndpoints: UInt64 = 0, objectFingerprint: UInt64 = 0, chainFingerprint: UInt64 = 0
        /// Elements of the bucket's endpoint map (slot -> address . port).
        var endpointSlots = [NftElement]()
        var hairpin = [IPAddress]()
        var serviceChains = [NftChain]()
        /// With ClientIP affinity: its `affinity-record` dispatch elements, its `affinity-endpoints`
        /// elements (key . endpoint) and protocol.
        var affinityServices = [NftElement](), affinityNodePorts = [NftElement](), affinityEndpoints = [NftElement]()
        var affinityProtocol: NftL4Proto?
    }

    /// Endpoint maps per table: about 40 service ports share one at 10,000 services, whatever
    /// the shard count (256 in one table, 8 per shard with 32 shards). The count must not depend
    /// on the cluster's size, or a growing cluster would move every service to another map.
    static func endpointBucketCount(_ shards: Int) -> Int { max(8, 256 / max(1, shards)) }

    /// `endpoints-HH`: bucket `b`'s map.
    static func endpointMapName(_ b: Int) -> String {
        let hex = Array("0123456789abcdef".utf8)
        return "endpoints-" + String(decoding: [hex[b >> 4 & 15], hex[b & 15]], as: UTF8.self)
    }

    /// Where a service port's endpoints live: its bucket (from the third and fourth characters of
    /// its name hash; the first two pick its shard) and, for the cluster and local policy chains
    /// that choose among endpoints (with ClientIP affinity too, for new clients), the first of
    /// the chain's consecutive slots
    /// in the bucket's map. The chain's rule is then `dnat to numgen random mod N offset FIRST map
    /// @endpoints-HH`, and an endpoint change is an element change: no rule, no validation of the
    /// table's chain graph.
    ///
    /// Slots are dealt per (table, bucket) map: a chain's range starts at a 24-bit hash of its
    /// name, or right after the range before it when they would overlap (ranges in hash order,
    /// ties by name). A range so moves only when the ranges before it in its map overlap it
    /// (one grows into it, or a new one lands on it; it moves back when they shrink or go), and
    /// a moved range can push the next: rare with ~40 ranges in 16 million slots. It depends only
    /// on the map's own service ports, so the table's fingerprint covers it.
    ///
    /// Why buckets: binding a map to a rule walks all its elements, and adding an element walks
    /// all rules bound to its map (nf_tables validates the data registers); one map for all
    /// services is quadratic (a 10,000-service load took 114 s). Why not one map per service:
    /// the kernel finds a set by name with a linear walk of the table's sets.
    static func endpointSlots(_ plan: Plan, suffixes: [String], shards: Int) -> [EndpointSlots] {
        let buckets = endpointBucketCount(shards)
        var out = [EndpointSlots](repeating: EndpointSlots(), count: plan.services.count)
        var requests = [SlotRequest]()
        requests.reserveCapacity(plan.services.count * 3 / 2)
        for (i, svc) in plan.services.enumerated() {
            let sfx = suffixes[i]
            out[i].bucket = hashValue(sfx, at: 2) % buckets
            let scope = shard(ofSuffix: sfx, shards) * buckets + out[i].bucket
            if svc.usesClusterPolicy {
                let name = "service-" + sfx
                requests.append(SlotRequest(scope: scope, hash: slotHash(name), name: name, count: svc.clusterEndpoints.count, service: i, local: false))
            }
            if svc.usesLocalPolicy {
                let name = "local-" + sfx
                requests.append(SlotRequest(scope: scope, hash: slotHash(name), name: name, count: svc.localEndpoints.count, service: i, local: true))
            }
        }
        for (r, first) in zip(requests, deal(requests)) {
            if r.local { out[r.service].local = first } else { out[r.service].cluster = first }
        }
        return out
    }

    /// The first slot of each request (aligned): per scope, in (hash, name) order, a range
    /// starts at its hash or right after the range before it, whichever is later.
    static func deal(_ requests: [SlotRequest]) -> [UInt32] {
        let order = requests.indices.sorted { a, b in
            let x = requests[a], y = requests[b]
            return (x.scope, x.hash) != (y.scope, y.hash) ? (x.scope, x.hash) < (y.scope, y.hash) : x.name < y.name
        }
        var out = [UInt32](repeating: 0, count: requests.count)
        var scope = -1, next: UInt64 = 0
        for i in order {
            let r = requests[i]
            if r.scope != scope { scope = r.scope; next = 0 }
            let first = max(r.hash, next)
            next = first + UInt64(r.count)
            out[i] = UInt32(first)
        }
        return out
    }

    struct EndpointSlots { var bucket = 0, cluster: UInt32 = 0, local: UInt32 = 0 }

    struct SlotRequest { var scope: Int, hash: UInt64, name: String, count: Int, service: Int, local: Bool }

    /// FNV-1a of the chain name, top 24 bits.
    static func slotHash(_ name: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for c in name.utf8 { h = (h ^ UInt64(c)) &* 0x100_0000_01b3 }
        return h >> 40
    }

    /// The slot (key) of an endpoint map element.
    static func slotOf(_ e: NftElement) -> UInt32 {
        e.key.start[0].bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
    }

    /// Interval elements must not overlap: drop prefixes inside a broader one of the list.
    static func disjoint(_ cidrs: [CIDR]) -> [CIDR] {
        var kept = [CIDR]()
        for c in cidrs.sorted(by: { $0.prefixLength < $1.prefixLength }) where !kept.contains(where: { $0.contains(c.address) }) {
            kept.append(c)
        }
        return kept.sorted { $0.address < $1.address }
    }

    /// The hairpin objects of a table: sets of `ADDR . ADDR` (an endpoint reaching itself
    /// through its service is masqueraded, so that its reply comes back through the NAT) and
    /// the rule that checks them.
    struct Hairpin {
        var sets: [NftSet] = []
        var chains: [NftChain] = []
        var rule = NftRule(.ctStatus(.dnat))
        /// Per set with a fingerprint: its addresses' (for `NftObjectFingerprints`).
        var prints: [String: UInt64] = [:]
    }

    /// Up to 8,192 endpoint addresses, one set `hairpin`. Beyond, the addresses are split by
    /// their last byte over `hairpinSetCount(n)` sets `hairpin-HH` (a power of two, at most
    /// 4,096 addresses each on average), each checked by the chain of the same name, which the
    /// rule picks with `ip daddr & MASK vmap @hairpin-sets` (one lookup per new connection, as
    /// with one set). An endpoint change then rewrites sets of a few thousand elements, not one
    /// of 100,000 (at 10,000 services × 10 endpoints: 32 sets of ≈3,100).
    static func hairpinParts(_ sorted: [IPAddress], family: NftFamily, fingerprintBase: PlanHasher?) -> Hairpin {
        let addr: NftDataType = family == .ip ? .ipv4Addr : .ipv6Addr
        let daddr = NftField.daddr(family), saddr = NftField.saddr(family)
        let comment = "endpoint reaching itself through its service"
        func members(_ ips: ArraySlice<IPAddress>) -> [NftElement] { ips.map { .element(value($0), value($0)) } }
        let fingerprinted = fingerprintBase != nil
        func fingerprint(_ name: String, _ ips: ArraySlice<IPAddress>) -> UInt64 {
            // From the table's base (the build's salt, the settings): another build trusts none.
            var h = fingerprintBase!
            h.string("hairpin set"); h.string(name); h.int(ips.count)
            for ip in ips { h.ip(ip) }
            return h.value
        }
        var out = Hairpin()
        let n = hairpinSetCount(sorted.count)
        guard n > 1 else {
            out.sets = [NftSet.set("hairpin", .types([addr, addr]), comment: comment, elements: members(sorted[...]))]
            if fingerprinted { out.prints["hairpin"] = fingerprint("hairpin", sorted[...]) }
            out.rule = NftRule(.ctStatus(.dnat), .lookup([saddr, daddr], set: "hairpin"), .jump("mark-for-masquerade"), comment: "hairpin")
            return out
        }
        // Stable partition by the last byte: each part stays sorted.
        var parts = [[IPAddress]](repeating: [], count: n)
        for ip in sorted { parts[Int(ip.lo & UInt64(n - 1))].append(ip) }
        var dispatch = [NftElement]()
        for (k, ips) in parts.enumerated() {
            let name = hairpinSetName(k)
            out.sets.append(NftSet.set(name, .types([addr, addr]), comment: comment, elements: members(ips[...])))
            if fingerprinted { out.prints[name] = fingerprint(name, ips[...]) }
            out.chains.append(NftChain(name: name, rules: [
                NftRule(.lookup([saddr, daddr], set: name), .jump("mark-for-masquerade"), comment: "hairpin")]))
            dispatch.append(.verdict([value(lastByte(k, family))], .jump(name)))
        }
        out.sets.append(NftSet.vmap("hairpin-sets", .types([addr]), comment: "hairpin set by the last byte of the address", elements: dispatch))
        let mask = value(lastByte(n - 1, family)).bytes
        out.rule = NftRule(statements: [.ctStatus(.dnat), .raw([
            daddr.load(into: .r1),
            .bitwise(sreg: .r1, dreg: .r1, mask: mask, xor: NftBytes(zeros: mask.count)),
            .lookup(set: "hairpin-sets", sreg: .r1, dreg: .verdict, invert: false),
        ])], comment: "hairpin")
        return out
    }

    /// How many hairpin sets hold `n` endpoint addresses (see `hairpinParts`).
    static func hairpinSetCount(_ n: Int) -> Int {
        guard n > 8192 else { return 1 }
        var p = 2
        while n > p * 4096 && p < 256 { p <<= 1 }
        return p
    }

    /// `hairpin-HH`: hairpin set `k`.
    static func hairpinSetName(_ k: Int) -> String {
        let hex = Array("0123456789abcdef".utf8)
        return "hairpin-" + String(decoding: [hex[k >> 4 & 15], hex[k & 15]], as: UTF8.self)
    }

    /// The address whose last byte is `k` and every other byte zero.
    static func lastByte(_ k: Int, _ family: NftFamily) -> IPAddress {
        family == .ip ? IPAddress(v4: UInt32(k)) : IPAddress(v6: 0, UInt64(k))
    }

    /// Sorted without duplicates (100,000 endpoint addresses: a sort beats a hash set here).
    static func sortedUnique(_ ips: [IPAddress]) -> [IPAddress] {
        var out = [IPAddress]()
        out.reserveCapacity(ips.count)
        for ip in ips.sorted() where out.last != ip { out.append(ip) }
        return out
    }

    static func unique(_ elements: [NftElement]) -> [NftElement] {
        uniqueOrder(elements).map { elements[$0] }
    }

    /// The indices of `unique(elements)`: sorted as the text renders them, so a netlink apply
    /// inserts in the same order as `nft -f` (the listing order of interval sets follows
    /// insertion order); the first element of each key is kept.
    static func uniqueOrder(_ elements: [NftElement]) -> [Int] {
        if let flat = flatKeys(elements) {
            // One byte string per key: a sort of indices, no key arrays walked per comparison.
            let order = elements.indices.sorted { a, b in
                flat[a] == flat[b] ? a < b : flat[a].lexicographicallyPrecedes(flat[b])
            }
            var out = [Int]()
            out.reserveCapacity(elements.count)
            for i in order where out.last.map({ flat[$0] != flat[i] }) ?? true { out.append(i) }
            return out
        }
        var seen = Set<NftElementKey>()
        return elements.indices.filter { seen.insert(elements[$0].key).inserted }.sorted { elements[$0].key < elements[$1].key }
    }

    /// Each element's key as start bytes then end bytes, when that orders and identifies them
    /// exactly as `NftElementKey` does: every element has values of the same types and lengths,
    /// and all or none have an end. Nil otherwise.
    static func flatKeys(_ elements: [NftElement]) -> [[UInt8]]? {
        guard let first = elements.first else { return [] }
        let shape = first.key.start + (first.key.end ?? [])
        let lengths = shape.map(\.bytes.count), types = shape.map(\.type)
        let hasEnd = first.key.end != nil
        var out = [[UInt8]]()
        out.reserveCapacity(elements.count)
        for e in elements {
            guard (e.key.end != nil) == hasEnd else { return nil }
            var bytes = [UInt8]()
            bytes.reserveCapacity(lengths.reduce(0, +))
            var k = 0
            for v in e.key.start + (e.key.end ?? []) {
                guard k < lengths.count, v.bytes.count == lengths[k], v.type == types[k] else { return nil }
                bytes += v.bytes
                k += 1
            }
            guard k == lengths.count else { return nil }
            out.append(bytes)
        }
        return out
    }

    /// A policy chain's key in the table's `affinity` map (after the client address): 64 bits of
    /// sha256 over the service port, the chain (cluster or local) and its endpoints, as two
    /// constants (`numgen random mod 1 offset W` is W: nft 1.0.6 parses no constant in a
    /// concatenated lookup key). An endpoint change so gives the chain a fresh key, and no
    /// client stays pinned to an endpoint that is gone; the old entries expire unread.
    struct AffinityKey {
        var fields: [NftField], values: [NftValue]
    }

    static func affinityKey(_ svc: ServicePortPlan, _ chain: String, _ endpoints: [PlannedEndpoint]) -> AffinityKey {
        let readable = readableName(svc)
        let eps = endpoints.map(\.hostPort).sorted().joined(separator: ",")
        let (a, b) = ChainHash.sha256Words(readable + "|" + chain + "|" + eps)
        return AffinityKey(fields: [.numgenRandom(mod: 1, offset: a), .numgenRandom(mod: 1, offset: b)],
                           values: [.integer(a), .integer(b)])
    }

}
