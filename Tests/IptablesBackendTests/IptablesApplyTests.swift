import Foundation
import IptablesApply
import IptablesBackend
import KubeModel
import XCTest

/// The partial-sync logic against saved tables, without privileges.
final class IptablesSyncTests: XCTestCase {
    func ruleset(endpoints: Int) -> IptablesRuleset {
        var rs = IptablesRuleset(family: .ipv4)
        rs.nat.append("KUBE-SERVICES", "-d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-AAA")
        for i in 0..<endpoints { rs.nat.append("KUBE-SVC-AAA", "-j KUBE-SEP-\(i)"); rs.nat.append("KUBE-SEP-\(i)", "-j DNAT --to-destination 10.0.0.\(i):80") }
        rs.jumps = [IptablesJump(table: "nat", sourceChain: "PREROUTING", targetChain: "KUBE-SERVICES", comment: "kubernetes service portals", extraArgs: "")]
        return rs
    }

    /// What a kernel holding exactly `rs` (and a foreign chain) saves.
    func saved(_ rs: IptablesRuleset, jump: Bool = true) -> [String: SavedTable] {
        var text = "*nat\n:PREROUTING ACCEPT [0:0]\n:FOREIGN - [0:0]\n"
        for c in rs.nat.chains { text += ":\(c) - [0:0]\n" }
        if jump { text += "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n" }
        text += "-A PREROUTING -s 192.0.2.1/32 -j FOREIGN\n"
        for c in rs.nat.chains { for r in rs.nat.chainLines(c) { text += r + "\n" } }
        text += "COMMIT\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"
        return ["nat": SavedTable.parse(text, table: "nat"), "filter": SavedTable.parse(text, table: "filter")]
    }

    func testParseKeepsOnlyTheTable() {
        let t = SavedTable.parse("# x\n*filter\n:INPUT ACCEPT [1:2]\n-A INPUT -j X\nCOMMIT\n*nat\n:KUBE-A - [0:0]\n-A KUBE-A -j RETURN\nCOMMIT\n", table: "nat")
        XCTAssertEqual(t.chains, ["KUBE-A"])
        XCTAssertEqual(t.rules["KUBE-A"], ["-A KUBE-A -j RETURN"])
    }

    func testOwnership() {
        for c in ["KUBE-SERVICES", "KUBE-SVC-ABC", "KUBE-SEP-X", "KUBE-FW-Y", "KUBE-EXT-Z", "KUBE-SVL-Q", "KUBE-LOAD-BALANCER"] { XCTAssertTrue(Ownership.isOurs(c), c) }
        for c in ["KUBE-KUBELET-CANARY", "DOCKER", "INPUT", "FOREIGN", "KUBE-MARK-DROP"] { XCTAssertFalse(Ownership.isOurs(c), c) }
    }

    func testNoStateIsAFullSync() {
        let rs = ruleset(endpoints: 2)
        let plan = IptablesSync.plan(desired: rs, kernel: saved(rs), state: nil)
        XCTAssertEqual(plan.written, 4)  // KUBE-SERVICES, KUBE-SVC-AAA, two SEPs
        XCTAssertEqual(plan.jumps, 0)    // the jump is already there
        XCTAssertFalse(plan.restoreText.contains("FOREIGN"))
    }

