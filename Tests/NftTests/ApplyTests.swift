import XCTest
import NftModel
import NftApply

final class ApplyTests: XCTestCase {
    let id = NftTableID(.ip, "kuberules")

    func applier(_ k: FakeNftKernel, _ v: NftKernelVersion = NftKernelVersion(6, 18)) -> NftApplier {
        NftApplier(kernel: k, kernelVersion: v)
    }

    func testApplyTwiceSecondIsNoOp() throws {
        let k = FakeNftKernel()
        let a = applier(k)
        let desired = NftRuleset.example()
        let r1 = try a.apply(desired)
        XCTAssertTrue(r1.committed)
        XCTAssertGreaterThan(r1.messages, 2)
        XCTAssertEqual(r1.added.tables, 1)
        assertSame(k.dump(), desired)
        let r2 = try a.apply(desired)
        XCTAssertFalse(r2.committed)
        XCTAssertEqual(r2.messages, 0)
        XCTAssertEqual(r2.added.total + r2.changed.total + r2.removed.total, 0)
        XCTAssertEqual(k.commits, 1)
        XCTAssertTrue(r2.listing.isEmpty)
    }

    func testChangingOneElementSendsOnlyThatElement() throws {
        let k = FakeNftKernel()
        let a = applier(k)
        var desired = NftRuleset.example()
        try a.apply(desired)
        // Re-point one service: one element replaced (delete old + add new).
        let si = desired.tables[0].sets.firstIndex { $0.name == "service-ips" }!
        desired.tables[0].sets[si].elements[1] = .verdict([.ipv4("172.30.0.42"), .proto(.udp), .port(53)], .goto("service-x"))
        let r = try a.apply(desired)
        XCTAssertEqual(k.lastBatch.count, 2)
        guard case .deleteElements(_, let d) = k.lastBatch[0], case .addElements(_, let ad) = k.lastBatch[1] else {
            return XCTFail("unexpected batch \(k.lastBatch)")
        }
        XCTAssertEqual(d.elements.count, 1)
        XCTAssertEqual(ad.elements.count, 1)
        XCTAssertEqual(r.changed.elements, 1)
        XCTAssertEqual(r.messages, 4)    // begin, delete element, add element, end

        // A brand-new element: a single add.
        desired.tables[0].sets[si].elements.append(.verdict([.ipv4("172.30.0.43"), .proto(.tcp), .port(443)], .goto("service-y")))
        let r2 = try a.apply(desired)
        XCTAssertEqual(k.lastBatch.count, 1)
        XCTAssertEqual(r2.added.elements, 1)
        XCTAssertEqual(r2.messages, 3)
        assertSame(k.dump(), desired)
    }

    /// One endpoint replaced by another: the chain keeps its rule count, so only the differing
    /// rule is replaced in place (by handle), not the whole chain flushed and refilled.
    func testChangedRuleIsReplacedInPlace() throws {
        func ruleset(_ second: String) -> NftRuleset {
            var t = NftTable(family: .ip, name: "kuberules")
            t.add(NftChain(name: "service-x", rules: [
                NftRule(.match(.numgenRandom(mod: 2), .eq, .integer(0)), .dnat(to: .ipv4("10.0.0.1"), port: 80, l4proto: .tcp)),
                NftRule(.dnat(to: .ipv4(second), port: 80, l4proto: .tcp)),
            ]))
            return NftRuleset(tables: [t])
        }
        let k = FakeNftKernel()
        let a = applier(k)
        try a.apply(ruleset("10.0.0.2"))
        a.forgetState()  // read the kernel (and its handles) back, as a new process does
        let r = try a.apply(ruleset("10.0.0.3"))
        XCTAssertEqual(k.lastBatch.count, 1, "\(k.lastBatch)")
        guard case .replaceRule(_, "service-x", let handle, _)? = k.lastBatch.first else { return XCTFail("\(k.lastBatch)") }
        XCTAssertEqual(handle, 2)
        XCTAssertEqual(r.messages, 3)    // begin, replace rule, end
        assertSame(k.dump(), ruleset("10.0.0.3"))
    }

