import XCTest
import KubeModel
import KubePlan
import NftModel
@testable import NftApply
@testable import NftBackend

/// `--nft-shards`: service dispatch split over shard tables, table fingerprints, stale shards.
final class ShardTests: XCTestCase {
    /// 40 service ports: ClusterIP, NodePort every 4th, ClientIP affinity every 10th.
    func cluster(changingEndpointOf changed: Int? = nil) -> Cluster {
        var c = Cluster()
        for i in 0..<40 {
            var svc = Service(ref: ObjectRef(kind: "Service", namespace: "ns", name: "svc-\(i)", file: "f"))
            svc.type = i % 4 == 0 ? .nodePort : .clusterIP
            svc.clusterIPs = [IPAddress(v4: 0x0a60_0000 + UInt32(i))]
            svc.ports = [ServicePort(name: "p", proto: i % 3 == 0 ? .udp : .tcp, port: 80, nodePort: i % 4 == 0 ? 30000 + i : 0)]
            if i % 10 == 0 { svc.affinityTimeout = 600 }
            c.services.append(svc)
            var s = EndpointSlice(ref: ObjectRef(kind: "EndpointSlice", namespace: "ns", name: "svc-\(i)-1", file: "f"),
                                  serviceName: svc.name, family: .ipv4)
            s.ports = [EndpointPort(name: "p", port: 8080, proto: svc.ports[0].proto)]
            s.endpoints = (0..<3).map { j in
                Endpoint(address: IPAddress(v4: 0x0af4_0000 + UInt32(i * 8 + j + (changed == i && j == 0 ? 5 : 0))))
            }
            c.slices.append(s)
        }
        return c
    }

    func plan(_ c: Cluster) -> Plan {
        Planner.plan(cluster: c, node: NodeConfig(nodeName: "node-a", nodeIPs: [IPAddress("192.168.1.10")!]), family: .ipv4)
    }

    /// A chain's rules as text, each endpoint-map DNAT replaced by the endpoints its slots hold.
    func resolved(_ c: NftChain, in t: NftTable) -> [String] {
        c.rules.map { r in
            var slots: Range<UInt32>?, map: String?
            for e in r.exprs {
                if case .numgen(_, let m, _, let o) = e { slots = o..<(o + m) }
                if let s = e.referencedSet, s.hasPrefix("endpoints-") { map = s }
            }
            guard let slots, let map, let set = t.sets.first(where: { $0.name == map }) else { return "\(r)" }
            return "endpoints " + slots.map { slot in
                set.elements.first { NftBackend.slotOf($0) == slot }.map { "\($0.data!)" } ?? "missing slot \(slot)"
            }.joined(separator: ", ")
        }
    }

