import NftModel
import Parallel
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

extension NftKernelVersion {
    /// The running kernel's version (uname), or nil if it cannot be parsed.
    public static func running() -> NftKernelVersion? {
        var u = utsname()
        guard uname(&u) == 0 else { return nil }
        let release = withUnsafeBytes(of: &u.release) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        return NftKernelVersion(release: release)
    }
}

/// What an apply did.
public struct NftApplyReport: Sendable {
    public var added = NftObjectCounts()
    public var changed = NftObjectCounts()
    public var removed = NftObjectCounts()
    public var unchanged = NftObjectCounts()
    /// Netlink messages and bytes of the committed batch (0 when nothing changed).
    public var messages = 0
    public var bytes = 0
    /// Attempts made (more than 1 after concurrent changes, ERESTART).
    public var attempts = 0
    /// Seconds from the first read to the end of the commit.
    public var elapsedSeconds = 0.0
    public var deferredChainDeletes: [String] = []
    /// Human-readable change listing (the `diff` / `--dry-run` output).
    public var listing: [String] = []
    /// False for a dry run.
    public var committed = false
    /// Where the current state came from.
    public var read = NftApplier.ReadSource.kernel
    /// Seconds spent per phase of the last attempt, in order ("digest", "read", "plan",
    /// "commit", "save"): `KUBERULES_TIMING=1` prints them.
    public var phases: [(name: String, seconds: Double)] = []

    var readText: String {
        switch read {
        case .kernel: return "whole tables from the kernel"
        case .committedState: return "state committed by this process"
        case .savedState(let c, let s): return "saved state + \(c) chain(s), \(s) set(s) from the kernel"
        }
    }

    public var summary: String {
        "added \(added.total), changed \(changed.total), removed \(removed.total), unchanged \(unchanged.total) objects; "
            + "\(messages) messages, \(bytes) bytes, \(attempts) attempt(s), "
            + "\(Int((elapsedSeconds * 1000).rounded())) ms; read: " + readText
    }
}

public enum NftApplyError: Error, Sendable, CustomStringConvertible {
    case tooManyRestarts(Int)
    public var description: String {
        switch self {
        case .tooManyRestarts(let n): return "the ruleset kept changing concurrently: gave up after \(n) attempts"
        }
    }
}

/// Reads the named tables, diffs them against the desired ruleset, commits the difference in
/// one batch (retrying on concurrent changes). It only ever reads or writes the tables named
/// in the desired ruleset.
public final class NftApplier {
    public let kernel: NftKernel
    public let kernelVersion: NftKernelVersion
    public var maxAttempts: Int
    /// Test hook: runs after the state was read and diffed, right before the commit
    /// (argument: the attempt number, from 1).
    public var beforeCommit: ((Int) throws -> Void)?
    /// Reuse the state this applier committed while the kernel's generation proves nobody
    /// changed the ruleset since (reading 100k elements back costs seconds). Sets whose
    /// elements can expire (timeouts) with desired elements disable it.
    public var reuseCommittedState = true
    /// The tables as of `generation` (nil value: the table did not exist).
    private var known: (generation: UInt32, tables: [NftTableID: NftTable?])?
    /// Where the state of the last read came from.
    public enum ReadSource: Sendable, Equatable {
        /// The whole of our tables, dumped from the kernel.
        case kernel
        /// What this applier committed earlier in this process.
        case committedState
        /// The digests a previous run saved in the state store, plus the chains and sets whose
        /// digests differ, dumped from the kernel (`chains`, `sets`: how many).
        case savedState(chains: Int, sets: Int)
    }
    public private(set) var lastReadSource = ReadSource.kernel
    /// Whether the last read came from the kernel (false: from the state this applier committed).
    public var lastReadFromKernel: Bool { lastReadSource == .kernel }
    /// Digests of what was committed, saved for the next run (`--state-dir`); the default keeps
    /// nothing.
    public var stateStore: NftStateStore = NftNoStateStore()
    /// Digests of the desired tables, computed once per apply when a store is in use.
    private var desiredDigests: [NftTableID: NftTableDigests]?
    /// The saved state last loaded or saved (its element encodings are reused when saving).
    private var lastLoaded: NftSavedState?
    /// Encodings of desired sets made while reading the saved state (reused when saving).
    private var encoded: [NftTableID: [String: NftSavedElements]] = [:]
    /// The tables the last read of the saved state took as they are (fingerprints): saved again
    /// as stored.
    private var reusedTables: Set<NftTableID> = []
    /// Whether the last read of the saved state found a table fingerprint moved (the state
    /// then says less than it could, even when the kernel needs no change: save it again).
    private var fingerprintsMoved = false
    /// Phase timings of the running apply (see `NftApplyReport.phases`).
    private var phases: [(name: String, seconds: Double)] = []