    func testStateMakesTheSecondSyncEmptyAndTheNextOnePartial() {
        let two = ruleset(endpoints: 2)
        let state = IptablesSync.state(desired: two, kernel: saved(two))
        XCTAssertTrue(IptablesSync.plan(desired: two, kernel: saved(two), state: state).isEmpty)

        let three = ruleset(endpoints: 3)
        let plan = IptablesSync.plan(desired: three, kernel: saved(two), state: state)
        XCTAssertEqual(plan.changes.map(\.line), ["+ chain nat KUBE-SEP-2 (1 rules)", "~ chain nat KUBE-SVC-AAA (2 -> 3 rules)"])
        XCTAssertEqual(plan.unchangedChains, 3)
        XCTAssertEqual(plan.restoreText, """
            *nat
            :KUBE-SEP-2 - [0:0]
            :KUBE-SVC-AAA - [0:0]
            -A KUBE-SEP-2 -j DNAT --to-destination 10.0.0.2:80
            -A KUBE-SVC-AAA -j KUBE-SEP-0
            -A KUBE-SVC-AAA -j KUBE-SEP-1
            -A KUBE-SVC-AAA -j KUBE-SEP-2
            COMMIT

            """)

        // Back to one endpoint: the service chain is rewritten, the stale endpoint chain flushed and deleted.
        let one = ruleset(endpoints: 1)
        let back = IptablesSync.plan(desired: one, kernel: saved(two), state: state)
        XCTAssertEqual(back.changes.map(\.line), ["~ chain nat KUBE-SVC-AAA (2 -> 1 rules)", "- chain nat KUBE-SEP-1 (1 rules)"])
        XCTAssertTrue(back.restoreText.contains(":KUBE-SEP-1 - [0:0]\n"))
        XCTAssertTrue(back.restoreText.hasSuffix("-X KUBE-SEP-1\nCOMMIT\n"))
    }

    func testAChainChangedBehindOurBackIsRewritten() {
        let rs = ruleset(endpoints: 1)
        let state = IptablesSync.state(desired: rs, kernel: saved(rs))
        var tampered = saved(rs)
        tampered["nat"]!.rules["KUBE-SERVICES"]!.append("-A KUBE-SERVICES -j ACCEPT")
        let plan = IptablesSync.plan(desired: rs, kernel: tampered, state: state)
        XCTAssertEqual(plan.changes.map(\.line), ["~ chain nat KUBE-SERVICES (2 -> 1 rules)"])
    }

    func testMissingJumpIsInserted() {
        let rs = ruleset(endpoints: 1)
        let state = IptablesSync.state(desired: rs, kernel: saved(rs))
        let plan = IptablesSync.plan(desired: rs, kernel: saved(rs, jump: false), state: state)
        XCTAssertEqual(plan.changes.map(\.line), ["+ jump nat -I PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"])
    }

    func testCanonicalComparisonWithoutState() {
        let rs = ruleset(endpoints: 2)
        let plan = IptablesSync.plan(desired: rs, kernel: saved(rs), state: nil, canonical: saved(rs))
        XCTAssertTrue(plan.isEmpty)
    }

    func testCleanupRemovesOnlyOurs() {
        let plan = IptablesSync.cleanup(kernel: saved(ruleset(endpoints: 1)))
        XCTAssertEqual(plan.restoreText, """
            *nat
            :KUBE-SERVICES - [0:0]
            :KUBE-SVC-AAA - [0:0]
            :KUBE-SEP-0 - [0:0]
            -D PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
            -X KUBE-SERVICES
            -X KUBE-SVC-AAA
            -X KUBE-SEP-0
            COMMIT

            """)
    }
}

/// `kuberules apply/diff/cleanup --backend iptables` against the real kernel, with iptables-nft and
/// iptables-legacy, each run inside a fresh network namespace (never this machine's own).
final class IptablesApplyCLITests: XCTestCase {
    func requireNamespaces() throws -> String {
        guard TestSupport.isRoot else { throw XCTSkip("needs root to create network namespaces (CI runs as root)") }
        guard let unshare = TestSupport.which("unshare"), TestSupport.which("iptables-legacy-restore") != nil,
              TestSupport.which("iptables-nft-restore") != nil else {
            throw XCTSkip("unshare or iptables (nft and legacy) is not installed (apt-get install util-linux iptables)")
        }
        return unshare
    }

    func tmpDir(_ name: String) throws -> URL {
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("kr-ipt-\(name)-\(getpid())")
        try? FileManager.default.removeItem(at: tmp)
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        return tmp
    }