    func testShardsSplitDispatchAndHoldEveryServiceChainOnce() throws {
        let p = plan(cluster())
        let one = NftBackend.build([p]).tables
        let four = NftBackend.build([p], shards: 4).tables
        XCTAssertEqual(one.map(\.name), ["kuberules"])
        XCTAssertEqual(four.map(\.name), ["kuberules", "kuberules-services-00", "kuberules-services-01", "kuberules-services-02", "kuberules-services-03"])
        let single = one[0], main = four[0], shards = Array(four.dropFirst())
        for t in four { XCTAssertNoThrow(try NftDiff.validate(t), t.name) }

        // The main table keeps everything but dispatch.
        // (ClientIP affinity: each table with such service ports records its own clients.)
        let moved: Set<String> = ["services", "nat-prerouting", "nat-output", "affinity-record", "affinity-prerouting", "affinity-output"]
        XCTAssertEqual(Set(main.chains.map(\.name)),
                       Set(single.chains.map(\.name)).subtracting(moved).filter { !$0.contains("/") }, "per-service chains are named ns/name/proto/port")
        XCTAssertNil(main.sets.first { $0.name == "service-ips" })
        // Hairpin marking moves to the shards, each for its own endpoints, before srcnat.
        XCTAssertNil(main.sets.first { $0.name == "hairpin" })
        XCTAssertEqual(main.chains.first { $0.name == "masquerading" }?.rules.count, 3)
        XCTAssertEqual(Set(shards.flatMap { s in s.sets.first { $0.name == "hairpin" }!.elements }),
                       Set(single.sets.first { $0.name == "hairpin" }!.elements))
        XCTAssertEqual(shards[0].chains.first { $0.name == "hairpin-postrouting" }?.base?.priority, 99)

        // Every service chain is in exactly one shard, unchanged but for where
        // its endpoints' slots are (each table deals its own); the dispatch elements are split
        // without loss, each in the shard of the chain it leads to.
        let serviceChains = single.chains.filter { !main.chains.map(\.name).contains($0.name) && !moved.contains($0.name) }
        XCTAssertTrue(serviceChains.contains { c in c.rules.contains { $0.exprs.contains { $0.referencedSet?.hasPrefix("endpoints-") ?? false } } })
        for c in serviceChains {
            let holders = shards.filter { $0.chains.contains { $0.name == c.name } }
            XCTAssertEqual(holders.count, 1, c.name)
            XCTAssertEqual(holders.first.map { resolved($0.chains.first { $0.name == c.name }!, in: $0) }, resolved(c, in: single), c.name)
        }
        // The affinity dispatch elements too, each in the shard of its record chain; each shard
        // with affinity records its own clients in its own map.
        for name in ["affinity-services", "affinity-nodeports"] {
            let all = single.sets.first { $0.name == name }!.elements
            XCTAssertFalse(all.isEmpty, name)
            let split = shards.flatMap { s in s.sets.first { $0.name == name }?.elements ?? [] }
            XCTAssertEqual(Set(split), Set(all), name)
            XCTAssertEqual(split.count, all.count, name)
            for s in shards {
                for e in s.sets.first(where: { $0.name == name })?.elements ?? [] {
                    guard case .verdict(let v)? = e.data, let target = v.chain else { continue }
                    XCTAssertTrue(s.chains.contains { $0.name == target }, "\(name) element of \(s.name) leads out of its table")
                }
                XCTAssertEqual(s.sets.contains { $0.name == "affinity" }, s.chains.contains { $0.name == "affinity-record" }, s.name)
            }
        }
        for name in ["service-ips", "service-nodeports"] {
            let all = single.sets.first { $0.name == name }!.elements
            let split = shards.flatMap { s in s.sets.first { $0.name == name }!.elements }
            XCTAssertEqual(Set(split.map(\.key)), Set(all.map(\.key)), name)
            XCTAssertEqual(split.count, all.count, name)
            for s in shards {
                for e in s.sets.first(where: { $0.name == name })!.elements {
                    guard case .verdict(let v)? = e.data, let target = v.chain else { continue }
                    XCTAssertTrue(s.chains.contains { $0.name == target }, "\(name) element of \(s.name) leads out of its table")
                }
            }
        }
        XCTAssertGreaterThan(shards.filter { !$0.chains.filter { $0.name.hasPrefix("service-") }.isEmpty }.count, 2, "40 services spread")

        // NodePort dispatch runs after every shard's service-IP dispatch.
        let s0 = shards[0]
        XCTAssertEqual(s0.chains.first { $0.name == "nat-prerouting" }?.base?.priority, -100)
        XCTAssertEqual(s0.chains.first { $0.name == "nodeports-prerouting" }?.base?.priority, -99)
        XCTAssertEqual(s0.chains.first { $0.name == "nodeports-output" }?.base?.priority, -99)
    }

    func testAServiceStaysInItsShardWhenOthersComeAndGo() {
        var c = cluster()
        let before = NftBackend.build([plan(c)], shards: 8).tables
        c.services.removeFirst(5)
        let after = NftBackend.build([plan(c)], shards: 8).tables
        for t in after.dropFirst() {
            for ch in t.chains where ch.name.hasPrefix("service-") {
                XCTAssertTrue(before.first { $0.name == t.name }!.chains.contains { $0.name == ch.name }, ch.name)
            }
        }
    }