    private func timed<T>(_ name: String, _ body: () throws -> T) rethrows -> T {
        let start = NftClock.now()
        defer { phases.append((name, NftClock.now() - start)) }
        return try body()
    }

    public init(kernel: NftKernel, kernelVersion: NftKernelVersion? = nil, maxAttempts: Int = 5) {
        self.kernel = kernel
        self.kernelVersion = kernelVersion ?? NftKernelVersion.running() ?? NftKernelVersion(6, 2)
        self.maxAttempts = maxAttempts
    }

    /// The current state of the desired tables, as of `generation`.
    public struct CurrentState {
        public var generation: UInt32
        /// Per table that exists; without the chains marked in `equalChains`.
        public var tables: [NftTableID: NftTable]
        /// Per table, aligned with the desired table's chains: true where the chain is known
        /// (from the saved digests) to equal the desired one. Those are left out of both sides
        /// of the diff.
        public var equalChains: [NftTableID: [Bool]] = [:]
        /// Per table, the sets known (from the saved digests) to equal the desired ones. Those
        /// are not in `tables` either.
        public var equalSets: [NftTableID: Set<String>] = [:]
        /// Tables whose fingerprint equals the saved one: the kernel holds exactly the desired
        /// table. Not in `tables`; left out of the diff altogether.
        public var unchangedTables: Set<NftTableID> = []
    }

    /// Reads the current state of the desired tables (consistent with `generation`): from the
    /// kernel, or from what this applier committed if the generation is unchanged since.
    public func read(_ desired: NftRuleset) throws -> (generation: UInt32, tables: [NftTableID: NftTable]) {
        desiredDigests = nil
        encoded = [:]
        defer { desiredDigests = nil; encoded = [:] }
        let state = try readState(desired)
        guard !state.equalChains.isEmpty || !state.equalSets.isEmpty || !state.unchangedTables.isEmpty else {
            return (state.generation, state.tables)
        }
        // Put the desired chains and sets back in for the ones known to be equal.
        var tables = state.tables
        for t in desired.tables where state.unchangedTables.contains(t.id) { tables[t.id] = t }
        for t in desired.tables where tables[t.id] != nil {
            if let eq = state.equalChains[t.id] { tables[t.id]!.chains += zip(t.chains, eq).filter { $0.1 }.map { $0.0 } }
            if let same = state.equalSets[t.id] { tables[t.id]!.sets += t.sets.filter { same.contains($0.name) } }
        }
        return (state.generation, tables)
    }

    func readState(_ desired: NftRuleset) throws -> CurrentState {
        // Each attempt starts afresh: digests taken from a saved state that an earlier attempt
        // could not use (its index is gone once a commit was tried) must not be reused.
        reusedTables = []
        fingerprintsMoved = false
        desiredDigests = nil
        encoded = [:]
        if reuseCommittedState, let known, !Self.hasExpiringElements(desired),
           desired.tables.allSatisfy({ known.tables.keys.contains($0.id) }),
           try kernel.generation() == known.generation {
            lastReadSource = .committedState
            var tables: [NftTableID: NftTable] = [:]
            for t in desired.tables { if let have = known.tables[t.id] ?? nil { tables[t.id] = have } }
            return CurrentState(generation: known.generation, tables: tables)
        }
        if reuseCommittedState, let saved = try readSaved(desired) {
            return saved
        }
        lastReadSource = .kernel
        while true {
            let gen = try kernel.generation()
            var tables: [NftTableID: NftTable] = [:]
            for t in desired.tables {
                if let have = try kernel.dumpTable(t.id) { tables[t.id] = have }
            }
            // A change during the dump makes the snapshot inconsistent: read again.
            if try kernel.generation() == gen {
                remember(gen, desired, tables)
                return CurrentState(generation: gen, tables: tables)
            }
        }
    }

