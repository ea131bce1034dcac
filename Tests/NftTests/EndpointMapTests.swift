import XCTest
import KubeModel
import KubePlan
import NftModel
@testable import NftBackend
@testable import NftApply

/// Endpoint maps: every policy chain's DNAT rule names N consecutive slots of its bucket's map,
/// the slots hold exactly its endpoints, and slots stay put when other services come and go.
final class EndpointMapTests: XCTestCase {
    /// `count` service ports with 1 + i % 7 endpoints each; eTP=Local (a second, local chain)
    /// every 5th; `skip` leaves one service out.
    func plan(_ count: Int, endpointsOf changed: Int? = nil, extra: Int = 0, skip: Int? = nil) -> Plan {
        var c = Cluster()
        for i in 0..<count where i != skip {
            var svc = Service(ref: ObjectRef(kind: "Service", namespace: "ns", name: "svc-\(i)", file: "f"))
            svc.type = i % 5 == 0 ? .nodePort : .clusterIP
            if i % 5 == 0 { svc.externalTrafficPolicy = .local }
            svc.clusterIPs = [IPAddress(v4: 0x0a60_0000 + UInt32(i))]
            svc.ports = [ServicePort(name: "p", proto: i % 3 == 0 ? .udp : .tcp, port: 80, nodePort: i % 5 == 0 ? 30000 + i : 0)]
            c.services.append(svc)
            var s = EndpointSlice(ref: ObjectRef(kind: "EndpointSlice", namespace: "ns", name: "svc-\(i)-1", file: "f"),
                                  serviceName: svc.name, family: .ipv4)
            s.ports = [EndpointPort(name: "p", port: 8080, proto: svc.ports[0].proto)]
            let n = 1 + i % 7 + (changed == i ? extra : 0)
            s.endpoints = (0..<n).map { j in
                var e = Endpoint(address: IPAddress(v4: 0x0af4_0000 + UInt32(i * 16 + j)))
                e.nodeName = j % 2 == 0 ? "node-a" : "node-b"
                return e
            }
            c.slices.append(s)
        }
        return Planner.plan(cluster: c, node: NodeConfig(nodeName: "node-a", nodeIPs: [IPAddress("192.168.1.10")!]), family: .ipv4)
    }

    /// Every endpoint-map DNAT rule of a table: (chain, map, slots).
    func ranges(_ t: NftTable) -> [(chain: String, map: String, slots: Range<UInt32>)] {
        t.chains.flatMap { c in
            c.rules.compactMap { r -> (String, String, Range<UInt32>)? in
                var slots: Range<UInt32>?, map: String?
                for e in r.exprs {
                    if case .numgen(_, let m, _, let o) = e { slots = o..<(o + m) }
                    if let s = e.referencedSet, s.hasPrefix("endpoints-") { map = s }
                }
                guard let slots, let map else { return nil }
                return (c.name, map, slots)
            }
        }
    }

    func testSlotsAreDisjointAndHoldTheChainsEndpoints() throws {
        for shards in [1, 4] {
            let p = plan(400)
            let tables = NftBackend.build([p], shards: shards).tables
            var chains = 0
            for t in tables {
                var used = [String: Set<UInt32>]()
                for (chain, map, slots) in ranges(t) {
                    chains += 1
                    let set = try XCTUnwrap(t.sets.first { $0.name == map }, map)
                    for slot in slots {
                        XCTAssertTrue(used[map, default: []].insert(slot).inserted, "\(chain): slot \(slot) of \(map) taken twice")
                    }
                    // The slots hold exactly the endpoints the plan gives this chain, in order.
                    let svc = try XCTUnwrap(p.services.first { chain.hasSuffix(NftBackend.suffix($0)) }, chain)
                    let eps = chain.hasPrefix("local-") ? svc.localEndpoints : svc.clusterEndpoints
                    let held = slots.map { slot in set.elements.first { NftBackend.slotOf($0) == slot } }
                    XCTAssertEqual(held.map { $0?.data }, eps.map { NftElementData.values([NftBackend.value($0.ip), .port(UInt16($0.port))]) }, chain)
                }
                // No element without a rule.
                for s in t.sets where s.name.hasPrefix("endpoints-") {
                    XCTAssertEqual(Set(s.elements.map(NftBackend.slotOf)), used[s.name], s.name)
                }
                XCTAssertNoThrow(try NftDiff.validate(t))
            }
            // Every service port has a cluster chain; every 5th also a local one.
            XCTAssertEqual(chains, 400 + 80, "shards \(shards)")
            let maps = Set(tables.flatMap { $0.sets.map(\.name) }.filter { $0.hasPrefix("endpoints-") })
            XCTAssertGreaterThan(maps.count, shards == 1 ? 150 : 8, "400 service ports spread over the buckets")
        }
    }