    func testFingerprintsChangeWithTheirTableOnly() {
        let a = NftBackend.build([plan(cluster())], shards: 4, fingerprintSalt: 1)
        XCTAssertEqual(a.fingerprints.count, 5)
        XCTAssertEqual(NftBackend.build([plan(cluster())], shards: 4, fingerprintSalt: 1).fingerprints, a.fingerprints, "stable")
        XCTAssertTrue(NftBackend.build([plan(cluster())], shards: 4).fingerprints.isEmpty, "none without a salt")

        let b = NftBackend.build([plan(cluster(changingEndpointOf: 7))], shards: 4, fingerprintSalt: 1)
        let changed = a.tables.map(\.id).filter { a.fingerprints[$0] != b.fingerprints[$0] }
        let shardOf7 = b.tables.first { t in t.chains.contains { $0.comment == "ns/svc-7:p" } }!.id
        XCTAssertEqual(changed, [shardOf7], "the main table holds no endpoint: its fingerprint stays")
        XCTAssertEqual(b.table(.ip, "kuberules"), a.table(.ip, "kuberules"))
        // Without shards the one table holds the endpoints: its fingerprint moves.
        XCTAssertNotEqual(NftBackend.build([plan(cluster())], fingerprintSalt: 1).fingerprints,
                          NftBackend.build([plan(cluster(changingEndpointOf: 7))], fingerprintSalt: 1).fingerprints)
        // Tables whose fingerprint did not move are the same tables.
        for t in a.tables where !changed.contains(t.id) { XCTAssertEqual(b.table(.ip, t.name), t) }

        let other = NftBackend.build([plan(cluster())], shards: 4, fingerprintSalt: 2)
        XCTAssertTrue(a.tables.allSatisfy { a.fingerprints[$0.id] != other.fingerprints[$0.id] }, "another build trusts none")
        // Nor any chain's or set's (the hairpin sets' too), in shards or in one table.
        for (x, y) in [(a, other), (NftBackend.build([plan(cluster())], fingerprintSalt: 1), NftBackend.build([plan(cluster())], fingerprintSalt: 2))] {
            for t in x.tables {
                let px = x.objectFingerprints[t.id]!, py = y.objectFingerprints[t.id]!
                for (k, c) in t.chains.enumerated() where px.chain(k, named: c.name) != nil {
                    XCTAssertNotEqual(px.chain(k, named: c.name), py.chain(k, named: c.name), c.name)
                }
                for (k, s) in t.sets.enumerated() where px.set(k, named: s.name) != nil {
                    XCTAssertNotEqual(px.set(k, named: s.name), py.set(k, named: s.name), s.name)
                }
                XCTAssertNotNil(t.sets.firstIndex { $0.name == "hairpin" }.flatMap { px.set($0, named: "hairpin") } ?? (t.name == "kuberules" && x.tables.count > 1 ? 0 : nil))
            }
        }
    }

    func testApplyTrustsEqualFingerprintsAndDeletesStaleShards() throws {
        let k = FakeNftKernel()
        let store = MemoryStateStore()
        func applier() -> NftApplier { NftTests.applier(k, store) }
        let foreign = NftTable(family: .ip, name: "kuberules-services-old")
        k.install(foreign)
        let threeDigits = NftTable(family: .ip, name: "kuberules-services-100")
        k.install(threeDigits)
        let first = NftBackend.build([plan(cluster())], shards: 4, fingerprintSalt: 1)
        XCTAssertEqual(try applier().apply(first).read, .kernel)
        assertSame(NftRuleset(tables: k.dump().tables.filter { $0 != foreign && $0 != threeDigits }), first)

        // One endpoint changes: three shards are taken as they are, without a read or a diff.
        let second = NftBackend.build([plan(cluster(changingEndpointOf: 7))], shards: 4, fingerprintSalt: 1)
        let r = try applier().apply(second)
        XCTAssertTrue(r.committed)
        XCTAssertEqual(r.unchanged.tables, 5, "4 taken as they are, 1 diffed without a table-level change")
        // An endpoint replaced is an element change (endpoint map and hairpin set), diffed
        // against the saved elements: no chain is read back.
        XCTAssertEqual(r.read, .savedState(chains: 0, sets: 0))
        XCTAssertEqual(k.partiallyDumped.count, 0, "nothing is read back: \(k.partiallyDumped)")
        assertSame(NftRuleset(tables: k.dump().tables.filter { $0 != foreign && $0 != threeDigits }), second)
        XCTAssertEqual(try applier().apply(second).committed, false, "then nothing to do")

        // A table edited behind our back is caught through the generation, not trusted.
        var edited = k.tables[NftTableID(.ip, "kuberules-services-00")]!
        edited.chains[0].rules.append(NftRule(.drop))
        k.install(edited)
        let repaired = try applier().apply(second)
        XCTAssertEqual(repaired.read, .kernel)
        XCTAssertTrue(repaired.committed)
        assertSame(NftRuleset(tables: k.dump().tables.filter { $0 != foreign && $0 != threeDigits }), second)

        // Fewer shards: the two no longer named are deleted; a foreign table with a
        // similar name is not ours.
        let two = NftBackend.build([plan(cluster(changingEndpointOf: 7))], shards: 2, fingerprintSalt: 1)
        let preview = try applier().apply(two, dryRun: true)
        XCTAssertTrue(preview.listing.contains("delete table ip kuberules-services-03 (shard no longer used)"), "\(preview.listing)")
        let shrink = try applier().apply(two)
        XCTAssertEqual(shrink.removed.tables, 2)
        XCTAssertTrue(shrink.listing.isEmpty, "a real apply prints no listing, so none is written")
        assertSame(NftRuleset(tables: k.dump().tables.filter { $0 != foreign && $0 != threeDigits }), two)
        XCTAssertEqual(k.tables[foreign.id], foreign)
        XCTAssertEqual(k.tables[threeDigits.id], threeDigits, "not a name we give a shard")

        // Cleanup of the shards leaves the foreign table too.
        XCTAssertEqual(try applier().cleanupShards(table: "kuberules", prefix: NftBackend.shardPrefix("kuberules")).map(\.name),
                       ["kuberules-services-00", "kuberules-services-01"])
        XCTAssertEqual(k.tables.keys.sorted().map(\.name), ["kuberules", "kuberules-services-100", "kuberules-services-old"])
    }

