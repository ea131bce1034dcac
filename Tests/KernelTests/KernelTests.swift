// Real-kernel tests for the netlink layer. They never touch this machine's own network
// namespace: every test first checks that it runs as root inside a private network
// namespace (the inode of /proc/self/ns/net differs from /proc/1/ns/net) and skips otherwise.
//
// Run them as root, the whole test process in one fresh namespace:
//
//   swift build --scratch-path .build-nft --build-tests
//   unshare -n .build-nft/debug/kuberulesPackageTests.xctest \
//       KernelTests.NetlinkApplyTests,KernelTests.NetlinkScaleTests
//
// (swift-corelibs-xctest selects by Module.Class; a bare module name selects nothing.)
// `unshare -n swift test --skip-build --filter KernelTests` works too.
//
// Tests inside the namespace start from an empty ruleset (`nft flush ruleset` — only ever
// after the namespace check). Text loads run `nft -f` in a second fresh namespace
// (`unshare -n sh -c 'nft -f FILE && nft list ruleset'`). Set KUBERULES_BENCH=1 to also run
// the 100k-element / 20k-rule timing comparison.

import XCTest
import Foundation
import NftModel
import NftApply
@testable import Netlink

/// Skips unless root and inside a private network namespace. The reference is PID 1's
/// namespace. Where /proc/1/ns/net cannot be read (sandboxes deny it even to root), the
/// topmost ancestor process whose namespace can be read stands in for it (e.g. the shell
/// that ran `unshare -n swift test`), and the fixed inode of the initial namespace
/// (0xEFFFFFF9 on current kernels) is refused in any case.
func requirePrivateNamespace() throws {
    guard geteuid() == 0 else { throw XCTSkip("kernel tests need root (run under `unshare -n` as root)") }
    func inode(_ pid: String) -> (UInt64, UInt64)? {
        var st = stat()
        guard stat("/proc/\(pid)/ns/net", &st) == 0 else { return nil }
        return (UInt64(st.st_dev), UInt64(st.st_ino))
    }
    func parent(of pid: Int32) -> Int32? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        return fields.count > 1 ? Int32(fields[1]) : nil
    }
    guard let mine = inode("self") else { throw XCTSkip("cannot read /proc/self/ns/net") }
    var reference = inode("1")
    var what = "PID 1"
    if reference == nil {
        var pid = getppid()
        var hops = 0
        while pid > 1 && hops < 64 {
            if let ino = inode(String(pid)) { reference = ino; what = "ancestor process \(pid)" }
            guard let pp = parent(of: pid) else { break }
            pid = pp
            hops += 1
        }
    }
    guard let reference else {
        throw XCTSkip("cannot read the network namespace of PID 1 or of any ancestor to compare with")
    }
    guard reference != mine, mine.1 != 0xEFFF_FFF9 else {
        throw XCTSkip("refusing to touch the host network namespace (same as \(what)): run the tests under `unshare -n`")
    }
}