    /// The digests of the desired tables (computed once per desired ruleset and apply); those
    /// of the tables in `reused` are taken as they are.
    private func digests(_ desired: NftRuleset, reusing reused: [NftTableID: NftTableDigests] = [:], timing: Bool = true) -> [NftTableID: NftTableDigests] {
        if let d = desiredDigests, desired.tables.allSatisfy({ d[$0.id] != nil }) { return d }
        func compute() -> [NftTableID: NftTableDigests] {
            var d = reused
            for t in desired.tables where d[t.id] == nil {
                var td = NftTableDigests(t, prints: desired.objectFingerprints[t.id])
                td.fingerprint = desired.fingerprints[t.id]
                d[t.id] = td
            }
            desiredDigests = d
            return d
        }
        return timing ? timed("digest", compute) : compute()
    }

    /// The current state from the saved state: valid only in the same namespace and boot and
    /// while the kernel's generation is the one saved. Chains and sets whose desired digest
    /// equals the saved one are what the kernel holds. Changed sets are diffed against their
    /// saved elements (checked against the saved digest) or dumped; changed chains are dumped.
    /// When no definition changed, the equal chains are left out of the diff altogether.
    /// nil when the saved state cannot be used.
    private func readSaved(_ desired: NftRuleset) throws -> CurrentState? {
        guard !(stateStore is NftNoStateStore), !Self.hasExpiringElements(desired),
              var saved = timed("load state", { stateStore.load() }), saved.scope == stateStore.scope,
              desired.tables.allSatisfy({ saved.tables.keys.contains($0.id) }) else { return nil }
        let gen = try kernel.generation()
        guard gen == saved.generation else { return nil }
        // A table built from the same plan values as the one committed is that table.
        var reused = [NftTableID: NftTableDigests]()
        for t in desired.tables {
            if let f = desired.fingerprints[t.id], let was = saved.tables[t.id] ?? nil, was.fingerprint == f { reused[t.id] = was }
        }
        let want = digests(desired, reusing: reused)
        var state = CurrentState(generation: gen, tables: [:])
        state.unchangedTables = Set(reused.keys)
        var dumpedChains = 0, dumpedSets = 0
        for t in desired.tables where reused[t.id] == nil {
            guard saved.tables[t.id] != nil else { continue }
            guard timed("load table state", { stateStore.loadTable(t.id, into: &saved) }) else { return nil }
            guard let was = saved.tables[t.id] ?? nil else { continue }   // absent then, so absent now
            guard let w = want[t.id], w.header == was.header else { return nil }
            // The same chain digests in the same order (one digest of them all): every chain is
            // unchanged, and the saved ones need not be read.
            let compared: (unchanged: [Bool], changed: Set<String>, changedDesired: [Int])?
            if w.chainsDigest == was.chainsDigest {
                compared = ([Bool](repeating: true, count: t.chains.count), [], [])
            } else {
                guard timed("load chains", { stateStore.loadChains(t.id, into: &saved) }), let was = saved.tables[t.id] ?? nil else { return nil }
                compared = timed("compare", { was.chains.compare(names: t.chains.map(\.name), digests: w.chainOrder) })
            }
            guard let (unchanged, needChains, changedDesired) = compared else { return nil }
            var needSets = Set(was.sets.filter { w.sets[$0.key] != $0.value }.keys)
            // A changed set whose committed elements were saved (same definition) is rebuilt
            // from them: records equal to the desired set's (its encoding, kept for saving)
            // at the start and the end stand for themselves; only the rest is decoded.
            var rebuilt: [NftSet] = []
            // Not dynamic sets: the packet path changes them without a new generation.
            for s in t.sets where needSets.contains(s.name) && !s.flags.contains(.dynamic) {
                guard let digest = was.sets[s.name], saved.elements[t.id]?[s.name]?.setDigest == digest,
                      timed("load elements", { stateStore.loadElements(t.id, s.name, into: &saved) }),
                      let old = saved.elements[t.id]?[s.name], let newDigest = w.sets[s.name] else { continue }
                let new = NftSavedElements(s, digest: newDigest)
                encoded[t.id, default: [:]][s.name] = new
                guard old.definition == new.definition, let have = timed("rebuild set", { Self.rebuild(s, from: old.bytes, desired: new.bytes) }) else { continue }
                rebuilt.append(have)
                needSets.remove(s.name)
            }
            guard let part = try timed("dump", { try kernel.dumpTable(t.id, chains: needChains, sets: needSets) }),
                  part.chains.count == needChains.count, part.sets.count == needSets.count else { return nil }
            dumpedChains += needChains.count
            dumpedSets += needSets.count
            let assembleStart = NftClock.now()
            defer { phases.append(("assemble", NftClock.now() - assembleStart)) }
            var have = NftTable(family: t.family, name: t.name, comment: part.comment)
            let changedSets = needSets.union(rebuilt.map(\.name))
            var equalSets = Set<String>(minimumCapacity: t.sets.count)
            for s in t.sets where was.sets[s.name] != nil && !changedSets.contains(s.name) { equalSets.insert(s.name) }
            have.sets = part.sets + rebuilt
            have.chains = part.chains
            // Chains and sets recreated (definition changed) affect the rules that refer to
            // them: then the diff sees every chain.
            var definitionsKept = true
            let desiredChains = Dictionary(changedDesired.map { (t.chains[$0].name, $0) }, uniquingKeysWith: { a, _ in a })
            for c in part.chains {
                if let i = desiredChains[c.name], !t.chains[i].sameDefinition(as: c) { definitionsKept = false }
            }
            for s in part.sets {
                if let d = t.sets.first(where: { $0.name == s.name }), !d.sameDefinition(as: s), !s.canStand(for: d) { definitionsKept = false }
            }
            if definitionsKept {
                state.equalChains[t.id] = unchanged
                state.equalSets[t.id] = equalSets
            } else {
                have.chains += zip(t.chains, unchanged).filter { $0.1 }.map { $0.0 }
                have.sets += t.sets.filter { equalSets.contains($0.name) }
            }
            state.tables[t.id] = have
        }
        guard try kernel.generation() == gen else { return nil }
        reusedTables = state.unchangedTables
        fingerprintsMoved = desired.tables.contains { desired.fingerprints[$0.id] != nil && reused[$0.id] == nil }
        lastReadSource = .savedState(chains: dumpedChains, sets: dumpedSets)
        lastLoaded = saved
        if state.equalChains.isEmpty && state.equalSets.isEmpty && state.unchangedTables.isEmpty { remember(gen, desired, state.tables) } else { known = nil }
        return state
    }