    /// With the state file: an endpoint change rewrites one part file (the changed shard's)
    /// and loads no other table's digests.
    func testStateFileKeepsTheUnchangedShardsParts() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kr-shards-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let k = FakeNftKernel()
        func applier() -> NftApplier { NftTests.applier(k, NftStateFile(directory: dir)) }
        func parts() throws -> Set<String> { Set(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".part") }) }
        let first = NftBackend.build([plan(cluster())], shards: 4, fingerprintSalt: 1)
        try applier().apply(first)
        let before = try parts()
        XCTAssertEqual(before.count, 5)
        let second = NftBackend.build([plan(cluster(changingEndpointOf: 7))], shards: 4, fingerprintSalt: 1)
        // Damage the parts of every table but the changed shard: they must not be read at all.
        let changedShard = second.tables.first { t in t.chains.contains { $0.comment == "ns/svc-7:p" } }!.name
        let index = try String(contentsOfFile: dir + "/" + (try FileManager.default.contentsOfDirectory(atPath: dir).first { $0.hasSuffix(".state") }!), encoding: .utf8)
        for line in index.split(separator: "\n") where line.hasPrefix("table ") && !line.contains(" \(changedShard) ") {
            let fields = line.split(separator: " ")   // ... <part digest> <chains digest>
            let part = try XCTUnwrap(UInt64(String(fields[fields.count - 2]), radix: 16))
            let path = NftStateFile(directory: dir).partPath(part)
            XCTAssertTrue(FileManager.default.fileExists(atPath: path), path)
            try Data("damaged\n".utf8).write(to: URL(fileURLWithPath: path))
        }
        let r = try applier().apply(second)
        XCTAssertEqual(r.read, .savedState(chains: 0, sets: 0), "an unchanged table's part was read")
        assertSame(k.dump(), second)
        // Put them back for the rest of the test (a full read rewrites every part).
        XCTAssertEqual(try applier().apply(first).read, .savedState(chains: 0, sets: 0))
        k.bumpGeneration()
        XCTAssertEqual(try applier().apply(first).read, .kernel)
        // (Parts name where their sets' elements sit in the packs: a full write that appended
        // them again names new places.)
        let rewritten = try parts()
        XCTAssertEqual(rewritten.count, 5)
        XCTAssertEqual(try applier().apply(second).read, .savedState(chains: 0, sets: 0))
        let after = try parts()
        XCTAssertEqual(after.count, 5)
        XCTAssertEqual(rewritten.subtracting(after).count, 1, "one part replaced: \(rewritten) -> \(after)")
        assertSame(k.dump(), second)
        // The state left behind serves the next run, and going back is one more small change.
        XCTAssertFalse(try applier().apply(second).committed)
        XCTAssertEqual(try applier().apply(first).read, .savedState(chains: 0, sets: 0))
        assertSame(k.dump(), first)
    }

    /// The sharded main table's fingerprint leaves endpoints out: whatever change of a service
    /// port changes the main table must change that fingerprint.
    /// Changes of one service port's plan, each touching one plan field.
    func mutations() -> [(String, (inout ServicePortPlan) -> Void)] {
        let ep = PlannedEndpoint(ip: IPAddress("10.244.9.9")!, port: 8080, isLocal: true, ready: true, serving: true, terminating: false)
        var mutations: [(String, (inout ServicePortPlan) -> Void)] = [
            ("port", { $0.port += 1 }), ("nodePort", { $0.nodePort = 31999 }), ("clusterIP", { $0.clusterIP = IPAddress("10.96.9.9")! }),
            ("externalIPs", { $0.externalIPs = [IPAddress("198.51.100.9")!] }),
            ("loadBalancerIPs", { $0.loadBalancerIPs = [IPAddress("198.51.100.8")!] }),
            ("sourceRanges", { $0.loadBalancerIPs = [IPAddress("198.51.100.8")!]; $0.sourceRanges = [CIDR("192.0.2.0/24")!] }),
            ("allowFromNode", { $0.loadBalancerIPs = [IPAddress("198.51.100.8")!]; $0.sourceRanges = [CIDR("192.0.2.0/24")!]; $0.allowFromNode.toggle() }),
            ("no endpoints", { $0.clusterEndpoints = []; $0.localEndpoints = []; $0.reachableEndpoints = []; $0.hasEndpoints = false }),
            ("local policy without local endpoints", { $0.internalPolicyLocal = true; $0.localEndpoints = [] }),
            ("external local policy", { $0.nodePort = 31998; $0.externalPolicyLocal = true }),
            ("a local endpoint", { $0.localEndpoints = [ep] }),
            ("endpoint address", { $0.clusterEndpoints[0] = ep; $0.reachableEndpoints[0] = ep }),
            ("affinity", { $0.affinityTimeout = 99 }),
            // Affinity with a local policy chain: a second key, record chains by entry path.
            ("affinity, external local policy", { $0.affinityTimeout = 99; $0.nodePort = 31997; $0.externalPolicyLocal = true; $0.localEndpoints = [ep] }),
            ("affinity, internal local policy", { $0.affinityTimeout = 99; $0.internalPolicyLocal = true; $0.localEndpoints = [ep] }),
            ("proto", { $0.proto = $0.proto == .tcp ? .udp : .tcp }),
        ]
        mutations.append(("healthCheckNodePort", { $0.healthCheckNodePort = 32000 }))
        mutations.append(("another endpoint", { $0.clusterEndpoints.append(ep); $0.reachableEndpoints.append(ep) }))
        mutations.append(("endpoint port", { $0.clusterEndpoints[0].port += 1; $0.reachableEndpoints[0].port += 1 }))
        return mutations
    }

    func testEveryChangeOfTheMainTableMovesItsFingerprint() {
        let base = plan(cluster())
        let before = NftBackend.build([base], shards: 4, fingerprintSalt: 1)
        let main = NftTableID(.ip, "kuberules")
        for (what, mutate) in mutations() {
            for i in [0, 1, 7] {
                var p = base
                mutate(&p.services[i])
                let after = NftBackend.build([p], shards: 4, fingerprintSalt: 1)
                if after.table(.ip, "kuberules") != before.table(.ip, "kuberules") {
                    XCTAssertNotEqual(after.fingerprints[main], before.fingerprints[main], "\(what) of service \(i) changed the main table")
                }
                for t in after.tables where t != before.table(t.family, t.name) {
                    XCTAssertNotEqual(after.fingerprints[t.id], before.fingerprints[t.id], "\(what) of service \(i) changed \(t.name)")
                }
            }
        }
    }

    /// Object fingerprints (`NftObjectFingerprints`): wherever a chain or set has the same
    /// fingerprint before and after a change, it is the same object, in one table and with
    /// shards. And they are fine enough to be of use: an endpoint replaced leaves the service
    /// port's chains and the shared sets alone, and moves only its endpoint map's fingerprint
    /// (and the hairpin set's).
    func testEqualObjectFingerprintsMeanEqualObjects() {
        let base = plan(cluster())
        // svc-1: a plain ClusterIP service port (no affinity).
        let plain = base.services.firstIndex { $0.name.name == "svc-1" }!
        for shards in [1, 4] {
            let before = NftBackend.build([base], shards: shards, fingerprintSalt: 1)
            for (what, mutate) in mutations() {
                for i in [0, 1, 7, plain] {
                    var p = base
                    mutate(&p.services[i])
                    let after = NftBackend.build([p], shards: shards, fingerprintSalt: 1)
                    var kept: Set<String> = []
                    for t in after.tables {
                        guard let b = before.table(t.family, t.name), let pa = after.objectFingerprints[t.id],
                              let pb = before.objectFingerprints[t.id] else { continue }
                        XCTAssertEqual(pa.chains.count, t.chains.count)
                        XCTAssertEqual(pa.sets.count, t.sets.count)
                        for (k, c) in t.chains.enumerated() {
                            guard let f = pa.chain(k, named: c.name), let j = b.chains.firstIndex(where: { $0.name == c.name }),
                                  pb.chain(j, named: c.name) == f else { continue }
                            XCTAssertEqual(c, b.chains[j], "\(what) of service \(i), \(shards) shard(s): chain \(c.name) changed, its fingerprint did not")
                            kept.insert(t.name + " chain " + c.name)
                        }
                        for (k, s) in t.sets.enumerated() {
                            guard let f = pa.set(k, named: s.name), let j = b.sets.firstIndex(where: { $0.name == s.name }),
                                  pb.set(j, named: s.name) == f else { continue }
                            XCTAssertEqual(s, b.sets[j], "\(what) of service \(i), \(shards) shard(s): set \(s.name) changed, its fingerprint did not")
                            kept.insert(t.name + " set " + s.name)
                        }
                    }
                    guard what == "endpoint address", i == plain else { continue }
                    let t = after.tables.first { $0.chains.contains { $0.comment == "ns/svc-1:p" } }!
                    let chain = t.chains.first { $0.comment == "ns/svc-1:p" }!.name
                    let map = t.chains.first { $0.name == chain }!.rules.last!.exprs.compactMap(\.referencedSet).first!
                    XCTAssertTrue(kept.contains(t.name + " chain " + chain), "\(shards): the chain of an endpoint replaced keeps its fingerprint")
                    XCTAssertFalse(kept.contains(t.name + " set " + map), "\(shards): its endpoint map's fingerprint moves")
                    XCTAssertFalse(kept.contains(t.name + " set hairpin"))
                    if shards == 1 { XCTAssertTrue(kept.contains("kuberules set service-ips") && kept.contains("kuberules set cluster-ips")) }
                }
            }
        }
        XCTAssertTrue(NftBackend.build([base], fingerprintSalt: nil).objectFingerprints.isEmpty, "none without a salt")
    }

    /// A plan change that changes no rule (a health check port: the nftables rules do not use
    /// it) moves fingerprints: the apply commits nothing but saves them, so that the next apply
    /// takes the table as it is again.
    func testMovedFingerprintsAreSavedWithoutACommit() throws {
        let k = FakeNftKernel()
        let store = MemoryStateStore()
        let first = NftBackend.build([plan(cluster())], fingerprintSalt: 1)
        try NftTests.applier(k, store).apply(first)
        var p = plan(cluster())
        p.services[3].healthCheckNodePort = 32111
        let second = NftBackend.build([p], fingerprintSalt: 1)
        let id = second.tables[0].id
        XCTAssertEqual(second.tables, first.tables)
        XCTAssertNotEqual(second.fingerprints[id], first.fingerprints[id])
        let r = try NftTests.applier(k, store).apply(second)
        XCTAssertFalse(r.committed)
        XCTAssertEqual(store.state?.tables[id]??.fingerprint, second.fingerprints[id], "saved without a commit")
        XCTAssertEqual(try NftTests.applier(k, store).apply(second).read, .savedState(chains: 0, sets: 0))
    }

    /// One applier saving again and again into a state file: the elements it stored last time
    /// are found where they were stored (not appended again, not named at stale places).
    func testALongLivedApplierKeepsItsStoredElements() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kr-longlived-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let k = FakeNftKernel()
        let file = NftStateFile(directory: dir)
        let a = NftTests.applier(k, file)
        a.reuseCommittedState = false
        let first = NftBackend.build([plan(cluster())], fingerprintSalt: 1)
        let second = NftBackend.build([plan(cluster(changingEndpointOf: 7))], fingerprintSalt: 1)
        func packBytes() throws -> Int {
            try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".pack") }
                .reduce(0) { $0 + ((try FileManager.default.attributesOfItem(atPath: dir + "/" + $1)[.size] as? Int) ?? 0) }
        }
        try a.apply(first)
        try a.apply(second)
        let after = try packBytes()
        for _ in 0..<3 { try a.apply(first); try a.apply(second) }
        // Each change appends the changed sets only (an endpoint map and a hairpin set, here a
        // third of everything); re-appending every set would grow the packs by 6× as much.
        XCTAssertLessThan(try packBytes() - after, 3 * after)
        var s = try XCTUnwrap(file.load())
        let id = second.tables[0].id
        XCTAssertTrue(file.loadTable(id, into: &s))
        for name in s.elements[id]!.keys {
            XCTAssertTrue(file.loadElements(id, name, into: &s), name)
            XCTAssertEqual(NftElementCodec.decode(s.elements[id]![name]!.bytes), second.tables[0].sets.first { $0.name == name }!.elements, name)
        }
        assertSame(k.dump(), second)
    }

    /// A retry (concurrent change) after the saved state was used must not save the skipped
    /// tables' digests as loaded from the index (without their content): the next change of
    /// such a table is then planned from its true digests.
    func testARetryAfterSkippingTablesSavesTheirRealDigests() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kr-retry-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let k = FakeNftKernel()
        func applier() -> NftApplier { NftTests.applier(k, NftStateFile(directory: dir)) }
        let first = NftBackend.build([plan(cluster())], shards: 4, fingerprintSalt: 1)
        try applier().apply(first)
        let second = NftBackend.build([plan(cluster(changingEndpointOf: 7))], shards: 4, fingerprintSalt: 1)
        k.concurrentChangesBeforeCommit = 1
        let r = try applier().apply(second)
        XCTAssertEqual(r.attempts, 2)
        XCTAssertEqual(r.read, .kernel, "the retry reads the kernel")
        assertSame(k.dump(), second)
        // Now change services in every shard: each table is planned from the state the retry saved.
        var c = cluster(changingEndpointOf: 7)
        for i in 0..<c.slices.count { c.slices[i].endpoints[1] = Endpoint(address: IPAddress(v4: 0x0af5_0000 + UInt32(i))) }
        let third = NftBackend.build([plan(c)], shards: 4, fingerprintSalt: 1)
        let r3 = try applier().apply(third)
        XCTAssertTrue(r3.read != .kernel, "the saved state is used")
        assertSame(k.dump(), third)
        XCTAssertTrue(try NftApplier(kernel: k, kernelVersion: NftKernelVersion(6, 18)).plan(third).isEmpty, "a full read agrees")
    }

    /// Two service ports of different shards claiming the same IP and port: the first by name
    /// wins; when it goes, the other's shard changes and so must its fingerprint.
    func testALostDispatchKeyIsPartOfTheLosingShardsFingerprint() throws {
        var base = plan(cluster())
        let shardOf = { (p: Plan, i: Int) in NftBackend.shard(ofSuffix: NftBackend.suffix(p.services[i]), 4) }
        // Two TCP service ports in different shards.
        let tcp = base.services.indices.filter { base.services[$0].proto == .tcp }
        let (a, b) = try XCTUnwrap(tcp.lazy.flatMap { i in tcp.lazy.filter { j in j > i && shardOf(base, i) != shardOf(base, j) }.map { (i, $0) } }.first)
        base.services[b].clusterIP = base.services[a].clusterIP
        var without = base
        without.services.remove(at: a)
        let before = NftBackend.build([base], shards: 4, fingerprintSalt: 1)
        let after = NftBackend.build([without], shards: 4, fingerprintSalt: 1)
        let loser = NftTableID(.ip, NftBackend.shardName("kuberules", shardOf(base, b)))
        XCTAssertNotEqual(before.table(.ip, loser.name), after.table(.ip, loser.name), "the loser's key now dispatches")
        XCTAssertNotEqual(before.fingerprints[loser], after.fingerprints[loser])
    }

    /// With shards, an external chain without local endpoints drops (one table: the filter hook
    /// does), so another shard's node-port dispatch cannot take the packet.
    func testExternalChainWithoutLocalEndpointsDropsWhenSharded() {
        var p = plan(cluster())
        p.services[0].externalPolicyLocal = true
        p.services[0].localEndpoints = []
        let ext = "external-" + NftBackend.suffix(p.services[0])
        let sharded = NftBackend.build([p], shards: 4).tables.flatMap(\.chains).first { $0.name == ext }
        XCTAssertEqual(sharded?.rules.last, NftRule(.drop, comment: "no local endpoints"))
        let single = NftBackend.build([p]).tables[0].chains.first { $0.name == ext }
        XCTAssertNotEqual(single?.rules.last?.comment, "no local endpoints", "the one-table layout is unchanged")
    }
}
