import XCTest
import NftModel
@testable import NftApply

/// `NftDiff.validate` checks chains and sets on every core; it must report the same problem a
/// walk in table order finds first.
final class ValidateTests: XCTestCase {
    func table(chains: Int = 3000, sets: Int = 3, elements: Int = 10_000) -> NftTable {
        var t = NftTable(family: .ip, name: "t")
        for s in 0..<sets {
            t.add(NftSet.set("s\(s)", .type(.ipv4Addr), elements: (0..<elements).map {
                .element(NftValue(type: .ipv4Addr, bytes: [10, UInt8(s), UInt8($0 >> 8), UInt8($0 & 255)]))
            }))
        }
        for c in 0..<chains {
            t.add(NftChain(name: "c\(c)", rules: [
                NftRule(.lookup([.ipDaddr], set: "s\(c % sets)")),
                NftRule(.jump("c\((c + 1) % chains)")),
            ]))
        }
        return t
    }

    func message(_ t: NftTable) -> String? {
        do { try NftDiff.validate(t); return nil } catch { return "\(error)" }
    }

    func testAValidTableIsValid() {
        XCTAssertNil(message(table()))
    }

    func testTheFirstProblemInTableOrderIsReported() {
        var t = table()
        t.chains[2500].rules[1] = NftRule(.jump("nowhere-late"))
        t.chains[1700].rules[0] = NftRule(.lookup([.ipDaddr], set: "no-such-set"))
        t.chains[2900].rules[1] = NftRule(.jump("nowhere-later"))
        XCTAssertEqual(message(t)?.contains("chain c1700 rule #0: missing set @no-such-set"), true, message(t) ?? "valid")
        t.chains[1700].rules[0] = NftRule(.accept)
        XCTAssertEqual(message(t)?.contains("chain c2500 rule #1: jump/goto to missing chain nowhere-late"), true, message(t) ?? "valid")
    }

    func testChainsAreCheckedBeforeSetsAndElementsInOrder() {
        var t = table()
        // A bad element deep in the second set, another early in it, and a bad chain.
        t.sets[1].elements[9000] = .verdict([NftValue(type: .ipv4Addr, bytes: [1, 2, 3, 4])], .accept)
        t.sets[1].elements[5000] = .element(NftValue(type: .ipv4Addr, bytes: [1, 2, 3, 5]), NftValue(type: .ipv4Addr, bytes: [1, 2, 3, 5]))
        t.chains[2999].rules[1] = NftRule(.goto("gone"))
        XCTAssertEqual(message(t)?.contains("chain c2999 rule #1: jump/goto to missing chain gone"), true, message(t) ?? "valid")
        t.chains[2999].rules[1] = NftRule(.accept)
        XCTAssertEqual(message(t)?.contains("set s1: element key has 2 fields, the set 1"), true, message(t) ?? "valid")
        t.sets[1].elements[5000] = t.sets[1].elements[4999]
        XCTAssertEqual(message(t)?.contains("set s1: element data does not match the set kind"), true, message(t) ?? "valid")
        t.sets[1].size = 100
        XCTAssertEqual(message(t)?.contains("set s1: 10000 elements, more than its size 100"), true, message(t) ?? "valid")
        t.sets[0].comment = String(repeating: "y", count: 200)
        XCTAssertEqual(message(t)?.contains("set s0: comment longer than 128 bytes"), true, message(t) ?? "valid")
    }

    /// Chains and sets known to be what the kernel accepted last are not checked again; the
    /// others still are, against every name.
    func testKnownChainsAndSetsAreNotCheckedAgain() {
        var t = table(chains: 100, elements: 10)
        t.chains[40].rules[1] = NftRule(.jump("nowhere"))
        t.sets[2].elements[3] = .verdict([NftValue(type: .ipv4Addr, bytes: [1, 2, 3, 4])], .accept)
        var known = [Bool](repeating: true, count: 100)
        XCTAssertNoThrow(try NftDiff.validate(t, knownChains: known, knownSets: ["s0", "s1", "s2"]))
        XCTAssertThrowsError(try NftDiff.validate(t, knownChains: known, knownSets: ["s0", "s1"]))
        known[40] = false
        XCTAssertThrowsError(try NftDiff.validate(t, knownChains: known, knownSets: ["s0", "s1", "s2"]))
        // A changed chain's targets are looked up among all chains, known or not.
        t.chains[40].rules[1] = NftRule(.jump("c7"))
        XCTAssertNoThrow(try NftDiff.validate(t, knownChains: known, knownSets: ["s2"]))
        // A mask of another length is no mask.
        XCTAssertThrowsError(try NftDiff.validate(t, knownChains: [true], knownSets: ["s0", "s1"]))
    }

    func testElementTimeoutsNeedATimeoutSet() {
        var t = table(chains: 1, sets: 1, elements: 10)
        t.sets[0].elements[4].timeoutMs = 5000
        XCTAssertEqual(message(t)?.contains("set s0: element timeout in a set without flags timeout"), true, message(t) ?? "valid")
        t.sets[0].flags.insert(.timeout)
        XCTAssertNil(message(t))
    }

    func testDuplicatesAndLongComments() {
        var t = table(chains: 10, elements: 10)
        t.chains.append(NftChain(name: "c3"))
        XCTAssertEqual(message(t)?.contains("duplicate chain c3"), true)
        t = table(chains: 10, elements: 10)
        t.chains[4].rules[0].comment = String(repeating: "x", count: 129)
        XCTAssertEqual(message(t)?.contains("chain c4 rule #0: comment longer than 128 bytes"), true)
    }
}
