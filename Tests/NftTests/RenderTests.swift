import Foundation
import XCTest
import NftModel
@testable import NftBackend

final class RenderTests: XCTestCase {
    func testExampleRendersWithoutUnrenderableRules() throws {
        for f in [NftFamily.ip, .ip6] {
            let text = try NftRuleset.example(family: f).renderChecked()
            XCTAssertFalse(text.contains("# kuberules"))
            if ProcessInfo.processInfo.environment["PRINT_RENDER"] != nil { print(text) }
        }
    }
}

final class RenderTextTests: XCTestCase {
    /// A rule without nft syntax becomes one comment line in `render()` (nothing of it is left
    /// on the rule's line), and an error in `renderChecked()`; the rules around it are intact.
    func testUnrenderableRuleIsReplacedByOneCommentLine() throws {
        var t = NftTable(family: .ip, name: "t")
        t.add(NftChain(name: "c", rules: [
            NftRule(.l4protoIs(.tcp), .verdict(.accept)),
            // Text is written before the failure: the line must be rolled back to one comment.
            NftRule([.meta(key: .l4proto, dreg: .r1), .cmp(op: .eq, sreg: .r1, data: [6]), .counter, .unknown("mystery")],
                    comment: "lost"),
            NftRule(.verdict(.goto("needs \"quotes\"")), comment: "a \"quoted\" comment"),
        ]))
        let rs = NftRuleset(tables: [t])
        let lines = rs.render().split(separator: "\n").map(String.init)
        let c = try XCTUnwrap(lines.lastIndex(of: "\tchain c {"), rs.render())
        XCTAssertEqual(lines[c + 1], "\t\tmeta l4proto tcp accept")
        XCTAssertTrue(lines[c + 2].hasPrefix("\t\t# kuberules: "), lines[c + 2])
        XCTAssertTrue(lines[c + 2].contains("mystery"), lines[c + 2])
        XCTAssertFalse(lines[c + 2].contains("l4proto"), lines[c + 2])
        XCTAssertFalse(lines[c + 2].contains("counter"), lines[c + 2])
        XCTAssertEqual(lines[c + 3], "\t\t" + #"goto "needs \"quotes\"" comment "a \"quoted\" comment""#)
        XCTAssertEqual(lines[c + 4], "\t}")
        XCTAssertThrowsError(try rs.renderChecked())
    }

    func testElementsPrintInKeyOrderWhateverOrderTheyWereAdded() {
        // 6,000 keys (18 chunks of 1,000): in order, reversed, and in order but for one pair across a 1,000 boundary.
        func element(_ n: Int) -> NftElement { .element(NftValue(type: .ipv4Addr, bytes: [10, 0, UInt8(n >> 8), UInt8(n & 255)])) }
        var swapped = Array(0..<6000)
        swapped.swapAt(999, 1000)
        var t = NftTable(family: .ip, name: "t")
        for (name, order) in [("a", Array(0..<6000)), ("b", Array((0..<6000).reversed())), ("c", swapped)] {
            t.add(NftSet.set(name, .type(.ipv4Addr), elements: order.map(element)))
        }
        let text = NftRuleset(tables: [t]).render()
        for name in ["a", "b", "c"] {
            let lines = text.split(separator: "\n").map(String.init)
            var keys: [String] = [], inSet = false
            for l in lines {
                if l.hasPrefix("add element ip t ") { inSet = l.hasPrefix("add element ip t \(name) "); continue }
                if l == "}" { inSet = false; continue }
                if inSet { keys.append(l.trimmingCharacters(in: CharacterSet(charactersIn: "\t,"))) }
            }
            XCTAssertEqual(keys, (0..<6000).map { "10.0.\($0 >> 8).\($0 & 255)" }, name)
        }
    }

    func testElementText() {
        let set = NftSet.vmap("m", .types([.ipv4Addr, .inetProto, .inetService]), elements: [])
        let e = NftElement.verdict([NftValue(type: .ipv4Addr, bytes: [10, 96, 0, 1]), .proto(.tcp), .port(443)],
                                   .goto("svc"), comment: "default/kubernetes:https")
        XCTAssertEqual(e.text(in: set), #"10.96.0.1 . tcp . 443 comment "default/kubernetes:https" : goto svc"#)
    }
}

final class ExprDumpTests: XCTestCase {
    /// With DUMP_EXPRS set, prints each rule's expressions in `nft --debug=netlink` form.
    func testDumpExprs() {
        guard ProcessInfo.processInfo.environment["DUMP_EXPRS"] != nil else { return }
        for f in [NftFamily.ip, .ip6] {
            for t in NftRuleset.example(family: f).sortedTables {
                for c in t.sortedChains {
                    for r in c.rules {
                        print("\(t.family.rawValue) \(t.name) \(c.name)")
                        for e in r.exprs { print("  " + e.debugText) }
                        print("")
                    }
                }
            }
        }
    }
}

final class BackendElementTests: XCTestCase {
    func v4(_ a: UInt8, _ b: UInt8) -> NftValue { NftValue(type: .ipv4Addr, bytes: [10, 96, a, b]) }

    /// Set elements are deduplicated (the first of a key wins) and sorted by key; the flat-key
    /// fast path and the general path must agree.
    func testUniqueKeepsTheFirstOfEachKeyInKeyOrder() {
        let els: [NftElement] = [
            .verdict([v4(1, 2), .proto(.tcp), .port(80)], .goto("b"), comment: "second"),
            .verdict([v4(0, 10), .proto(.tcp), .port(443)], .goto("a"), comment: "first"),
            .verdict([v4(1, 2), .proto(.tcp), .port(80)], .goto("c"), comment: "duplicate"),
            .verdict([v4(0, 10), .proto(.tcp), .port(53)], .goto("d"), comment: "lower port"),
        ]
        let general = { (e: [NftElement]) -> [NftElement] in
            var seen = Set<NftElementKey>()
            return e.filter { seen.insert($0.key).inserted }.sorted { $0.key < $1.key }
        }
        XCTAssertNotNil(NftBackend.flatKeys(els))
        XCTAssertEqual(NftBackend.unique(els).compactMap(\.comment), ["lower port", "first", "second"])
        XCTAssertEqual(NftBackend.unique(els), general(els))
        // Intervals (start and end on every element) take the fast path too.
        let intervals: [NftElement] = [
            .interval([.value(v4(0, 1)), .prefix("10.0.0.0/8")]),
            .interval([.value(v4(0, 1)), .prefix("0.0.0.0/1")]),
            .interval([.value(v4(0, 0)), .prefix("192.168.0.0/16")]),
        ]
        XCTAssertNotNil(NftBackend.flatKeys(intervals))
        XCTAssertEqual(NftBackend.unique(intervals), general(intervals))
        // Mixed shapes fall back to the general path.
        let mixed = [intervals[0], .element(v4(0, 1), v4(0, 2))]
        XCTAssertNil(NftBackend.flatKeys(mixed))
        XCTAssertEqual(NftBackend.unique(mixed), general(mixed))
    }
}

final class AddressTextTests: XCTestCase {
    func v6(_ groups: [UInt16]) -> [UInt8] { groups.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xff)] } }

    /// RFC 5952, as inet_ntop prints: the longest run of two or more zero groups (the first of
    /// equal runs) becomes "::", lowercase hex without leading zeros, IPv4-mapped as a quad.
    func testIPv6Text() {
        let cases: [([UInt16], String)] = [
            ([0, 0, 0, 0, 0, 0, 0, 0], "::"),
            ([0, 0, 0, 0, 0, 0, 0, 1], "::1"),
            ([0xfe80, 0, 0, 0, 0, 0, 0, 1], "fe80::1"),
            ([0x2001, 0xdb8, 0, 0, 1, 0, 0, 1], "2001:db8::1:0:0:1"),
            ([1, 0, 0, 2, 0, 0, 0, 3], "1:0:0:2::3"),
            ([1, 0, 2, 3, 4, 5, 6, 7], "1:0:2:3:4:5:6:7"),
            ([0, 0, 1, 0, 0, 0, 0, 0], "0:0:1::"),
            ([0x1, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0xabcd], "1:2:3:4:5:6:7:abcd"),
            ([0, 0, 0, 0, 0, 0xffff, 0x0102, 0x0304], "::ffff:1.2.3.4"),
            ([0xfd00, 0x10, 0x96, 0, 0, 0, 0, 0xa], "fd00:10:96::a"),
        ]
        for (groups, text) in cases {
            XCTAssertEqual(NftAddress.formatIPv6(v6(groups)), text)
            var t = NftTextBytes()
            t.value(NftBytes(v6(groups)), type: .ipv6Addr)
            XCTAssertEqual(t.string, text)
        }
        XCTAssertEqual(NftAddress.formatIPv4([10, 96, 0, 1]), "10.96.0.1")
        XCTAssertEqual(NftAddress.formatIPv4([255, 0, 100, 9]), "255.0.100.9")
    }
}
