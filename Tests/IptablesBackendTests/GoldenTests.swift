import Foundation
import XCTest

/// Every fixture under Fixtures/ renders exactly its golden file.
/// Record mode: `KUBERULES_RECORD=1 swift test --filter GoldenTests` (or `make record`) rewrites them.
final class GoldenTests: XCTestCase {
    let record = ProcessInfo.processInfo.environment["KUBERULES_RECORD"] == "1"

    func testEveryFixtureMatchesItsGolden() throws {
        let dirs = TestSupport.fixtureDirs
        XCTAssertGreaterThan(dirs.count, 10, "fixture library not found at \(TestSupport.fixtures.path)")
        for dir in dirs {
            for (backend, file) in [("iptables", "expected.iptables"), ("nftables", "expected.nft"), ("ipvs", "expected.ipvs")] {
                let golden = dir.appendingPathComponent(file)
                var args = ["check", "--backend", backend, "--golden", golden.path]
                if record { args.append("--update") }
                let r = try TestSupport.kuberules(args + TestSupport.fixtureArgs(dir))
                XCTAssertEqual(r.status, 0, "\(dir.lastPathComponent)/\(file): golden differs:\n\(r.stdout)\(r.stderr)")
            }
        }
    }

    /// The worked example from the reference must match byte for byte (also checked by the loop above,
    /// but this one compares against the reference copy in ../shared when it is there).
    func testReferenceWorkedExample() throws {
        let ref = TestSupport.packageRoot.deletingLastPathComponent().appendingPathComponent("shared/reference/examples/only-local-nodeports")
        let dir = FileManager.default.fileExists(atPath: ref.path) ? ref : TestSupport.fixtures.appendingPathComponent("only-local-nodeports")
        let r = try TestSupport.kuberules(["render", "--config", dir.appendingPathComponent("proxy-config.yaml").path,
                                           dir.appendingPathComponent("cluster.yaml").path])
        XCTAssertEqual(r.status, 0, r.stderr)
        let expected = try String(contentsOf: dir.appendingPathComponent("expected.iptables"), encoding: .utf8)
        XCTAssertEqual(r.stdout, expected)
    }

    /// The rendered rules (with the jumps from the built-in chains) load with
    /// `iptables-restore --noflush` into a fresh network namespace, for iptables-nft and -legacy.
    func testRenderedRulesLoadInAFreshNamespace() throws {
        guard TestSupport.isRoot else { throw XCTSkip("needs root to create a network namespace (CI runs as root)") }
        guard let unshare = TestSupport.which("unshare") else { throw XCTSkip("unshare not installed") }
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("kr-restore-\(getpid())")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        var variants = [(String, String)]()
        if TestSupport.which("iptables-nft-restore") != nil { variants.append(("nft", "")) }
        if TestSupport.which("iptables-legacy-restore") != nil { variants.append(("legacy", "")) }
        guard !variants.isEmpty else { throw XCTSkip("iptables is not installed (apt-get install iptables)") }
        for dir in TestSupport.fixtureDirs {
            let r = try TestSupport.kuberules(["render", "--with-jumps"] + TestSupport.fixtureArgs(dir))
            XCTAssertEqual(r.status, 0, r.stderr)
            let file = tmp.appendingPathComponent(dir.lastPathComponent + ".rules")
            try Data(r.stdout.utf8).write(to: file)
            let v6 = TestSupport.fixtureArgs(dir).contains("ipv6")
            let expectedRules = r.stdout.split(separator: "\n").filter { $0.hasPrefix("-A ") || $0.hasPrefix("-I ") }.count
            for (variant, _) in variants {
                let tool = "ip\(v6 ? "6" : "")tables-\(variant)"
                let script = "\(tool)-restore --noflush < \(file.path) && \(tool)-save | grep -c '^-A'"
                let res = try TestSupport.run(unshare, ["-n", "sh", "-c", script],
                                              env: ["XTABLES_LOCKFILE": tmp.appendingPathComponent("xtables.lock").path])
                XCTAssertEqual(res.status, 0, "\(dir.lastPathComponent) (\(tool)): \(res.stderr)")
                XCTAssertEqual(Int(res.stdout.trimmingCharacters(in: .whitespacesAndNewlines)), expectedRules,
                               "\(dir.lastPathComponent) (\(tool)): rule count after load")
            }
        }
    }
}