    func testStaleChainAndSetRemovalOrder() throws {
        let k = FakeNftKernel()
        let a = applier(k)
        var desired = NftRuleset.example()
        try a.apply(desired)
        // Remove service-y (chain), the map element pointing to it, and the hairpin set (and its use).
        var t = desired.tables[0]
        t.chains.removeAll { $0.name == "service-y" }
        let si = t.sets.firstIndex { $0.name == "service-ips" }!
        t.sets[si].elements.removeAll { $0.data == .verdict(.goto("service-y")) }
        t.sets.removeAll { $0.name == "hairpin" }
        let ei = t.chains.firstIndex { $0.name == "endpoint-x-1" }!
        t.chains[ei].rules.removeFirst()
        desired.tables = [t]
        let r = try a.apply(desired)
        let kinds = k.lastBatch.map { c -> String in
            switch c {
            case .flushChain(_, let n): return "flush \(n)"
            case .deleteChain(_, let n): return "delchain \(n)"
            case .deleteSet(_, let n): return "delset \(n)"
            case .deleteElements(_, let s): return "delelem \(s.name)"
            case .addRule(_, let n, _): return "rule \(n)"
            default: return "other"
            }
        }
        XCTAssertEqual(kinds, ["flush endpoint-x-1", "flush service-y", "delelem service-ips", "delset hairpin",
                               "delchain service-y", "rule endpoint-x-1", "rule endpoint-x-1"])
        XCTAssertEqual(r.removed.chains, 1)
        XCTAssertEqual(r.removed.sets, 1)
        assertSame(k.dump(), desired)
    }

    func testPre62KernelDefersDeletingChainThatLostMapReference() throws {
        let k = FakeNftKernel()
        let a = applier(k, NftKernelVersion(6, 1))
        var desired = NftRuleset.example()
        try a.apply(desired)
        var t = desired.tables[0]
        t.chains.removeAll { $0.name == "service-y" }
        let si = t.sets.firstIndex { $0.name == "service-ips" }!
        t.sets[si].elements.removeAll { $0.data == .verdict(.goto("service-y")) }
        desired.tables = [t]
        let r = try a.apply(desired)
        XCTAssertEqual(r.deferredChainDeletes, ["service-y"])
        XCTAssertFalse(k.lastBatch.contains { if case .deleteChain = $0 { return true }; return false })
        XCTAssertEqual(k.tables[id]?.chain("service-y")?.rules, [])
        // Next apply deletes it.
        let r2 = try a.apply(desired)
        XCTAssertEqual(r2.removed.chains, 1)
        XCTAssertEqual(k.lastBatch, [.deleteChain(id, chain: "service-y")])
        assertSame(k.dump(), desired)
    }

    func testRefusedBatchLeavesStateUnchanged() throws {
        let k = FakeNftKernel()
        let a = applier(k)
        var desired = NftRuleset.example()
        try a.apply(desired)
        let before = k.dump()
        let gen = try k.generation()
        desired.tables[0].chains.append(NftChain(name: "new-chain", rules: [NftRule(.accept)]))
        let si = desired.tables[0].sets.firstIndex { $0.name == "cluster-ips" }!
        desired.tables[0].sets[si].elements.append(.element(.ipv4("172.30.0.99")))
        k.failWhen = { c in if case .addChain(_, let ch) = c, ch.name == "new-chain" { return 22 }; return nil }
        XCTAssertThrowsError(try a.apply(desired)) { e in
            guard case NftKernelError.batchRefused(let errs) = e else { return XCTFail("\(e)") }
            // The chain fails; the rule appended to it fails too (the kernel reports every
            // failing message of a batch).
            XCTAssertEqual(errs.first?.object, "chain ip kuberules new-chain")
            XCTAssertEqual(errs.first?.errno, 22)
            XCTAssertEqual(errs.count, 2)
        }
        assertSame(k.dump(), before)
        XCTAssertEqual(try k.generation(), gen)
    }

    func testGenerationBumpIsRetried() throws {
        let k = FakeNftKernel()
        let a = applier(k)
        var foreign = NftTable(family: .ip, name: "filter")
        foreign.chains = [NftChain(name: "INPUT", base: NftBaseChain(type: .filter, hook: .input, priority: 0))]
        a.beforeCommit = { attempt in if attempt == 1 { k.install(foreign) } }
        let r = try a.apply(.example())
        XCTAssertEqual(r.attempts, 2)
        XCTAssertTrue(r.committed)
        XCTAssertEqual(k.tables[foreign.id], foreign)
        XCTAssertEqual(k.dumpedTables.filter { $0 != self.id }, [])   // never read the foreign table
    }

    func testTooManyRestartsGivesUp() throws {
        let k = FakeNftKernel()
        let a = NftApplier(kernel: k, kernelVersion: NftKernelVersion(6, 18), maxAttempts: 3)
        a.beforeCommit = { _ in k.bumpGeneration() }
        XCTAssertThrowsError(try a.apply(.example()))
        XCTAssertTrue(k.tables.isEmpty)
    }

    func testForeignTableUntouchedAndCleanup() throws {
        let k = FakeNftKernel()
        let foreign = NftTable(family: .ip, name: "filter", chains: [NftChain(name: "x", rules: [NftRule(.accept)])])
        k.install(foreign)
        let a = applier(k)
        try a.apply(.example())
        try a.apply(.example())
        XCTAssertTrue(try a.cleanup(family: .ip, table: "kuberules"))
        XCTAssertFalse(try a.cleanup(family: .ip, table: "kuberules"))
        assertSame(k.dump(), NftRuleset(tables: [foreign]))
    }