    func testSlotsStayWhenOtherServicesComeAndGo() {
        func slots(_ p: Plan) -> [String: Range<UInt32>] {
            Dictionary(uniqueKeysWithValues: NftBackend.build([p]).tables.flatMap(ranges).map { ($0.chain, $0.slots) })
        }
        let base = slots(plan(400))
        // A service removed: every other chain keeps its slots, unless it followed the removed
        // one's range in its bucket (never here: the ranges are far apart).
        let removed = slots(plan(400, skip: 17))
        XCTAssertEqual(removed.count, base.count - 1)
        for (chain, r) in removed { XCTAssertEqual(base[chain], r, chain) }
        // One service grows from 4 to 12 endpoints: only its own range changes.
        let grown = slots(plan(400, endpointsOf: 3, extra: 8))
        let moved = base.keys.filter { base[$0] != grown[$0] }
        XCTAssertEqual(moved.map { $0.contains("ns/svc-3/") }, [true], "\(moved)")
        XCTAssertEqual(grown[moved[0]]?.count, 12)
    }

    func testOverlappingRangesAreDealtInHashThenNameOrder() {
        func r(_ scope: Int, _ hash: UInt64, _ name: String, _ count: Int) -> NftBackend.SlotRequest {
            NftBackend.SlotRequest(scope: scope, hash: hash, name: name, count: count, service: 0, local: false)
        }
        let requests = [r(0, 100, "b", 5), r(0, 100, "a", 3), r(0, 102, "c", 2), r(0, 200, "d", 1), r(1, 100, "e", 4), r(0, 50, "f", 50)]
        // Scope 0 in order: f 50..<100, a 100..<103, b 103..<108, c pushed to 108..<110, d 200;
        // scope 1 deals its own: e 100.
        XCTAssertEqual(NftBackend.deal(requests), [103, 100, 108, 200, 100, 50])
        XCTAssertEqual(NftBackend.slotHash("service-AAAAAAAA-x"), NftBackend.slotHash("service-AAAAAAAA-x"), "stable")
        XCTAssertLessThan(NftBackend.slotHash("service-AAAAAAAA-x"), 1 << 24)
    }

    func testLargeSetsAreSizedAndAKeptSizeStandsWhileItHasRoom() throws {
        func set(_ n: Int, size: UInt32? = nil, flags: NftSetFlags = []) -> NftSet {
            var s = NftSet.set("s", .types([.ipv4Addr]), flags: flags, elements: (0..<n).map { .element(NftBackend.value(IPAddress(v4: 0x0a00_0000 + UInt32($0)))) })
            s.size = size
            return s
        }
        XCTAssertNil(NftBackend.sizeHint(set(4095)))
        XCTAssertEqual(NftBackend.sizeHint(set(4096)), 8192)
        XCTAssertEqual(NftBackend.sizeHint(set(4097)), 16384)
        XCTAssertEqual(NftBackend.sizeHint(set(100_000)), 262_144)
        XCTAssertNil(NftBackend.sizeHint(set(5000, flags: .interval)), "interval sets keep their backend")
        XCTAssertEqual(NftBackend.sizeHint(set(5000, size: 65535, flags: [.dynamic, .timeout])), 65535, "dynamic sets keep theirs")
        // A kernel set of 32768 stands for a wanted 16384 or 8192 (room, ≤ 4×); one of 65536 not
        // for 8192 (> 4×); one of 16384 not for 20,000 elements (no room).
        XCTAssertTrue(set(0, size: 32768).canStand(for: set(5000, size: 16384)))
        XCTAssertTrue(set(0, size: 32768).canStand(for: set(3000, size: 8192)), "4× exactly")
        XCTAssertFalse(set(0, size: 65536).canStand(for: set(3000, size: 8192)))
        XCTAssertFalse(set(0, size: 16384).canStand(for: set(20000, size: 65536)))
        XCTAssertFalse(set(0, size: 16384).canStand(for: set(5000, size: 16384)), "equal sizes: sameDefinition decides")
        var other = set(5000, size: 16384)
        other.comment = "changed"
        XCTAssertFalse(set(0, size: 32768).canStand(for: other), "only the size may differ")
        // More elements than the size never reaches the kernel.
        var t = NftTable(family: .ip, name: "kuberules")
        t.add(set(5000, size: 4096))
        XCTAssertThrowsError(try NftDiff.validate(t))
    }
}


