import Foundation
import XCTest

/// `kuberules apply --backend nftables` against the real kernel, each run inside a fresh network
/// namespace created with `unshare -n` (never this machine's own namespace).
final class NftApplyCLITests: XCTestCase {
    func requireNamespaces() throws -> String {
        guard TestSupport.isRoot else { throw XCTSkip("needs root to create network namespaces (CI runs as root)") }
        guard let unshare = TestSupport.which("unshare"), TestSupport.which("nft") != nil else {
            throw XCTSkip("unshare or nft is not installed (apt-get install util-linux nftables)")
        }
        return unshare
    }

    func sh(_ unshare: String, _ script: String) throws -> TestSupport.Result {
        try TestSupport.run(unshare, ["-n", "sh", "-c", script])
    }

    /// For every fixture: netlink apply and `nft -f` of the rendered text give identical
    /// `nft list ruleset`; a second apply and diff find nothing to do; cleanup leaves nothing.
    func testApplyEqualsRenderedTextForEveryFixture() throws {
        let unshare = try requireNamespaces()
        let bin = TestSupport.binary.path
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("kr-nft-\(getpid())")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        for dir in TestSupport.fixtureDirs {
            let args = (["--backend", "nftables"] + TestSupport.fixtureArgs(dir)).map { "'\($0)'" }.joined(separator: " ")
            let text = tmp.appendingPathComponent("\(dir.lastPathComponent).nft").path
            let applied = tmp.appendingPathComponent("\(dir.lastPathComponent).applied").path
            let loaded = tmp.appendingPathComponent("\(dir.lastPathComponent).loaded").path
            let a = try sh(unshare, """
                set -e
                \(bin) render \(args) > \(text)
                \(bin) apply \(args) > \(tmp.path)/first.txt
                nft list ruleset > \(applied)
                \(bin) apply \(args) > \(tmp.path)/second.txt
                \(bin) diff \(args) > \(tmp.path)/diff.txt
                \(bin) cleanup --backend nftables > /dev/null
                test -z "$(nft list ruleset)"
                cat \(tmp.path)/second.txt
                """)
            XCTAssertEqual(a.status, 0, "\(dir.lastPathComponent): \(a.stderr)")
            XCTAssertTrue(a.stdout.contains("0 messages"), "\(dir.lastPathComponent): second apply was not a no-op: \(a.stdout)")
            let b = try sh(unshare, "nft -f \(text) && nft list ruleset > \(loaded)")
            XCTAssertEqual(b.status, 0, "\(dir.lastPathComponent): nft -f failed: \(b.stderr)")
            let x = try String(contentsOfFile: applied, encoding: .utf8)
            let y = try String(contentsOfFile: loaded, encoding: .utf8)
            XCTAssertEqual(x, y, "\(dir.lastPathComponent): netlink apply and nft -f differ")
            XCTAssertFalse(x.isEmpty)
        }
    }