    /// `s` with the elements encoded in `old` (`desired`: the encoding of `s.elements`).
    public static func rebuild(_ s: NftSet, from old: [UInt8], desired: [UInt8]) -> NftSet? {
        guard let oo = NftElementCodec.recordOffsets(old), let no = NftElementCodec.recordOffsets(desired),
              no.count == s.elements.count + 1 else { return nil }
        let oldCount = oo.count - 1, newCount = no.count - 1
        var lo = 0
        while lo < oldCount && lo < newCount && NftElementCodec.sameRecord(old, oo, lo, desired, no, lo) { lo += 1 }
        var suffix = 0
        while suffix < oldCount - lo && suffix < newCount - lo
            && NftElementCodec.sameRecord(old, oo, oldCount - 1 - suffix, desired, no, newCount - 1 - suffix) { suffix += 1 }
        guard let middle = NftElementCodec.decode(old, records: oo[lo..<(oldCount - suffix)]) else { return nil }
        var have = s
        have.elements = Array(s.elements[0..<lo]) + middle + Array(s.elements[(newCount - suffix)...])
        return have
    }

    /// The diff of the desired ruleset against a state read by `readState`.
    /// `listing`: whether the plan carries its human-readable listing.
    private func diff(_ desired: NftRuleset, _ state: CurrentState, listing: Bool = true) throws -> NftPlan {
        guard !state.equalChains.isEmpty || !state.equalSets.isEmpty || !state.unchangedTables.isEmpty else {
            return try NftDiff.plan(desired: desired, current: state.tables, kernel: kernelVersion, listing: listing)
        }
        // Unchanged tables were valid when committed: only the others are validated and diffed.
        var restricted = desired
        var equal = NftObjectCounts()
        restricted.tables = desired.tables.filter { t in
            guard state.unchangedTables.contains(t.id) else { return true }
            equal.tables += 1
            equal.chains += t.chains.count
            equal.sets += t.sets.count
            for c in t.chains { equal.rules += c.rules.count }
            for s in t.sets { equal.elements += s.elements.count }
            return false
        }
        try timed("validate") {
            for t in restricted.tables { try NftDiff.validate(t, knownChains: state.equalChains[t.id], knownSets: state.equalSets[t.id] ?? []) }
        }
        for i in restricted.tables.indices {
            guard let mask = state.equalChains[restricted.tables[i].id] else { continue }
            var kept: [NftChain] = []
            restricted.tables[i].chains.withUnsafeBufferPointer { chains in
                for k in chains.indices where k < mask.count {
                    if mask[k] { equal.chains += 1; equal.rules += chains[k].rules.count } else { kept.append(chains[k]) }
                }
            }
            restricted.tables[i].chains = kept
        }
        // The sets known equal are not in the current state: without a listing they leave the
        // desired side too; with one (which shows the sets rules name), both sides have them.
        var current = state.tables
        for i in restricted.tables.indices {
            let id = restricted.tables[i].id
            guard let same = state.equalSets[id], !same.isEmpty else { continue }
            if listing {
                current[id]?.sets += restricted.tables[i].sets.filter { same.contains($0.name) }
                continue
            }
            restricted.tables[i].sets.removeAll { s in
                guard same.contains(s.name) else { return false }
                equal.sets += 1; equal.elements += s.elements.count
                return true
            }
        }
        var plan = try timed("diff") { try NftDiff.plan(desired: restricted, current: current, kernel: kernelVersion, validate: false, listing: listing) }
        plan.unchanged.tables += equal.tables
        plan.unchanged.chains += equal.chains
        plan.unchanged.rules += equal.rules
        plan.unchanged.sets += equal.sets
        plan.unchanged.elements += equal.elements
        return plan
    }