    func testChangedSetDefinitionIsRecreatedAndUsersRefilled() throws {
        let k = FakeNftKernel()
        let a = applier(k)
        var desired = NftRuleset.example()
        try a.apply(desired)
        let si = desired.tables[0].sets.firstIndex { $0.name == "cluster-ips" }!
        desired.tables[0].sets[si].comment = "now with a comment"
        let r = try a.apply(desired)
        XCTAssertEqual(r.changed.sets, 1)
        XCTAssertTrue(k.lastBatch.contains(.flushChain(id, chain: "filter-input")))
        XCTAssertTrue(k.lastBatch.contains(.deleteSet(id, set: "cluster-ips")))
        assertSame(k.dump(), desired)
    }

    func testDynamicSetElementsFromPacketPathAreKept() throws {
        let k = FakeNftKernel()
        let a = applier(k)
        try a.apply(.example())
        k.insertFromPacketPath(id, set: "affinity-x", NftElement(key: [.ipv4("10.9.9.9")], timeoutMs: 1000))
        let r = try a.apply(.example())
        XCTAssertFalse(r.committed)
        XCTAssertEqual(k.tables[id]?.set("affinity-x")?.elements.count, 1)
    }

    func testInvalidDesiredRulesetIsRejectedBeforeAnyCommit() {
        let k = FakeNftKernel()
        let a = applier(k)
        var desired = NftRuleset.example()
        desired.tables[0].chains.append(NftChain(name: "bad", rules: [NftRule(.goto("missing"))]))
        XCTAssertThrowsError(try a.apply(desired))
        var long = NftRuleset.example()
        long.tables[0].chains[0].comment = String(repeating: "x", count: 200)
        XCTAssertThrowsError(try a.apply(long)) { XCTAssertTrue("\($0)".contains("comment longer than 128 bytes"), "\($0)") }
        XCTAssertEqual(k.commits, 0)
        XCTAssertTrue(k.tables.isEmpty)
    }

    func testDryRunListsChangesWithoutCommitting() throws {
        let k = FakeNftKernel()
        let a = applier(k)
        let r = try a.apply(.example(), dryRun: true)
        XCTAssertFalse(r.committed)
        XCTAssertEqual(k.commits, 0)
        XCTAssertTrue(r.listing.contains("add table ip kuberules"))
        XCTAssertTrue(r.listing.contains("add rule ip kuberules services ip daddr . meta l4proto . th dport vmap @service-ips"))
    }
}

/// Compares two rulesets as kernel states; on failure shows the differing lines of their text.
func assertSame(_ a: NftRuleset, _ b: NftRuleset, file: StaticString = #filePath, line: UInt = #line) {
    if a.canonical() == b.canonical() { return }
    let la = a.render().split(separator: "\n"), lb = b.render().split(separator: "\n")
    let onlyA = la.filter { !lb.contains($0) }.prefix(10), onlyB = lb.filter { !la.contains($0) }.prefix(10)
    XCTFail("rulesets differ\nonly in first:\n\(onlyA.joined(separator: "\n"))\nonly in second:\n\(onlyB.joined(separator: "\n"))",
            file: file, line: line)
}

final class ApplierStateReuseTests: XCTestCase {
    func testReusesCommittedStateWhileGenerationIsUnchanged() throws {
        let k = FakeNftKernel()
        let a = NftApplier(kernel: k, kernelVersion: NftKernelVersion(6, 18))
        var desired = NftRuleset.example()
        try a.apply(desired)
        XCTAssertTrue(a.lastReadFromKernel)
        let dumps = k.dumpedTables.count
        let si = desired.tables[0].sets.firstIndex { $0.name == "cluster-ips" }!
        desired.tables[0].sets[si].elements.append(.element(.ipv4("172.30.0.50")))
        let r = try a.apply(desired)
        XCTAssertFalse(a.lastReadFromKernel)
        XCTAssertEqual(k.dumpedTables.count, dumps, "no dump while the generation proves the state")
        XCTAssertEqual(r.added.elements, 1)
        // Someone else changes the ruleset: the generation moves, the kernel is read again.
        k.bumpGeneration()
        let r2 = try a.apply(desired)
        XCTAssertTrue(a.lastReadFromKernel)
        XCTAssertFalse(r2.committed)
        assertSame(k.dump(), desired)
    }

