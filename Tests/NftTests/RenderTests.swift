import XCTest
import NftModel

final class RenderTests: XCTestCase {
    func testExampleRendersWithoutUnrenderableRules() throws {
        for f in [NftFamily.ip, .ip6] {
            let text = try NftRuleset.example(family: f).renderChecked()
            XCTAssertFalse(text.contains("# kuberules"))
            if ProcessInfo.processInfo.environment["PRINT_RENDER"] != nil { print(text) }
        }
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
