// Representative rulesets in kube-proxy's shape, used by tests, docs and benchmarks.

extension NftRuleset {
    /// A small ruleset exercising every construct the nftables backend uses, for one family
    /// (ip or ip6): verdict-map dispatch, node ports, numgen data maps with DNAT, hairpin and
    /// source-range sets (concatenated interval keys), affinity sets with timeouts, marks,
    /// masquerade, ct matches, reject/drop, counters and comments.
    public static func example(family: NftFamily = .ip, table: String = "kuberules") -> NftRuleset {
        let v6 = family == .ip6
        let addr: NftDataType = v6 ? .ipv6Addr : .ipv4Addr
        func a(_ s4: String, _ s6: String) -> NftValue { v6 ? .ipv6(s6) : .ipv4(s4) }
        let cidr = v6 ? "fd00::/8" : "10.0.0.0/8"
        let daddr = NftField.daddr(family), saddr = NftField.saddr(family)

        var t = NftTable(family: family, name: table, comment: "rules for Kubernetes services")

        t.add(NftSet.vmap("service-ips", .types([addr, .inetProto, .inetService]), comment: "ClusterIP, ExternalIP and LoadBalancer IP traffic",
                          elements: [
                              .verdict([a("172.30.0.41", "fd00:30::41"), .proto(.tcp), .port(80)], .goto("service-x"), comment: "ns1/svc1:http"),
                              .verdict([a("172.30.0.42", "fd00:30::42"), .proto(.udp), .port(53)], .goto("service-y")),
                          ]))
        t.add(NftSet.vmap("service-nodeports", .types([.inetProto, .inetService]), comment: "NodePort traffic",
                          elements: [.verdict([.proto(.tcp), .port(30080)], .goto("service-x"))]))
        t.add(NftSet.map("eps-x", .typeof([.numgenRandom(mod: 2)]),
                         .typeof([daddr, .tcpDport]),
                         elements: [
                             .mapping([.integer(0)], to: [a("10.1.0.1", "fd00:1::1"), .port(8080)]),
                             .mapping([.integer(1)], to: [a("10.1.0.2", "fd00:1::2"), .port(8080)], comment: "ep 2"),
                         ]))
        t.add(NftSet.set("hairpin", .types([addr, addr]), comment: "endpoint hairpin pairs",
                         elements: [.element(a("10.1.0.1", "fd00:1::1"), a("10.1.0.1", "fd00:1::1"))]))
        t.add(NftSet.set("firewall-allow", .types([addr, .inetProto, .inetService, addr]), flags: .interval,
                         elements: [
                             .interval([.value(a("172.30.0.41", "fd00:30::41")), .value(.proto(.tcp)), .value(.port(80)), .prefix(cidr)]),
                         ]))
        t.add(NftSet.set("source-ranges", .types([addr]), flags: .interval, comment: "single-field interval set",
                         elements: [
                             .interval([.prefix(v6 ? "fd10::/16" : "10.0.0.0/8")]),
                             .interval([.range(a("192.168.0.1", "fd20::1"), a("192.168.0.9", "fd20::9"))]),
                             .element(a("203.0.113.7", "2001:db8::7")),
                         ]))
        t.add(NftSet.set("affinity-x", .types([addr]), flags: [.dynamic, .timeout], timeoutMs: 3 * 3_600_000))
        t.add(NftSet.set("cluster-ips", .types([addr]),
                         elements: [.element(a("172.30.0.41", "fd00:30::41")), .element(a("172.30.0.42", "fd00:30::42"))]))

        t.add(.base("nat-prerouting", type: .nat, hook: .prerouting, priority: -100,
                    rules: [NftRule(.jump("services"))]))
        t.add(.base("nat-postrouting", type: .nat, hook: .postrouting, priority: 100,
                    rules: [NftRule(.jump("masquerading"))]))
        t.add(.base("filter-input", type: .filter, hook: .input, priority: 0, comment: "unknown ports of ClusterIPs",
                    rules: [
                        NftRule(.ctState(.new), .lookup([daddr], set: "cluster-ips"), .reject(for: family), comment: "reject unknown cluster IP ports"),
                        NftRule(.lookup([daddr, .l4proto, .thDport, saddr], set: "firewall-allow", invert: true, intervalConcat: true),
                                .l4protoIs(.tcp), .drop),
                        NftRule(.matchPrefix(saddr, cidr, .neq), .match(.thDport, .eq, .port(9)), .reject(.tcpReset)),
                        NftRule(.lookup([saddr], set: "source-ranges"), .counter, .accept),
                    ]))
        t.add(NftChain(name: "services", rules: [
            NftRule(.vmap([daddr, .l4proto, .thDport], map: "service-ips")),
            NftRule(.fibDaddrType(.local), .vmap([.l4proto, .thDport], map: "service-nodeports")),
        ]))
        t.add(NftChain(name: "mark-for-masquerade", rules: [NftRule(.setMark(.or(0x4000)))]))
        t.add(NftChain(name: "masquerading", rules: [
            NftRule(.matchBits(.mark, mask: 0x4000, .eq, 0), .return),
            NftRule(.setMark(.xor(0x4000))),
            NftRule(.masquerade(fullyRandom: true)),
        ]))
        t.add(NftChain(name: "service-x", comment: "ns1/svc1:http", rules: [
            NftRule(.matchPrefix(saddr, cidr, .neq), .jump("mark-for-masquerade")),
            NftRule(.lookup([saddr], set: "affinity-x"), .goto("endpoint-x-1")),
            NftRule(.dnatFromMap([.numgenRandom(mod: 2)], map: "eps-x", family: family, withPort: true, l4proto: .tcp)),
        ]))
        t.add(NftChain(name: "endpoint-x-1", rules: [
            NftRule(.lookup([saddr, daddr], set: "hairpin"), .jump("mark-for-masquerade")),
            NftRule(.dynset(.update, set: "affinity-x", key: [saddr], timeoutMs: 3 * 3_600_000)),
            NftRule(.counter, .dnat(to: a("10.1.0.1", "fd00:1::1"), port: 8080, l4proto: .tcp), comment: "endpoint 10.1.0.1:8080"),
        ]))
        t.add(NftChain(name: "service-y", rules: [
            NftRule(.ctStatus(.dnat), .counter, .accept),
            NftRule(.setMark(.from(.numgenRandom(mod: 10, offset: 5)))),
            NftRule(.match(.iifname, .eq, .ifname("eth0")), .drop),
        ]))
        return NftRuleset(tables: [t])
    }
}