    /// Invalid input changes nothing in the kernel and exits 2; a foreign table survives.
    func testBadInputChangesNothingAndForeignTablesSurvive() throws {
        let unshare = try requireNamespaces()
        let bin = TestSupport.binary.path
        let example = TestSupport.fixtures.appendingPathComponent("example")
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("kr-nftbad-\(getpid())")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        let bad = tmp.appendingPathComponent("bad.yaml")
        try Data("apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {clusterIP: 10.96.0.1, ports: [{port: 70000}]}\n".utf8).write(to: bad)
        let args = "--backend nftables --node-name node-a --config \(example.path)/proxy-config.yaml \(example.path)/cluster.yaml"
        let r = try sh(unshare, """
            nft add table ip filter && nft add chain ip filter input '{ type filter hook input priority 0; }' && nft add rule ip filter input tcp dport 22 accept
            nft list ruleset > \(tmp.path)/foreign.txt
            \(bin) apply --backend nftables \(bad.path); echo "bad=$?"
            nft list ruleset > \(tmp.path)/after-bad.txt
            \(bin) apply \(args) > /dev/null || exit 10
            \(bin) apply \(args) > /dev/null || exit 11
            nft list table ip filter > \(tmp.path)/filter-after.txt
            \(bin) cleanup --backend nftables > /dev/null || exit 12
            nft list ruleset > \(tmp.path)/after-cleanup.txt
            """)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("bad=2"), r.stdout)
        XCTAssertTrue(r.stderr.contains("spec.ports[0].port: 70000 is not a valid port"), r.stderr)
        let foreign = try String(contentsOfFile: tmp.path + "/foreign.txt", encoding: .utf8)
        XCTAssertEqual(try String(contentsOfFile: tmp.path + "/after-bad.txt", encoding: .utf8), foreign)
        XCTAssertEqual(try String(contentsOfFile: tmp.path + "/filter-after.txt", encoding: .utf8), foreign)
        XCTAssertEqual(try String(contentsOfFile: tmp.path + "/after-cleanup.txt", encoding: .utf8), foreign)
    }

    /// A set of at least 4,096 elements gets a `size` (the kernel then sizes its hash table once):
    /// the same through netlink and through `nft -f` of the rendered text. The kernel's set is
    /// kept while it has room and is at most 4× the wanted size (9,000 → 5,000 endpoints keeps
    /// 32768; back to 9,000 keeps it too), and recreated in the batch otherwise (5,000 in a
    /// fresh 16384 set, then 17,000: 65536). Every second apply is a no-op.
    func testLargeSetsAreSizedAlikeByApplyAndNft() throws {
        let unshare = try requireNamespaces()
        let bin = TestSupport.binary.path
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("kr-nftsize-\(getpid())")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        for n in [5000, 9000, 17000] {
            let ips = (0..<n).map { "10.1.\($0 / 250).\($0 % 250 + 1)" }
            try Data(TestSupport.oneServiceCluster("big", clusterIP: "10.96.0.30", ips: ips).utf8).write(to: tmp.appendingPathComponent("c\(n).yaml"))
        }
        let args = "--backend nftables --ip-family ipv4 --node-name n1 --state-dir ''"
        func step(_ n: Int, _ name: String) -> String {
            """
            \(bin) apply \(args) \(tmp.path)/c\(n).yaml > /dev/null
            \(bin) apply \(args) \(tmp.path)/c\(n).yaml >> \(tmp.path)/again
            \(bin) diff \(args) \(tmp.path)/c\(n).yaml >> \(tmp.path)/again
            nft list ruleset > \(tmp.path)/\(name)
            """
        }
        let r = try sh(unshare, """
            set -e
            \(bin) render \(args) \(tmp.path)/c5000.yaml > \(tmp.path)/c.nft
            nft -f \(tmp.path)/c.nft
            nft list ruleset > \(tmp.path)/loaded
            nft flush ruleset
            \(step(5000, "applied"))
            nft flush ruleset
            \(step(9000, "bigger"))
            \(step(5000, "shrunk"))
            \(step(9000, "regrown"))
            nft flush ruleset
            \(step(5000, "fresh"))
            \(step(17000, "outgrown"))
            nft flush ruleset
            \(bin) render \(args) \(tmp.path)/c9000.yaml > \(tmp.path)/c9.nft
            nft -f \(tmp.path)/c9.nft
            nft list ruleset > \(tmp.path)/loaded9
            """)
        XCTAssertEqual(r.status, 0, r.stderr)
        func read(_ name: String) throws -> String { try String(contentsOfFile: tmp.path + "/" + name, encoding: .utf8) }
        func sizes(_ name: String) throws -> [String] {
            try read(name).split(separator: "\n").filter { $0.contains("size ") }.map { $0.trimmingCharacters(in: .whitespaces) }
        }
        let again = try read("again").split(separator: "\n").map(String.init)
        XCTAssertEqual(again.count, 12, again.joined(separator: "\n"))
        for (i, line) in again.enumerated() {
            XCTAssertTrue(i % 2 == 0 ? line.contains("; 0 messages,") : line == "no differences", line)
        }
        XCTAssertEqual(try read("applied"), try read("loaded"))
        XCTAssertEqual(try read("bigger"), try read("loaded9"), "split hairpin sets: apply and nft -f agree")
        // The endpoint map and the hairpin set, each with as many elements as endpoints; past
        // 8,192 addresses the hairpin set is split by the address's last byte (4 × 2,250 at 9,000,
        // 8 × 2,125 at 17,000: below the size threshold) and joined again below.
        XCTAssertEqual(try sizes("applied"), ["size 16384", "size 16384"])
        XCTAssertEqual(try sizes("bigger"), ["size 32768"])
        XCTAssertEqual(try read("bigger").components(separatedBy: "\n\tset hairpin-").count - 1, 4)
        XCTAssertEqual(try sizes("shrunk"), ["size 32768", "size 16384"], "room and at most 4×: kept")
        XCTAssertEqual(try sizes("regrown"), ["size 32768"])
        XCTAssertEqual(try sizes("fresh"), ["size 16384", "size 16384"])
        XCTAssertEqual(try sizes("outgrown"), ["size 65536"], "no room: recreated")
        XCTAssertEqual(try read("outgrown").components(separatedBy: "\n\tset hairpin-").count - 1, 8)
    }

    /// One endpoint replaced by another: the service chain's rule (`numgen random mod 3 offset F
    /// map @endpoints-HH`) stays, so apply swaps one endpoint-map element and one hairpin
    /// element — no rule, a handful of messages — and the result equals `nft -f` of the new rules.
    func testEndpointChangeIsAnElementChange() throws {
        let unshare = try requireNamespaces()
        let bin = TestSupport.binary.path
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("kr-nftep-\(getpid())")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        func cluster(_ ips: [String]) -> String { TestSupport.oneServiceCluster("web", clusterIP: "10.96.0.20", ips: ips) }
        try Data(cluster(["10.0.1.1", "10.0.1.2", "10.0.1.3"]).utf8).write(to: tmp.appendingPathComponent("a.yaml"))
        try Data(cluster(["10.0.1.1", "10.0.1.2", "10.0.1.9"]).utf8).write(to: tmp.appendingPathComponent("b.yaml"))
        let args = "--backend nftables --ip-family ipv4 --node-name n1 --state-dir \(tmp.path)/state"
        let r = try sh(unshare, """
            set -e
            \(bin) apply \(args) \(tmp.path)/a.yaml
            \(bin) apply --dry-run \(args) \(tmp.path)/b.yaml | grep -cE '^(replace|add|delete) rule' || true
            \(bin) apply --dry-run \(args) \(tmp.path)/b.yaml | grep -E '^(add|delete) element' | sed 's/ [0-9]* : / SLOT : /' | sort | tr '\\n' ';'; echo
            \(bin) apply \(args) \(tmp.path)/b.yaml
            nft list ruleset > \(tmp.path)/applied
            \(bin) render \(args) \(tmp.path)/b.yaml > \(tmp.path)/b.nft
            \(bin) diff \(args) \(tmp.path)/b.yaml
            nft add table ip somebody-else
            \(bin) apply \(args) \(tmp.path)/b.yaml
            """)
        XCTAssertEqual(r.status, 0, r.stderr)
        let lines = r.stdout.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 6, r.stdout)
        XCTAssertTrue(lines[0].hasSuffix("read: whole tables from the kernel"), lines[0])
        XCTAssertEqual(lines[1], "0", "no rule changes: \(r.stdout)")
        XCTAssertTrue(lines[2].contains("add element ip kuberules endpoints-"), lines[2])
        XCTAssertTrue(lines[2].contains("SLOT : 10.0.1.9 . 8080 }") && lines[2].contains("SLOT : 10.0.1.3 . 8080 }"), lines[2])
        XCTAssertTrue(lines[2].contains("add element ip kuberules hairpin { 10.0.1.9 . 10.0.1.9 }")
                      && lines[2].contains("delete element ip kuberules hairpin { 10.0.1.3 . 10.0.1.3 }"), lines[2])
        // begin, delete + add endpoint-map element, delete + add hairpin element, end; nothing
        // read back (the saved digests vouch for the chains, the sets are diffed against the
        // elements saved with the last commit).
        XCTAssertTrue(lines[3].contains(" 6 messages"), r.stdout)
        XCTAssertTrue(lines[3].hasSuffix("read: saved state + 0 chain(s), 0 set(s) from the kernel"), lines[3])
        XCTAssertEqual(lines[4], "no differences")
        // Another commit in the namespace: the saved state no longer vouches for anything.
        XCTAssertTrue(lines[5].contains("; 0 messages,") && lines[5].hasSuffix("read: whole tables from the kernel"), lines[5])
        let l = try sh(unshare, "nft -f \(tmp.path)/b.nft && nft list ruleset")
        XCTAssertEqual(l.status, 0, l.stderr)
        XCTAssertEqual(try String(contentsOfFile: tmp.path + "/applied", encoding: .utf8), l.stdout)
    }

    /// ClientIP affinity in IPv6: the record rule (`update @affinity { ip6 saddr . KEY : ip6 daddr
    /// . th dport }`) is more than nft 1.0.6 can put into registers when it parses text (it
    /// aborts; it could not parse the earlier per-endpoint layout either), but the kernel takes it
    /// over netlink: apply, list, a second apply and diff find nothing to change.
    func testIPv6AffinityAppliesAndLists() throws {
        let unshare = try requireNamespaces()
        let bin = TestSupport.binary.path
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("kr-nft6aff-\(getpid())")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        let fixture = TestSupport.fixtures.appendingPathComponent("dual-stack-ipv6/cluster.yaml")
        let yaml = try String(contentsOf: fixture, encoding: .utf8)
            .replacingOccurrences(of: "  type: LoadBalancer\n", with: "  type: LoadBalancer\n  sessionAffinity: ClientIP\n")
        XCTAssertTrue(yaml.contains("sessionAffinity"))
        try Data(yaml.utf8).write(to: tmp.appendingPathComponent("c.yaml"))
        let args = "--backend nftables --ip-family ipv6 --node-name node-a --state-dir '' \(tmp.path)/c.yaml"
        let r = try sh(unshare, """
            set -e
            \(bin) apply \(args) > /dev/null
            nft list table ip6 kuberules > \(tmp.path)/list
            \(bin) apply \(args)
            \(bin) diff \(args)
            """)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("; 0 messages,"), r.stdout)
        XCTAssertTrue(r.stdout.hasSuffix("no differences\n"), r.stdout)
        let list = try String(contentsOfFile: tmp.path + "/list", encoding: .utf8)
        XCTAssertTrue(list.contains(". ip6 daddr . th dport @affinity-endpoints update @affinity { ip6 saddr . numgen random mod 1 offset "), list)
        XCTAssertTrue(list.contains("map @affinity comment \"known client\""), list)
    }
}