/// The hairpin set, split by the address's last byte past 8,192 endpoint addresses.
final class HairpinSplitTests: XCTestCase {
    func testOneSetUpTo8192AddressesThenPowersOfTwo() {
        XCTAssertEqual(NftBackend.hairpinSetCount(0), 1)
        XCTAssertEqual(NftBackend.hairpinSetCount(8192), 1)
        XCTAssertEqual(NftBackend.hairpinSetCount(8193), 4)
        XCTAssertEqual(NftBackend.hairpinSetCount(16384), 4)
        XCTAssertEqual(NftBackend.hairpinSetCount(100_000), 32)
        XCTAssertEqual(NftBackend.hairpinSetCount(10_000_000), 256)
    }

    func testEveryAddressIsInTheSetOfItsLastByte() throws {
        for family in [NftFamily.ip, .ip6] {
            let ips: [IPAddress] = (0..<9000).map { (n: Int) -> IPAddress in
                let low = UInt64(n / 250) << 8 | UInt64(n % 250 + 1)
                return family == .ip ? IPAddress(v4: 0x0afa_0000 | UInt32(low)) : IPAddress(v6: 0xfd00_0000_0000_0000, low)
            }
            let h = NftBackend.hairpinParts(NftBackend.sortedUnique(ips), family: family, fingerprintBase: PlanHasher())
            XCTAssertEqual(h.sets.map { $0.name }, ["hairpin-00", "hairpin-01", "hairpin-02", "hairpin-03", "hairpin-sets"])
            XCTAssertEqual(h.chains.map { $0.name }, ["hairpin-00", "hairpin-01", "hairpin-02", "hairpin-03"])
            XCTAssertEqual(Set(h.prints.keys), ["hairpin-00", "hairpin-01", "hairpin-02", "hairpin-03"])
            var seen = 0
            for (k, s) in h.sets.dropLast().enumerated() {
                for e in s.elements {
                    let v = e.key.start[0].bytes
                    XCTAssertEqual(Int(v[v.count - 1]) & 3, k, "\(family) \(s.name)")
                    XCTAssertEqual(e.key.start[0], e.key.start[1])
                    seen += 1
                }
                XCTAssertEqual(s.elements, s.elements.sorted { $0.key.start[0].bytes.lexicographicallyPrecedes($1.key.start[0].bytes) })
            }
            XCTAssertEqual(seen, 9000)
            let sets = h.sets
            let masked = family == .ip ? "ip daddr & 0.0.0.3" : "ip6 daddr & ::3"
            XCTAssertEqual(try h.rule.renderText(family: family, sets: sets), "ct status dnat \(masked) vmap @hairpin-sets comment \"hairpin\"")
            let saddr = family == .ip ? "ip saddr . ip daddr" : "ip6 saddr . ip6 daddr"
            XCTAssertEqual(try h.chains[2].rules[0].renderText(family: family, sets: sets),
                           "\(saddr) @hairpin-02 jump mark-for-masquerade comment \"hairpin\"")
            XCTAssertEqual(h.sets.last!.elements.count, 4)
        }
        // Up to 8,192: the one set of before, and its rule.
        let one = NftBackend.hairpinParts([IPAddress(v4: 0x0a00_0001)], family: .ip, fingerprintBase: nil)
        XCTAssertEqual(one.sets.map(\.name), ["hairpin"])
        XCTAssertTrue(one.chains.isEmpty && one.prints.isEmpty)
        XCTAssertEqual(try one.rule.renderText(family: .ip, sets: one.sets),
                       "ct status dnat ip saddr . ip daddr @hairpin jump mark-for-masquerade comment \"hairpin\"")
    }
}