    func testDeferredChainIsRememberedAndDeletedNextTime() throws {
        let k = FakeNftKernel()
        let a = NftApplier(kernel: k, kernelVersion: NftKernelVersion(6, 1))
        var desired = NftRuleset.example()
        try a.apply(desired)
        desired.tables[0].chains.removeAll { $0.name == "service-y" }
        let si = desired.tables[0].sets.firstIndex { $0.name == "service-ips" }!
        desired.tables[0].sets[si].elements.removeAll { $0.data == .verdict(.goto("service-y")) }
        try a.apply(desired)
        let r = try a.apply(desired)
        XCTAssertFalse(a.lastReadFromKernel)
        XCTAssertEqual(r.removed.chains, 1)
        assertSame(k.dump(), desired)
    }
}

final class ElementDiffTests: XCTestCase {
    func table(_ ips: [String]) -> NftRuleset {
        NftRuleset(tables: [NftTable(family: .ip, name: "k", sets: [
            NftSet.set("s", .types([.ipv4Addr]), elements: ips.map { .element(.ipv4($0)) }),
        ])])
    }

    func testInsertDeleteReorderAgainstRememberedAndReadState() throws {
        for reuse in [true, false] {
            let k = FakeNftKernel()
            let a = NftApplier(kernel: k, kernelVersion: NftKernelVersion(6, 18))
            a.reuseCommittedState = reuse
            try a.apply(table(["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]))
            var r = try a.apply(table(["10.0.0.1", "10.0.0.9", "10.0.0.3", "10.0.0.4"]))
            XCTAssertEqual(r.added.elements, 1)
            XCTAssertEqual(r.removed.elements, 1)
            XCTAssertEqual(r.unchanged.elements, 3)
            r = try a.apply(table(["10.0.0.4", "10.0.0.3", "10.0.0.9", "10.0.0.1"]))   // reordered only
            XCTAssertFalse(r.committed)
            r = try a.apply(table(["10.0.0.4", "10.0.0.5", "10.0.0.3", "10.0.0.9"]))
            XCTAssertEqual(r.added.elements, 1)
            XCTAssertEqual(r.removed.elements, 1)
            assertSame(k.dump(), table(["10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.9"]))
        }
    }
}

/// A new applier ("process") on kernel `k` with the state kept in `store`.
func applier(_ k: FakeNftKernel, _ store: NftStateStore, version: NftKernelVersion = NftKernelVersion(6, 18)) -> NftApplier {
    let a = NftApplier(kernel: k, kernelVersion: version)
    a.stateStore = store
    return a
}

/// A state store in memory: stands for `--state-dir` across "processes" (new appliers).
final class MemoryStateStore: NftStateStore {
    var scope = "boot/netns-cookie-1"
    var state: NftSavedState?
    func load() -> NftSavedState? { state }
    func save(_ s: NftSavedState?) { state = s }
}

final class SavedStateTests: XCTestCase {

    func testANewApplierReadsOnlyWhatChangedSinceTheSavedCommit() throws {
        let k = FakeNftKernel()
        let store = MemoryStateStore()
        var desired = NftRuleset.example()
        let first = try applier(k, store).apply(desired)
        XCTAssertEqual(first.read, .kernel)
        XCTAssertEqual(store.state?.generation, k.generationID, "saved with the generation the commit left")

        // Next run, nothing changed: no dump at all.
        let dumps = k.dumpedTables.count
        let same = try applier(k, store).apply(desired)
        XCTAssertEqual(same.read, .savedState(chains: 0, sets: 0))
        XCTAssertFalse(same.committed)
        XCTAssertEqual(k.dumpedTables.count, dumps)
        XCTAssertEqual(k.partiallyDumped, [])

        // One chain and one set change: only the chain is read back; the set is diffed
        // against the elements saved with the last commit.
        let ci = desired.tables[0].chains.firstIndex { $0.name == "service-y" }!
        desired.tables[0].chains[ci].rules.append(NftRule(.drop))
        let si = desired.tables[0].sets.firstIndex { $0.name == "cluster-ips" }!
        desired.tables[0].sets[si].elements.append(.element(.ipv4("172.30.0.50")))
        let r = try applier(k, store).apply(desired)
        XCTAssertEqual(r.read, .savedState(chains: 1, sets: 0))
        XCTAssertEqual(k.partiallyDumped, ["chain service-y"])
        XCTAssertEqual(k.dumpedTables.count, dumps, "no whole-table dump")
        XCTAssertEqual(r.added.elements, 1)
        XCTAssertEqual(r.changed.chains, 1)
        XCTAssertEqual(r.unchanged.chains, desired.tables[0].chains.count - 1, "the other chains count as unchanged")
        assertSame(k.dump(), desired)

        // An element removed and one replaced in the middle of a set.
        desired.tables[0].sets[si].elements.remove(at: 0)
        let ips = desired.tables[0].sets.firstIndex { $0.name == "service-ips" }!
        desired.tables[0].sets[ips].elements[0].comment = "renamed"
        let r2 = try applier(k, store).apply(desired)
        XCTAssertEqual(r2.read, .savedState(chains: 0, sets: 0))
        XCTAssertEqual(r2.removed.elements, 1)
        XCTAssertEqual(r2.changed.elements, 1)
        assertSame(k.dump(), desired)

        // Somebody else commits (the generation moves): the whole table is read again.
        k.bumpGeneration()
        let other = try applier(k, store).apply(desired)
        XCTAssertEqual(other.read, .kernel)
        XCTAssertFalse(other.committed)

        // Another namespace or boot: the saved state does not apply.
        store.scope = "boot/netns-cookie-2"
        XCTAssertEqual(try applier(k, store).apply(desired).read, .kernel)
    }

    func testEachPlanDigestsItsOwnRuleset() throws {
        let k = FakeNftKernel()
        let store = MemoryStateStore()
        let desired = NftRuleset.example()
        try applier(k, store).apply(desired)
        let a = applier(k, store)
        XCTAssertTrue(try a.plan(desired).isEmpty)
        var changed = desired
        let ci = changed.tables[0].chains.firstIndex { $0.name == "service-y" }!
        changed.tables[0].chains[ci].rules.append(NftRule(.drop))
        XCTAssertFalse(try a.plan(changed).isEmpty, "the digests of the first plan must not stand for the second")
    }

    /// Read through the saved state, the sets known equal are left out of the read; `read`,
    /// a listed plan (dry run, `diff`) and the apply still see every set, and agree with a full read.
    func testSetsKnownEqualAreStillSeenByReadAndListings() throws {
        let k = FakeNftKernel()
        let store = MemoryStateStore()
        var desired = NftRuleset.example()
        try applier(k, store).apply(desired)
        let si = desired.tables[0].sets.firstIndex { $0.name == "cluster-ips" }!
        desired.tables[0].sets[si].elements.append(.element(.ipv4("172.30.0.50")))
        let read = try applier(k, store).read(desired)
        let full = try NftApplier(kernel: k, kernelVersion: NftKernelVersion(6, 18)).read(desired)
        XCTAssertEqual(Set(read.tables[desired.tables[0].id]!.sets.map(\.name)), Set(full.tables[desired.tables[0].id]!.sets.map(\.name)))
        let listed = try applier(k, store).plan(desired)
        let fromKernel = try NftApplier(kernel: k, kernelVersion: NftKernelVersion(6, 18)).plan(desired)
        XCTAssertEqual(listed.listing, fromKernel.listing)
        XCTAssertEqual(listed.listing.filter { $0.hasPrefix("add element") }.count, 1, listed.listing.joined(separator: "\n"))
        XCTAssertEqual(listed.unchanged.sets, fromKernel.unchanged.sets)
        let r = try applier(k, store).apply(desired)
        XCTAssertEqual(r.read, .savedState(chains: 0, sets: 0))
        XCTAssertEqual(r.unchanged.sets, fromKernel.unchanged.sets, "sets known equal are counted as unchanged")
        assertSame(k.dump(), desired)
    }

    func testARemovedChainAndSetAreReadAndDeleted() throws {
        let k = FakeNftKernel()
        let store = MemoryStateStore()
        var desired = NftRuleset.example()
        try applier(k, store).apply(desired)
        desired.tables[0].chains.removeAll { $0.name == "service-y" }
        let si = desired.tables[0].sets.firstIndex { $0.name == "service-ips" }!
        desired.tables[0].sets[si].elements.removeAll { $0.data == .verdict(.goto("service-y")) }
        let r = try applier(k, store).apply(desired)
        XCTAssertEqual(r.read, .savedState(chains: 1, sets: 0))
        XCTAssertEqual(r.removed.chains, 1)
        assertSame(k.dump(), desired)
    }

    func testChangedDefinitionsAreReadAndRecreated() throws {
        let k = FakeNftKernel()
        let store = MemoryStateStore()
        var desired = NftRuleset.example()
        try applier(k, store).apply(desired)
        // A set whose definition changed is read from the kernel (its saved elements are of
        // another definition) and recreated with the rules that refer to it.
        let si = desired.tables[0].sets.firstIndex { $0.name == "cluster-ips" }!
        desired.tables[0].sets[si].comment = "now with a comment"
        let r = try applier(k, store).apply(desired)
        XCTAssertEqual(r.read, .savedState(chains: 0, sets: 1))
        XCTAssertEqual(r.changed.sets, 1)
        assertSame(k.dump(), desired)
        // A chain whose definition changed: recreated, and the chains that jump to it refilled.
        let ci = desired.tables[0].chains.firstIndex { $0.name == "mark-for-masquerade" }!
        desired.tables[0].chains[ci].comment = "marks"
        let r2 = try applier(k, store).apply(desired)
        XCTAssertEqual(r2.read, .savedState(chains: 1, sets: 0))
        assertSame(k.dump(), desired)
    }

    func testADeferredChainIsSavedWithItsOldDefinition() throws {
        // Kernels before 6.2 keep a chain that lost its last map reference until the next apply;
        // the saved state must describe it as the kernel holds it (flushed, old comment).
        let k = FakeNftKernel()
        let store = MemoryStateStore()
        func old() -> NftApplier { applier(k, store, version: NftKernelVersion(6, 1)) }
        var desired = NftRuleset.example()
        try old().apply(desired)
        desired.tables[0].chains.removeAll { $0.name == "service-x" }
        for i in desired.tables[0].sets.indices {
            desired.tables[0].sets[i].elements.removeAll { $0.data == .verdict(.goto("service-x")) }
        }
        XCTAssertEqual(try old().apply(desired).deferredChainDeletes, ["service-x"])
        // The chain comes back, plain: it differs from the kept one (which has a comment).
        desired.tables[0].chains.append(NftChain(name: "service-x"))
        let r = try old().apply(desired)
        XCTAssertEqual(r.read, .savedState(chains: 1, sets: 0))
        assertSame(k.dump(), desired)
    }

    func testDamagedSavedElementsAreReadFromTheKernel() throws {
        let k = FakeNftKernel()
        let store = MemoryStateStore()
        var desired = NftRuleset.example()
        try applier(k, store).apply(desired)
        let id = desired.tables[0].id
        store.state!.elements[id]!["cluster-ips"]!.bytes.removeLast()
        let si = desired.tables[0].sets.firstIndex { $0.name == "cluster-ips" }!
        desired.tables[0].sets[si].elements.append(.element(.ipv4("172.30.0.50")))
        let r = try applier(k, store).apply(desired)
        XCTAssertEqual(r.read, .savedState(chains: 0, sets: 1))
        assertSame(k.dump(), desired)
    }

    func testElementEncodingRoundTrips() throws {
        for family in [NftFamily.ip, .ip6] {
            let t = NftRuleset.example(family: family).tables[0]
            for s in t.sets {
                var elements = s.elements
                if let e = elements.first { var e = e; e.timeoutMs = 5000; elements.append(e) }
                let bytes = NftElementCodec.encode(elements)
                XCTAssertEqual(NftElementCodec.decode(bytes), elements, s.name)
                XCTAssertEqual(NftElementCodec.recordOffsets(bytes)?.count, elements.count + 1)
                XCTAssertNil(NftElementCodec.decode(bytes + [0]), "trailing bytes")
                if !bytes.isEmpty { XCTAssertNil(NftElementCodec.decode(Array(bytes.dropLast())), "truncated") }
            }
        }
        // Rebuilding a set from an older encoding decodes only the records that differ.
        let s = NftRuleset.example().tables[0].sets.first { $0.name == "source-ranges" }!
        var old = s
        old.elements[1] = .element(.ipv4("198.51.100.1"))
        let rebuilt = NftApplier.rebuild(s, from: NftElementCodec.encode(old.elements), desired: NftElementCodec.encode(s.elements))
        XCTAssertEqual(rebuilt?.elements, old.elements)
    }

    func testACleanupForgetsTheSavedState() throws {
        let k = FakeNftKernel()
        let store = MemoryStateStore()
        let desired = NftRuleset.example()
        try applier(k, store).apply(desired)
        XCTAssertNotNil(store.state)
        try applier(k, store).cleanup(family: desired.tables[0].family, table: desired.tables[0].name)
        XCTAssertNil(store.state)
        XCTAssertEqual(try applier(k, store).apply(desired).read, .kernel)
        assertSame(k.dump(), desired)
    }

    func testTheStateFileRoundTrips() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kr-nftstate-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = NftStateFile(directory: dir + "/nested")
        XCTAssertNil(file.load())
        let t = NftRuleset.example().tables[0]
        var digests = NftTableDigests(t)
        digests.fingerprint = 0xfeed_0000_0000_beef
        var tables: [NftTableID: NftTableDigests?] = [t.id: digests]
        tables[NftTableID(.ip6, "kuberules")] = .some(nil)
        var state = NftSavedState(scope: file.scope, generation: 42, tables: tables)
        for set in t.sets where !set.elements.isEmpty {
            state.elements[t.id, default: [:]][set.name] = NftSavedElements(set, digest: NftDigest.set(set))
        }
        XCTAssertEqual(state.elements[t.id]?.count, 7)
        file.save(state)

        // The index alone: headers and fingerprints; the table's digests and elements load on demand.
        var loaded = try XCTUnwrap(file.load())
        XCTAssertEqual(loaded.unloaded, [t.id])
        XCTAssertEqual(loaded.tables[t.id]??.fingerprint, 0xfeed_0000_0000_beef)
        XCTAssertEqual(loaded.tables[t.id]??.header, digests.header)
        XCTAssertNil(loaded.elements[t.id])
        XCTAssertTrue(file.loadTable(t.id, into: &loaded))
        XCTAssertEqual(loaded.unloaded, [])
        XCTAssertEqual(loaded, state)
        XCTAssertTrue(file.path.hasPrefix(dir + "/nested/nftables-netns-"), file.path)
        let part = try XCTUnwrap(loaded.tables[t.id]??.part)
        XCTAssertTrue(FileManager.default.fileExists(atPath: file.partPath(part)))

        // Saved again as stored (no elements given, the part named): the part is kept.
        var index = try XCTUnwrap(file.load())
        index.generation = 43
        file.save(index)
        var again = try XCTUnwrap(file.load())
        XCTAssertEqual(again.generation, 43)
        XCTAssertTrue(file.loadTable(t.id, into: &again))
        XCTAssertEqual(again.tables[t.id], state.tables[t.id])
        XCTAssertEqual(again.elements, state.elements)

        // A changed table gets a new part; the old one is removed.
        var changed = state
        changed.tables[t.id]??.header = 7
        let first = changed.elements[t.id]!.keys.sorted()[0]
        changed.elements[t.id]?.removeValue(forKey: first)
        file.save(changed)
        var c = try XCTUnwrap(file.load())
        let newPart = try XCTUnwrap(c.tables[t.id]??.part)
        XCTAssertNotEqual(newPart, part)
        XCTAssertFalse(FileManager.default.fileExists(atPath: file.partPath(part)), "unreferenced part removed")
        XCTAssertTrue(file.loadTable(t.id, into: &c))
        XCTAssertEqual(c, changed)

        // A damaged part is no state for that table.
        var parts = try Data(contentsOf: URL(fileURLWithPath: file.partPath(newPart)))
        parts[parts.count / 2] ^= 1
        try parts.write(to: URL(fileURLWithPath: file.partPath(newPart)))
        var d = try XCTUnwrap(file.load())
        XCTAssertFalse(file.loadTable(t.id, into: &d))

        // An index that lost a line (or any byte) is no state: the last line vouches for the rest.
        file.save(state)
        let saved = try Data(contentsOf: URL(fileURLWithPath: file.path))
        var lines = saved.split(separator: 10, omittingEmptySubsequences: false)
        lines.remove(at: 3)
        try Data(lines.joined(separator: [10])).write(to: URL(fileURLWithPath: file.path))
        XCTAssertNil(file.load(), "a line missing")
        var flipped = saved
        flipped[flipped.count / 2] ^= 1
        try flipped.write(to: URL(fileURLWithPath: file.path))
        XCTAssertNil(file.load(), "a byte changed")
        try Data("kuberules-nft-state 3\nscope x\ngeneration 1\nchain zz nope\n".utf8).write(to: URL(fileURLWithPath: file.path))
        XCTAssertNil(file.load(), "an older or damaged file is no state")
        file.save(nil)
        XCTAssertFalse(FileManager.default.fileExists(atPath: file.path))
        file.removeAll()
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir + "/nested"), [], "cleanup leaves nothing")
    }

