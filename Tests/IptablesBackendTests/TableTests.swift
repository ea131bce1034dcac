import KubeModel
import XCTest
@testable import IptablesBackend
@testable import IptablesApply

/// `IptablesTable` keeps rule text in pieces and files a piece's own chains without a name
/// lookup; whatever the mix of pieces, direct appends and chains declared twice, it must read
/// exactly like the plain model: chains in declaration order, each with its rules in the order
/// they were appended.
final class TableTests: XCTestCase {
    struct Model {
        var chains: [String] = []
        var rules: [String: [String]] = [:]
        mutating func declare(_ c: String) { if rules[c] == nil { chains.append(c); rules[c] = [] } }
        mutating func append(_ c: String, _ args: String) { declare(c); rules[c]!.append(args.isEmpty ? "-A \(c)" : "-A \(c) \(args)") }
    }

    func testPiecesAndDirectAppendsReadLikeThePlainModel() {
        var rng = SplitMix64(seed: 0x6b75_6265)
        // Few names, so that pieces declare chains that exist elsewhere and append to each other's.
        let names = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-SEP-A", "KUBE-SEP-B", "KUBE-SVC-A", "KUBE-SVC-B", "KUBE-X", "KUBE-FW-A"]
        for round in 0..<300 {
            var table = IptablesTable(name: "nat")
            var model = Model()
            var counter = 0
            for _ in 0..<Int.random(in: 1...12, using: &rng) {
                if Bool.random(using: &rng) {
                    // Directly on the table.
                    for _ in 0..<Int.random(in: 0...4, using: &rng) {
                        let c = names.randomElement(using: &rng)!
                        if Int.random(in: 0..<4, using: &rng) == 0 { table.declare(c); model.declare(c) } else {
                            counter += 1
                            let args = counter % 7 == 0 ? "" : "-j R\(counter)"
                            table.append(c, IptablesArgs(args)); model.append(c, args)
                        }
                    }
                } else {
                    // A piece, added whole.
                    var piece = IptablesText()
                    for _ in 0..<Int.random(in: 0...10, using: &rng) {
                        let c = names.randomElement(using: &rng)!
                        if Int.random(in: 0..<3, using: &rng) == 0 { piece.declare(c); model.declare(c) } else {
                            counter += 1
                            piece.append(c, "-j R\(counter)"); model.append(c, "-j R\(counter)")
                        }
                    }
                    table.add(piece)
                }
            }
            XCTAssertEqual(table.chains, model.chains, "round \(round)")
            let canonical = model.chains.filter { $0 == "KUBE-NODEPORTS" } + model.chains.filter { $0 == "KUBE-SERVICES" }
                + model.chains.filter { $0 != "KUBE-NODEPORTS" && $0 != "KUBE-SERVICES" }.sorted()
            XCTAssertEqual(table.canonicalChains, canonical, "round \(round)")
            XCTAssertEqual(table.canonicalRules.map(\.chain), canonical, "round \(round)")
            for (c, lines) in table.canonicalRules { XCTAssertEqual(lines, model.rules[c], "round \(round) \(c)") }
            for c in names {
                XCTAssertEqual(table.contains(c), model.rules[c] != nil)
                XCTAssertEqual(table.ruleCount(c), model.rules[c]?.count)
                XCTAssertEqual(table.chainLines(c), model.rules[c] ?? [])
            }
            XCTAssertEqual(table.totalRules, model.rules.values.reduce(0) { $0 + $1.count })
            var parts = [[UInt8]]()
            table.render(into: &parts)
            var text = "*nat\n"
            for c in canonical { text += ":\(c) - [0:0]\n" }
            for c in canonical { for l in model.rules[c]! { text += l + "\n" } }
            text += "COMMIT\n"
            XCTAssertEqual(String(decoding: parts.flatMap { $0 }, as: UTF8.self), text, "round \(round)")
        }
    }

    func testTextDigestEqualsLineDigest() {
        var t = IptablesTable(name: "nat")
        t.append("KUBE-A", "-j X"); t.append("KUBE-A", "-m comment --comment \"a b\" -j Y")
        let text = t.canonicalTexts[0]
        XCTAssertEqual(text.rules, 2)
        XCTAssertEqual(SyncState.digest(text.text), SyncState.digest(["-A KUBE-A -j X", "-A KUBE-A -m comment --comment \"a b\" -j Y"]))
    }

    func testEqualityIgnoresHowTheTextIsStored() {
        var a = IptablesTable(name: "nat"), b = IptablesTable(name: "nat")
        a.append("KUBE-A", "-j X"); a.append("KUBE-A", "-j Y")
        var piece = IptablesText()
        piece.append("KUBE-A", "-j X"); piece.append("KUBE-A", "-j Y")
        b.add(piece)
        XCTAssertEqual(a, b)
        b.append("KUBE-A", "-j Z")
        XCTAssertNotEqual(a, b)
    }

    func testArgumentsInterpolateWithoutStrings() {
        let ip = IPAddress("10.0.0.1")!, v6 = IPAddress("fd00::1")!
        let args: IptablesArgs = "-d \(ip) --dport \(8080) -s \(v6) \(IptablesArgs("-j X")) \(3)"
        XCTAssertEqual(String(decoding: args.bytes, as: UTF8.self), "-d 10.0.0.1 --dport 8080 -s fd00::1 -j X 3")
        XCTAssertTrue(("" as IptablesArgs).isEmpty)
    }
}

/// A seeded generator, so that a failing round can be replayed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