    /// For every fixture and both iptables variants: apply == the rendered text restored into a fresh
    /// namespace; a second apply writes nothing; diff (with and without state) finds nothing;
    /// cleanup leaves the foreign rules byte-identical and nothing of ours.
    func testApplyDiffCleanupForEveryFixture() throws {
        let unshare = try requireNamespaces()
        let bin = TestSupport.binary.path
        let tmp = try tmpDir("all")
        defer { try? FileManager.default.removeItem(at: tmp) }
        for variant in ["nft", "legacy"] {
            for dir in TestSupport.fixtureDirs {
                let fargs = TestSupport.fixtureArgs(dir)
                let v6 = fargs.contains("ipv6")
                let ipt = v6 ? "ip6tables-\(variant)" : "iptables-\(variant)"
                let family = v6 ? "ipv6" : "ipv4"
                let args = (["--backend", "iptables", "--iptables", variant, "--state-dir", tmp.path + "/state"] + fargs)
                    .map { "'\($0)'" }.joined(separator: " ")
                let foreignNet = v6 ? "2001:db8::/64" : "192.0.2.0/24"
                let save = "\(ipt)-save | grep -v '^#'"
                let r = try TestSupport.run(unshare, ["-n", "sh", "-c", """
                    set -e
                    rm -rf \(tmp.path)/state
                    \(ipt) -N FOREIGN && \(ipt) -A INPUT -s \(foreignNet) -j FOREIGN && \(ipt) -t nat -A POSTROUTING -s \(foreignNet) -j MASQUERADE
                    \(save) > \(tmp.path)/before
                    \(bin) apply \(args) > \(tmp.path)/first
                    \(save) > \(tmp.path)/applied
                    \(bin) apply \(args) > \(tmp.path)/second
                    \(bin) diff \(args) > \(tmp.path)/diff
                    rm -rf \(tmp.path)/state
                    \(bin) diff \(args) > \(tmp.path)/diff-canonical
                    \(bin) render --with-jumps \(args) > \(tmp.path)/text
                    \(bin) cleanup --backend iptables --iptables \(variant) --ip-family \(family) --state-dir \(tmp.path)/state > /dev/null
                    \(save) > \(tmp.path)/after
                    """])
                let name = "\(variant) \(dir.lastPathComponent)"
                XCTAssertEqual(r.status, 0, "\(name): \(r.stderr)")
                guard r.status == 0 else { continue }
                let read = { (f: String) in (try? String(contentsOfFile: tmp.path + "/" + f, encoding: .utf8)) ?? "" }
                XCTAssertTrue(read("second").hasPrefix("iptables: 0 chains written, 0 deleted"), "\(name): \(read("second"))")
                XCTAssertTrue(read("second").contains(" 0 jumps"), "\(name): \(read("second"))")
                XCTAssertEqual(read("diff"), "no differences\n", name)
                XCTAssertEqual(read("diff-canonical"), "no differences\n", name)
                XCTAssertEqual(read("after"), read("before"), "\(name): cleanup did not restore the foreign rules exactly")
                // The applied kernel state equals the rendered text restored into an empty namespace (plus the foreign rules).
                let l = try TestSupport.run(unshare, ["-n", "sh", "-c", """
                    set -e
                    \(ipt) -N FOREIGN && \(ipt) -A INPUT -s \(foreignNet) -j FOREIGN && \(ipt) -t nat -A POSTROUTING -s \(foreignNet) -j MASQUERADE
                    \(ipt)-restore --noflush < \(tmp.path)/text
                    \(save)
                    """])
                XCTAssertEqual(l.status, 0, "\(name): \(l.stderr)")
                XCTAssertEqual(Self.sortedChainLines(read("applied")), Self.sortedChainLines(l.stdout), "\(name): apply differs from the rendered text")
            }
        }
    }