    /// Saves the digests of what the kernel holds now (`tables`, as of `generation`), and the
    /// elements of its sets (re-encoded only for sets whose digest changed since the last load).
    private func save(_ generation: UInt32, _ desired: NftRuleset, _ tables: [NftTableID: NftTable], deferred: [NftTableID: [NftChain]] = [:]) {
        guard let saved = savedState(generation, desired, tables, deferred: deferred) else { return }
        write(saved)
    }

    private func write(_ saved: NftSavedState) {
        timed("write state") { stateStore.save(saved) }
        lastLoaded = stateStore.lastWritten ?? saved
    }

    /// What `save` writes. It records no timing phase, so that it can run beside the commit.
    private func savedState(_ generation: UInt32, _ desired: NftRuleset, _ tables: [NftTableID: NftTable], deferred: [NftTableID: [NftChain]] = [:]) -> NftSavedState? {
        guard !(stateStore is NftNoStateStore) else { return nil }
        let want = digests(desired, timing: false)
        var saved = NftSavedState(scope: stateStore.scope, generation: generation, tables: [:])
        for t in desired.tables {
            guard tables[t.id] != nil, var d = want[t.id] else { saved.tables[t.id] = .some(nil); continue }
            if d.part != nil {
                if reusedTables.contains(t.id) && deferred[t.id] == nil {
                    saved.tables[t.id] = .some(d)   // unchanged: its stored digests and elements stay
                    continue
                }
                // Taken from a saved state without its content (not loaded): digest it now.
                d = NftTableDigests(t, prints: desired.objectFingerprints[t.id])
                d.fingerprint = desired.fingerprints[t.id]
            }
            for c in deferred[t.id] ?? [] { d.chains.append(c.name, NftDigest.chain(c)) }
            // The chains left for deletion must be seen by the next apply's diff.
            if deferred[t.id]?.isEmpty == false { d.fingerprint = nil }
            saved.tables[t.id] = .some(d)
            let before = lastLoaded?.elements[t.id] ?? [:], made = encoded[t.id] ?? [:]
            let sets = t.sets.filter { !$0.elements.isEmpty }
            let blobs = Parallel.map(count: sets.count, minimumPerTask: 1) { i -> NftSavedElements in
                let s = sets[i], digest = d.sets[s.name] ?? 0
                if let old = made[s.name] ?? before[s.name], old.setDigest == digest { return old }
                return NftSavedElements(s, digest: digest)
            }
            saved.elements[t.id] = Dictionary(zip(sets.map(\.name), blobs), uniquingKeysWith: { a, _ in a })
        }
        return saved
    }