    /// Chain digests and set elements load on demand: chains from the file named by their
    /// digest, elements from the pack of their set; a changed set's elements are appended to its
    /// pack, and the other sets stored there stay readable.
    func testChainsAndElementsLoadOnDemand() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kr-nftpacks-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = NftStateFile(directory: dir)
        var t = NftTable(family: .ip, name: "kuberules")
        for k in 0..<300 {
            t.add(NftSet.set("s\(k)", .type(.ipv4Addr), elements: (0..<(k % 5)).map { .element(.ipv4("10.0.\(k / 250).\($0 + 1)")) }))
        }
        t.add(NftChain(name: "c", rules: [NftRule(.accept)]))
        var state = NftSavedState(scope: file.scope, generation: 1, tables: [t.id: NftTableDigests(t)])
        for set in t.sets where !set.elements.isEmpty {
            state.elements[t.id, default: [:]][set.name] = NftSavedElements(set, digest: NftDigest.set(set))
        }
        file.save(state)
        func packs() throws -> [String: Data] {
            var out: [String: Data] = [:]
            for n in try FileManager.default.contentsOfDirectory(atPath: dir) where n.hasSuffix(".pack") {
                out[n] = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + n))
            }
            return out
        }
        let before = try packs()
        XCTAssertEqual(before.count, Set(t.sets.filter { !$0.elements.isEmpty }.map { NftStateFile.pack(of: $0.name) }).count)

        var loaded = try XCTUnwrap(file.load())
        XCTAssertTrue(file.loadTable(t.id, into: &loaded))
        XCTAssertFalse(loaded.tables[t.id]!!.chainsLoaded)
        XCTAssertEqual(loaded.tables[t.id]!!.chainsDigest, state.tables[t.id]!!.chainsDigest)
        XCTAssertTrue(loaded.elements[t.id]!.values.allSatisfy { !$0.loaded && $0.bytes.isEmpty })
        XCTAssertTrue(file.loadChains(t.id, into: &loaded))
        XCTAssertEqual(loaded.tables[t.id]!!.chains, state.tables[t.id]!!.chains)
        XCTAssertTrue(file.loadElements(t.id, "s7", into: &loaded))
        XCTAssertEqual(loaded.elements[t.id]!["s7"]!.bytes, state.elements[t.id]!["s7"]!.bytes)
        XCTAssertEqual(NftElementCodec.decode(loaded.elements[t.id]!["s7"]!.bytes), t.sets[7].elements)

        // One set changes: its elements are appended to its pack; every other set of that pack
        // stays where it was.
        var changed = loaded
        t.sets[7].elements.append(.element(.ipv4("10.9.9.9")))
        changed.tables[t.id]??.sets["s7"] = NftDigest.set(t.sets[7])
        changed.elements[t.id]!["s7"] = NftSavedElements(t.sets[7], digest: NftDigest.set(t.sets[7]))
        file.save(changed)
        let after = try packs()
        XCTAssertEqual(Set(after.keys), Set(before.keys))
        XCTAssertEqual(after.filter { before[$0.key] != $0.value }.count, 1, "one pack appended to")
        var again = try XCTUnwrap(file.load())
        XCTAssertTrue(file.loadTable(t.id, into: &again))
        for set in t.sets where !set.elements.isEmpty {
            XCTAssertTrue(file.loadElements(t.id, set.name, into: &again), set.name)
            XCTAssertEqual(NftElementCodec.decode(again.elements[t.id]![set.name]!.bytes), set.elements, set.name)
        }

        // A pack that does not hold what the part says: those sets are not loaded.
        let s7pack = NftStateFile.pack(of: "s7")
        try Data("other bytes".utf8).write(to: URL(fileURLWithPath: file.packPath(t.id, s7pack)))
        var damaged = try XCTUnwrap(file.load())
        XCTAssertTrue(file.loadTable(t.id, into: &damaged))
        XCTAssertFalse(file.loadElements(t.id, "s7", into: &damaged))
        XCTAssertTrue(file.loadElements(t.id, "s8", into: &damaged) || NftStateFile.pack(of: "s8") == s7pack)
        file.removeAll()
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [], "cleanup leaves nothing")
    }

    func testChainDigestListComparesByNameWithoutOrder() {
        let saved = NftChainDigests(names: ["a", "b", "c", "gone"], digests: [1, 2, 3, 4])
        XCTAssertEqual(NftChainDigests(bytes: saved.bytes), saved)
        XCTAssertNil(NftChainDigests(bytes: saved.bytes.dropLast()), "truncated")
        XCTAssertEqual(saved.dictionary, ["a": 1, "b": 2, "c": 3, "gone": 4])
        // Desired in another order: c unchanged, a changed, b unchanged, new is new, gone is gone.
        let r = saved.compare(names: ["c", "a", "new", "b"], digests: [3, 9, 5, 2])
        XCTAssertEqual(r?.unchanged, [true, false, false, true])
        XCTAssertEqual(r?.changed, ["a", "gone"])
        XCTAssertEqual(r?.changedDesired, [1])
        XCTAssertNil(NftChainDigests(names: ["a", "a"], digests: [1, 2]).compare(names: ["a"], digests: [1]),
                     "a name listed twice: the list is not trusted")
        XCTAssertNil(saved.compare(names: ["a"], digests: []))
    }

    func testDigestsAreStableAndSensitive() {
        let t = NftRuleset.example().tables[0]
        XCTAssertEqual(NftTableDigests(t), NftTableDigests(t))
        var c = t.chains[0]
        let before = NftDigest.chain(c)
        c.rules[0].handle = 99
        XCTAssertEqual(NftDigest.chain(c), before, "handles are not part of a rule")
        c.rules[0].comment = "x"
        XCTAssertNotEqual(NftDigest.chain(c), before)
        // A fixed value, so a digest saved by one build is understood by the next.
        XCTAssertEqual(String(NftDigest.chain(NftChain(name: "a")), radix: 16), "a4320d94349aa1d2")
        XCTAssertNotEqual(NftDigest.chain(NftChain(name: "a")), NftDigest.chain(NftChain(name: "b")))
    }
}