/// Runs a command (posix_spawn + waitpid: Foundation's Process needs a working loopback for
/// its run loop, which a fresh namespace does not have). stdin/stdout/stderr go through files.
@discardableResult
func command(_ args: [String], input: String? = nil, check: Bool = true) throws -> (status: Int32, out: String, err: String) {
    let tmp = NSTemporaryDirectory() + "kuberules-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    let outPath = tmp + ".out", errPath = tmp + ".err", inPath = tmp + ".in"
    _ = FileManager.default.createFile(atPath: inPath, contents: (input ?? "").data(using: .utf8))
    defer { unlink(outPath); unlink(errPath); unlink(inPath) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, inPath, O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    var argv: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
    defer { for p in argv { free(p) } }
    var pid = pid_t()
    let rc = posix_spawnp(&pid, args[0], &actions, nil, &argv, environ)
    guard rc == 0 else {
        throw NSError(domain: "command", code: Int(rc), userInfo: [NSLocalizedDescriptionKey: "cannot run \(args[0]): \(String(cString: strerror(rc)))"])
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let code: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    let o = FileManager.default.contents(atPath: outPath) ?? Data()
    let e = FileManager.default.contents(atPath: errPath) ?? Data()
    let r = (code, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    if check && r.0 != 0 {
        throw NSError(domain: "command", code: Int(r.0), userInfo: [NSLocalizedDescriptionKey: "\(args.joined(separator: " ")) failed: \(r.2)"])
    }
    return r
}

func writeTemp(_ text: String, name: String) throws -> String {
    let path = NSTemporaryDirectory() + "kuberules-\(getpid())-\(name)"
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

/// Loads `text` with `nft -f` in a fresh namespace and returns `nft list ruleset` there.
func listAfterLoadingInFreshNamespace(_ text: String) throws -> String {
    let file = try writeTemp(text, name: "load.nft")
    defer { unlink(file) }
    return try command(["unshare", "-n", "sh", "-c", "nft -f \(file) && nft list ruleset"]).out
}

class KernelTestCase: XCTestCase {
    var kernel: NftNetlink!
    var applier: NftApplier!

    override func setUpWithError() throws {
        try requirePrivateNamespace()
        try command(["nft", "flush", "ruleset"])
        kernel = try NftNetlink()
        applier = NftApplier(kernel: kernel)
    }

    override func tearDownWithError() throws {
        kernel = nil
        applier = nil
    }

    func listRuleset() throws -> String { try command(["nft", "list", "ruleset"]).out }

    /// Both families of the example in one ruleset.
    static func example() -> NftRuleset {
        NftRuleset(tables: NftRuleset.example(family: .ip).tables + NftRuleset.example(family: .ip6).tables)
    }
}

final class NetlinkApplyTests: KernelTestCase {
    func testNetlinkAndTextGiveIdenticalRulesets() throws {
        let desired = Self.example()
        let r = try applier.apply(desired)
        XCTAssertTrue(r.committed)
        let viaNetlink = try listRuleset()
        let viaText = try listAfterLoadingInFreshNamespace(try desired.renderChecked())
        XCTAssertEqual(viaNetlink, viaText)
        if viaNetlink != viaText {
            let a = try writeTemp(viaNetlink, name: "netlink.txt"), b = try writeTemp(viaText, name: "text.txt")
            print(try command(["diff", "-u", a, b], check: false).out)
            unlink(a); unlink(b)
        }
        XCTAssertTrue(viaNetlink.contains("typeof numgen random mod 2 : ip daddr . tcp dport"))
        XCTAssertTrue(viaNetlink.contains("comment \"ns1/svc1:http\""))
    }

    func testDumpDecodesToTheDesiredValues() throws {
        let desired = Self.example()
        try applier.apply(desired)
        for t in desired.tables {
            let have = try XCTUnwrap(kernel.dumpTable(t.id))
            XCTAssertEqual(have.canonical(), t.canonical(), "\(t.id) decoded differently")
        }
    }

    func testTextLoadedByNftDecodesToTheDesiredValues() throws {
        // The same check from the other side: what nft -f builds from our text decodes to our model.
        let desired = Self.example()
        let file = try writeTemp(try desired.renderChecked(), name: "self.nft")
        defer { unlink(file) }
        try command(["nft", "-f", file])
        for t in desired.tables {
            let have = try XCTUnwrap(kernel.dumpTable(t.id))
            XCTAssertEqual(have.canonical(), t.canonical(), "\(t.id) loaded by nft decodes differently")
        }
        // And applying the model on top is a no-op.
        let r = try applier.apply(desired)
        XCTAssertFalse(r.committed, r.listing.joined(separator: "\n"))
    }

    func testApplyTwiceSecondIsNoOp() throws {
        let desired = Self.example()
        try applier.apply(desired)
        let before = try command(["nft", "-a", "list", "ruleset"]).out
        let r = try applier.apply(desired)
        XCTAssertFalse(r.committed)
        XCTAssertEqual(r.messages, 0)
        XCTAssertEqual(r.added.total + r.changed.total + r.removed.total, 0, r.listing.joined(separator: "\n"))
        // The same from a fresh applier, which must read and decode the kernel's state.
        let fresh = NftApplier(kernel: kernel)
        let r2 = try fresh.apply(desired)
        XCTAssertTrue(fresh.lastReadFromKernel)
        XCTAssertFalse(r2.committed, r2.listing.joined(separator: "\n"))
        XCTAssertEqual(try command(["nft", "-a", "list", "ruleset"]).out, before)
    }

    func testChangingOneElementSendsOnlyThatChange() throws {
        var desired = Self.example()
        try applier.apply(desired)
        let handles = try command(["nft", "-a", "list", "chain", "ip", "kuberules", "services"]).out
        let si = desired.tables[0].sets.firstIndex { $0.name == "service-ips" }!
        desired.tables[0].sets[si].elements[1] = .verdict([.ipv4("172.30.0.42"), .proto(.udp), .port(53)], .goto("service-x"))
        let r = try applier.apply(desired)
        XCTAssertEqual(r.changed.elements, 1)
        XCTAssertEqual(r.added.total + r.removed.total, 0)
        XCTAssertEqual(r.messages, 4, "batch begin, delete element, add element, batch end")
        let listed = try command(["nft", "list", "map", "ip", "kuberules", "service-ips"]).out
        XCTAssertTrue(listed.contains("172.30.0.42 . udp . 53 : goto service-x"), listed)
        // Rules were not touched (same handles).
        XCTAssertEqual(try command(["nft", "-a", "list", "chain", "ip", "kuberules", "services"]).out, handles)

        desired.tables[0].sets[si].elements.append(.verdict([.ipv4("172.30.0.43"), .proto(.tcp), .port(443)], .goto("service-y")))
        let r2 = try applier.apply(desired)
        XCTAssertEqual(r2.added.elements, 1)
        XCTAssertEqual(r2.messages, 3)
    }

    /// A fresh applier with the saved state changes interval, concatenated and verdict-map
    /// sets without dumping them (their committed elements are in the state file) and gets
    /// the kernel exactly where a full read says it should be.
    func testSavedStateChangesSetsWithoutReadingThem() throws {
        let dir = NSTemporaryDirectory() + "kuberules-state-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = NftStateFile(directory: dir)
        let first = NftApplier(kernel: kernel)
        first.stateStore = store
        var desired = Self.example()
        try first.apply(desired)
        for t in desired.tables.indices {
            let v6 = desired.tables[t].family == .ip6
            func a(_ s4: String, _ s6: String) -> NftValue { v6 ? .ipv6(s6) : .ipv4(s4) }
            func set(_ name: String) -> Int { desired.tables[t].sets.firstIndex { $0.name == name }! }
            let fw = set("firewall-allow"), sr = set("source-ranges"), hp = set("hairpin"), ips = set("service-ips")
            desired.tables[t].sets[fw].elements.append(
                .interval([.value(a("172.30.0.42", "fd00:30::42")), .value(.proto(.udp)), .value(.port(53)), .prefix(v6 ? "fd99::/16" : "192.168.0.0/16")]))
            desired.tables[t].sets[sr].elements.remove(at: 1)
            desired.tables[t].sets[sr].elements.append(.element(a("203.0.113.99", "2001:db8::99")))
            desired.tables[t].sets[hp].elements.append(.element(a("10.1.0.2", "fd00:1::2"), a("10.1.0.2", "fd00:1::2")))
            desired.tables[t].sets[ips].elements[0].data = .verdict(.goto("service-y"))
            let ci = desired.tables[t].chains.firstIndex { $0.name == "service-y" }!
            desired.tables[t].chains[ci].rules.append(NftRule(.drop))
        }
        let second = NftApplier(kernel: kernel)
        second.stateStore = store
        let r = try second.apply(desired)
        XCTAssertTrue(r.committed)
        XCTAssertEqual(r.read, .savedState(chains: 2, sets: 0), r.listing.joined(separator: "\n"))
        // A full read agrees that nothing is left to do, and the ruleset is what nft -f makes.
        let check = NftApplier(kernel: kernel)
        let left = try check.plan(desired)
        XCTAssertTrue(left.isEmpty, left.listing.joined(separator: "\n"))
        XCTAssertEqual(try listRuleset(), try listAfterLoadingInFreshNamespace(desired.render()))
        // The state written by the second apply serves a third one.
        let third = NftApplier(kernel: kernel)
        third.stateStore = store
        XCTAssertFalse(try third.apply(desired).committed)
        XCTAssertEqual(third.lastReadSource, .savedState(chains: 0, sets: 0))
    }

    func testRefusedBatchLeavesRulesetExactlyAsBefore() throws {
        var desired = Self.example()
        try applier.apply(desired)
        let before = try command(["nft", "-a", "list", "ruleset"]).out
        // A valid new element and chain, and a rule the kernel refuses (jump to a base chain).
        let si = desired.tables[0].sets.firstIndex { $0.name == "cluster-ips" }!
        desired.tables[0].sets[si].elements.append(.element(.ipv4("172.30.0.99")))
        desired.tables[0].chains.append(NftChain(name: "new-chain", rules: [NftRule(.counter, .jump("nat-prerouting"))]))
        XCTAssertThrowsError(try applier.apply(desired)) { e in
            guard case NftKernelError.batchRefused(let errs) = e else { return XCTFail("unexpected \(e)") }
            XCTAssertEqual(errs.count, 1, "\(errs)")
            XCTAssertEqual(errs.first?.object, "rule in chain ip kuberules new-chain")
            XCTAssertEqual(errs.first?.errno, EOPNOTSUPP)
            print("refused as expected: \(e)")
        }
        XCTAssertEqual(try command(["nft", "-a", "list", "ruleset"]).out, before)
    }

    func testForeignTablesSurviveApplyReapplyAndCleanup() throws {
        let foreign = """
        table ip filter {
            chain INPUT {
                type filter hook input priority 0; policy accept;
                tcp dport 22 counter accept comment "ssh"
            }
        }
        table ip6 kuberules-other {
            set s { type ipv6_addr; elements = { fd00::1 } }
        }
        """
        try command(["nft", "-f", "-"], input: foreign)
        func foreignState() throws -> String {
            try command(["nft", "-a", "list", "table", "ip", "filter"]).out
                + command(["nft", "-a", "list", "table", "ip6", "kuberules-other"]).out
        }
        let before = try foreignState()
        var desired = Self.example()
        try applier.apply(desired)
        XCTAssertEqual(try foreignState(), before)
        desired.tables[0].chains.removeAll { $0.name == "service-y" }
        let si = desired.tables[0].sets.firstIndex { $0.name == "service-ips" }!
        desired.tables[0].sets[si].elements.removeAll { $0.data == .verdict(.goto("service-y")) }
        try applier.apply(desired)
        XCTAssertEqual(try foreignState(), before)
        XCTAssertTrue(try applier.cleanup(family: .ip, table: "kuberules"))
        XCTAssertTrue(try applier.cleanup(family: .ip6, table: "kuberules"))
        XCTAssertFalse(try applier.cleanup(family: .ip, table: "kuberules"))
        XCTAssertEqual(try foreignState(), before)
        XCTAssertEqual(try command(["nft", "list", "tables"]).out, "table ip filter\ntable ip6 kuberules-other\n")
    }

    func testConcurrentChangeBetweenReadAndCommitIsRetried() throws {
        var attempts: [Int] = []
        applier.beforeCommit = { attempt in
            attempts.append(attempt)
            if attempt == 1 { try command(["nft", "add", "table", "ip", "x"]) }
        }
        let r = try applier.apply(Self.example())
        XCTAssertEqual(attempts, [1, 2])
        XCTAssertEqual(r.attempts, 2)
        XCTAssertTrue(r.committed)
        XCTAssertEqual(try command(["nft", "list", "tables"]).out.split(separator: "\n").sorted(),
                       ["table ip kuberules", "table ip x", "table ip6 kuberules"])
    }

    func testOutsideEditsOfOurTableAreRevertedButPacketPathEntriesKept() throws {
        let desired = Self.example()
        try applier.apply(desired)
        let before = try listRuleset()
        try command(["nft", "add", "element", "ip", "kuberules", "service-ips", "{ 172.30.9.9 . tcp . 1 : drop }"])
        try command(["nft", "add", "rule", "ip", "kuberules", "services", "counter"])
        try command(["nft", "add", "chain", "ip", "kuberules", "stray"])
        try command(["nft", "add", "element", "ip", "kuberules", "affinity-x", "{ 10.9.9.9 }"])
        let r = try applier.apply(desired)
        XCTAssertTrue(applier.lastReadFromKernel, "the generation moved: the kernel must be read")
        XCTAssertEqual(r.removed.elements, 1)
        XCTAssertEqual(r.removed.chains, 1)
        XCTAssertEqual(r.changed.chains, 1)
        let after = try listRuleset()
        XCTAssertTrue(after.contains("10.9.9.9"), "packet-path (dynamic set) entries are kept")
        XCTAssertEqual(try command(["nft", "delete", "element", "ip", "kuberules", "affinity-x", "{ 10.9.9.9 }"]).status, 0)
        XCTAssertEqual(try listRuleset(), before)
    }

    func testStaleObjectsAreRemoved() throws {
        var desired = Self.example()
        try applier.apply(desired)
        var t = desired.tables[0]
        t.chains.removeAll { $0.name == "service-y" }
        let si = t.sets.firstIndex { $0.name == "service-ips" }!
        t.sets[si].elements.removeAll { $0.data == .verdict(.goto("service-y")) }
        t.sets.removeAll { $0.name == "hairpin" }
        let ei = t.chains.firstIndex { $0.name == "endpoint-x-1" }!
        t.chains[ei].rules.removeFirst()
        desired.tables[0] = t
        let r = try applier.apply(desired)
        XCTAssertTrue(r.committed)
        // Kernel 6.2+: deleted in the same batch; older kernels: flushed now, deleted next time.
        if applier.kernelVersion.canDeleteChainUnreferencedInSameBatch {
            XCTAssertEqual(r.deferredChainDeletes, [])
        } else {
            try applier.apply(desired)
        }
        XCTAssertEqual(try kernel.dumpTable(t.id)?.canonical(), t.canonical())
        XCTAssertFalse(try applier.apply(desired).committed)
    }

    func testPre62BehaviourAgainstTheRealKernel() throws {
        // Kernel version injected: the flush-now, delete-next-apply path must work here too.
        let old = NftApplier(kernel: kernel, kernelVersion: NftKernelVersion(6, 1))
        var desired = Self.example()
        try old.apply(desired)
        desired.tables[0].chains.removeAll { $0.name == "service-y" }
        let si = desired.tables[0].sets.firstIndex { $0.name == "service-ips" }!
        desired.tables[0].sets[si].elements.removeAll { $0.data == .verdict(.goto("service-y")) }
        let r1 = try old.apply(desired)
        XCTAssertEqual(r1.deferredChainDeletes, ["service-y"])
        XCTAssertTrue(try command(["nft", "list", "chain", "ip", "kuberules", "service-y"], check: false).status == 0)
        let r2 = try old.apply(desired)
        XCTAssertEqual(r2.removed.chains, 1)
        XCTAssertNotEqual(try command(["nft", "list", "chain", "ip", "kuberules", "service-y"], check: false).status, 0)
    }

    func testEveryExampleRuleLowersLikeNft() throws {
        // nft --debug=netlink compiles the rendered text; its bytecode must equal our expressions.
        let desired = Self.example()
        let file = try writeTemp(try desired.renderChecked(), name: "lower.nft")
        defer { unlink(file) }
        let out = try command(["unshare", "-n", "nft", "--debug=netlink", "-f", file]).out
        var theirs: [String] = []
        var current: [String] = []
        for line in out.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("  [") { current.append(String(line.dropFirst(2))) } else if !current.isEmpty {
                theirs.append(current.joined(separator: "\n")); current = []
            }
        }
        if !current.isEmpty { theirs.append(current.joined(separator: "\n")) }
        var mine: [String] = []
        for t in desired.sortedTables {
            for c in t.sortedChains {
                for r in c.rules { mine.append(r.exprs.map { $0.debugText }.joined(separator: "\n")) }
            }
        }
        XCTAssertEqual(mine.count, theirs.count)
        for (a, b) in zip(mine, theirs) { XCTAssertEqual(a, b) }
    }
}

final class NetlinkScaleTests: KernelTestCase {
    /// One verdict map with `elements` entries, `chains` chains with one rule each.
    static func scaled(elements: Int, chains: Int, rulesPerChain: Int = 1) -> NftRuleset {
        var t = NftTable(family: .ip, name: "kuberules")
        var vmap = NftSet.vmap("service-ips", .types([.ipv4Addr, .inetProto, .inetService]))
        vmap.elements.reserveCapacity(elements)
        for i in 0..<elements {
            let ip = NftValue.ipv4(172, 30, UInt8((i >> 8) & 0xff), UInt8(i & 0xff))
            let port = UInt16(1000 + i / 65536)
            vmap.elements.append(.verdict([ip, .proto(.tcp), .port(port)], .goto("svc-\(i % chains)")))
        }
        t.add(vmap)
        t.add(.base("nat-prerouting", type: .nat, hook: .prerouting, priority: -100,
                    rules: [NftRule(.vmap([.ipDaddr, .l4proto, .thDport], map: "service-ips"))]))
        for c in 0..<chains {
            var rules: [NftRule] = []
            for r in 0..<rulesPerChain {
                let ip = NftValue.ipv4(10, UInt8((c >> 8) & 0xff), UInt8(c & 0xff), UInt8(r & 0xff))
                rules.append(NftRule(.dnat(to: ip, port: 8080, l4proto: .tcp)))
            }
            t.add(NftChain(name: "svc-\(c)", rules: rules))
        }
        return NftRuleset(tables: [t])
    }

    /// 24,000 rules in one batch (encoded in parallel runs): the one the kernel refuses, deep in
    /// a later run, is traced back to its change, and nothing is applied.
    func testARefusalInALaterEncodingRunNamesItsChange() throws {
        let id = NftTableID(.ip, "kuberules")
        var changes: [NftChange] = [.addTable(id, comment: nil), .addChain(id, NftChain(name: "c")),
                                    .addChain(id, .base("nat-prerouting", type: .nat, hook: .prerouting, priority: -100))]
        for i in 0..<24_000 {
            changes.append(.addRule(id, chain: "c", NftRule(.counter, comment: "rule \(i)")))
        }
        let bad = changes.count - 1_000
        changes[bad] = .addRule(id, chain: "c", NftRule(.counter, .jump("nat-prerouting")))   // a jump to a base chain
        XCTAssertGreaterThanOrEqual(changes.count, NftNetlink.parallelEncodingThreshold)
        XCTAssertThrowsError(try kernel.commit(changes, generation: try kernel.generation())) { e in
            guard case NftKernelError.batchRefused(let errs) = e else { return XCTFail("unexpected \(e)") }
            XCTAssertEqual(errs.map(\.changeIndex), [bad], "\(errs)")
            XCTAssertEqual(errs.first?.errno, EOPNOTSUPP)
        }
        XCTAssertEqual(try listRuleset(), "")
        // Without the bad rule the same batch is accepted and acknowledged.
        changes[bad] = .addRule(id, chain: "c", NftRule(.counter))
        let stats = try kernel.commit(changes, generation: try kernel.generation())
        XCTAssertEqual(stats.messages, changes.count + 2)
        let rules = try command(["sh", "-c", "nft list chain ip kuberules c | grep -c counter"]).out
        XCTAssertEqual(rules.trimmingCharacters(in: .whitespacesAndNewlines), "24000")
    }

    func testTenThousandElementsAndTwoThousandChainsInOneBatch() throws {
        let desired = Self.scaled(elements: 10_000, chains: 2_000)
        let r = try applier.apply(desired)
        print("scale: 10,000 elements + 2,000 chains/rules: \(r.summary)")
        XCTAssertTrue(r.committed)
        XCTAssertEqual(r.attempts, 1)
        XCTAssertLessThan(r.elapsedSeconds, 5)
        let count = try command(["sh", "-c", "nft list map ip kuberules service-ips | grep -c goto"]).out
        XCTAssertEqual(count.trimmingCharacters(in: .whitespacesAndNewlines), "10000")
        let again = try applier.apply(desired)
        XCTAssertFalse(again.committed)
        print("scale: re-apply from remembered state (generation check + diff): \(again.summary)")
        applier.forgetState()
        let reread = try applier.apply(desired)
        XCTAssertFalse(reread.committed)
        XCTAssertTrue(applier.lastReadFromKernel)
        print("scale: re-apply reading the kernel (dump + decode + diff): \(reread.summary)")
    }

    /// KUBERULES_BENCH=1: 100k elements / 20k rules over netlink vs `nft -f` of the same text.
    func testBenchmarkAgainstNftText() throws {
        guard ProcessInfo.processInfo.environment["KUBERULES_BENCH"] != nil else {
            throw XCTSkip("set KUBERULES_BENCH=1 to run the benchmark")
        }
        let desired = Self.scaled(elements: 100_000, chains: 20_000)
        let t0 = Date()
        let text = try desired.renderChecked()
        let renderTime = Date().timeIntervalSince(t0)
        let r = try applier.apply(desired)
        print(String(format: "bench: netlink apply 100k elements + 20k chains/rules: %.3f s (%d messages, %.1f MB)",
                     r.elapsedSeconds, r.messages, Double(r.bytes) / 1e6))
        let t1 = Date()
        let again = try applier.apply(desired)
        print(String(format: "bench: netlink re-apply, remembered state (no-op): %.3f s", Date().timeIntervalSince(t1)))
        XCTAssertFalse(again.committed)
        applier.forgetState()
        let t1b = Date()
        let reread = try applier.apply(desired)
        print(String(format: "bench: netlink re-apply, dump + decode + diff (no-op): %.3f s", Date().timeIntervalSince(t1b)))
        XCTAssertFalse(reread.committed)
        let file = try writeTemp(text, name: "bench.nft")
        defer { unlink(file) }
        let t2 = Date()
        try command(["unshare", "-n", "nft", "-f", file])
        print(String(format: "bench: nft -f of the rendered text (fresh namespace): %.3f s (render %.3f s, %.1f MB)",
                     Date().timeIntervalSince(t2), renderTime, Double(text.utf8.count) / 1e6))
        var one = desired
        one.tables[0].sets[0].elements[0] = .verdict(one.tables[0].sets[0].elements[0].key.start, .goto("svc-1"))
        let r3 = try applier.apply(one)
        print(String(format: "bench: change one element: %.3f s, %d messages", r3.elapsedSeconds, r3.messages))
    }
}