    private func remember(_ gen: UInt32, _ desired: NftRuleset, _ tables: [NftTableID: NftTable]) {
        var m: [NftTableID: NftTable?] = [:]
        for t in desired.tables { m[t.id] = .some(tables[t.id]) }
        known = (gen, m)
    }

    /// Whether a set that expires elements (`flags timeout`: the kernel accepts an element
    /// timeout nowhere else) has elements in `r`.
    static func hasExpiringElements(_ r: NftRuleset) -> Bool {
        r.tables.contains { $0.sets.contains { s in s.flags.contains(.timeout) && !s.elements.isEmpty } }
    }

    /// Forgets the remembered state: the next apply reads the kernel.
    public func forgetState() { known = nil }

    /// The change plan, without committing (`diff`, `--dry-run`).
    public func plan(_ desired: NftRuleset) throws -> NftPlan {
        desiredDigests = nil
        encoded = [:]
        defer { desiredDigests = nil; encoded = [:] }
        var plan = try diff(desired, try readState(desired))
        try deleteStaleShards(desired, into: &plan)
        return plan
    }

    /// Adds the deletion of our shard tables that `desired` no longer names (fewer shards
    /// than the last apply) to `plan`.
    private func deleteStaleShards(_ desired: NftRuleset, into plan: inout NftPlan) throws {
        guard desired.shardTablePrefix != nil else { return }
        for id in try kernel.tableIDs().filter(desired.isStaleShard).sorted() {
            plan.changes.append(.deleteTable(id))
            plan.removed.tables += 1
            plan.list("delete table \(id.family.rawValue) \(id.name) (shard no longer used)")
        }
    }