    /// iptables-save lists chains in its own order: compare the set of lines per table.
    static func sortedChainLines(_ s: String) -> [String] {
        s.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("#") }.sorted()
    }

    /// An endpoint change rewrites only the service chain and the endpoint chains that changed.
    func testEndpointChangeIsAPartialSync() throws {
        let unshare = try requireNamespaces()
        let bin = TestSupport.binary.path
        let tmp = try tmpDir("partial")
        defer { try? FileManager.default.removeItem(at: tmp) }
        func cluster(_ ips: [String]) -> String {
            """
            apiVersion: v1
            kind: Service
            metadata: {name: web, namespace: shop}
            spec: {clusterIP: 10.96.0.20, ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]}
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: db, namespace: shop}
            spec: {clusterIP: 10.96.0.21, ports: [{name: pg, port: 5432, protocol: TCP}]}
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: db-1, namespace: shop, labels: {kubernetes.io/service-name: db}}
            addressType: IPv4
            ports: [{name: pg, port: 5432, protocol: TCP}]
            endpoints: [{addresses: [10.0.1.9], conditions: {ready: true}}]
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
            addressType: IPv4
            ports: [{name: http, port: 8080, protocol: TCP}]
            endpoints:
            \(ips.map { "- {addresses: [\($0)], conditions: {ready: true}}" }.joined(separator: "\n"))

            """
        }
        try Data(cluster(["10.0.1.1", "10.0.1.2"]).utf8).write(to: tmp.appendingPathComponent("two.yaml"))
        try Data(cluster(["10.0.1.1", "10.0.1.2", "10.0.1.3"]).utf8).write(to: tmp.appendingPathComponent("three.yaml"))
        for variant in ["nft", "legacy"] {
            let args = "--backend iptables --iptables \(variant) --state-dir \(tmp.path)/state-\(variant) --node-name n1"
            let r = try TestSupport.run(unshare, ["-n", "sh", "-c", """
                set -e
                \(bin) apply \(args) \(tmp.path)/two.yaml
                \(bin) apply \(args) \(tmp.path)/three.yaml
                \(bin) diff \(args) \(tmp.path)/two.yaml || echo "diff=$?"
                \(bin) apply \(args) \(tmp.path)/two.yaml
                iptables-\(variant)-save -t nat | grep -c '^:KUBE-SEP-'
                """])
            XCTAssertEqual(r.status, 0, "\(variant): \(r.stderr)")
            let lines = r.stdout.split(separator: "\n").map(String.init)
            XCTAssertEqual(lines.count, 7, "\(variant): \(r.stdout)")
            guard lines.count == 7 else { continue }
            XCTAssertTrue(lines[0].contains("(full sync)"), lines[0])
            XCTAssertTrue(lines[1].hasPrefix("iptables: 2 chains written, 0 deleted,"), lines[1])  // KUBE-SVC + the new KUBE-SEP
            XCTAssertTrue(lines[1].contains("(partial sync)"), lines[1])
            XCTAssertTrue(lines[2].hasPrefix("~ chain nat KUBE-SVC-"), lines[2])
            XCTAssertTrue(lines[3].hasPrefix("- chain nat KUBE-SEP-"), lines[3])
            XCTAssertEqual(lines[4], "diff=1")
            XCTAssertTrue(lines[5].hasPrefix("iptables: 1 chains written, 1 deleted,"), lines[5])
            XCTAssertEqual(lines[6], "3")
        }
    }

    /// A refused restore changes nothing and exits 3; the next apply is a full sync.
    func testRefusedRestoreExits3AndChangesNothing() throws {
        let unshare = try requireNamespaces()
        let bin = TestSupport.binary.path
        let tmp = try tmpDir("refused")
        defer { try? FileManager.default.removeItem(at: tmp) }
        let example = TestSupport.fixtures.appendingPathComponent("example")
        let args = "--backend iptables --iptables legacy --state-dir \(tmp.path)/state --node-name node-a \(example.path)"
        // A foreign rule that jumps to one of our stale chains makes its deletion fail.
        let r = try TestSupport.run(unshare, ["-n", "sh", "-c", """
            set -e
            \(bin) apply \(args) > /dev/null
            iptables-legacy -t nat -N KUBE-SEP-STALESTALESTALE
            iptables-legacy -t nat -N OTHER && iptables-legacy -t nat -A OTHER -j KUBE-SEP-STALESTALESTALE
            iptables-legacy-save | grep -v '^#' > \(tmp.path)/before
            \(bin) apply \(args) > /dev/null 2> \(tmp.path)/err || echo "apply=$?"
            iptables-legacy-save | grep -v '^#' > \(tmp.path)/after
            cmp \(tmp.path)/before \(tmp.path)/after && echo same
            """])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout, "apply=3\nsame\n")
        let err = (try? String(contentsOfFile: tmp.path + "/err", encoding: .utf8)) ?? ""
        XCTAssertTrue(err.contains("iptables-legacy-restore --noflush refused the rules"), err)
    }
}