    /// Makes the kernel's tables equal to `desired` (only the tables it names).
    @discardableResult
    public func apply(_ desired: NftRuleset, dryRun: Bool = false) throws -> NftApplyReport {
        let start = NftClock.now()
        var report = NftApplyReport()
        desiredDigests = nil
        encoded = [:]
        defer { desiredDigests = nil; encoded = [:] }
        for attempt in 1...max(1, maxAttempts) {
            report.attempts = attempt
            phases = []
            let state = try timed("read") { try readState(desired) }
            report.read = lastReadSource
            var plan = try timed("plan") { try diff(desired, state, listing: dryRun) }
            try deleteStaleShards(desired, into: &plan)
            report.added = plan.added
            report.changed = plan.changed
            report.removed = plan.removed
            report.unchanged = plan.unchanged
            report.listing = plan.listing
            report.deferredChainDeletes = plan.deferredChainDeletes
            if dryRun || plan.isEmpty {
                if plan.isEmpty && !dryRun {
                    // The kernel holds exactly the desired state: remember it in the desired
                    // order, which lets the next diff compare elements by position.
                    var tables: [NftTableID: NftTable] = [:]
                    for t in desired.tables { tables[t.id] = t }
                    remember(state.generation, desired, tables)
                    switch lastReadSource {
                    case .kernel, .savedState(chains: 1..., sets: _), .savedState(chains: _, sets: 1...):
                        save(state.generation, desired, tables)
                    case .savedState where fingerprintsMoved:
                        // Same content, other fingerprints (a field that changes no rule): save
                        // them, or every later apply digests and rebuilds those objects again.
                        save(state.generation, desired, tables)
                    default:
                        break   // the saved state already says this
                    }
                }
                report.elapsedSeconds = NftClock.now() - start
                report.phases = phases
                return report
            }
            try beforeCommit?(attempt)
            do {
                // Until the commit is known to be ours alone, no saved state may be trusted.
                stateStore.save(nil)
                // What the kernel holds if the commit is ours alone.
                var tables: [NftTableID: NftTable] = [:]
                var kept: [NftTableID: [NftChain]] = [:]
                for t in desired.tables {
                    var t = t
                    // Chains kept for deletion on the next apply are still in the kernel,
                    // flushed, with their old definition.
                    for name in plan.deferredByTable[t.id] ?? [] {
                        var c = state.tables[t.id]?.chains.first { $0.name == name } ?? NftChain(name: name)
                        c.rules = []
                        t.chains.append(c)
                        kept[t.id, default: []].append(c)
                    }
                    tables[t.id] = t
                }
                // The state to save is prepared on the other core while the kernel works
                // through the batch (the send is one system call).
                let after = state.generation &+ 1
                var prepared: NftSavedState?
                let stats = try timed("commit") {
                    try kernel.commit(plan.changes, generation: state.generation, during: {
                        prepared = self.savedState(after, desired, tables, deferred: kept)
                    })
                }
                // Our batch is the only change iff the generation moved by exactly one.
                known = nil
                if try kernel.generation() == after {
                    remember(after, desired, tables)
                    timed("save") { if let prepared { write(prepared) } }
                }
                report.messages = stats.messages
                report.bytes = stats.bytes
                report.committed = true
                report.elapsedSeconds = NftClock.now() - start
                report.phases = phases
                return report
            } catch NftKernelError.generationChanged {
                continue
            } catch NftKernelError.batchRefused where report.read != .kernel && report.read != .committedState {
                // Planned from a saved state that proved wrong: plan again from the kernel.
                known = nil
                stateStore.save(nil)
                continue
            }
        }
        throw NftApplyError.tooManyRestarts(maxAttempts)
    }

    /// Deletes our shard tables of `table` (`TABLE-services-NN`, families ip and ip6) in one
    /// batch; returns them.
    @discardableResult
    public func cleanupShards(table: String, prefix: String) throws -> [NftTableID] {
        let mine = NftRuleset(tables: [NftTable(family: .ip, name: table), NftTable(family: .ip6, name: table)])
        var probe = mine
        probe.shardTablePrefix = prefix
        stateStore.save(nil)
        for _ in 1...max(1, maxAttempts) {
            let gen = try kernel.generation()
            known = nil
            let ids = try kernel.tableIDs().filter(probe.isStaleShard).sorted()
            guard !ids.isEmpty else { return [] }
            do {
                _ = try kernel.commit(ids.map { .deleteTable($0) }, generation: gen)
                return ids
            } catch NftKernelError.generationChanged {
                continue
            }
        }
        throw NftApplyError.tooManyRestarts(maxAttempts)
    }

    /// Deletes our table (family, name) if it exists; touches nothing else (it does not read
    /// the table: a missing table is reported by the kernel as ENOENT).
    @discardableResult
    public func cleanup(family: NftFamily, table: String) throws -> Bool {
        let id = NftTableID(family, table)
        stateStore.save(nil)
        for _ in 1...max(1, maxAttempts) {
            let gen = try kernel.generation()
            known = nil
            do {
                _ = try kernel.commit([.deleteTable(id)], generation: gen)
                return true
            } catch NftKernelError.generationChanged {
                continue
            } catch NftKernelError.batchRefused(let errs) where errs.count == 1 && errs[0].errno == 2 {
                return false
            }
        }
        throw NftApplyError.tooManyRestarts(maxAttempts)
    }
}

/// Monotonic seconds.
enum NftClock {
    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
